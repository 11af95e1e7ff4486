"""The decision side of one inbound event, as stages composed in order.

Like Alertmanager's notify stages, but before the log commit instead of after it: each
stage is a pure function over the projection and the candidate (``candidate``), and
``triage`` composes them (idempotency, dedup, mute, then route). A new reason to hold
an alert back is a new mute source (``mute``); a new kind of decision is a new stage;
either is one name in ``triage.STAGES``, not a branch in a long function.
"""
