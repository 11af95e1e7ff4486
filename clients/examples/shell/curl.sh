#!/usr/bin/env bash
# Publish one alert through tocsin's HTTP ingest, for hosts that cannot reach NATS
# (docs/publishing.md). 202 once JetStream stored it; 4xx names the field at fault.
set -euo pipefail
TOCSIN=${TOCSIN:-http://127.0.0.1:8080}
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

event_id=$(hex 10) # the idempotency key: a retry with the same one is counted once
body='{"type":"backup_failed","severity":"warning","summary":"nightly backup failed",'
body+='"source":"shell","labels":{"host":"db1"},"event_id":"'$event_id'"}'
auth=()
if [[ -n ${TOCSIN_API_TOKEN:-} ]]; then auth=(-H "Authorization: Bearer $TOCSIN_API_TOKEN"); fi

if ! answer=$(curl -sS --fail-with-body --max-time 5 --retry 2 --retry-delay 1 --retry-all-errors \
  "${auth[@]}" -H 'Content-Type: application/json' \
  -H "traceparent: 00-$(hex 16)-$(hex 8)-01" \
  --data "$body" "$TOCSIN/api/v1/events"); then
  echo "alert $event_id not stored: ${answer:-no answer}" >&2 # keep it, send it again later
  exit 1
fi
echo "stored: $answer"
