"""tocsin.core.policy.order: a notification is not sent once its receiver accepted a
later one of the same fingerprint, and the shared record only ever goes up."""

from __future__ import annotations

import re

from tocsin.core.policy.order import Latest, before_send, decode, encode, key, raised

RESOLVE = Latest(log_seq=12, notification_id="n-resolve")


def test_an_older_notification_is_superseded_once_a_later_one_was_accepted() -> None:
    """Catches a late firing retry sent after its resolve was delivered (it would re-open
    the incident), and an old alert's late resolve sent after the new alert's firing."""
    assert before_send(10, RESOLVE) == "superseded"
    assert before_send(11, RESOLVE) == "superseded"


def test_the_same_or_a_later_notification_is_sent() -> None:
    """Catches dropping a redelivery of the accepted notification itself (equal seq: the
    worker died before acking it) or anything routed after it, or with no record."""
    assert before_send(12, RESOLVE) == "send"
    assert before_send(13, RESOLVE) == "send"
    assert before_send(1, None) == "send"


def test_the_record_is_only_ever_raised() -> None:
    """Catches a slow worker's older success lowering the record written by a later one
    (the later one's late predecessors would then be sent again)."""
    older = Latest(log_seq=10, notification_id="n-firing")
    later = Latest(log_seq=14, notification_id="n-reminder")
    assert raised(None, older) == older
    assert raised(older, RESOLVE) == RESOLVE
    assert raised(RESOLVE, older) is None
    assert raised(RESOLVE, RESOLVE) is None
    assert raised(RESOLVE, later) == later


def test_keys_are_valid_key_value_keys_whatever_the_fingerprint() -> None:
    """Catches a fingerprint used verbatim as a key: it may hold spaces, ``*``, ``>`` and
    any printable character, which JetStream key-value keys may not."""
    valid = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
    for fingerprint in ("fp1", "db 1 > * weird: {x}", "é" * 128):
        made = key("ops-hook_1", fingerprint)
        assert valid.match(made), made
        assert made.startswith("ops-hook_1.")
    assert key("r", "a") != key("r", "b")
    assert key("r", "a") != key("s", "a")
    assert key("r", "a") == key("r", "a")


def test_a_record_round_trips_and_garbage_is_no_record() -> None:
    """Catches a value written by one worker that another cannot read back."""
    assert decode(encode(RESOLVE)) == RESOLVE
    assert decode(b"not json") is None
