"""tocsin.ingest: the inbound event rules of DESIGN.md section 4 (validate, normalize,
fingerprint, sanitize) and the capped raw bytes of rejected events (section 10)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tocsin.core import ingest
from tocsin.core.ingest import KNOWN_FIELDS, Normalized, Rejection, capped_raw, parse

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def us(moment: datetime) -> int:
    """Microseconds since the epoch, computed exactly."""
    return (moment - EPOCH) // timedelta(microseconds=1)


RECEIVED_US = us(RECEIVED)


def event(**fields: Any) -> dict[str, Any]:
    """A valid event body; keyword arguments override or add fields."""
    body: dict[str, Any] = {
        "type": "order_rejected",
        "severity": "critical",
        "summary": "order 42 rejected",
    }
    body.update(fields)
    return body


def without(field: str) -> dict[str, Any]:
    body = event()
    del body[field]
    return body


def run(body: Any, *, msg_id: str | None = None) -> Normalized | Rejection:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse(payload, default_source="orders", received_at=RECEIVED_US, msg_id=msg_id)


def accept(body: Any, *, msg_id: str | None = None) -> Normalized:
    result = run(body, msg_id=msg_id)
    assert isinstance(result, Normalized), result
    return result


def reject(body: Any) -> Rejection:
    result = run(body)
    assert isinstance(result, Rejection), result
    return result


def assert_field_rejected(body: Any, field: str) -> None:
    rejection = reject(body)
    assert (rejection.code, rejection.field, rejection.http_status) == (
        "invalid_field",
        field,
        422,
    )


def encoded_size(details: dict[str, Any]) -> int:
    return len(json.dumps(details, separators=(",", ":"), ensure_ascii=False).encode())


# --- severity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("critical", "critical"),
        ("CRITICAL", "critical"),
        ("Critical", "critical"),
        ("error", "error"),
        ("ERROR", "error"),
        ("warning", "warning"),
        ("Warning", "warning"),
        ("info", "info"),
        ("INFO", "info"),
        ("sev1", "critical"),
        ("SEV1", "critical"),
        ("sev2", "warning"),
        ("Sev2", "warning"),
        ("sev3", "info"),
        ("fatal", "critical"),
        ("FATAL", "critical"),
        ("warn", "warning"),
        ("WARN", "warning"),
    ],
)
def test_severity_is_case_insensitive_and_aliases_normalize(given: str, expected: str) -> None:
    assert accept(event(severity=given)).severity == expected


@pytest.mark.parametrize("given", ["high", "sev4", "crit", "", "debug"])
def test_unknown_severity_is_rejected(given: str) -> None:
    assert_field_rejected(event(severity=given), "severity")


# --- summary ----------------------------------------------------------------------------

DIGITS = "0123456789" * 100


def test_summary_of_255_characters_is_kept() -> None:
    assert accept(event(summary=DIGITS[:255])).summary == DIGITS[:255]


@pytest.mark.parametrize("length", [256, 300, 5000])
def test_long_summary_is_cut_to_252_characters_and_an_ellipsis(length: int) -> None:
    summary = accept(event(summary=(DIGITS * 10)[:length])).summary
    assert summary == DIGITS[:252] + "..."
    assert len(summary) == 255


def test_summary_is_cut_by_characters_not_bytes() -> None:
    assert accept(event(summary="é" * 255)).summary == "é" * 255
    assert accept(event(summary="é" * 256)).summary == "é" * 252 + "..."


def test_empty_summary_is_rejected() -> None:
    assert_field_rejected(event(summary=""), "summary")


# --- type -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        *("a", "0", "order_rejected", "disk.full", "a:b-c_d.e", "9lives", "a" * 128),
        *("A", "KubePodCrashLooping", "Order_rejected"),  # case-sensitive, as Alertmanager's
    ],
)
def test_type_matching_the_pattern_is_accepted(kind: str) -> None:
    assert accept(event(type=kind)).type == kind


@pytest.mark.parametrize(
    "kind",
    ["", "_x", "-x", ".x", ":x", "a b", "a/b", "naïve", "a" * 129],
)
def test_type_breaking_the_pattern_is_rejected(kind: str) -> None:
    assert_field_rejected(event(type=kind), "type")


def test_types_differing_in_case_are_different_alerts() -> None:
    assert accept(event(type="DiskFull")).fingerprint != accept(event(type="diskfull")).fingerprint


@pytest.mark.parametrize("name", ["host", "_private", "k8s.io-app_name", "A" * 128])
def test_label_names_of_the_contract_are_accepted(name: str) -> None:
    assert accept(event(labels={name: "v"})).labels == {name: "v"}


@pytest.mark.parametrize("name", ["", "9lives", "-x", ".x", "a b", "a/b", "é", "a" * 129])
def test_a_label_name_breaking_the_pattern_is_rejected_naming_it(name: str) -> None:
    assert_field_rejected(event(labels={name: "v"}), f"labels.{name[:64]}")


def test_a_label_value_over_1024_characters_is_rejected_naming_its_label() -> None:
    assert accept(event(labels={"k": "é" * 1024})).labels == {"k": "é" * 1024}
    assert_field_rejected(event(labels={"k": "v" * 1025}), "labels.k")


# --- source and status ------------------------------------------------------------------


def test_source_defaults_to_the_default_source() -> None:
    assert accept(event()).source == "orders"


def test_explicit_source_is_kept() -> None:
    assert accept(event(source="payments")).source == "payments"


def test_status_defaults_to_firing() -> None:
    assert accept(event()).status == "firing"


@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_status_firing_and_resolved_are_accepted(status: str) -> None:
    assert accept(event(status=status)).status == status


@pytest.mark.parametrize("status", ["closed", "ok", "fired", ""])
def test_other_status_is_rejected(status: str) -> None:
    assert_field_rejected(event(status=status), "status")


# --- labels -----------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [["env", "prod"], "env=prod", 3, True])
def test_labels_that_are_not_an_object_are_rejected(labels: Any) -> None:
    assert_field_rejected(event(labels=labels), "labels")


@pytest.mark.parametrize("value", [1, True, None, ["prod"], {"x": "y"}])
def test_non_string_label_value_is_rejected_naming_the_label(value: Any) -> None:
    assert_field_rejected(event(labels={"host": "db-1", "env": value}), "labels.env")


def test_labels_are_kept() -> None:
    labels = {"host": "db-1", "env": "prod"}
    assert accept(event(labels=labels)).labels == labels


def test_32_labels_are_accepted() -> None:
    labels = {f"k{i}": str(i) for i in range(32)}
    assert accept(event(labels=labels)).labels == labels


def test_33_labels_are_rejected() -> None:
    assert_field_rejected(event(labels={f"k{i}": str(i) for i in range(33)}), "labels")


# --- fingerprint ------------------------------------------------------------------------


@pytest.mark.parametrize("fingerprint", ["x", " Host DB-1 / disk ", "é" * 10, "f" * 128])
def test_explicit_fingerprint_is_kept_verbatim(fingerprint: str) -> None:
    assert accept(event(fingerprint=fingerprint)).fingerprint == fingerprint


@pytest.mark.parametrize("fingerprint", ["", "f" * 129, "a\nb", "tab\there", "nul\x00", "\x1b[0m"])
def test_fingerprint_too_long_empty_or_not_printable_is_rejected(fingerprint: str) -> None:
    assert_field_rejected(event(fingerprint=fingerprint), "fingerprint")


def test_default_fingerprint_is_stable_and_ignores_label_order() -> None:
    first = accept(event(labels={"host": "db-1", "mount": "/var", "env": "prod"}))
    again = accept(event(labels={"host": "db-1", "mount": "/var", "env": "prod"}))
    reordered = accept(event(labels={"env": "prod", "mount": "/var", "host": "db-1"}))
    assert first.fingerprint == again.fingerprint == reordered.fingerprint
    assert first.fingerprint.isprintable()
    assert 1 <= len(first.fingerprint) <= 128


def test_default_fingerprint_depends_only_on_type_and_labels() -> None:
    base = accept(event(labels={"host": "db-1"}))
    same_identity = accept(
        event(
            labels={"host": "db-1"},
            severity="info",
            summary="something else",
            source="elsewhere",
            details={"n": 1},
            timestamp="2026-11-23T11:00:00Z",
        )
    )
    assert same_identity.fingerprint == base.fingerprint


@pytest.mark.parametrize(
    "changes",
    [
        {"type": "order_accepted"},
        {"labels": {"host": "db-2"}},
        {"labels": {"host": "db-1", "env": "prod"}},
        {"labels": {}},
        {"labels": {"hostx": "db-1"}},
    ],
)
def test_default_fingerprint_differs_when_type_or_labels_differ(changes: dict[str, Any]) -> None:
    base = accept(event(labels={"host": "db-1"}))
    assert accept(event(**{"labels": {"host": "db-1"}, **changes})).fingerprint != base.fingerprint


def test_default_fingerprint_value_is_pinned() -> None:
    # Fingerprints are stored in the log: a change of hash would split every open alert
    # in two after an upgrade, so the value itself is part of the contract.
    body = {"type": "disk_full", "severity": "warning", "summary": "s"}
    body["labels"] = {"host": "db-1", "mount": "/var"}
    assert accept(body).fingerprint == "325f6f415435cd2692f113018580a5ec"


def test_a_remembered_fingerprint_is_the_one_computed_in_either_label_order() -> None:
    # Remembered by type and labels in the order given (issue #20): a look-up must give
    # what the hash gives, for the first order seen and for another.
    ingest._fingerprints.clear()
    labels = {"host": "db-1", "mount": "/var"}
    first = ingest.default_fingerprint("disk_full", labels)
    assert ("disk_full", *labels.items()) in ingest._fingerprints
    assert ingest.default_fingerprint("disk_full", labels) == first
    assert ingest.default_fingerprint("disk_full", {"mount": "/var", "host": "db-1"}) == first
    assert first == "325f6f415435cd2692f113018580a5ec"
    assert ingest.default_fingerprint("disk_full", {"host": "db-1", "mount": "/va"}) != first
    assert ingest.default_fingerprint("disk_ful", labels) != first


def test_the_remembered_fingerprints_are_bounded() -> None:
    ingest._fingerprints.clear()
    kept = ingest._FINGERPRINTS_KEPT
    computed = [ingest.default_fingerprint("t", {"n": str(n)}) for n in range(kept + 10)]
    assert len(ingest._fingerprints) <= kept
    assert len(set(computed)) == kept + 10
    assert ingest.default_fingerprint("t", {"n": "0"}) == computed[0]  # forgotten: again


# --- details ----------------------------------------------------------------------------


def test_details_default_to_an_empty_object() -> None:
    assert accept(event()).details == {}


@pytest.mark.parametrize("details", [["a"], "text", 12, True])
def test_details_that_are_not_an_object_are_rejected(details: Any) -> None:
    assert_field_rejected(event(details=details), "details")


def test_details_within_limits_are_untouched() -> None:
    details = {
        "order": 42,
        "ok": False,
        "price": 1.5,
        "note": "n" * 512,
        "nested": {"items": ["a", {"b": "c"}], "none": None},
    }
    details.update({f"k{i}": i for i in range(15)})
    assert len(details) == 20
    out = accept(event(details=details)).details
    assert out == details
    assert "_truncated" not in out


@pytest.mark.parametrize("count", [21, 50])
def test_more_than_20_detail_keys_are_cut_to_20_including_the_mark(count: int) -> None:
    details = {f"k{i:02d}": i for i in range(count)}
    out = accept(event(details=details)).details
    assert len(out) <= 20
    assert out["_truncated"] is True
    kept = {key: value for key, value in out.items() if key != "_truncated"}
    assert kept
    assert all(details[key] == value for key, value in kept.items())


def test_detail_key_count_stays_at_most_20_when_the_mark_is_added() -> None:
    details: dict[str, Any] = {f"k{i:02d}": i for i in range(20)}
    details["k00"] = "x" * 600
    out = accept(event(details=details)).details
    assert out["_truncated"] is True
    assert len(out) <= 20


def test_detail_string_of_513_characters_is_cut_to_512() -> None:
    out = accept(event(details={"log": "x" * 513, "n": 1})).details
    assert out == {"log": "x" * 512, "n": 1, "_truncated": True}


def test_detail_strings_nested_in_lists_and_objects_are_cut() -> None:
    details = {"lines": ["ok", "y" * 600], "ctx": {"trace": "z" * 1000, "deep": [{"w": "w" * 700}]}}
    out = accept(event(details=details)).details
    assert out == {
        "lines": ["ok", "y" * 512],
        "ctx": {"trace": "z" * 512, "deep": [{"w": "w" * 512}]},
        "_truncated": True,
    }


def test_detail_key_longer_than_512_characters_is_cut_and_marked() -> None:
    out = accept(event(details={"k" * 600: 1})).details
    assert out == {"k" * 512: 1, "_truncated": True}


@pytest.mark.parametrize(
    "details",
    [
        {f"k{i:02d}": "y" * 500 for i in range(20)},
        {"big": ["z" * 100] * 200},
        {"a": "x" * 500, "b": {f"n{i}": "v" * 400 for i in range(40)}},
    ],
)
def test_details_are_kept_within_8_kib_encoded(details: dict[str, Any]) -> None:
    assert encoded_size(details) > 8192
    out = accept(event(details=details)).details
    assert encoded_size(out) <= 8192
    assert out["_truncated"] is True


# --- timestamp --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T11:30:00Z", datetime(2026, 11, 23, 11, 30, tzinfo=UTC)),
        ("2026-11-23T11:30:00+00:00", datetime(2026, 11, 23, 11, 30, tzinfo=UTC)),
        ("2026-11-23T13:30:00+02:00", datetime(2026, 11, 23, 11, 30, tzinfo=UTC)),
        ("2026-11-23T06:30:00-05:00", datetime(2026, 11, 23, 11, 30, tzinfo=UTC)),
        ("2026-11-23T11:30:00.250000Z", datetime(2026, 11, 23, 11, 30, 0, 250000, tzinfo=UTC)),
        ("2026-11-22T00:00:00+02:00", datetime(2026, 11, 21, 22, 0, tzinfo=UTC)),
    ],
)
def test_timestamp_with_offset_becomes_microseconds_since_epoch(
    text: str, expected: datetime
) -> None:
    result = accept(event(timestamp=text))
    assert result.timestamp == us(expected)
    assert result.timestamp_replaced is False


def test_timestamp_defaults_to_receive_time() -> None:
    result = accept(event())
    assert (result.timestamp, result.timestamp_replaced) == (RECEIVED_US, False)


@pytest.mark.parametrize(
    "text", ["2026-11-23T11:30:00", "2026-11-23 11:30:00", "2026-11-23", "yesterday", ""]
)
def test_timestamp_without_an_offset_or_unreadable_is_rejected(text: str) -> None:
    assert_field_rejected(event(timestamp=text), "timestamp")


def test_timestamp_that_is_not_a_string_is_rejected() -> None:
    assert_field_rejected(event(timestamp=1_700_000_000), "timestamp")


def test_timestamp_more_than_5_minutes_ahead_is_replaced_by_receive_time() -> None:
    ahead = (RECEIVED + timedelta(minutes=5, seconds=1)).isoformat()
    result = accept(event(timestamp=ahead))
    assert (result.timestamp, result.timestamp_replaced) == (RECEIVED_US, True)


def test_timestamp_4_minutes_ahead_is_kept() -> None:
    ahead = RECEIVED + timedelta(minutes=4)
    result = accept(event(timestamp=ahead.isoformat()))
    assert (result.timestamp, result.timestamp_replaced) == (us(ahead), False)


def test_timestamp_in_the_past_is_kept() -> None:
    past = RECEIVED - timedelta(days=3)
    assert accept(event(timestamp=past.isoformat())).timestamp == us(past)


# --- event_id ---------------------------------------------------------------------------


def test_event_id_from_the_body_wins_over_msg_id() -> None:
    assert accept(event(event_id="body-1"), msg_id="header-1").event_id == "body-1"


def test_msg_id_is_used_when_the_body_has_no_event_id() -> None:
    assert accept(event(), msg_id="header-1").event_id == "header-1"


def test_event_id_is_none_without_either() -> None:
    assert accept(event()).event_id is None


# --- fields the contract does not know (issue #23 item 6) ------------------------------


def test_an_unknown_field_is_accepted_and_named() -> None:
    """A typo (``lables``) is not refused, a publisher may send a newer field, but it
    is not dropped without a word either."""
    normalized = accept(event(lables={"host": "db1"}))
    assert normalized.ignored_fields == ("lables",)
    assert normalized.labels == {}


def test_an_event_of_known_fields_ignores_none() -> None:
    assert accept(event(labels={"host": "db1"}, event_id="e1")).ignored_fields == ()


def test_every_field_of_section_4_is_known_ends_at_included() -> None:
    """``ends_at`` is in DESIGN.md section 4 before tocsin acts on it: never "ignored"."""
    every = event(
        source="orders",
        status="firing",
        labels={"host": "db1"},
        fingerprint="f",
        details={"k": 1},
        timestamp=RECEIVED.isoformat(),
        ends_at=(RECEIVED + timedelta(hours=1)).isoformat(),
        event_id="e1",
    )
    assert set(every) == KNOWN_FIELDS
    assert accept(every).ignored_fields == ()


def test_the_lenient_pass_knows_the_same_fields_as_the_contract() -> None:
    assert set(ingest._Raw.__struct_fields__) == KNOWN_FIELDS


def test_unknown_fields_are_named_in_order_each_once() -> None:
    payload = b'{"zeta": 1, "type": "t", "severity": "info", "summary": "s", "alpha": 2, "zeta": 3}'
    assert accept(payload).ignored_fields == ("zeta", "alpha")


def test_at_most_20_ignored_names_each_cut_to_64_characters() -> None:
    """A hostile payload of thousands of keys does not bloat the log."""
    body = event(**{f"{'k' * 100}{n:05d}": n for n in range(400)})
    ignored = accept(body).ignored_fields
    # The 100-character names all cut to the same 64: reported once.
    assert ignored == ("k" * 64,)
    body = event(**{f"extra_{n}": n for n in range(50)})
    assert accept(body).ignored_fields == tuple(f"extra_{n}" for n in range(20))


def test_an_unknown_field_does_not_change_how_a_bad_event_is_refused() -> None:
    """The strict first pass only routes payloads with unknown fields to the lenient
    one: errors are the same, with or without an unknown field before them."""
    assert_field_rejected({"lables": {}, **without("type")}, "type")
    assert reject(b'{"lables": 1, "type": ').code == "invalid_json"
    assert reject(b'{"lables": 1, "summary": 1e400}').field == "summary"


# --- payload-level rejections -----------------------------------------------------------


def padded_payload(size: int) -> bytes:
    """A valid event of exactly ``size`` bytes (the summary carries the padding)."""
    skeleton = len(json.dumps(event(summary="")).encode())
    payload = json.dumps(event(summary="s" * (size - skeleton))).encode()
    assert len(payload) == size
    return payload


def test_payload_of_64_kib_is_accepted() -> None:
    assert isinstance(run(padded_payload(64 * 1024)), Normalized)


def test_payload_over_64_kib_is_rejected_with_413() -> None:
    rejection = reject(padded_payload(64 * 1024 + 1))
    assert (rejection.code, rejection.field, rejection.http_status) == (
        "payload_too_large",
        None,
        413,
    )


@pytest.mark.parametrize("payload", [b"{not json", b"", b'{"type": "a",', b"{'type': 'a'}"])
def test_invalid_json_is_rejected_with_400(payload: bytes) -> None:
    rejection = reject(payload)
    assert (rejection.code, rejection.http_status) == ("invalid_json", 400)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe{}",
        b'{"type": "a", "severity": "info", "summary": "caf\xe9"}',
        b'{"type": "a", "severity": "info", "summary": "s", "details": {"k": "\xc3("}}',
        b'{"type": "a", "severity": "info", "summary": "s", "labels": {"k": "\xed\xa0\x80"}}',
    ],
    ids=["bare-bytes", "in-summary", "in-details", "surrogate-in-labels"],
)
def test_invalid_utf8_is_rejected_not_raised(payload: bytes) -> None:
    rejection = reject(payload)
    assert (rejection.code, rejection.http_status) == ("invalid_json", 400)


@pytest.mark.parametrize("payload", [b"[1, 2]", b"42", b'"text"', b"null", b"true"])
def test_json_that_is_not_an_object_is_rejected_with_400(payload: bytes) -> None:
    rejection = reject(payload)
    assert (rejection.code, rejection.http_status) == ("not_an_object", 400)


@pytest.mark.parametrize("field", ["type", "severity", "summary"])
def test_missing_required_field_is_rejected_naming_it(field: str) -> None:
    assert_field_rejected(without(field), field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", 5),
        ("type", None),
        ("severity", 1),
        ("summary", ["x"]),
        ("source", 3),
        ("status", True),
        ("fingerprint", 7),
        ("event_id", 9),
    ],
)
def test_field_of_the_wrong_type_is_rejected_naming_it(field: str, value: Any) -> None:
    assert_field_rejected(event(**{field: value}), field)


# --- capped_raw -------------------------------------------------------------------------


def test_capped_raw_keeps_short_utf8_as_text() -> None:
    assert capped_raw("héllo, wörld".encode()) == ("héllo, wörld", "utf-8")


def test_capped_raw_cuts_ascii_to_1024_characters() -> None:
    assert capped_raw(b"a" * 1000 + b"b" * 1000) == ("a" * 1000 + "b" * 24, "utf-8")


def test_capped_raw_of_exactly_1024_bytes_is_whole() -> None:
    assert capped_raw(b"c" * 1024) == ("c" * 1024, "utf-8")


@pytest.mark.parametrize(
    ("prefix", "char"), [(1023, "é"), (1022, "€"), (1023, "€"), (1021, "😀"), (1023, "😀")]
)
def test_capped_raw_cuts_back_a_character_split_by_the_cut(prefix: int, char: str) -> None:
    text, encoding = capped_raw(b"a" * prefix + char.encode() + b"tail")
    assert (text, encoding) == ("a" * prefix, "utf-8")


def test_capped_raw_falls_back_to_base64_for_invalid_utf8_early() -> None:
    payload = b"\xff" + b"a" * 2000
    text, encoding = capped_raw(payload)
    assert encoding == "base64"
    assert base64.b64decode(text) == payload[:1024]


def test_capped_raw_short_invalid_utf8_is_base64_of_all_of_it() -> None:
    payload = b"abc\xff"
    assert capped_raw(payload) == (base64.b64encode(payload).decode(), "base64")


def test_capped_raw_invalid_byte_just_before_the_cut_is_not_a_split_character() -> None:
    # 0xff is never part of UTF-8: these bytes do not decode, cut or not.
    payload = b"a" * 1022 + b"\xff" + b"a" * 100
    text, encoding = capped_raw(payload)
    assert encoding == "base64"
    assert base64.b64decode(text) == payload[:1024]


def test_ends_at_with_offset_is_kept_as_microseconds() -> None:
    ends = (RECEIVED + timedelta(minutes=30)).isoformat()
    assert accept(event(ends_at=ends)).ends_at == us(RECEIVED + timedelta(minutes=30))
    assert accept(event()).ends_at is None
    assert "ends_at" not in accept(event(ends_at=ends)).ignored_fields


@pytest.mark.parametrize("value", ["2026-11-23T11:30:00", "soon", 1_700_000_000])
def test_ends_at_without_an_offset_or_unreadable_is_rejected(value: object) -> None:
    assert_field_rejected(event(ends_at=value), "ends_at")


def test_names_seen_to_match_are_kept_and_bounded_and_bad_ones_always_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Catches the types and label names kept once matched (issue #20: a set lookup
    instead of the pattern's match) letting through what the pattern refuses, or growing
    without bound: a name is kept only once it matched, and once ``_NAMES_KEPT`` are
    kept, a new good name is matched and accepted but not kept, and a bad one still
    refused, as the first time."""
    monkeypatch.setattr(ingest, "_types_matched", set())
    monkeypatch.setattr(ingest, "_label_names_matched", set())
    monkeypatch.setattr(ingest, "_NAMES_KEPT", 3)
    for n in range(5):
        accept(event(type=f"t{n}", labels={f"l{n}": "v", "host": "h"}))
        assert_field_rejected(event(type=f"t{n} x"), "type")
        assert_field_rejected(event(labels={f"l{n}": "v", "a b": "v"}), "labels.a b")
    assert ingest._types_matched == {"order_rejected", "t0", "t1"}
    assert ingest._label_names_matched == {"l0", "host", "l1"}
    assert accept(event(type="t4", labels={"l4": "v"})).labels == {"l4": "v"}
