"""The HTTP side of ``tocsin serve``: health, readiness and the read API.

Handlers only read projections (``queries``); they never query the log directly.
"""
