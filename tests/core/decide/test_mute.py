"""The mute stage: news that would reach someone is held back by the first mute source
that claims it (DESIGN.md section 12), and silences are such a source."""

from __future__ import annotations

from tests.core.decide.support import after_dedup, apply, silence
from tests.core.test_fold import MINUTE, T0, Run, kinds, normalized
from tocsin.core import commands
from tocsin.core import events as ev
from tocsin.core.decide.candidate import PASS, STOP, Candidate
from tocsin.core.decide.mute import MuteSource, mute
from tocsin.core.decide.route import RoutingTable
from tocsin.core.decide.silences import silenced
from tocsin.core.state import State


def held_back_by(tag: str, candidate: Candidate) -> ev.AlertSilenced:
    return ev.AlertSilenced(
        alert_id=candidate.alert_id,
        fingerprint=candidate.event.fingerprint,
        dedup_key=candidate.dedup_key,
        silence_id=tag,
    )


def holding(tag: str, asked: list[str]) -> MuteSource:
    """A source that holds every candidate back (its fact names ``tag``)."""

    def source(state: State, candidate: Candidate) -> ev.Event:
        asked.append(tag)
        return held_back_by(tag, candidate)

    return source


def letting_go(tag: str, asked: list[str]) -> MuteSource:
    """A source that holds nothing back."""

    def source(state: State, candidate: Candidate) -> None:
        asked.append(tag)

    return source


def test_the_first_source_that_holds_the_candidate_back_stops_it() -> None:
    asked: list[str] = []
    stage = mute(letting_go("a", asked), holding("b", asked), holding("c", asked))
    judged = after_dedup(Run(), normalized(0))
    assert stage(State(), judged) is STOP
    assert asked == ["a", "b"]
    assert judged.facts[-1] == held_back_by("b", judged)


def test_a_candidate_no_source_holds_back_goes_on_unchanged() -> None:
    asked: list[str] = []
    judged = after_dedup(Run(), normalized(0))
    before = list(judged.facts)
    assert mute(letting_go("a", asked), letting_go("b", asked))(State(), judged) is PASS
    assert (asked, judged.facts) == (["a", "b"], before)


def test_a_resolve_is_never_held_back() -> None:
    run = Run()
    run.feed(normalized(0))
    asked: list[str] = []
    judged = after_dedup(run, normalized(1, status="resolved"))
    assert mute(holding("a", asked))(run.state, judged) is PASS
    assert asked == []


def test_news_that_no_route_delivers_has_nothing_to_hold_back() -> None:
    asked: list[str] = []
    judged = after_dedup(Run(), normalized(0), routing=RoutingTable.compile([]))
    assert mute(holding("a", asked))(State(), judged) is PASS
    assert asked == []


# --- silences as a mute source ---------------------------------------------------------


def test_an_active_matching_silence_holds_the_alert_back() -> None:
    run = Run()
    sid = silence(run, T0, labels={"host": "db*"})
    judged = after_dedup(run, normalized(1))
    fact = silenced(run.state, judged)
    assert fact == ev.AlertSilenced(
        alert_id=judged.alert_id,
        fingerprint=judged.event.fingerprint,
        dedup_key=judged.dedup_key,
        silence_id=sid,
        trace_id="t",
    )


def test_a_silence_holds_back_only_what_it_matches_while_it_is_active() -> None:
    run = Run()
    silence(run, T0 + 5 * MINUTE, ends_at="10m", severity="warning")  # minutes 5 to 15
    assert silenced(run.state, after_dedup(run, normalized(4))) is None  # before it
    assert silenced(run.state, after_dedup(run, normalized(5))) is not None
    assert silenced(run.state, after_dedup(run, normalized(6, "critical"))) is None
    assert silenced(run.state, after_dedup(run, normalized(15))) is None  # after it


def test_a_deleted_silence_holds_nothing_back() -> None:
    run = Run()
    sid = silence(run, T0, severity="warning")
    apply(run, commands.delete_silence(run.state, sid, by="ana", at=T0 + MINUTE), T0 + MINUTE)
    assert silenced(run.state, after_dedup(run, normalized(2))) is None


def test_the_silence_is_judged_when_the_event_was_received() -> None:
    """Not at the event's own timestamp: a late event of an alert that fired during a
    silence window is not silenced once the silence is over."""
    run = Run()
    silence(run, T0, ends_at="10m", severity="warning")
    judged = after_dedup(run, normalized(1))
    judged.received_at = T0 + 11 * MINUTE
    assert silenced(run.state, judged) is None


def test_a_silenced_candidate_is_recorded_and_stopped_by_the_mute_stage() -> None:
    run = Run()
    silence(run, T0, severity="warning")
    judged = after_dedup(run, normalized(1))
    assert mute(silenced)(run.state, judged) is STOP
    assert kinds(judged.facts) == ["alert.received", "alert.opened", "alert.silenced"]
