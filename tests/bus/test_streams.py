"""broker: reply-subject parsing, the PubAck-collecting publisher and the streams made
at start, against real NATS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import nats
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServerError

from tests.support import Subscriber, wait_until
from tocsin.bus.publisher import Publisher, _header_block
from tocsin.bus.puller import delivery_count, stream_seq
from tocsin.bus.streams import (
    StaleStreamError,
    _create_stream,
    ensure_consumer,
    ensure_inbound,
    ensure_outcomes,
    ensure_streams,
    recorder_consumer_config,
    router_consumer_config,
    stream_config,
)
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import (
    ATTEMPTS_PREFIX,
    DELIVERED,
    DELIVERED_SEQ_BUCKET,
    DELIVERY_FAILED,
    HEARTBEAT_SUBJECTS,
    IN_PREFIX,
    IN_SUBJECTS,
    INBOUND_SUBJECTS,
    RECORDER_CONSUMER,
    REJECTED,
    ROUTER_CONSUMER,
    STREAM_IN,
    STREAM_OUT,
    SUPERSEDED_PREFIX,
    heartbeat_subject,
    superseded_subject,
)


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.TOCSIN_IN.router.3.1234.77.1700000000000000000.5",
        "$JS.ACK._.ACCHASH.TOCSIN_IN.router.3.1234.77.1700000000000000000.5.tok",
        "$JS.ACK.hub.ACCHASH.TOCSIN_IN.router.3.1234.77.1700000000000000000.5",
    ],
)
def test_stream_seq_and_delivery_count_match_nats_py_metadata(reply: str) -> None:
    msg = Msg(_client=None, subject="alerts.in.x", reply=reply)  # type: ignore[arg-type]
    assert stream_seq(msg) == msg.metadata.sequence.stream == 1234
    assert delivery_count(msg) == msg.metadata.num_delivered == 3


def test_a_message_that_is_not_from_jetstream_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JetStream message"):
        stream_seq(Msg(_client=None, subject="x", reply="_INBOX.abc"))  # type: ignore[arg-type]


async def test_publisher_reports_stored_duplicate_and_refused_messages(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
        publisher = Publisher(nc)
        first = [Outbound(f"{IN_PREFIX}bench", b"{}", f"pub-test-{i}") for i in range(500)]
        assert await publisher.publish(first) == [True] * 500
        info = await nc.jetstream().stream_info(STREAM_IN)
        stored = info.state.last_seq
        # Same message ids: JetStream answers "duplicate", which counts as stored.
        assert await publisher.publish(first[:10]) == [True] * 10
        assert (await nc.jetstream().stream_info(STREAM_IN)).state.last_seq == stored
        # No stream listens on this subject: a 503 status, answered at once.
        nowhere = Outbound("tocsin.nowhere", b"{}", "pub-test-nowhere")
        assert await publisher.publish([nowhere, first[0]], timeout=5.0) == [False, True]
        await publisher.close()
    finally:
        await nc.close()


async def test_a_batch_refused_by_the_broker_is_logged_once_with_its_reasons(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """300 publishes no stream takes (as in a failover, when the stream has no leader):
    one warning line for the batch, counting them by the broker's reason. Catches a line
    per message (thousands of lines a second during a failover, the reason lost in them)."""
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
        publisher = Publisher(nc)
        nowhere = [Outbound("tocsin.nowhere", b"{}", f"pub-nowhere-{i}") for i in range(300)]
        caplog.set_level(logging.WARNING, logger="tocsin.broker")
        assert await publisher.publish(nowhere, timeout=5.0) == [False] * 300
        lines = [r.getMessage() for r in caplog.records if r.name == "tocsin.broker"]
        assert lines == [
            "300 of 300 publishes not stored (refused: status 503: 300; the rest "
            "without a PubAck within 5.0s)"
        ]
        await publisher.close()
    finally:
        await nc.close()


async def test_publisher_answers_false_when_the_connection_is_closed(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    publisher = Publisher(nc)
    assert await publisher.publish([Outbound(f"{IN_PREFIX}x", b"{}", "pc-1")]) == [True]
    await nc.close()
    assert await publisher.publish([Outbound(f"{IN_PREFIX}x", b"{}", "pc-2")]) == [False]


async def test_an_outcome_stream_and_recorder_of_an_earlier_version_take_superseded_outcomes(
    nats_url: str,
) -> None:
    """Catches an upgrade that keeps TOCSIN_OUT and the recorder's consumer as an earlier
    version made them (without ``tocsin.superseded.>``): a superseded outcome would then
    be refused by the stream (no stream takes the subject) or never reach the log. The
    streams, the consumer and the ordering bucket are brought up to date at start."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        earlier = [DELIVERED, DELIVERY_FAILED, ATTEMPTS_PREFIX + ">"]
        old_stream = stream_config(STREAM_OUT)
        old_stream.subjects = [*earlier, REJECTED]
        await js.add_stream(old_stream)
        old_recorder = recorder_consumer_config()
        old_recorder.filter_subjects = earlier
        await js.add_consumer(STREAM_OUT, old_recorder)

        await ensure_streams(js)
        await ensure_consumer(js, STREAM_OUT, recorder_consumer_config())

        stream = await js.stream_info(STREAM_OUT)
        assert SUPERSEDED_PREFIX + ">" in (stream.config.subjects or [])
        recorder = await js.consumer_info(STREAM_OUT, RECORDER_CONSUMER)
        assert SUPERSEDED_PREFIX + ">" in (recorder.config.filter_subjects or [])
        await js.key_value(DELIVERED_SEQ_BUCKET)  # exists
        await js.publish(superseded_subject("hook"), b"{}", timeout=5)
        assert (await js.consumer_info(STREAM_OUT, RECORDER_CONSUMER)).num_pending == 1
    finally:
        await nc.close()


