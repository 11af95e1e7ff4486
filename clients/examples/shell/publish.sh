#!/usr/bin/env bash
# Publish one alert with the tocsin command (docs/publishing.md): every field of the
# contract, checked by the service's own rules before it is sent (exit 2 names the flag),
# then a JetStream publish with Nats-Msg-Id = --event-id, waiting for the PubAck.
set -euo pipefail
event_id=$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n') # keep it when you retry

if ! tocsin publish --nats-url "${NATS_URL:-nats://127.0.0.1:4222}" --source shell \
  --type backup_failed --severity warning --summary "nightly backup failed" \
  --label host=db1 --details '{"exit_code": 2}' --event-id "$event_id"; then
  echo "alert $event_id not stored" >&2 # keep it, send it again later
  exit 1
fi
