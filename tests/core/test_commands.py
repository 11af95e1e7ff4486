"""Operator commands, silences and the stats read model, pure: no NATS, no HTTP.

Commands decide facts from the projection; the facts fold into a state that must equal
a rebuild from the same log (invariant 1)."""

from __future__ import annotations

import pytest

from tests.core.test_fold import MINUTE, T0, Run, kinds, normalized, routed
from tocsin.core import commands, views
from tocsin.core import events as ev
from tocsin.core.commands import CommandError
from tocsin.core.fold import fold, rebuild
from tocsin.core.state import HOUR_US, KEEP_HOURS


def apply(run: Run, facts: list[ev.Event], at: int) -> None:
    for fact in facts:
        seq = len(run.log) + 1
        run.log.append((seq, at, fact))
        fold(run.state, seq, at, fact)


def silence(run: Run, at: int, **matchers: object) -> str:
    facts = commands.create_silence(
        run.state,
        matchers=matchers,
        starts_at=None,
        ends_at="30m",
        created_by="ana",
        comment="maintenance",
        now=at,
        new_id=run.new_id,
    )
    apply(run, facts, at)
    created = facts[0]
    assert isinstance(created, ev.SilenceCreated)
    return created.silence_id


def test_a_silenced_alert_is_counted_not_routed_and_its_bucket_waits_for_the_end() -> None:
    run = Run()
    sid = silence(run, T0, labels={"host": "db*"})
    first = run.feed(normalized(0))
    assert kinds(first) == ["alert.received", "alert.opened", "alert.silenced"]
    assert kinds(run.feed(normalized(1))) == ["alert.received", "alert.silenced"]
    alert = next(iter(run.state.alerts.values()))
    assert alert.suppressed_count == 2
    assert views.view_status(alert, views.is_silenced(run.state, alert, T0 + MINUTE))
    assert views.alert_view(alert, True).status == "silenced"
    # Other alerts pass.
    assert routed(run.feed(normalized(2, host="web1"))) == [("firing", "hook")]
    # Lifted: the same bucket's next event is the first anyone hears of the alert.
    apply(run, commands.delete_silence(run.state, sid, by="ana", at=T0 + 3 * MINUTE), T0)
    assert routed(run.feed(normalized(4))) == [("firing", "hook")]
    assert kinds(run.feed(normalized(5))) == ["alert.received", "alert.suppressed"]
    assert rebuild(run.log) == run.state


def test_a_silence_ends_by_itself_and_only_covers_its_window() -> None:
    run = Run()
    silence(run, T0, severity="warning")
    assert kinds(run.feed(normalized(0)))[-1] == "alert.silenced"
    assert routed(run.feed(normalized(1, "critical"))) == [
        ("escalated", "pager"),
        ("escalated", "hook"),
    ]  # a critical event is not matched by a warning-only silence
    assert routed(run.feed(normalized(31, host="db2"))) == [("firing", "hook")]  # after its end
    assert rebuild(run.log) == run.state


def test_ack_stops_reminders_but_not_escalations_until_resolved() -> None:
    run = Run()
    run.feed(normalized(0))
    alert_id = next(iter(run.state.alerts))
    apply(run, commands.ack(run.state, alert_id, by="ana", comment=None, at=T0), T0)
    assert commands.ack(run.state, alert_id, by="bob", comment=None, at=T0) == []  # idempotent
    assert kinds(run.feed(normalized(10))) == ["alert.received", "alert.suppressed"]
    assert run.log[-1][2] == ev.AlertSuppressed(
        alert_id=alert_id,
        fingerprint=run.state.alerts[alert_id].fingerprint,
        dedup_key=run.log[-1][2].dedup_key,  # type: ignore[union-attr]
        cause="acked",
        trace_id="t",
    )
    assert routed(run.feed(normalized(21, "critical"))) == [
        ("escalated", "pager"),
        ("escalated", "hook"),
    ]
    facts = commands.resolve(
        run.state, alert_id, by="ana", comment="fixed", at=T0 + 22 * MINUTE, new_id=run.new_id
    )
    assert sorted(routed(facts)) == [("resolved", "hook"), ("resolved", "pager")]
    apply(run, facts, T0)
    with pytest.raises(CommandError) as refused:
        commands.ack(run.state, alert_id, by="ana", comment=None, at=T0)
    assert (refused.value.status, refused.value.field) == (409, "id")
    assert views.alert_view(run.state.alerts[alert_id]).resolved_by == "ana"
    assert rebuild(run.log) == run.state


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"matchers": {}}, "matchers"),
        ({"matchers": {"labels": {}}}, "matchers"),  # selects everything: refused
        ({"matchers": {"severity": [], "labels": {}}}, "matchers"),
        ({"matchers": {"severity": 3}}, "matchers"),
        ({"ends_at": "yesterday"}, "ends_at"),
        ({"starts_at": "1h", "ends_at": "2020-01-01T00:00:00Z"}, "ends_at"),
        ({"ends_at": "400d"}, "ends_at"),
        ({"created_by": "  "}, "created_by"),
        ({"comment": "x" * 2001}, "comment"),
    ],
)
def test_bad_silences_are_refused_naming_the_field(changes: dict[str, object], field: str) -> None:
    request: dict[str, object] = {
        "matchers": {"type": "disk_full"},
        "starts_at": None,
        "ends_at": "1h",
        "created_by": "ana",
        "comment": None,
    }
    request.update(changes)
    with pytest.raises(CommandError) as refused:
        commands.create_silence(Run().state, now=T0, new_id=lambda: "s1", **request)  # type: ignore[arg-type]
    assert refused.value.status == 422
    assert refused.value.field == field