async def test_an_inbound_stream_and_router_of_an_earlier_version_take_heartbeats(
    nats_url: str,
) -> None:
    """Catches an upgrade that keeps TOCSIN_IN and the router's consumer as an earlier
    version made them (``alerts.in.>`` alone): a beat on ``alerts.heartbeat.<name>``
    would then be refused by JetStream (no stream takes the subject) or never reach the
    router. The stream and the consumer are brought up to date at start."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        old_stream = stream_config(STREAM_IN)
        old_stream.subjects = [IN_SUBJECTS]
        await js.add_stream(old_stream)
        old_router = router_consumer_config()
        old_router.filter_subjects = None
        old_router.filter_subject = IN_SUBJECTS
        await js.add_consumer(STREAM_IN, old_router)

        await ensure_streams(js)

        stream = await js.stream_info(STREAM_IN)
        assert HEARTBEAT_SUBJECTS in (stream.config.subjects or [])
        await js.publish(heartbeat_subject("backup"), b"", timeout=5)
        await js.publish(IN_PREFIX + "x", b"{}", timeout=5)
        assert (await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)).num_pending == 2
    finally:
        await nc.close()


async def test_a_start_keeps_the_router_consumer_filtered_so_tocsin_in_keeps_alerts(
    nats_url: str,
) -> None:
    """The router's consumer names TOCSIN_IN's subjects as filters although it reads all
    of them. Without filters nats-server would match less per message (W2's broker CPU
    ~5% lower, docs/performance.md, "The broker's cost per event"), but nats-server
    2.15.1 updating an existing filtered consumer to none stops counting its interest
    until the server restarts: TOCSIN_IN (interest retention) PubAcks every new alert and
    discards it at once. Catches a config that drops the filters, which every start would
    apply to the consumer an earlier start made."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await js.add_stream(stream_config(STREAM_IN))
        earlier = router_consumer_config()
        earlier.filter_subjects = list(INBOUND_SUBJECTS)
        await js.add_consumer(STREAM_IN, earlier)

        await ensure_streams(js)

        await js.publish(IN_PREFIX + "x", b"{}", timeout=5)
        await js.publish(heartbeat_subject("backup"), b"", timeout=5)
        assert (await js.stream_info(STREAM_IN)).state.messages == 2
        assert (await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)).num_pending == 2
    finally:
        await nc.close()


STALE_TRIES = 4000
"""Deletions raced by a create until one leaves a stale stream: measured ~1 in 400 tries
(a few ms each) for a stream without consumers whose deletion is sent as tocsin looks
for it (the refused create, "error creating store", is ~20 times as frequent); 1000
tries saw none about 1 run in 10, so 4000 miss it about 1 run in 10,000."""


STALE_SEEN = "deleted stream's state"
"""What tocsin logs when it repairs a stream created stale."""


def _repaired(caplog: pytest.LogCaptureFixture) -> bool:
    return any(STALE_SEEN in r.getMessage() for r in caplog.records)


async def _one_message_stream(js: JetStreamContext, stream: str, subject: str) -> None:
    """``stream`` made anew, as an operator would, without consumers (their deletion
    makes the stream's slower: a create then seldom races it), one message published to
    it (TOCSIN_IN, interest retention, discards it at once; TOCSIN_OUT keeps it)."""
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(stream)

    async def created() -> bool:
        try:
            await js.add_stream(stream_config(stream))
        except ServerError:  # the deletion just made is still under way
            return False
        return True

    await wait_until(created, 5, f"{stream} made anew")
    await js.publish(subject, b"{}", timeout=5)


