"""tocsin.core.deliveries: a dict of deliveries some of which are still encoded reads
as the dict of their decoded values, and decodes for good only what is asked for."""

from __future__ import annotations

import msgspec
import pytest
from msgspec import Raw

from tocsin.core.deliveries import (
    Deliveries,
    each_delivery,
    encoded,
    open_deliveries,
    sweep_facts,
)
from tocsin.core.state import Delivery

PENDING = Delivery(
    notification_id="n1", alert_id="a1", receiver="hook", reason="firing", routed_seq=3
)
DELIVERED = Delivery(
    notification_id="n2",
    alert_id="a2",
    receiver="hook",
    reason="resolved",
    routed_seq=5,
    status="delivered",
    channel="webhook",
    attempts=1,
    updated_at=1_800_000_000_000_000,
    settled_ts=1_800_000_001_000_000,
)
SUPERSEDED = msgspec.structs.replace(
    DELIVERED, notification_id="n3", alert_id="a3", status="superseded", settled_ts=7
)


def _kept() -> Deliveries:
    """As a start leaves them: the pending one decoded, the two settled encoded."""
    return Deliveries(
        {
            "n1": PENDING,
            "n2": Raw(msgspec.msgpack.encode(DELIVERED)),  # type: ignore[dict-item]
            "n3": Raw(msgspec.msgpack.encode(SUPERSEDED)),  # type: ignore[dict-item]
        }
    )


def _still_encoded(deliveries: dict[str, Delivery]) -> set[str]:
    return {key for key, value in dict.items(deliveries) if encoded(value)}


def test_an_encoded_delivery_is_decoded_when_asked_for_and_kept_decoded() -> None:
    """Catches a lookup that answers with the encoding (the fold would then change a
    ``Raw``), one that decodes anew at every lookup (two lookups, two objects: the
    fold's change to one lost), and a key that reads as absent while encoded."""
    deliveries = _kept()
    assert len(deliveries) == 3
    assert "n2" in deliveries
    found = deliveries.get("n2")
    assert found == DELIVERED
    assert deliveries.get("n2") is found
    assert deliveries["n2"] is found
    assert _still_encoded(deliveries) == {"n3"}
    assert deliveries["n3"] == SUPERSEDED
    assert deliveries.get("nope") is None
    assert deliveries.get("nope", PENDING) is PENDING
    with pytest.raises(KeyError):
        deliveries["nope"]
    assert _kept().pop("n2") == DELIVERED
    assert _kept().pop("nope", None) is None


def test_readers_of_what_may_be_sent_or_of_every_delivery_decode_none_for_good() -> None:
    """Catches the start's outbox, a re-queue's dead letters, a scan for a receiver's
    name and the retention sweep decoding every settled delivery of a long log for
    good (the start's saving gone at the first sweep), and a sweep that reads an
    encoded delivery's status, settled time or alert wrong."""
    deliveries = _kept()
    assert list(open_deliveries(deliveries)) == [PENDING]
    assert sorted(each_delivery(deliveries), key=lambda d: d.notification_id) == [
        PENDING,
        DELIVERED,
        SUPERSEDED,
    ]
    assert sorted(sweep_facts(deliveries)) == [
        ("n1", "pending", None, "a1"),
        ("n2", "delivered", DELIVERED.settled_ts, "a2"),
        ("n3", "superseded", 7, "a3"),
    ]
    assert _still_encoded(deliveries) == {"n2", "n3"}
    plain = {"n1": PENDING}
    assert list(open_deliveries(plain)) == [PENDING]
    assert list(sweep_facts(plain)) == [("n1", "pending", None, "a1")]


def test_it_compares_copies_and_iterates_as_the_dict_of_its_deliveries() -> None:
    """Catches a projection restored from a snapshot compared unequal to the log's fold
    (``tocsin verify``), copies or merges (``core.merged``) that carry an encoding into
    a plain dict, and ``values``/``items`` handing one out."""
    decoded = {"n1": PENDING, "n2": DELIVERED, "n3": SUPERSEDED}
    assert _kept() == decoded
    assert decoded == _kept()
    assert (_kept() != decoded) is False
    assert (decoded != _kept()) is False
    changed = dict(decoded, n3=msgspec.structs.replace(SUPERSEDED, attempts=2))
    assert _kept() != changed
    assert changed != _kept()
    assert _kept() != {"n1": PENDING}
    assert dict(_kept()) == decoded
    assert {**_kept()} == decoded
    merged: dict[str, Delivery] = {}
    merged.update(_kept())
    assert merged == decoded
    assert not _still_encoded(merged)
    copied = _kept().copy()
    assert isinstance(copied, Deliveries)
    assert copied == decoded
    assert repr(_kept()) == f"Deliveries({decoded!r})"
    deliveries = _kept()
    assert sorted(d.notification_id for d in deliveries.values()) == ["n1", "n2", "n3"]
    assert not _still_encoded(deliveries)
    deliveries = _kept()
    assert dict(deliveries.items()) == decoded
    assert not _still_encoded(deliveries)
