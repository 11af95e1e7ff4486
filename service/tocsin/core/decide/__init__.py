"""The decision side of one inbound event, as stages composed in order.

Like Alertmanager's notify stages, but before the log commit instead of after it: each
stage is a pure function over the projection and the candidate, and ``triage`` composes
them (dedup, then mute, then route). A new reason to hold an alert back is a new stage
here, not a branch in a long function.
"""
