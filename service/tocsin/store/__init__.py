"""Storage: the SQLite event log, its reader, snapshots, the writer's lock, the ledger
(the single writer), compaction and forensics. It never imports the bus, the pipeline
or the HTTP layer: the log does not know how facts reach it."""
