"""HTTP (DESIGN.md section 7): the API, the probes and the dashboard.

Handlers read the projection through ``tocsin.core.views``; an alert's history, its
deliveries and the events page also read a few log rows, through
``tocsin.store.reader.LogReader`` (never the log's tables). Changes go through the
running service's control (``tocsin.pipeline.control``), which alone writes the log.
"""
