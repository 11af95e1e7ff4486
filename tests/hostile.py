"""Hostile inbound payloads, shared by the property tests (through hypothesis) and the
run through a real service (through a seeded ``random.Random``).

A near-valid event is a valid one with some of its fields swapped for raw JSON
fragments that break a rule: a wrong type, a huge number, deep nesting, control
characters, invalid UTF-8 inside a string, a lone surrogate, NaN, 10,000 labels, or a
payload padded to 64 KiB - 1, 64 KiB or 64 KiB + 1 bytes.
"""

from __future__ import annotations

import json
import random
from typing import Any

from tocsin.core.contracts import MAX_PAYLOAD_BYTES

FIELDS = ("type", "severity", "summary", "source", "status", "labels", "fingerprint")
FIELDS += ("details", "timestamp", "event_id")

VALID: dict[str, bytes] = {
    "type": b'"disk_full"',
    "severity": b'"critical"',
    "summary": b'"disk 97% full"',
    "labels": b'{"host":"db1"}',
}

CONTROL = "".join(chr(c) for c in [*range(0x20), 0x7F, 0x85, 0x2028, 0x2029, 0x202E, 0xFEFF])


def nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# Raw JSON fragments (or not-quite-JSON) that a field's value may be replaced with.
FRAGMENTS: list[bytes] = [
    b"null",
    b"true",
    b"0",
    b"-1",
    b"1.5",
    b"[]",
    b"{}",
    b'""',
    b'" "',
    b"123456789012345678901234567890",  # beyond 64 bits
    b"-123456789012345678901234567890",
    b"9" * 5000,  # beyond msgspec's integers
    b"1e400",  # beyond a float
    b"-1e400",
    b"1e-400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'"\\ud800"',  # a lone surrogate
    b'"\\udfff x"',
    b'"\xff\xfe"',  # invalid UTF-8 inside a string
    b'"caf\xc3"',  # a cut multi-byte character
    b'"\xed\xa0\x80"',  # a surrogate encoded in UTF-8
    json.dumps(CONTROL).encode(),
    json.dumps(CONTROL, ensure_ascii=False).encode(),
    b'"{{ 7 * 7 }}{% for x in range(10**9) %}{% endfor %}"',
    b'"\\r\\nBcc: victim@example.org\\r\\n\\r\\n<script>alert(1)</script>"',
    b'"' + b"x" * 70_000 + b'"',
    nested(10),
    nested(100),
    nested(998),
    nested(3000),
    nested(20_000),
    nested_objects(50),
    nested_objects(990),
    nested_objects(5000),
    b'{"a":' + nested(2500) + b"}",
    b"[" * 5000,  # unterminated
    json.dumps({f"k{i}": "v" for i in range(10_000)}).encode(),  # 10,000 labels
    json.dumps({f"k{i}": i for i in range(40)}).encode(),
    json.dumps({"k": {"deep": list(range(100))}}).encode(),
    b'{"a":"b","a":"c"}',  # duplicate keys
    b'"2026-11-23T12:00:00Z"',
    b'"2026-11-23T12:00:00"',  # no offset
    b'"9999-12-31T23:59:59-23:59"',
    b'"0001-01-01T00:00:00+23:59"',
    b'"2026-02-30T25:61:61Z"',
    b'"sev1"',
    b'"RESOLVED"',
]


def event(fields: dict[str, bytes]) -> bytes:
    """An object from raw field fragments, in the given order."""
    return b"{" + b",".join(b'"' + k.encode() + b'":' + v for k, v in fields.items()) + b"}"


def near_valid(replacements: dict[str, bytes]) -> bytes:
    return event({**VALID, **replacements})


def padded(size: int) -> bytes:
    """A valid event of exactly ``size`` bytes (details carry the padding)."""
    head = near_valid({"details": b'{"pad":"'})
    payload = head + b'"}}'
    return head + b"p" * (size - len(payload)) + b'"}}'


SIZES = [MAX_PAYLOAD_BYTES - 1, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES + 1]
WHOLE: list[bytes] = [
    b"",
    b" ",
    b"\xef\xbb\xbf{}",  # a byte order mark
    b"\x00" * 16,
    b"[1e400]",
    b"NaN",
    nested(5000),
    nested_objects(5000),
    *(padded(size) for size in SIZES),
]


def seeded(rng: random.Random) -> bytes:
    """One hostile payload (for runs outside hypothesis)."""
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(WHOLE)
    if roll < 0.2:
        return rng.randbytes(rng.randrange(1, 300))
    if roll < 0.3:
        return near_valid({})  # valid ones too: both outcomes must be exact
    chosen = rng.sample(FIELDS, rng.randrange(1, 4))
    return near_valid({name: rng.choice(FRAGMENTS) for name in chosen})


def json_value(rng: random.Random, depth: int = 0) -> Any:
    """An arbitrary JSON value (for the service run)."""
    kinds = ["null", "bool", "int", "float", "str"] + (["list", "dict"] * (depth < 4))
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randrange(-(10**20), 10**20)
    if kind == "float":
        return rng.uniform(-1e300, 1e300)
    if kind == "str":
        return "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(0, 20)))
    if kind == "list":
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {f"k{i}": json_value(rng, depth + 1) for i in range(rng.randrange(0, 4))}
