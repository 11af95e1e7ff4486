// Publish one alert to tocsin over JetStream, from Rust (docs/publishing.md).
// Written for async-nats 0.38 with tokio 1.
use std::time::Duration;

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::HeaderMap;
use rand::RngCore;

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

async fn publish(url: &str, event_id: &str) -> Result<(String, u64), Box<dyn std::error::Error>> {
    let body = serde_json::json!({
        "type": "payment_failed",
        "severity": "error",
        "summary": "card processor returned 502",
        "labels": {"region": "eu"},
        "details": {"processor": "acme", "attempts": 3},
        "event_id": event_id, // keep it when you retry: tocsin counts the alert once
    });
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await?;
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_secs(2)); // how long to wait for the PubAck
    let mut headers = HeaderMap::new();
    // Nats-Msg-Id: JetStream drops a re-send within its duplicate window.
    headers.insert(NATS_MESSAGE_ID, event_id);
    let traceparent = format!("00-{}-{}-01", random_hex(16), random_hex(8));
    headers.insert("traceparent", traceparent.as_str());
    let payload = serde_json::to_vec(&body)?;
    // The first await sends; the second waits for JetStream's acknowledgement.
    let ack = js
        .publish_with_headers("alerts.in.billing", headers, payload.into())
        .await?
        .await?;
    Ok((ack.stream, ack.sequence))
}

#[tokio::main]
async fn main() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let event_id = random_hex(10);
    match publish(&url, &event_id).await {
        Ok((stream, seq)) => println!("stored {event_id}: stream {stream} seq {seq}"),
        Err(error) => {
            // Not stored: keep the event (with its event_id) and publish it again later.
            eprintln!("alert {event_id} not stored: {error}");
            std::process::exit(1);
        }
    }
}
