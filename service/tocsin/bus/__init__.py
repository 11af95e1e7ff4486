"""NATS: streams and consumers, the connection, publishing with PubAcks, batched pulls
and acks, and the embedded server. Subject and stream names are in
``tocsin.core.subjects`` (they are contract, DESIGN.md section 3)."""
