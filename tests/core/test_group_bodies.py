"""A group's alerts encoded once (issue #20's W5), pure: the ``group.notified`` fact's
log row and its work item splice ``GroupNotified.alerts_json`` and must be, byte for
byte, what encoding the fact and its ``GroupNotification`` gave before (DESIGN.md
invariant 6: what was sent is in the log). The bodies have unicode, nested details
with a float, a truncated count and a resolved alert."""

from __future__ import annotations

import msgspec

from tests.core.test_fold import T0, normalized
from tests.core.test_groups import SECOND, Clocked, grouped, notified
from tocsin.core import contracts
from tocsin.core import events as ev
from tocsin.core.contracts import GroupNotification, WorkItem
from tocsin.core.outbound import group_notification_of, messages_for
from tocsin.core.state import State
from tocsin.core.times import Duration
from tocsin.store import tables
from tocsin.store.chain import GENESIS

TABLE = grouped(
    group_by=["labels.service"],
    group_wait=Duration(30),
    group_interval=Duration(300),
    max_alerts=3,
)


def storm_facts() -> list[ev.GroupNotified]:
    """A group's first notification (3 of 4 alerts listed, 1 truncated) and its update
    listing a resolved alert; summaries and labels in several scripts, details nested."""
    run = Clocked()
    names = ["dïsk ☃", "磁盘", "диск", 'quote " and \\ slash']
    for n, name in enumerate(names):
        event = normalized(0, "critical" if n == 1 else "warning", host=name, service="api ü")
        event = msgspec.structs.replace(
            event,
            summary=f"{name} is full",
            details={"used": 0.915 + n, "mounts": [{"path": "/ü", "free": None}], "n": n},
        )
        run.feed(event, TABLE)
    [first] = notified(run.tick(T0 + 30 * SECOND))
    run.feed(normalized(1, status="resolved", host="磁盘", service="api ü"), TABLE)
    [update] = notified(run.tick(T0 + 330 * SECOND))
    return [first, update]


def old_group_item(fact: ev.GroupNotified, seq: int) -> bytes:
    """The work item as it was encoded before: the whole ``GroupNotification``."""
    item = WorkItem(group=group_notification_of(fact), log_seq=seq, trace_id=fact.trace_id)
    return msgspec.json.encode(item)


def test_the_facts_under_test_have_unicode_truncation_and_a_resolved_alert() -> None:
    first, update = storm_facts()
    assert first.truncated == 1
    assert len(first.alerts) == 3
    assert any(a.status == "resolved" for a in update.alerts)
    assert any(not a.summary.isascii() for a in first.alerts)


def test_a_group_facts_log_row_is_the_bytes_the_fact_encodes_to() -> None:
    """Catches a log row spliced from the wrong bytes, or from a twin of the fact whose
    fields, order, tag or omitted defaults drifted from ``GroupNotified``'s: the row
    must be what encoding the fact gives, and decode back to the same fact."""
    for fact in storm_facts():
        for stamped in (fact, msgspec.structs.replace(fact, config_version="v", trace_id="t")):
            row = ev.encode(stamped)
            assert row == msgspec.json.encode(stamped)
            assert ev.decode(row) == stamped


def test_a_group_work_item_is_the_bytes_it_was_before() -> None:
    """Catches a work item whose spliced alerts differ from the ``GroupNotification``
    the fact holds (DESIGN.md invariant 6): the item is byte for byte the one encoded
    whole, and read as a ``WorkItem`` its group is the fact's body."""
    for seq, fact in enumerate(storm_facts(), 40):
        [message] = messages_for(State(), seq, fact, None)
        assert message.payload == old_group_item(fact, seq)
        item = msgspec.json.decode(message.payload, type=WorkItem)
        assert item.group == group_notification_of(ev.decode(ev.encode(fact)))