async def test_a_stream_created_over_a_deletion_under_way_is_made_again_fresh(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """TOCSIN_IN deleted, and created again at once with its consumer, as the router does
    when it finds its consumer gone. nats-server 2.15.1 sometimes creates it over the
    deletion still under way: the new stream has the deleted one's state (last_seq 1)
    and may never ingest (tests/pipeline/test_consumers.py's deleted-stream test failed
    ~1 run in 14 so); more often the create is refused ("error creating store for
    stream"). The deletion is sent as tocsin looks for the stream, until a stale one was
    made and repaired (tocsin says so in a WARNING); every stream tocsin leaves must be
    fresh, and the last take an alert. Catches ``ensure_inbound`` keeping the stale
    stream it was given (last_seq 1 after creation) or failing on a refused create."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        with caplog.at_level("WARNING", logger="tocsin.broker"):
            for _ in range(STALE_TRIES):
                await _one_message_stream(js, STREAM_IN, IN_PREFIX + "x")
                deleting = asyncio.ensure_future(js.delete_stream(STREAM_IN))
                with contextlib.suppress(NotFoundError):  # found, then deleted under it
                    await ensure_inbound(js, repair_stale=True)  # or made while deleted
                await deleting
                with contextlib.suppress(NotFoundError):
                    assert (await js.stream_info(STREAM_IN)).state.last_seq == 0
                if _repaired(caplog):
                    break
        assert _repaired(caplog), f"no stale stream in {STALE_TRIES} tries"
        await js.publish(IN_PREFIX + "x", b"{}", timeout=5)
        assert (await js.stream_info(STREAM_IN)).state.messages == 1
    finally:
        await nc.close()


async def test_a_stale_stream_that_holds_messages_is_left_and_reported(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """TOCSIN_OUT (limits retention: its outcomes stay) deleted and created again at
    once, until nats-server creates it with the deleted one's messages. tocsin must not
    delete a stream that holds messages: it leaves it, logs an ERROR, and raises, so that
    the recorder reports its consumer missing (/readyz) instead of consuming a stream
    that may be deaf. Catches the stale stream taken as fresh (no error raised), and a
    repair that deletes messages (the ERROR names them)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    raised: StaleStreamError | None = None
    try:
        for _ in range(STALE_TRIES):
            await _one_message_stream(js, STREAM_OUT, DELIVERED)
            deleting = asyncio.ensure_future(js.delete_stream(STREAM_OUT))
            try:
                with caplog.at_level("ERROR", logger="tocsin.broker"):
                    await ensure_outcomes(js, repair_stale=True)  # or made while deleted
            except StaleStreamError as error:
                raised = error
            except NotFoundError:  # found, then deleted under it
                pass
            await deleting
            if raised is not None:
                break
            with contextlib.suppress(NotFoundError):
                assert (await js.stream_info(STREAM_OUT)).state.last_seq == 0
        assert raised is not None, f"no stale stream in {STALE_TRIES} tries"
        held = re.search(r"last_seq (\d+), (\d+) message\(s\)", str(raised))
        assert held is not None, str(raised)
        assert int(held[2]) > 0  # it named the messages it saw
        # Left as it was: the same stream, its seqs kept. The deletion still under way
        # may empty it after tocsin looked (seen: first_seq 2, last_seq 1, 0 messages),
        # but a stream tocsin deleted and made again would start over at last_seq 0.
        state = (await js.stream_info(STREAM_OUT)).state
        assert state.last_seq >= int(held[1]) > 0, "a stale stream holding messages was deleted"
        assert [r.levelname for r in caplog.records if str(raised) in r.getMessage()] == ["ERROR"]
    finally:
        await nc.close()


async def test_streams_made_by_this_version_are_not_updated_at_the_next_start(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Catches a stream config that names a field otherwise than the server reports it
    back (TOCSIN_ANCHOR left its duplicate window to the server): every process start
    then updated the stream and logged "updated stream", a false alarm in each log."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await ensure_streams(js)
        caplog.clear()
        with caplog.at_level("INFO", logger="tocsin.broker"):
            await ensure_streams(js)
        assert not [r for r in caplog.records if "updated stream" in r.getMessage()]
    finally:
        await nc.close()


async def test_a_batch_written_in_one_go_arrives_as_publishes_one_at_a_time_would(
    nats_url: str,
) -> None:
    """The publisher writes a batch's ``PUB``/``HPUB`` commands itself, joined (issue
    #20). Catches a message whose headers (its id, the publisher's own, its trace; a
    value with a line break is cleaned as ``nc.publish`` cleans it) or payload differ
    from what ``nc.publish`` sends, a header-less message garbled, and a payload over
    the broker's limit taking the batch with it instead of failing alone."""
    nc = await nats.connect(nats_url)
    audit = await Subscriber().start(nats_url, f"{IN_PREFIX}>")
    try:
        await ensure_streams(nc.jetstream())
        publisher = Publisher(nc, {"Tocsin-Partition": "1"})
        traced = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        odd = {  # each cleaned (or left) as nc.publish does: stripped, line breaks spaces
            "x-odd": " a\r\nb ",
            "x-tab": "\tq\t",
            "x-space": "v ",
            "x-unicode": "\xa0é\u3000",
            "x-inner": "a\x0bb",
        }
        batch = [
            Outbound(f"{IN_PREFIX}a", b'{"n":1}', "one-go-1", {**traced, **odd}),
            Outbound(f"{IN_PREFIX}b", b"", ""),
            Outbound(f"{IN_PREFIX}c", b"x" * (nc.max_payload + 1), "one-go-big"),
            Outbound(f"{IN_PREFIX}d", b'{"n":4}', "one-go-4"),
        ]
        assert await publisher.publish(batch) == [True, True, False, True]
        await nc.publish(
            f"{IN_PREFIX}a",
            b'{"n":1}',
            headers={
                "Nats-Msg-Id": "by-nc",
                "Tocsin-Partition": "1",
                **traced,
                **odd,
            },
        )
        await wait_until(lambda: len(audit.messages) == 4, what="the four messages")
        ours, blank, fourth, theirs = audit.messages
        assert ours.headers == {**theirs.headers, "Nats-Msg-Id": "one-go-1"}
        assert ours.headers["x-odd"] == "a  b"
        assert (ours.headers["x-tab"], ours.headers["x-unicode"]) == ("q", "é")
        assert (ours.subject, ours.data) == (theirs.subject, theirs.data)
        assert (blank.subject, blank.data, blank.headers) == (
            f"{IN_PREFIX}b",
            b"",
            {"Tocsin-Partition": "1"},
        )
        assert (fourth.data, fourth.headers["Nats-Msg-Id"]) == (b'{"n":4}', "one-go-4")
        await publisher.close()
    finally:
        await audit.close()
        await nc.close()


@pytest.mark.parametrize(
    "value",
    ["plain", "", " ", " a", "a ", "\tq\t", "a\r\nb", "\xa0é\u3000", "a\x0bb", "a\u2028b", "é"],
)
def test_a_header_value_is_written_as_nc_publish_writes_it(value: str) -> None:
    """Catches the header block's fast path (issue #20: a printable value with no space
    at either end written as it is) writing a value ``nc.publish`` would clean: nats-py
    strips each value and makes its line breaks spaces (``Client._send_publish``), and a
    receiver strips what it parses, so only the bytes on the wire show a difference."""
    headers = {"Nats-Msg-Id": "id-1", "x-value": value}
    cleaned = value.strip().translate(str.maketrans({"\r": " ", "\n": " "}))
    expected = f"NATS/1.0\r\nNats-Msg-Id: id-1\r\nx-value: {cleaned}\r\n\r\n".encode()
    assert _header_block(headers) == expected


async def test_a_create_answered_with_an_existing_stream_is_not_taken_for_stale(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes starting at once both find TOCSIN_OUT missing and both create it:
    JetStream answers the second create with the stream the first made, its messages
    and seqs included. Outside a recovery (``repair_stale`` off) that answer is only
    logged: catches a start that fails with ``StaleStreamError``, or deletes, on a
    stream another process made and filled."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await _one_message_stream(js, STREAM_OUT, DELIVERED)
        made = (await js.stream_info(STREAM_OUT)).created
        with caplog.at_level("WARNING", logger="tocsin.broker"):
            await _create_stream(js, stream_config(STREAM_OUT), repair_stale=False)
        info = await js.stream_info(STREAM_OUT)
        assert (info.created, info.state.messages, info.state.last_seq) == (made, 1, 1)
        assert any("seqs used already" in r.getMessage() for r in caplog.records)
    finally:
        await nc.close()


async def test_a_live_stream_answered_to_a_repairing_create_is_kept(nats_url: str) -> None:
    """A recovery's create answered with a stream that has seqs used and no message,
    but a consumer (another process made it meanwhile and consumes it): live, not a
    stale one, so it is kept, consumer and all. Catches the repair deleting it on the
    create's answer alone."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await ensure_inbound(js)
        await js.publish(IN_PREFIX + "x", b"{}", timeout=5)
        pull = await js.pull_subscribe_bind(durable=ROUTER_CONSUMER, stream=STREAM_IN)
        [msg] = await pull.fetch(1, timeout=5)
        await msg.ack_sync(timeout=5)

        async def acked() -> bool:
            return (await js.stream_info(STREAM_IN)).state.messages == 0

        await wait_until(acked, 5, "the alert acked and gone from TOCSIN_IN")
        made = (await js.stream_info(STREAM_IN)).created
        await _create_stream(js, stream_config(STREAM_IN), repair_stale=True)
        info = await js.stream_info(STREAM_IN)
        assert (info.created, info.state.last_seq) == (made, 1)
        assert (await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)).name == ROUTER_CONSUMER
    finally:
        await nc.close()
