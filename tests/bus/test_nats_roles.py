"""Least privilege on the shipped NATS config: deploy/nats/nats-server.conf with its
accounts.conf (publisher, auditor, tocsin) and tls.conf, run by the real nats-server.

The config is the shipped file; the test changes only its store path (and binds
127.0.0.1 on free ports with command-line flags). Passwords and the TLS certificates are
made here, per test. Each role is shown to do its part and to be refused the rest, with
the server's own permissions violation for the subject at fault (nats-py reports them
asynchronously, through the error callback, while the call itself times out or simply
gets nothing). The last test runs the whole service as the ``tocsin`` user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.js import api as js_api

from tests.natsauth import DEPLOY_NATS, Certs, Client, ConfiguredNats, password
from tests.support import HttpSink, Tocsin, script, wait_until, webhook_config
from tocsin import cli
from tocsin.bus.connection import connect_options
from tocsin.bus.streams import ensure_streams
from tocsin.config import load_nats_login
from tocsin.core.subjects import (
    AUDIT_CONSUMER,
    DELIVERED,
    DELIVERY_FAILED,
    REJECTED,
    STREAM_IN,
    STREAM_OUT,
)

ALERT = {"type": "disk_full", "severity": "critical", "summary": "db1 97% full"}


@dataclass
class Secured:
    server: ConfiguredNats
    certs: Certs
    passwords: dict[str, str]  # user -> password

    @property
    def url(self) -> str:
        return self.server.url

    def toml(self, user: str = "tocsin") -> str:
        """The ``[nats]`` section that logs tocsin in as ``user``."""
        return (
            f'\n[nats]\nuser = "{user}"\npassword = "{self.passwords[user]}"\n'
            f'tls_ca = "{self.certs.ca}"\n'
        )

    def env(self, user: str) -> dict[str, str]:
        return {
            "TOCSIN_NATS_USER": user,
            "TOCSIN_NATS_PASSWORD": self.passwords[user],
            "TOCSIN_NATS_TLS_CA": str(self.certs.ca),
        }

    async def client(self, user: str, **options: Any) -> Client:
        """A plain nats-py client of ``user`` (what a publisher or auditor would run)."""
        return await Client.connect(
            self.url,
            user=user,
            password=self.passwords[user],
            tls=self.certs.client_context(),
            **options,
        )

    async def as_tocsin(self) -> Client:
        """A connection built the way tocsin builds its own."""
        login = load_nats_login(None, self.env("tocsin"))
        return await Client.connect(self.url, **connect_options(login))


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    conf_dir = tmp_path / "nats"
    shutil.copytree(DEPLOY_NATS, conf_dir)
    main = conf_dir / "nats-server.conf"
    text = main.read_text()
    assert text.count('"/data/jetstream"') == 1
    main.write_text(text.replace('"/data/jetstream"', f'"{tmp_path / "store"}"'))
    certs = Certs.make(tmp_path / "certs")
    passwords = {user: password() for user in ("tocsin", "publisher", "auditor")}
    env = {
        "TOCSIN_NATS_PASSWORD": passwords["tocsin"],
        "TOCSIN_PUBLISHER_PASSWORD": passwords["publisher"],
        "TOCSIN_AUDITOR_PASSWORD": passwords["auditor"],
        "NATS_TLS_CERT": str(certs.server_cert),
        "NATS_TLS_KEY": str(certs.server_key),
    }
    server = ConfiguredNats(main, env, tls=True).start()
    try:
        yield Secured(server, certs, passwords)
    finally:
        server.stop()


async def make_streams(secured: Secured) -> None:
    """What tocsin does at start, as the tocsin user: the streams exist afterwards."""
    client = await secured.as_tocsin()
    try:
        await ensure_streams(client.nc.jetstream(timeout=10))
        assert client.denials() == []
    finally:
        await client.close()


async def test_every_client_needs_tls_and_a_known_password(secured: Secured) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await Client.connect(
            secured.url, user="publisher", password="p-wrong", tls=secured.certs.client_context()
        )
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await Client.connect(secured.url, tls=secured.certs.client_context())
    info = await secured.client("publisher")
    assert info.nc.connected_url is not None
    await info.close()
    # nats:// to this server still upgrades to TLS (the server requires it): with a CA the
    # client does not trust, the handshake fails.
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await Client.connect(
            secured.url.replace("tls://", "nats://"),
            user="publisher",
            password=secured.passwords["publisher"],
            tls=Certs.make(secured.certs.dir / "other").client_context(),
        )


async def test_publisher_publishes_alert_events_and_nothing_else(secured: Secured) -> None:
    await make_streams(secured)
    publisher = await secured.client("publisher")
    try:
        ack = await publisher.nc.jetstream().publish(
            "alerts.in.billing", msgspec.json.encode(ALERT), timeout=10
        )
        assert (ack.stream, ack.seq) == (STREAM_IN, 1)
        beat = await publisher.nc.jetstream().publish("alerts.heartbeat.backup", b"", timeout=10)
        assert (beat.stream, beat.seq) == (STREAM_IN, 2)  # a beat, through its own import

        await publisher.refuses_publishing(
            "tocsin.route.hook",
            "tocsin.control.retry-failed",
            "alerts.delivered",  # forging an audit record
            "$JS.API.STREAM.DELETE.TOCSIN_IN",
        )

        await publisher.nc.subscribe("alerts.>")
        await publisher.refused("subscription", "alerts.>")
        await publisher.nc.subscribe("tocsin.>")
        await publisher.refused("subscription", "tocsin.>")
    finally:
        await publisher.close()


async def test_auditor_reads_outcomes_durably_and_nothing_else(secured: Secured) -> None:
    await make_streams(secured)
    auditor = await secured.client("auditor", inbox_prefix="_INBOX.auditor")
    live: list[Any] = []

    async def keep(msg: Any) -> None:
        live.append(msg)

    for subject in (DELIVERED, DELIVERY_FAILED, REJECTED):
        await auditor.nc.subscribe(subject, cb=keep)
    await auditor.nc.flush()
    # The publishing connection is opened after the subscriptions: a connection opened
    # before them can, for a moment, miss the new interest (nats-server 2.15 + nats-py
    # 2.16 drop the first message now and then; it is not about permissions).
    tocsin = await secured.as_tocsin()
    try:
        js = tocsin.nc.jetstream()
        for subject in (DELIVERED, DELIVERY_FAILED, REJECTED):
            await js.publish(subject, b'{"n": 1}', timeout=10)
        with contextlib.suppress(AssertionError):  # the assert below says what came
            await wait_until(lambda: len(live) == 3, 30, "the three audit messages, live")
        assert sorted(m.subject for m in live) == sorted([DELIVERED, DELIVERY_FAILED, REJECTED]), (
            live,
            auditor.errors,
            tocsin.errors,
        )

        # tocsin's durable pull consumer for auditors on TOCSIN_OUT: read, acknowledged...
        ajs = auditor.nc.jetstream(timeout=10)
        pull = await ajs.pull_subscribe(DELIVERED, durable="audit", stream=STREAM_OUT)
        firsts = await pull.fetch(3, timeout=10)  # it carries every audit subject
        assert [(m.subject, m.data) for m in firsts] == [
            (subject, b'{"n": 1}') for subject in (DELIVERED, DELIVERY_FAILED, REJECTED)
        ]
        for first in firsts:
            await first.ack_sync(timeout=10)
        await auditor.close()
        # ...and still there, at the same place, for the next session.
        await js.publish(DELIVERED, b'{"n": 2}', timeout=10)
        auditor = await secured.client("auditor", inbox_prefix="_INBOX.auditor")
        ajs = auditor.nc.jetstream(timeout=10)
        pull = await ajs.pull_subscribe(DELIVERED, durable="audit", stream=STREAM_OUT)
        (second,) = await pull.fetch(1, timeout=10)
        assert second.data == b'{"n": 2}'
        await second.ack_sync(timeout=10)
        assert auditor.denials() == []

        # Refused: publishing alerts, forging outcomes, reading TOCSIN_IN, snooping on
        # tocsin's inbox (where its pulled messages arrive), and tocsin's own consumer.
        with pytest.raises(nats.errors.TimeoutError):  # no PubAck: the publish was refused
            await auditor.nc.jetstream().publish("alerts.in.x", b"{}", timeout=2)
        await auditor.refused("publish", "alerts.in.x")
        await auditor.nc.publish(DELIVERED, b"{}")
        await auditor.refused("publish", DELIVERED)
        with pytest.raises(nats.errors.TimeoutError):
            await auditor.nc.jetstream(timeout=2).pull_subscribe(
                "alerts.in.>", durable="peek", stream=STREAM_IN
            )
        await auditor.refused("publish", "$JS.API.CONSUMER.INFO.TOCSIN_IN.peek")
        await auditor.refuses_publishing(
            "$JS.API.CONSUMER.MSG.NEXT.TOCSIN_IN.router",
            "$JS.API.STREAM.MSG.GET.TOCSIN_IN",
            "$JS.API.CONSUMER.MSG.NEXT.TOCSIN_WORK.deliver-hook",
            "$JS.API.CONSUMER.MSG.NEXT.TOCSIN_OUT.recorder",
            "$JS.ACK.TOCSIN_OUT.recorder.1.1.1.1.0",
            "$JS.API.CONSUMER.DURABLE.CREATE.TOCSIN_OUT.recorder",
            "$JS.API.STREAM.DELETE.TOCSIN_OUT",
        )
        for subject in ("_INBOX.>", "alerts.in.>", "tocsin.>"):
            await auditor.nc.subscribe(subject)
            await auditor.refused("subscription", subject)
    finally:
        await auditor.close()
        await tocsin.close()


async def test_auditor_pulls_but_cannot_make_the_server_push_to_it(secured: Secured) -> None:
    """Catches the auditor creating a push consumer: the server would publish TOCSIN_OUT's
    messages to any deliver subject it names (its own inbox, or a subject of tocsin's).
    Push or pull is in the request body, so the auditor creates no consumer at all, and
    pulls from the one tocsin makes for it. Before this, the push consumer below was
    created and ``_INBOX.auditor.push`` received ``alerts.delivered``."""
    await make_streams(secured)
    tocsin = await secured.as_tocsin()
    auditor = await secured.client("auditor", inbox_prefix="_INBOX.auditor")
    try:
        await tocsin.nc.jetstream().publish(DELIVERED, b'{"n": 1}', timeout=10)
        pushed: list[Any] = []

        async def keep(msg: Any) -> None:
            pushed.append(msg)

        await auditor.nc.subscribe("_INBOX.auditor.push", cb=keep)
        await auditor.nc.flush()
        ajs = auditor.nc.jetstream(timeout=2)
        for create in (
            js_api.ConsumerConfig(durable_name="push", deliver_subject="_INBOX.auditor.push"),
            js_api.ConsumerConfig(name="push2", deliver_subject="_INBOX.auditor.push"),
            js_api.ConsumerConfig(deliver_subject="_INBOX.auditor.push"),  # ephemeral
            js_api.ConsumerConfig(name="own-pull", filter_subject=DELIVERED),
        ):
            with pytest.raises(nats.errors.TimeoutError):  # refused: no answer comes
                await ajs.add_consumer(STREAM_OUT, create)
        for refused in (
            "$JS.API.CONSUMER.DURABLE.CREATE.TOCSIN_OUT.push",
            "$JS.API.CONSUMER.CREATE.TOCSIN_OUT.push2",
            "$JS.API.CONSUMER.CREATE.TOCSIN_OUT",
            f"$JS.API.CONSUMER.CREATE.TOCSIN_OUT.own-pull.{DELIVERED}",
        ):
            await auditor.refused("publish", refused)
        # tocsin's consumer may not be turned into a push consumer either.
        with pytest.raises(nats.errors.TimeoutError):
            await ajs.add_consumer(
                STREAM_OUT,
                js_api.ConsumerConfig(durable_name="audit", deliver_subject="_INBOX.auditor.push"),
            )
        await auditor.refused("publish", "$JS.API.CONSUMER.DURABLE.CREATE.TOCSIN_OUT.audit")
        info = await auditor.nc.jetstream(timeout=10).consumer_info(STREAM_OUT, AUDIT_CONSUMER)
        assert info.config.deliver_subject is None  # still a pull consumer

        # The pull consumer works, and delivers to the auditor's inbox as the reply.
        pull = await auditor.nc.jetstream(timeout=10).pull_subscribe(
            DELIVERED, durable=AUDIT_CONSUMER, stream=STREAM_OUT
        )
        (message,) = await pull.fetch(1, timeout=10)
        assert (message.subject, message.data) == (DELIVERED, b'{"n": 1}')
        await message.ack_sync(timeout=10)
        # Pushes would have arrived by now: the pulled message came after every create.
        assert pushed == []
    finally:
        await auditor.close()
        await tocsin.close()


async def test_tocsin_may_not_delete_purge_or_touch_other_streams(secured: Secured) -> None:
    await make_streams(secured)
    tocsin = await secured.as_tocsin()
    try:
        await tocsin.refuses_publishing(
            "$JS.API.STREAM.DELETE.TOCSIN_IN",
            "$JS.API.STREAM.PURGE.TOCSIN_OUT",
            "$JS.API.STREAM.CREATE.OTHER",
            "$JS.API.CONSUMER.DELETE.TOCSIN_IN.router",
            "$JS.API.CONSUMER.MSG.NEXT.OTHER.x",
        )
        await tocsin.nc.subscribe("alerts.>")
        await tocsin.refused("subscription", "alerts.>")
        info = await tocsin.nc.jetstream(timeout=10).stream_info(STREAM_IN)
        assert info.config.name == STREAM_IN  # still there
    finally:
        await tocsin.close()


async def test_tocsin_runs_the_whole_pipeline_as_its_role(
    secured: Secured,
    sink: HttpSink,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real service logged in as ``tocsin`` (password + TLS, from ``[nats]``): it
    creates its streams, consumers and key-value bucket, routes, retries (a 500 first),
    delivers to the webhook, records outcomes and answers ``tocsin retry-failed``; a
    publisher's event reaches the webhook and the auditor gets ``alerts.delivered``;
    nobody is refused anything, and no secret shows in the logs or the API."""
    caplog.set_level(logging.DEBUG)
    sink.responder = script(500, 200)
    api_token = "a" + password()
    heartbeat = '\n[heartbeats.backup]\nevery = "1h"\n'
    service = Tocsin(
        data_dir,
        secured.url,
        webhook_config(sink.url) + heartbeat + secured.toml(),
        api_token=api_token,
    )
    # The auditor listens before tocsin connects (see the auditor test on why that order).
    auditor = await secured.client("auditor", inbox_prefix="_INBOX.auditor")
    outcomes: list[Any] = []

    async def keep(msg: Any) -> None:
        outcomes.append(msgspec.json.decode(msg.data))

    await auditor.nc.subscribe(DELIVERED, cb=keep)
    await auditor.nc.subscribe(REJECTED, cb=keep)
    await auditor.nc.flush()
    publisher: Client | None = None
    try:
        await service.start()
        publisher = await secured.client("publisher")
        durable = await auditor.nc.jetstream(timeout=10).pull_subscribe(
            DELIVERED, durable="audit", stream=STREAM_OUT
        )
        ack = await publisher.nc.jetstream().publish(
            "alerts.in.billing", msgspec.json.encode(ALERT), timeout=10
        )
        assert ack.stream == STREAM_IN
        await wait_until(lambda: len(sink.requests) == 2, 60, "a failed send, then a delivery")
        delivered = await wait_until(
            lambda: [o for o in outcomes if "delivered_at" in o], 60, "alerts.delivered"
        )
        assert delivered[0]["notification_id"] == sink.requests[1].headers["idempotency-key"]
        assert delivered[0]["attempts"] == 2
        (stored,) = await durable.fetch(1, timeout=10)  # and durably, from TOCSIN_OUT
        assert (
            msgspec.json.decode(stored.data)["notification_id"]
            == sink.requests[1].headers["idempotency-key"]
        )
        await stored.ack_sync(timeout=10)
        await wait_until(lambda: service.count("delivery.succeeded") == 1, 60, "the outcome logged")
        assert service.count("delivery.attempt_failed") == 1

        await publisher.nc.jetstream().publish("alerts.in.billing", b"not json", timeout=10)
        await wait_until(
            lambda: [o for o in outcomes if o.get("reason") and "raw" in o], 60, "alerts.rejected"
        )

        # The CLI logs in from TOCSIN_NATS_*: publish as the publisher, retry-failed as
        # tocsin (a request the running service answers on tocsin.control.retry-failed).
        monkeypatch.delenv("TOCSIN_CONFIG", raising=False)
        common = ["--nats-url", secured.url, "--data-dir", str(data_dir)]
        for name, value in secured.env("publisher").items():
            monkeypatch.setenv(name, value)
        argv = ["publish", *common, "--type", "cli_check", "--severity", "critical"]
        assert await asyncio.to_thread(cli.main, [*argv, "--summary", "from the CLI"]) == 0
        await wait_until(lambda: len(sink.requests) == 3, 60, "the CLI's alert delivered")
        for name, value in secured.env("tocsin").items():
            monkeypatch.setenv(name, value)
        assert await asyncio.to_thread(cli.main, ["retry-failed", *common]) == 0

        # A beat from a publisher, and one the API publishes as tocsin.
        await publisher.nc.jetstream().publish("alerts.heartbeat.backup", b"", timeout=10)
        async with httpx.AsyncClient(base_url=service.api) as http:
            beat = await http.post(
                "/api/v1/heartbeats/backup", headers={"Authorization": f"Bearer {api_token}"}
            )
            assert beat.status_code == 202, beat.text
        await wait_until(lambda: service.count("heartbeat.received") == 2, 60, "both beats")

        assert auditor.denials() == []
        assert publisher.denials() == []
        async with httpx.AsyncClient(base_url=service.api) as http:
            pages = [
                (await http.get(path)).text
                for path in ("/readyz", "/api/v1/events?limit=1000", "/api/v1/alerts", "/")
            ]
        assert '"ready":true' in pages[0].replace(" ", "")
        assert "config.loaded" in pages[1]
    finally:
        if publisher is not None:
            await publisher.close()
        await auditor.close()
        assert await service.stop() == 0
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "permissions violation" not in logged.lower(), logged
    # The role may use the ordering bucket and look for orphaned work at start.
    for trouble in ("cannot read which notification", "cannot record", "could not clear"):
        assert trouble not in logged, logged
    for secret in (*secured.passwords.values(), api_token):
        assert secret not in logged
        assert all(secret not in page for page in pages)


async def test_tocsin_runs_the_partitioned_streams_and_consumers_as_its_role(
    secured: Secured,
) -> None:
    """Partitioned (deploy/compose.partitions.yaml runs on these roles): the tocsin user
    makes TOCSIN_PART with the partitioners' and each partition's router and recorder
    consumers, forwards to ``tocsin.part.<k>``, pulls and acks through them, reads their
    counts, all without a permissions violation (catches a role that only knew the
    single router: every partitioned process would be refused); it still may not delete
    a consumer (``tocsin repartition`` needs an administrative login for that)."""
    from tocsin.bus.streams import ensure_outcomes
    from tocsin.core.subjects import (
        PARTITIONER_CONSUMER,
        STREAM_PART,
        part_subject,
        recorder_consumer,
        router_consumer,
    )

    tocsin = await secured.as_tocsin()
    try:
        js = tocsin.nc.jetstream(timeout=10)
        await ensure_streams(js, partitions=2)
        await ensure_outcomes(js, partition=1)
        await js.publish("alerts.in.billing", msgspec.json.encode(ALERT))
        await js.publish(
            part_subject(1), msgspec.json.encode(ALERT), headers={"Nats-Msg-Id": "in:1"}
        )
        for stream, durable in (
            (STREAM_IN, PARTITIONER_CONSUMER),
            (STREAM_PART, router_consumer(1)),
        ):
            sub = await js.pull_subscribe_bind(durable, stream=stream)
            (msg,) = await sub.fetch(1, timeout=5)
            await msg.ack_sync()
            assert (await js.consumer_info(stream, durable)).num_ack_pending == 0
        await js.consumer_info(STREAM_OUT, recorder_consumer(1))
        assert tocsin.denials() == []
        await tocsin.refuses_publishing(
            f"$JS.API.CONSUMER.DELETE.{STREAM_PART}.{router_consumer(0)}"
        )
    finally:
        await tocsin.close()
