"""The router's pure helpers."""

from __future__ import annotations

import re

from tocsin.pipeline import router


def test_ids_are_20_hex_digits_and_distinct_across_pool_refills() -> None:
    ids = [router.new_id() for _ in range(5000)]  # several refills of the pool
    assert all(re.fullmatch(r"[0-9a-f]{20}", i) for i in ids)
    assert len(set(ids)) == len(ids)