def test_stats_sum_the_window_and_forget_hours_older_than_a_week() -> None:
    run = Run()
    run.feed(normalized(0))
    run.feed(normalized(1))
    run.feed(normalized(2, "critical", host="db2"))
    stats = views.stats(run.state, 24, T0 + 3 * MINUTE)
    assert stats.total == 3
    assert stats.by_severity == {"critical": 1, "error": 0, "warning": 2, "info": 0}
    assert stats.suppressed == 1
    assert stats.dedup_ratio == pytest.approx(1 / 3)
    assert stats.delivery_success_rate is None  # nothing delivered or dead yet
    assert stats.queue.pending == 3  # hook, then pager + hook
    assert stats.last_by_severity["critical"] is not None
    assert sum(h["warning"] for h in stats.per_hour) == 2
    later = T0 + (KEEP_HOURS + 2) * HOUR_US
    assert views.stats(run.state, 24, later).total == 0  # outside the window
    run.feed(normalized((KEEP_HOURS + 2) * 60, host="db3"))
    assert min(run.state.hours) > T0 // HOUR_US  # the old hour was dropped by the fold
    with pytest.raises(views.QueryError):
        views.stats(run.state, KEEP_HOURS + 1, later)
    assert rebuild(run.log) == run.state


def test_a_re_queue_may_name_a_configured_receiver_or_one_the_log_delivered_to() -> None:
    run = Run()
    commands.check_receiver(run.state, None, configured={"hook"})
    commands.check_receiver(run.state, "hook", configured={"hook"})
    with pytest.raises(CommandError) as refused:
        commands.check_receiver(run.state, "nope", configured={"hook", "pager"})
    assert (refused.value.status, refused.value.field) == (404, "receiver")
    assert "configured: hook, pager" in str(refused.value)


def test_a_command_as_data_decides_what_the_direct_call_decides() -> None:
    """``commands.decide`` (what a partition's router carries out for serve
    --partitions N's API) against the direct calls, through a round trip of its wire
    form. Catches a command whose decoded form decides otherwise (a field lost on the
    wire, a silence logged under another id than the API answered with)."""
    import msgspec

    run = Run()
    run.feed(normalized(0))
    alert_id = next(iter(run.state.alerts))
    wire = msgspec.json.Decoder(commands.Command)

    def sent(command: commands.Command) -> commands.Command:
        return wire.decode(msgspec.json.encode(command))

    ack = sent(commands.Ack(alert_id=alert_id, by="ana", comment="on it", at=T0 + MINUTE))
    assert commands.about_alert(ack) == alert_id
    assert commands.decide(run.state, ack, run.new_id) == commands.ack(
        run.state, alert_id, by="ana", comment="on it", at=T0 + MINUTE
    )
    made = sent(
        commands.CreateSilence(
            silence_id="s-1",
            matchers={"labels": {"host": "db*"}},
            ends_at="30m",
            created_by="ana",
            now=T0,
        )
    )
    assert commands.about_alert(made) is None
    facts = commands.decide(run.state, made, run.new_id)
    assert [(type(f), f.silence_id) for f in facts] == [(ev.SilenceCreated, "s-1")]
    apply(run, facts, T0)
    # An update (Alertmanager's POST with an id) ends the old one and makes the new one.
    update = commands.CreateSilence(
        silence_id="s-2",
        matchers={"type": "x"},
        ends_at="1h",
        created_by="bo",
        now=T0 + MINUTE,
        replaces="s-1",
    )
    assert [(type(f), f.silence_id) for f in commands.decide(run.state, update, run.new_id)] == [
        (ev.SilenceDeleted, "s-1"),
        (ev.SilenceCreated, "s-2"),
    ]
    with pytest.raises(CommandError) as refused:
        commands.decide(
            run.state,
            commands.CreateSilence(
                silence_id="s-3",
                matchers={"type": "x"},
                ends_at="1h",
                created_by="bo",
                now=T0,
                replaces="nope",
            ),
            run.new_id,
        )
    assert refused.value.status == 404
    gone = sent(commands.DeleteSilence(silence_id="s-1", by="ana", at=T0 + MINUTE))
    assert commands.decide(run.state, gone, run.new_id) == commands.delete_silence(
        run.state, "s-1", by="ana", at=T0 + MINUTE
    )
