"""Schemathesis against the running service's own ``/openapi.json``: whatever the
generated input (valid, invalid, hostile), no answer is a 5xx. The service runs with a
real NATS and log, with an API token, so the mutating endpoints are exercised too."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from tests.support import HttpSink, Tocsin, publish, wait_until, webhook_config

TOKEN = "fuzz-token"


async def test_no_generated_request_gets_a_server_error(
    data_dir: Path, nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    svc = await Tocsin(data_dir, nats_url, webhook_config(sink.url), api_token=TOKEN).start()
    try:
        await publish(
            nats_url,
            "alerts.in.fuzz",
            {"type": "seed", "severity": "error", "summary": "an alert to act on"},
        )
        await wait_until(lambda: len(sink.requests) == 1, 10, "the seed notification")
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{svc.api}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "20261123",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "all",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 240)
        report = output.decode(errors="replace")
        (tmp_path / "schemathesis.txt").write_text(report)
        assert process.returncode == 0, report[-6000:]
        counts = re.search(r"(\d+) generated, (\d+) passed", report)
        assert counts is not None, report[-2000:]
        generated, passed = int(counts.group(1)), int(counts.group(2))
        assert generated == passed, report[-4000:]
        assert generated >= 100, report[-2000:]  # every operation was really exercised
    finally:
        await svc.stop()
