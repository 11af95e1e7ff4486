"""max_per_minute: over the limit, notifications wait their turn (never dropped),
critical ones first, and the wait is logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support import HttpSink, Tocsin, publish, wait_until, webhook_config
from tocsin.core.policy.throttle import PriorityLine, TokenBucket


def test_bucket_allows_the_burst_then_one_token_per_interval() -> None:
    bucket = TokenBucket(per_minute=60, burst=10)
    assert all(bucket.take(0.0) for _ in range(10))
    assert not bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(1.0)
    assert bucket.wait(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0)
    assert not bucket.take(1.0)


def test_bucket_never_holds_more_than_its_burst() -> None:
    bucket = TokenBucket(per_minute=120)  # burst defaults to a sixth: 20
    assert bucket.capacity == 20
    bucket.take(0.0)
    taken = sum(bucket.take(3600.0) for _ in range(100))
    assert taken == 20


def test_a_budget_under_one_per_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TokenBucket(per_minute=0)


def test_line_serves_higher_severity_first_then_arrival_order() -> None:
    line: PriorityLine[str] = PriorityLine()
    for severity, name in [
        ("warning", "w1"),
        ("info", "i1"),
        ("critical", "c1"),
        ("warning", "w2"),
        ("critical", "c2"),
        ("error", "e1"),
    ]:
        line.push(severity, name)
    assert [line.pop() for _ in range(len(line))] == ["c1", "c2", "e1", "w1", "w2", "i1"]


async def test_throttled_receiver_delays_sends_critical_first_and_drops_none(
    nats_url: str, sink: HttpSink, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tocsin.delivery")
    toml = webhook_config(sink.url).replace('timeout = "2s"', 'timeout = "2s"\nmax_per_minute = 60')
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        for i in range(12):
            await publish(
                nats_url,
                "alerts.in.t",
                {
                    "type": "slow",
                    "severity": "warning",
                    "summary": f"w{i}",
                    "labels": {"i": str(i)},
                },
            )
        for i in range(2):
            await publish(
                nats_url,
                "alerts.in.t",
                {
                    "type": "slow",
                    "severity": "critical",
                    "summary": f"c{i}",
                    "labels": {"c": str(i)},
                },
            )
        await wait_until(lambda: len(sink.requests) == 14, 20, "all 14 notifications")
        order = [r.json()["summary"] for r in sink.requests]
        assert sorted(order[:10]) == sorted(f"w{i}" for i in range(10))
        assert order[10:12] == ["c0", "c1"]
        assert sorted(order[12:]) == ["w10", "w11"]
        gaps = [b.at - a.at for a, b in zip(sink.requests[10:], sink.requests[11:], strict=False)]
        assert min(gaps) >= 0.8  # one token a second once the burst of 10 is spent
        assert any("throttled" in r.getMessage() for r in caplog.records)
        metrics = await service.metrics()
        waits = frozenset({("receiver", "hook")})
        assert metrics[("tocsin_throttle_delay_seconds_count", waits)] == 14
        assert metrics[("tocsin_throttle_delay_seconds_sum", waits)] >= 4 * 0.8
        await wait_until(lambda: service.count("delivery.succeeded") == 14, 10, "outcomes")
    finally:
        await service.stop()
