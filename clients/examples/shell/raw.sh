#!/usr/bin/env bash
# Publish one alert to tocsin over JetStream with nothing but bash: the NATS text protocol
# on /dev/tcp, a reply inbox for the PubAck (docs/publishing.md). NATS protocol 1 with
# headers (nats-server 2.2 and later).
set -euo pipefail
export LC_ALL=C # lengths in bytes
host=${NATS_HOST:-127.0.0.1} port=${NATS_PORT:-4222}
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

event_id=$(hex 10) # the idempotency key: keep it when you retry
body='{"type":"backup_failed","severity":"warning","summary":"nightly backup failed",'
body+='"labels":{"host":"db1"},"event_id":"'$event_id'"}'
hdr=$'NATS/1.0\r\nNats-Msg-Id: '$event_id$'\r\ntraceparent: 00-'$(hex 16)-$(hex 8)$'-01\r\n\r\n'
inbox=_INBOX.$event_id

if ! exec 3<>"/dev/tcp/$host/$port"; then
  echo "alert $event_id not stored: NATS at $host:$port unreachable" >&2
  exit 1
fi
read -r -t 2 _info <&3 # the server's INFO line
printf 'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n' >&3
printf 'SUB %s 1\r\nHPUB alerts.in.shell %s %d %d\r\n%s%s\r\nPING\r\n' \
  "$inbox" "$inbox" ${#hdr} $((${#hdr} + ${#body})) "$hdr" "$body" >&3

ack=""
while read -r -t 5 line <&3; do
  line=${line%$'\r'}
  case $line in
    MSG*) read -r -t 5 ack <&3 && ack=${ack%$'\r'}; break ;; # the PubAck's JSON
    HMSG*) ack='{"error":"no stream takes alerts.in.shell: is tocsin running?"}'; break ;;
    -ERR*) ack="{\"error\":\"${line#-ERR }\"}"; break ;;
    PING) printf 'PONG\r\n' >&3 ;;
  esac
done
exec 3>&-
if [[ $ack != *'"seq"'* || $ack == *'"error"'* ]]; then
  echo "alert $event_id not stored: ${ack:-no PubAck}" >&2 # keep it, send it again later
  exit 1
fi
echo "stored $event_id: $ack"
