"""Publish alerts with tocsin-client (docs/publishing.md): never raises, never blocks
past its timeout, spools what NATS did not acknowledge and re-sends it later."""

import logging

from tocsin_client import AlertEmitter, ThresholdSignal, emit_alert, flush

logging.basicConfig(level=logging.INFO)  # the library logs what it spooled or dropped

# True once JetStream stored it; False: spooled, re-sent by the next emit or flush().
stored = emit_alert(
    "error",
    "card processor returned 502",
    "3 retries failed for order 1234",
    {"processor": "acme", "order": 1234},
    labels={"region": "eu"},
)
print("stored" if stored else "spooled")

alerts = AlertEmitter()  # threshold.near (warning) / threshold.breach (critical)
signal = ThresholdSignal(metric="exposure", value=104, threshold=100, run_id="run-7")
alerts.emit_breach(signal, action_taken="new orders paused")

flush()  # optional, e.g. at shutdown: re-send whatever is still spooled
