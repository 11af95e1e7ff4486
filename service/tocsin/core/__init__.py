"""The pure core: every decision tocsin makes, with no I/O.

Nothing here imports nats, aiosqlite/sqlite3, jinja2, opentelemetry, httpx/aiohttp or
litestar, nor any layer above it (``make lint`` checks this with import-linter). What
lives here is tested in ``tests/core`` without a broker, a file or a clock: the wire
types, the log's events, the projection and its fold, the decision stages, the clock's
arithmetic, and the policies (retry, throttle, failover) the I/O shells follow.
"""
