"""tocsin.turbulence, pure: when a delivery worker distrusts the delivery count, what it
does with an undetermined answer, and how attempts are counted (DESIGN.md invariant 4)."""

from __future__ import annotations

import pytest

from tocsin.bus.puller import stored_at
from tocsin.core.policy import failover as tb
from tocsin.core.policy.failover import BEHIND, DEAD, DELIVERED, PENDING, RETRYING, UNKNOWN
from tocsin.core.policy.retry import next_step, retryable
from tocsin.core.subjects import leader_elected_subjects


def test_a_window_opens_for_its_length_and_then_closes() -> None:
    window = tb.opened(None, now=100.0, length=20.0)
    assert window == tb.Window(started=100.0, until=120.0)
    assert tb.is_open(window, 100.0)
    assert tb.is_open(window, 120.0)
    assert not tb.is_open(window, 120.01)
    assert not tb.is_open(None, 100.0)


def test_turbulence_inside_an_open_window_extends_it_and_keeps_its_start() -> None:
    window = tb.opened(tb.opened(None, 100.0, 20.0), now=115.0, length=20.0)
    assert window == tb.Window(started=100.0, until=135.0)


def test_turbulence_after_a_window_closed_starts_a_new_spell() -> None:
    window = tb.opened(tb.opened(None, 100.0, 20.0), now=130.0, length=20.0)
    assert window == tb.Window(started=130.0, until=150.0)


def test_the_window_is_longer_than_the_ack_wait() -> None:
    assert tb.TURBULENCE_MARGIN > 0
    assert tb.DEFER_LIMIT > tb.DEFER_DELAY > 0


@pytest.mark.parametrize(
    ("delivery_count", "turbulent", "ask"),
    [(1, False, False), (2, False, True), (1, True, True), (5, True, True)],
)
def test_only_redeliveries_are_checked_outside_turbulence(
    delivery_count: int, turbulent: bool, ask: bool
) -> None:
    """A storm outside turbulence pays no request per notification."""
    assert tb.must_ask(delivery_count, turbulent) is ask


@pytest.mark.parametrize("answer", [DELIVERED, DEAD])
@pytest.mark.parametrize("turbulent", [False, True])
def test_a_settled_notification_is_never_sent_again(answer: str, turbulent: bool) -> None:
    assert tb.before_send(answer, turbulent, waited=0.0) == "skip"
    assert tb.before_send(answer, turbulent, waited=1e9) == "skip"


@pytest.mark.parametrize("answer", [BEHIND, None])
def test_an_undetermined_answer_in_turbulence_defers_until_the_age_bound(
    answer: str | None,
) -> None:
    assert tb.before_send(answer, True, waited=0.0) == "defer"
    assert tb.before_send(answer, True, waited=tb.DEFER_LIMIT - 0.1) == "defer"
    assert tb.before_send(answer, True, waited=tb.DEFER_LIMIT) == "send_anyway"
    assert tb.before_send(answer, True, waited=5.0, limit=5.0) == "send_anyway"


@pytest.mark.parametrize("answer", [BEHIND, None])
def test_an_undetermined_answer_outside_turbulence_sends_as_before(answer: str | None) -> None:
    """At least once beats never: a redelivery with no word from the log is sent."""
    assert tb.before_send(answer, False, waited=0.0) == "send"


@pytest.mark.parametrize("answer", [PENDING, RETRYING, UNKNOWN])
@pytest.mark.parametrize("turbulent", [False, True])
def test_a_notification_the_log_says_is_not_settled_is_sent(answer: str, turbulent: bool) -> None:
    assert tb.before_send(answer, turbulent, waited=0.0) == "send"


def test_waiting_counts_from_the_later_of_queued_and_turbulence_began() -> None:
    window = tb.Window(started=1000.0, until=1040.0)
    assert tb.waiting(1010.0, stored_at=990.0, window=window) == 10.0  # queued before
    assert tb.waiting(1010.0, stored_at=1004.0, window=window) == 6.0  # queued during
    assert tb.waiting(1010.0, stored_at=1004.0, window=None) == 6.0
    assert tb.waiting(1010.0, stored_at=1020.0, window=None) == 0.0  # clocks disagree


def test_an_item_queued_long_ago_still_gets_the_whole_deferral() -> None:
    """Behind a rate limit an item can wait for minutes: its age alone would send it at
    once in the very turbulence the deferral is for."""
    window = tb.opened(None, now=10_000.0, length=40.0)
    waited = tb.waiting(10_001.0, stored_at=100.0, window=window)
    assert tb.before_send(BEHIND, True, waited) == "defer"


def test_deferrals_do_not_count_as_attempts() -> None:
    assert tb.attempt_number(1, 0) == 1
    assert tb.attempt_number(4, 3) == 1  # deferred three times, then sent: the first send
    assert tb.attempt_number(6, 3) == 3
    assert tb.attempt_number(2, 5) == 1  # never below one


def test_max_attempts_counts_sends_when_items_were_deferred() -> None:
    """With max_attempts = 3, a failing send after two deferrals is retried, not
    dead-lettered (its delivery count is 3)."""
    failed = retryable("HTTP 503", 503)
    attempt = tb.attempt_number(delivery_count=3, deferrals=2)
    assert next_step(failed, attempt, 3, [0.1]).action == "retry"
    assert next_step(failed, 3, 3, [0.1]).action == "dead_letter"


def test_the_advisory_subjects_are_jetstreams() -> None:
    assert leader_elected_subjects("TOCSIN_WORK", "deliver-hook") == [
        "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.TOCSIN_WORK",
        "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.TOCSIN_WORK.deliver-hook",
    ]


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.TOCSIN_WORK.deliver-hook.3.1234.77.1700000000123000000.5",
        "$JS.ACK._.ACCHASH.TOCSIN_WORK.deliver-hook.3.1234.77.1700000000123000000.5.tok",
    ],
)
def test_the_time_an_item_was_queued_comes_from_its_reply_subject(reply: str) -> None:
    from nats.aio.msg import Msg

    msg = Msg(_client=None, subject="tocsin.route.hook", reply=reply)  # type: ignore[arg-type]
    assert stored_at(msg) == pytest.approx(1_700_000_000.123)
    assert stored_at(msg) == pytest.approx(msg.metadata.timestamp.timestamp())
