"""Policies the I/O shells follow (pure): retry and backoff, per-receiver throttling,
and what a delivery worker does when JetStream's delivery count cannot be trusted."""
