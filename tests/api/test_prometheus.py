"""A real Prometheus (Debian's ``prometheus``, installed by tests/system-packages.sh)
sending to a running tocsin (DESIGN.md section 14), with a real NATS, a real webhook
receiver and a real SQLite log: Prometheus's own re-sends, ``endsAt`` and resolve, not a
test's idea of them."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.support import AmMessage, HttpSink, Tocsin, free_port, wait_until, webhook_config

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERT = "TocsinE2EAlwaysFiring"

RULES = """\
groups:
  - name: tocsin-e2e
    interval: 1s
    rules:
      - alert: {alert}
        expr: {expr}
        for: 0s
        labels:
          severity: critical
        annotations:
          summary: fires on every evaluation
"""
FIRING = "vector(1) > 0"
NEVER_FIRING = "vector(1) < 0"

CONFIG = """\
global:
  evaluation_interval: 1s
rule_files:
  - {rules}
alerting:
  alertmanagers:
    - api_version: v2
      static_configs:
        - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    """``prometheus`` as a child process of this test, started and stopped by its PID;
    its output goes to a file in the test's directory, shown when it fails to start."""

    def __init__(self, workdir: Path, tocsin_port: int) -> None:
        self.workdir = workdir
        self.rules = workdir / "rules.yml"
        self.config = workdir / "prometheus.yml"
        self.output = workdir / "prometheus.log"
        self.port = free_port()
        self.tocsin_port = tocsin_port
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_rule(self, expr: str) -> None:
        self.rules.write_text(RULES.format(alert=ALERT, expr=expr))

    async def start(self) -> Prometheus:
        self.write_rule(FIRING)
        self.config.write_text(CONFIG.format(rules=self.rules, port=self.tocsin_port))
        with self.output.open("wb") as output:
            self.process = await asyncio.create_subprocess_exec(
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--rules.alert.resend-delay=1s",
                stdout=output,
                stderr=output,
            )

        async def ready() -> bool:
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"prometheus exited: {self.output.read_text()}")
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{self.url}/-/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, 60, "prometheus /-/ready")
        return self

    async def rule_expr(self) -> str | None:
        """The expression Prometheus evaluates for the alert rule now."""
        async with httpx.AsyncClient(timeout=5) as client:
            groups = (await client.get(f"{self.url}/api/v1/rules")).json()["data"]["groups"]
        return next((r["query"] for g in groups for r in g["rules"] if r["name"] == ALERT), None)

    async def reload(self) -> None:
        """SIGHUP: Prometheus re-reads its config and rule files."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), 10)


@pytest.fixture
async def am_sink() -> AsyncIterator[HttpSink]:
    """A consumer written for Alertmanager's webhook payload."""
    receiver = HttpSink()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def svc(
    data_dir: Path, nats_url: str, sink: HttpSink, am_sink: HttpSink
) -> AsyncIterator[Tocsin]:
    both = webhook_config(sink.url)
    assert 'receivers = ["hook"]' in both
    both = both.replace('receivers = ["hook"]', 'receivers = ["hook", "am"]') + (
        f'\n[receivers.am]\nchannel = "webhook"\nurl = "{am_sink.url}"\nformat = "alertmanager"\n'
    )
    service = await Tocsin(data_dir, nats_url, both).start()
    yield service
    await service.stop()
    await service.assert_live_state_is_the_log()


@pytest.fixture
async def prometheus(tmp_path: Path, svc: Tocsin) -> AsyncIterator[Prometheus]:
    assert svc.http_port is not None
    running = Prometheus(tmp_path / "prometheus", svc.http_port)
    running.workdir.mkdir()
    try:
        yield await running.start()
    finally:
        with contextlib.suppress(ProcessLookupError):
            await running.stop()


async def test_prometheus_firing_rule_pages_once_and_resolves_through_ends_at(
    svc: Tocsin, prometheus: Prometheus, sink: HttpSink, am_sink: HttpSink
) -> None:
    """Catches: Prometheus's re-sends (every evaluation or two, each with a later ``endsAt``)
    paging again instead of being suppressed by dedup, a request shape of a real
    Prometheus that ``POST /api/v2/alerts`` refuses (nothing would arrive), and a
    resolve that does not come through ``endsAt``: once the rule stops firing, the alert
    must resolve (by Prometheus's resolved send, whose ``endsAt`` is past, or by the
    clock at the last ``endsAt``), notify ``resolved`` once, and not again for
    Prometheus's resolved re-sends."""
    await wait_until(lambda: len(sink.requests) >= 1, 60, "the first notification")
    await wait_until(lambda: svc.count("alert.received") >= 3, 60, "three sends by Prometheus")
    sent = svc.count("alert.received")
    # Every re-send received so far was judged (a duplicate) before counting pages.
    await wait_until(lambda: svc.count("alert.suppressed") >= sent - 1, 30, "re-sends judged")
    assert len(sink.requests) == 1
    assert sorted(r["receiver"] for r in svc.events("alert.routed")) == ["am", "hook"]
    page = sink.requests[0].json()
    assert (page["type"], page["severity"], page["reason"]) == (ALERT, "critical", "firing")
    received = svc.events("alert.received")
    assert {r["source"] for r in received} == {"prometheus"}
    assert len({r["fingerprint"] for r in received}) == 1
    assert all(r["status"] == "firing" for r in received)

    prometheus.write_rule(NEVER_FIRING)
    await prometheus.reload()

    async def never_firing_loaded() -> bool:
        return await prometheus.rule_expr() == NEVER_FIRING

    await wait_until(never_firing_loaded, 30, "prometheus to load the never-firing rule")
    # The consumer of Alertmanager's payload got the same page, decoded as Go decodes it.
    await wait_until(lambda: len(am_sink.requests) >= 1, 30, "the Alertmanager-format page")
    firing = msgspec.json.decode(am_sink.requests[0].body, type=AmMessage)
    assert (firing.status, firing.version, firing.receiver) == ("firing", "4", "am")
    (alert,) = firing.alerts
    assert (alert.labels["alertname"], alert.labels["severity"]) == (ALERT, "critical")
    assert alert.annotations["summary"] == "fires on every evaluation"
    await wait_until(lambda: len(sink.requests) == 2, 30, "the resolved notification")
    resolved = sink.requests[1].json()
    assert (resolved["type"], resolved["reason"]) == (ALERT, "resolved")
    (closed,) = svc.events("alert.resolved")
    # Either Prometheus's resolved send (its ``endsAt`` past on arrival; ``by`` unset)
    # or, when the last firing re-send's ``endsAt`` passed first, the clock at that
    # ``endsAt``. Prometheus 2.42 sends the resolve a few evaluations after the reload,
    # about when that ``endsAt`` (4 evaluations ahead) falls due, so either may win.
    assert closed.get("by") in (None, "ends_at")
    # Prometheus keeps re-sending the resolved alert: recorded, never notified again.
    await wait_until(lambda: svc.count("alert.resolve_ignored") >= 1, 30, "a resolved re-send")
    assert len(sink.requests) == 2
    await wait_until(lambda: len(am_sink.requests) == 2, 30, "the Alertmanager-format resolve")
    gone = msgspec.json.decode(am_sink.requests[1].body, type=AmMessage)
    assert (gone.status, gone.alerts[0].status) == ("resolved", "resolved")
    assert gone.alerts[0].endsAt > gone.alerts[0].startsAt
