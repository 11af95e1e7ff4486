// Publish one alert to tocsin over JetStream, from Node.js (docs/publishing.md).
// Written for @nats-io/transport-node and @nats-io/jetstream 3.4 (nats.js v3).
import { randomBytes } from "node:crypto";
import { connect, headers } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";

const url = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const hex = (bytes) => randomBytes(bytes).toString("hex");

// event_id is the idempotency key: keep it when you retry, and tocsin counts the alert once.
const event = {
  type: "payment_failed",
  severity: "error",
  summary: "card processor returned 502",
  labels: { region: "eu" },
  details: { processor: "acme", attempts: 3 },
  event_id: hex(10),
};

let nc;
try {
  nc = await connect({ servers: url, timeout: 2000 });
  const js = jetstream(nc);
  const h = headers();
  h.set("traceparent", `00-${hex(16)}-${hex(8)}-01`); // continue your trace, if you have one
  // msgID sets the Nats-Msg-Id header: JetStream drops a re-send within its duplicate window.
  const ack = await js.publish("alerts.in.billing", JSON.stringify(event), {
    msgID: event.event_id,
    headers: h,
    timeout: 2000,
  });
  console.log(`stored ${event.event_id}: stream ${ack.stream} seq ${ack.seq}`);
} catch (error) {
  // Not stored: keep the event (with its event_id) and publish it again later.
  console.error(`alert ${event.event_id} not stored: ${error.message}`);
  process.exitCode = 1;
} finally {
  await nc?.close();
}
