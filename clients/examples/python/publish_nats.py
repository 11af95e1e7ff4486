"""Publish one alert to tocsin with plain nats-py (docs/publishing.md): a JetStream
publish, Nats-Msg-Id = event_id, a traceparent header, and the PubAck awaited."""

import asyncio
import json
import os
import secrets
import sys

import nats
from nats.errors import Error as NatsError


async def quiet(error: Exception) -> None:
    """nats-py logs every failed connect with a traceback; main() says it once."""


async def main() -> int:
    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    event = {
        "type": "payment_failed",
        "severity": "error",
        "summary": "card processor returned 502",
        "labels": {"region": "eu"},
        "details": {"processor": "acme", "attempts": 3},
        "event_id": secrets.token_hex(10),  # keep it when you retry: counted once
    }
    headers = {
        "Nats-Msg-Id": event["event_id"],  # JetStream drops a re-send in its window
        "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
    }
    try:
        # One quick try: nats-py retries a refused connect for ever unless told not to.
        nc = await nats.connect(
            url,
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=quiet,
        )
    except (OSError, NatsError, TimeoutError) as error:
        print(f"alert {event['event_id']} not stored: {error}", file=sys.stderr)
        return 1  # keep the event, publish it again later
    try:
        ack = await nc.jetstream().publish(
            "alerts.in.billing", json.dumps(event).encode(), headers=headers, timeout=2
        )
    except (NatsError, TimeoutError) as error:
        print(f"alert {event['event_id']} not stored: {error!r}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    print(f"stored {event['event_id']}: stream {ack.stream} seq {ack.seq}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
