"""tocsin: event-sourced alerting over NATS JetStream.

The flow (DESIGN.md section 2) maps onto modules one to one:
ingest -> dedup -> routing (pure, composed in ``triage``) -> ``router`` (I/O) ->
``delivery`` + ``channels`` (I/O) -> ``recorder`` (outcomes back into ``log``).
State is only ever ``projections.fold`` over the ``log``.
"""

__version__ = "0.1.0"