def test_a_groups_alerts_are_encoded_once_for_its_row_and_its_item() -> None:
    """Catches the row and the work item each encoding the alerts again: both hold the
    one ``alerts_json`` the fact keeps, which is the alert list encoded."""
    fact = storm_facts()[0]
    alerts = fact.alerts_json
    assert bytes(alerts) == msgspec.json.encode(fact.alerts)
    ev.encode(fact)
    [message] = messages_for(State(), 7, fact, None)
    assert fact.alerts_json is alerts
    assert bytes(alerts) in ev.encode(fact)
    assert bytes(alerts) in message.payload


def test_an_encoded_group_is_the_group_notification_in_bytes_and_back() -> None:
    """Catches an ``EncodedGroup`` that encodes differently from the body it stands for
    (a webhook would post other bytes), or decodes to another body; and its first
    listed alert, which names a group's outcomes."""
    for fact in storm_facts():
        body = group_notification_of(fact)
        encoded = contracts.encoded_group(body)
        assert msgspec.json.encode(encoded) == msgspec.json.encode(body)
        assert encoded.decoded() == body
        assert contracts.outcome_identity(encoded) == contracts.outcome_identity(body)
        assert encoded.severity == body.severity == "critical"
    empty = contracts.encoded_group(msgspec.structs.replace(body, alerts=[]))
    assert (empty.severity, contracts.outcome_identity(empty)) == ("info", ("", "", body.group_key))


def test_the_encoded_twins_keep_the_fields_of_what_they_stand_for() -> None:
    """Catches a field added to a wire type and not to its encoded twin (the twin would
    drop it from the work item, the webhook body or the outcome message)."""
    pairs = [
        (contracts.EncodedGroup, GroupNotification),
        (contracts.EncodedWorkItem, WorkItem),
        (contracts.EncodedGroupDelivered, contracts.GroupDeliverySucceeded),
        (contracts.EncodedGroupDeadLettered, contracts.GroupDeliveryDeadLettered),
    ]
    for twin, original in pairs:
        assert twin.__struct_fields__ == original.__struct_fields__
        assert twin.__struct_defaults__ == original.__struct_defaults__
        assert twin.__struct_config__.omit_defaults == original.__struct_config__.omit_defaults


def test_a_listed_alert_seen_again_shows_both_instants() -> None:
    """Catches the flush's shortcut for an alert seen once (its one instant formatted
    once, for both fields) taken for an alert seen again: its ``last_seen`` is the
    later event's, its ``first_seen`` the first's."""
    run = Clocked()
    run.feed(normalized(0, host="once", service="api"), TABLE)
    run.feed(normalized(0, host="twice", service="api"), TABLE)
    run.feed(normalized(20, host="twice", service="api"), TABLE, window=60.0)
    [note] = notified(run.tick(T0 + 30 * 60 * SECOND))
    seen = {a.labels["host"]: (a.first_seen, a.last_seen) for a in note.alerts}
    assert seen["once"] == ("2027-01-15T08:00:00.000000Z", "2027-01-15T08:00:00.000000Z")
    assert seen["twice"] == ("2027-01-15T08:00:00.000000Z", "2027-01-15T08:20:00.000000Z")


def test_the_log_row_and_the_work_item_splice_the_facts_one_encoding() -> None:
    """Catches a log writer or a work item that encodes a group's alerts again instead
    of splicing ``alerts_json`` (twice the encoding on the router's core for a few
    hundred alerts a body): given an ``alerts_json`` spaced unlike msgspec's output,
    the row ``new_rows`` writes and the work item carry that spacing."""
    fact = storm_facts()[0]
    alerts = msgspec.json.encode(fact.alerts)
    spaced = alerts.replace(b'","', b'", "')
    fact.__dict__["alerts_json"] = msgspec.Raw(spaced)  # the cached property's slot
    [row] = tables.new_rows([tables.Fact(fact)], T0, 0, GENESIS).rows
    data = row[3]
    assert isinstance(data, bytes)
    assert b'"alerts":' + spaced + b',"due_at":' in data
    assert ev.decode(data) == fact
    [message] = messages_for(State(), 1, fact, None)
    assert b'"alerts":' + spaced + b',"truncated_alerts":' in message.payload
