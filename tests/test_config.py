"""tocsin.config: TOML loading with ``${VAR}`` expansion, errors that start with the key at
fault, and the no-file defaults built from the environment (DESIGN.md section 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tocsin.config import Config, default_config, for_partition, load, load_heartbeats
from tocsin.core.decide.route import RoutingTable
from tocsin.core.errors import ConfigError
from tocsin.core.partition import of_heartbeat

SEVERITIES = ["critical", "error", "warning", "info"]

# DESIGN.md section 8, verbatim, plus the `risk-email` receiver its second route names
# (the example itself leaves it out, and routes to unknown receivers are refused).
DESIGN_EXAMPLE = """\
[dedup]
window = "10m"

[[route]]                      # evaluated in order; every matching route applies
match = { severity = ["critical"] }
receivers = ["oncall-email", "ops-webhook"]

[[route]]
match = { type = "daily_loss_limit" }
receivers = ["risk-email"]

[receivers.ops-webhook]
channel = "webhook"            # webhook|slack|discord|email|pagerduty|opsgenie|teams|file|log
url = "${ALERT_WEBHOOK_DEFAULT}"

[receivers.oncall-email]
channel = "email"
to = ["oncall@example.com"]

[retry]
max_attempts = 8
backoff = ["1s", "5s", "30s", "2m", "10m"]

[smtp]                         # used by every email receiver; env SMTP_HOST, SMTP_PORT,
host = "${SMTP_HOST}"          # SMTP_FROM, SMTP_USERNAME, SMTP_PASSWORD, SMTP_STARTTLS
port = 587                     # fill what the file leaves out
from = "tocsin@example.com"
starttls = true

[receivers.risk-email]
channel = "email"
to = ["risk@example.com"]
"""

EXAMPLE_ENV = {
    "ALERT_WEBHOOK_DEFAULT": "https://hooks.example.com/tocsin",
    "SMTP_HOST": "smtp.example.com",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tocsin.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load(write(tmp_path, text), environ or {})


def load_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text, environ)
    return str(caught.value)


def routed(config: Config, severity: str, type_: str = "disk_full") -> list[str]:
    return RoutingTable.compile(config.routes).receivers_for(severity, type_, "storage", {})


# --- the design's example ---------------------------------------------------------------


def test_design_example_loads(tmp_path: Path) -> None:
    config = load_text(tmp_path, DESIGN_EXAMPLE, EXAMPLE_ENV)
    assert config.dedup_window == 600.0
    assert set(config.receivers) == {"ops-webhook", "oncall-email", "risk-email"}
    webhook = config.receivers["ops-webhook"]
    assert (webhook.channel, webhook.url) == ("webhook", "https://hooks.example.com/tocsin")  # type: ignore[attr-defined]
    assert config.receivers["oncall-email"].to == ["oncall@example.com"]  # type: ignore[attr-defined]
    assert config.retry.max_attempts == 8
    assert list(config.retry.backoff) == [1.0, 5.0, 30.0, 120.0, 600.0]
    assert config.smtp is not None
    assert (config.smtp.host, config.smtp.port, config.smtp.sender, config.smtp.starttls) == (
        "smtp.example.com",
        587,
        "tocsin@example.com",
        True,
    )


def test_design_example_routes(tmp_path: Path) -> None:
    config = load_text(tmp_path, DESIGN_EXAMPLE, EXAMPLE_ENV)
    assert routed(config, "critical") == ["oncall-email", "ops-webhook"]
    assert routed(config, "warning") == []
    assert routed(config, "info", "daily_loss_limit") == ["risk-email"]
    assert routed(config, "critical", "daily_loss_limit") == [
        "oncall-email",
        "ops-webhook",
        "risk-email",
    ]


# --- ${VAR} expansion -------------------------------------------------------------------

WEBHOOK = """\
[receivers.ops-webhook]
channel = "webhook"
url = "{url}"
"""


def webhook_url(tmp_path: Path, url: str, environ: dict[str, str]) -> str:
    config = load_text(tmp_path, WEBHOOK.format(url=url), environ)
    return config.receivers["ops-webhook"].url  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("${HOOK}", {"HOOK": "https://h.example/1"}, "https://h.example/1"),
        (
            "https://${HOST}/hook/${ID}",
            {"HOST": "h.example", "ID": "7"},
            "https://h.example/hook/7",
        ),
        ("${HOOK:-https://fallback.example}", {}, "https://fallback.example"),
        (
            "${HOOK:-https://fallback.example}",
            {"HOOK": "https://set.example"},
            "https://set.example",
        ),
        ("https://h.example/${SUFFIX:-}", {}, "https://h.example/"),
    ],
)
def test_variables_expand_from_the_environment(
    tmp_path: Path, url: str, environ: dict[str, str], expected: str
) -> None:
    assert webhook_url(tmp_path, url, environ) == expected


def test_default_applies_when_the_variable_is_set_but_empty(tmp_path: Path) -> None:
    # `${VAR:-default}` has the shell's meaning: the default replaces an unset *or empty*
    # variable (as with `SMTP_PORT=` in a compose file).
    assert (
        webhook_url(tmp_path, "${HOOK:-https://fb.example}", {"HOOK": ""}) == "https://fb.example"
    )


def test_unset_variable_is_an_error_naming_the_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, WEBHOOK.format(url="${ALERT_WEBHOOK_DEFAULT}"))
    assert message.startswith("receivers.ops-webhook.url:")
    assert "ALERT_WEBHOOK_DEFAULT" in message


def test_unset_variable_in_a_list_names_the_index(tmp_path: Path) -> None:
    text = '[receivers.team]\nchannel = "email"\nto = ["a@example.com", "${TEAM_EMAIL}"]\n'
    assert load_error(tmp_path, text).startswith("receivers.team.to[1]:")


# --- errors name the key at fault -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[dedup]\nwindow = "10 minutes"\n', "dedup.window"),
        ('[dedup]\nwindow = "0s"\n', "dedup.window"),
        ('[dedup]\nwindow = "0.0000001s"\n', "dedup.window"),  # rounds to 0 us
        ('[dedup]\nwindow = "500ms"\n', "dedup.window"),
        ('[retry]\nbackoff = ["1s", "soon", "30s"]\n', "retry.backoff[1]"),
        ("[retry]\nmax_attempts = 0\n", "retry.max_attempts"),
        ('[receivers.x]\nchannel = "carrier-pigeon"\n', "receivers.x.channel"),
        ("[receivers.x]\ntimeout = 5\n", "receivers.x.channel"),
        (
            '[receivers.a]\nchannel = "log"\n\n[[route]]\nreceivers = ["nobody"]\n',
            "route[0].receivers",
        ),
        ('[receivers.a]\nchannel = "log"\ncolour = "red"\n', "receivers.a.colour"),
        ('[receivers.hook]\nchannel = "webhook"\n', "receivers.hook.url"),
        ("[[route]]\nmatch = {}\n", "route[0].receivers"),
        ('[[route]]\nreceivers = ["log"]\nmatch = { colour = "red" }\n', "route[0].match.colour"),
        (
            '[[route]]\nreceivers = ["log"]\nmatch = { severity = "urgent" }\n',
            "route[0].match.severity",
        ),
        ('[receivers."a.b"]\nchannel = "log"\n', "receivers.a.b"),
        ('[receivers."has space"]\nchannel = "log"\n', "receivers.has space"),
        (
            '[[route]]\nreceivers = ["log"]\nmatchers = [\'a="1"\', \'b=~"(" \']\n',
            "route[0].matchers[1]",
        ),
        ('[[route]]\nreceivers = ["log"]\nmatchers = ["no operator"]\n', "route[0].matchers[0]"),
        (
            '[[route]]\nreceivers = ["log"]\nmatch = { matchers = ["x"] }\n',
            "route[0].match.matchers[0]",
        ),
        ('[[route]]\nreceivers = ["log"]\ncontinue = "no"\n', "route[0].continue"),
        (
            '[[route]]\nreceivers = ["log"]\n' * 2
            + '[[route]]\nreceivers = ["log"]\ngroup_wait = "soon"\n',
            "route[2].group_wait",
        ),
        ('[[route]]\nreceivers = ["log"]\ngroup_by = ["colour"]\n', "route[0].group_by"),
        ('[[route]]\nreceivers = ["log"]\ngroup_by = ["...", "type"]\n', "route[0].group_by"),
        ('[[route]]\nreceivers = ["log"]\nmax_alerts = 0\n', "route[0].max_alerts"),
        ('[[route]]\nreceivers = ["log"]\nrepeat_interval = "0s"\n', "route[0].repeat_interval"),
        ('[[route]]\nreceivers = ["log"]\ngroup_interval = "-5s"\n', "route[0].group_interval"),
        (
            '[[route]]\nreceivers = ["log"]\nmute_time_intervals = ["nights"]\n',
            "route[0].mute_time_intervals[0]",
        ),
        ('[log]\nretention = "10m"\n', "log.retention"),
        ("[alerts]\nkeep_resolved = -1\n", "alerts.keep_resolved"),
        ('[alerts]\nkeep_resolved = "a day"\n', "alerts.keep_resolved"),
        ('[dashboard]\nnotify = ["critical", "urgent"]\n', "dashboard.notify[1]"),
        ('[dashboard]\nnotify = "critical"\n', "dashboard.notify"),
        ("[dashboard]\nsound = true\n", "dashboard.sound"),
        (
            '[receivers.a]\nchannel = "log"\n\n[[route]]\nreceivers = ["a"]\n'
            'escalate = [{ after = "5m", receivers = ["a"] },'
            ' { after = "5m", receivers = ["a"] }]\n',
            "route[0].escalate[1].after: must be later than the step before (300s)",
        ),
        (
            '[receivers.a]\nchannel = "log"\n\n[[route]]\nreceivers = ["a"]\n'
            'escalate = [{ after = "5m", receivers = ["head"] }]\n',
            "route[0].escalate[0].receivers: unknown receiver 'head'",
        ),
        (
            '[[route]]\nreceivers = ["log"]\nescalate = [{ after = "5m" }]\n',
            "route[0].escalate[0].receivers",
        ),
        ('[flapping]\nchanges = 1\nwindow = "1h"\n', "flapping.changes"),
        ('[flapping]\nchanges = 4\nwindow = "0s"\n', "flapping.window"),
        ("[flapping]\nchanges = 4\n", "flapping.window"),
    ],
    ids=[
        "bad-duration",
        "zero-window",
        "window-rounding-to-zero",
        "window-below-a-second",
        "bad-backoff-entry",
        "zero-attempts",
        "unknown-channel",
        "missing-channel",
        "unknown-receiver-in-route",
        "unknown-receiver-key",
        "webhook-without-url",
        "route-without-receivers",
        "unknown-match-key",
        "unknown-match-severity",
        "receiver-name-with-dot",
        "receiver-name-with-space",
        "bad-regex-in-matchers",
        "matcher-without-operator",
        "bad-matcher-in-match-table",
        "continue-not-a-boolean",
        "group-wait-not-a-duration",
        "group-by-unknown-field",
        "group-by-every-label-not-alone",
        "max-alerts-zero",
        "repeat-interval-zero",
        "group-interval-negative",
        "unknown-time-interval",
        "retention-below-the-hourly-check",
        "negative-keep-resolved",
        "bad-keep-resolved",
        "unknown-notify-severity",
        "notify-not-a-list",
        "unknown-dashboard-key",
        "escalation-steps-not-increasing",
        "escalation-to-an-unknown-receiver",
        "escalation-step-without-receivers",
        "flapping-changes-below-two",
        "flapping-window-zero",
        "flapping-without-window",
    ],
)
def test_error_message_starts_with_the_key_at_fault(tmp_path: Path, text: str, key: str) -> None:
    assert load_error(tmp_path, text).startswith(key)


@pytest.mark.parametrize("processes", ["-1", "65", '"2"'])
def test_bad_delivery_processes_name_the_key(tmp_path: Path, processes: str) -> None:
    """Catches a count the supervisor cannot run (negative, a fork bomb, not a number)
    reaching it instead of being refused at start naming the key."""
    assert load_error(tmp_path, f"[delivery]\nprocesses = {processes}\n").startswith(
        "delivery.processes"
    )


def test_delivery_in_serve_is_on_by_default_and_refuses_a_non_boolean(tmp_path: Path) -> None:
    """``[delivery] in_serve``: catches serve's own delivery off by default (a storm's
    backlog then waits on the children's cores alone) and a value like ``"no"``, which
    is truthy, taken for a yes instead of refused naming the key."""
    plain = tmp_path / "plain.toml"
    plain.write_text("[delivery]\nconcurrency = 8\n")
    off = tmp_path / "off.toml"
    off.write_text("[delivery]\nconcurrency = 8\nin_serve = false\n")
    assert load(plain, {}).delivery.in_serve is True
    assert load(off, {}).delivery.in_serve is False
    assert load(plain, {}).digest() == load(off, {}).digest()  # decides no fact
    assert load_error(tmp_path, '[delivery]\nin_serve = "no"\n').startswith("delivery.in_serve")


def test_delivery_processes_default_to_the_cores_and_leave_the_version_alone(
    tmp_path: Path,
) -> None:
    """Catches the new key changing every existing config's version (a reload or a
    restart would log a new version for nothing) and a default that is not "per core"
    (None)."""
    plain = tmp_path / "plain.toml"
    plain.write_text("[delivery]\nconcurrency = 8\n")
    counted = tmp_path / "counted.toml"
    counted.write_text("[delivery]\nconcurrency = 8\nprocesses = 0\n")
    assert load(plain, {}).delivery.processes is None
    assert load(counted, {}).delivery.processes == 0
    assert (
        load(plain, {}).digest() == load(counted, {}).digest() == "ed083ea1b5bb921d"
    )  # as before the key existed


def test_dashboard_notify_defaults_to_critical_and_normalizes_aliases(tmp_path: Path) -> None:
    """``[dashboard] notify``: the severities whose new alerts an open dashboard is told
    of; aliases as everywhere else (``sev2`` is ``warning``), each once; ``[]`` is none.
    Catches an alias that would never match an alert's (normalized) severity."""
    assert load_text(tmp_path, "").dashboard.notify == ("critical",)
    assert load(None, {}).dashboard.notify == ("critical",)
    text = '[dashboard]\nnotify = ["critical", "sev2", "Warning"]\n'
    assert load_text(tmp_path, text).dashboard.notify == ("critical", "warning")
    assert load_text(tmp_path, "[dashboard]\nnotify = []\n").dashboard.notify == ()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load(missing, {})
    assert str(caught.value).startswith(str(missing))


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    assert "not valid TOML" in load_error(tmp_path, "[dedup\nwindow = 1\n")


def test_no_path_means_the_environment_defaults() -> None:
    config = load(None, {})
    assert list(config.receivers) == ["log"]


# --- defaults without a file ------------------------------------------------------------


def test_default_config_with_nothing_configured_routes_everything_to_log() -> None:
    config = default_config({})
    assert list(config.receivers) == ["log"]
    assert config.receivers["log"].channel == "log"
    assert {severity: routed(config, severity) for severity in SEVERITIES} == {
        severity: ["log"] for severity in SEVERITIES
    }


def test_default_config_with_a_webhook() -> None:
    config = default_config({"ALERT_WEBHOOK_DEFAULT": "https://hooks.example.com/x"})
    webhooks = [name for name, r in config.receivers.items() if r.channel == "webhook"]
    assert len(webhooks) == 1
    assert config.receivers[webhooks[0]].url == "https://hooks.example.com/x"  # type: ignore[attr-defined]
    assert routed(config, "critical") == webhooks
    assert routed(config, "error") == webhooks
    assert routed(config, "warning") == webhooks
    assert routed(config, "info") == ["log"]


def test_default_config_with_email_sends_critical_to_every_address() -> None:
    config = default_config({"ALERT_EMAIL_DEFAULT": "a@x.org,b@x.org", "SMTP_HOST": "smtp.x.org"})
    emails = [name for name, r in config.receivers.items() if r.channel == "email"]
    assert len(emails) == 1
    assert config.receivers[emails[0]].to == ["a@x.org", "b@x.org"]  # type: ignore[attr-defined]
    assert emails[0] in routed(config, "critical")
    assert routed(config, "info") == ["log"]
    assert config.smtp is not None
    assert config.smtp.host == "smtp.x.org"


def test_default_config_with_webhook_and_email() -> None:
    config = default_config(
        {
            "ALERT_WEBHOOK_DEFAULT": "https://hooks.example.com/x",
            "ALERT_EMAIL_DEFAULT": "oncall@x.org",
            "SMTP_HOST": "smtp.x.org",
        }
    )
    kinds = {name: r.channel for name, r in config.receivers.items()}
    webhook = next(name for name, kind in kinds.items() if kind == "webhook")
    email = next(name for name, kind in kinds.items() if kind == "email")
    assert sorted(routed(config, "critical")) == sorted([webhook, email])
    assert routed(config, "error") == [webhook]
    assert routed(config, "warning") == [webhook]
    assert routed(config, "info") == ["log"]


# --- [nats] replicas: the copies JetStream keeps of tocsin's streams and consumers ------


def test_replicas_default_to_one(tmp_path: Path) -> None:
    assert load(write(tmp_path, ""), {}).nats.replicas == 1
    assert load(None, {}).nats.replicas == 1


def test_replicas_from_the_file_win_over_the_environment(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[nats]\nreplicas = 3\n"), {"TOCSIN_NATS_REPLICAS": "5"})
    assert config.nats.replicas == 3


def test_replicas_from_the_environment_when_the_file_has_none(tmp_path: Path) -> None:
    assert load(write(tmp_path, ""), {"TOCSIN_NATS_REPLICAS": "3"}).nats.replicas == 3
    assert load(None, {"TOCSIN_NATS_REPLICAS": " 3 "}).nats.replicas == 3


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[nats]\nreplicas = 0\n", {}, "nats.replicas: must be 1 to 5"),
        ("[nats]\nreplicas = 7\n", {}, "nats.replicas: must be 1 to 5"),
        ('[nats]\nreplicas = "3"\n', {}, "nats.replicas:"),
        ("", {"TOCSIN_NATS_REPLICAS": "three"}, "nats.replicas (from TOCSIN_NATS_REPLICAS="),
        ("", {"TOCSIN_NATS_REPLICAS": "6"}, "nats.replicas (from TOCSIN_NATS_REPLICAS='6'): must"),
    ],
    ids=["zero", "too-many", "not-an-integer", "env-not-a-number", "env-too-many"],
)
def test_bad_replicas_name_the_key_and_the_variable(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    error = load_error(tmp_path, text, env)
    assert error.startswith(message), error


def test_matchers_and_continue_route_as_written(tmp_path: Path) -> None:
    """Alertmanager-syntax ``matchers`` and ``continue = false`` from a real file
    (DESIGN.md section 12): the first route takes critical API alerts and stops."""
    config = load_text(
        tmp_path,
        """\
[receivers.pager]
channel = "log"
[receivers.chat]
channel = "log"

[[route]]
matchers = ['severity=~"critical|error"', 'service!~"canary|test"']
receivers = ["pager"]
continue = false

[[route]]
receivers = ["chat"]
""",
    )
    table = RoutingTable.compile(config.routes)
    assert table.receivers_for("critical", "t", "s", {"service": "api"}) == ["pager"]
    assert table.receivers_for("critical", "t", "s", {"service": "canary"}) == ["chat"]
    assert table.receivers_for("warning", "t", "s", {"service": "api"}) == ["chat"]


def test_time_intervals_load_as_a_table_or_a_list(tmp_path: Path) -> None:
    """DESIGN.md section 12's example, and Alertmanager's list form (any of them)."""
    config = load_text(
        tmp_path,
        """\
[time_intervals.business-hours]
weekdays = ["monday:friday"]
times = [{ start = "09:00", end = "17:30" }]
location = "Europe/Berlin"

[[time_intervals.off-hours]]
weekdays = ["saturday:sunday"]

[[time_intervals.off-hours]]
times = [{ start = "00:00", end = "07:00" }]
""",
    )
    friday_noon_utc = 1_796_385_600_000_000  # 2026-12-04T11:00:00Z
    assert config.time_intervals.covers(["business-hours"], friday_noon_utc)
    assert not config.time_intervals.covers(["off-hours"], friday_noon_utc)
    assert len(config.time_intervals.named["off-hours"]) == 2


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[time_intervals.x]\nlocation = "Mars/Olympus"\n', "time_intervals.x.location"),
        ('[time_intervals.x]\nweekdays = ["noday"]\n', "time_intervals.x.weekdays[0]"),
        (
            '[[time_intervals.x]]\nmonths = ["may"]\n[[time_intervals.x]]\nyears = ["y"]\n',
            "time_intervals.x[1].years[0]",
        ),
        ('[time_intervals.x]\nhours = ["1"]\n', "time_intervals.x.hours"),
    ],
)
def test_bad_time_intervals_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert load_error(tmp_path, text).startswith(key)


def test_inhibit_rules_load_named_and_compile(tmp_path: Path) -> None:
    """Catches rules dropped on the way from the file to the routing table, an unnamed
    rule left without its ``inhibit[i]`` name, or a digest that ignores the rules."""
    text = """
[[inhibit]]
name = "cluster-down-mutes-its-pods"
source = { type = "cluster_unreachable" }
target = { severity = ["warning", "error"] }
equal = ["labels.cluster"]

[[inhibit]]
source_matchers = ['alertname="NodeDown"']
target_matchers = ['severity="info"']
"""
    config = load_text(tmp_path, text)
    assert [rule.name for rule in config.inhibit] == ["cluster-down-mutes-its-pods", "inhibit[1]"]
    table = RoutingTable.compile(config.routes, config.inhibit)
    sources = table.inhibitions.sources_of(
        "critical", "cluster_unreachable", "k8s", {"cluster": "A"}
    )
    assert sources == {"cluster-down-mutes-its-pods": '{"labels.cluster":"A"}'}
    assert table.inhibitions.sources_of("critical", "NodeDown", "k8s", {}) == {"inhibit[1]": "{}"}
    assert config.digest() != load_text(tmp_path, "").digest()


def test_heartbeats_load_with_canonical_severity_and_their_defaults(tmp_path: Path) -> None:
    """Catches ``[heartbeats.<name>]`` not reaching the config, its severity left as
    written (an alias the projection would carry), or a missing grace or summary."""
    config = load_text(
        tmp_path,
        """\
[heartbeats.nightly-backup]
every = "24h"
grace = "30m"
severity = "sev1"
summary = "the nightly backup has not reported for a day"
labels = { team = "dba" }

[heartbeats.cron]
every = "90s"
""",
    )
    backup, cron = config.heartbeats["nightly-backup"], config.heartbeats["cron"]
    assert (backup.every_seconds, backup.grace_seconds) == (86400.0, 1800.0)
    assert (backup.severity, backup.labels) == ("critical", {"team": "dba"})
    assert backup.summary == "the nightly backup has not reported for a day"
    assert (cron.grace_seconds, cron.severity) == (0.0, "critical")
    assert "cron" in cron.summary


def test_heartbeats_change_the_digest_only_when_configured(tmp_path: Path) -> None:
    """Catches a heartbeat change that the config version does not show, or a digest
    that changes for configs without heartbeats (their logged versions would differ
    from one tocsin version to the next)."""
    plain = load_text(tmp_path, "")
    with_one = load_text(tmp_path, '[heartbeats.a]\nevery = "1m"\n')
    other = load_text(tmp_path, '[heartbeats.a]\nevery = "2m"\n')
    assert len({plain.digest(), with_one.digest(), other.digest()}) == 3
    assert (
        plain.digest()
        == Config(
            dedup_window=plain.dedup_window,
            routes=plain.routes,
            receivers=plain.receivers,
            retry=plain.retry,
            smtp=plain.smtp,
            delivery=plain.delivery,
        ).digest()
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[inhibit]]\ntarget = { severity = "warning" }\n', "inhibit[0].source"),
        ('[[inhibit]]\nsource = { type = "x" }\n', "inhibit[0].target"),
        (
            '[[inhibit]]\nsource = { type = "x" }\ntarget = { severity = "loud" }\n',
            "inhibit[0].target.severity",
        ),
        (
            '[[inhibit]]\nsource_matchers = ["nope"]\ntarget = { type = "y" }\n',
            "inhibit[0].source_matchers[0]",
        ),
        (
            '[[inhibit]]\nsource = { type = "x" }\ntarget = { type = "y" }\nequal = ["cluster"]\n',
            "inhibit[0].equal",
        ),
        (
            '[[inhibit]]\nname = "a"\nsource = { type = "x" }\ntarget = { type = "y" }\n' * 2,
            "inhibit[1].name",
        ),
        (
            '[[inhibit]]\nsource = { type = "x" }\ntarget = { type = "y" }\nwhen = 1\n',
            "inhibit[0].when",
        ),
    ],
    ids=[
        "no-source",
        "no-target",
        "unknown-severity",
        "bad-matcher",
        "equal-not-a-key",
        "name-twice",
        "unknown-key",
    ],
)
def test_bad_inhibit_rules_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    """Catches a rule that would select every alert (muting everything), or errors that
    do not say which rule and key are wrong."""
    assert load_error(tmp_path, text).startswith(key)


def test_escalation_and_flapping_load_as_written(tmp_path: Path) -> None:
    """The DESIGN.md section 13 keys: a route's escalate steps (in microseconds once
    compiled) and [flapping], off when left out."""
    config = load_text(
        tmp_path,
        """
[flapping]
changes = 4
window = "1h"

[receivers.pager]
channel = "log"
[receivers.team-lead]
channel = "log"
[receivers.head-of-ops]
channel = "log"

[[route]]
receivers = ["pager"]
escalate = [
  { after = "5m", receivers = ["team-lead"] },
  { after = "30m", receivers = ["head-of-ops"] },
]
""",
    )
    [route] = RoutingTable.compile(config.routes).routes
    assert [(s.after, s.receivers) for s in route.escalate] == [
        (300_000_000, ("team-lead",)),
        (1_800_000_000, ("head-of-ops",)),
    ]
    assert config.flapping is not None
    assert (config.flapping.changes, config.flapping.window) == (4, 3600.0)
    assert load_text(tmp_path, "").flapping is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[heartbeats.a]\n", "heartbeats.a.every: required"),
        ('[heartbeats.a]\nevery = "0s"\n', "heartbeats.a.every: must be positive"),
        ('[heartbeats.a]\nevery = "1m"\ngrace = "-1s"\n', "heartbeats.a.grace"),
        ('[heartbeats.a]\nevery = "1m"\nseverity = "loud"\n', "heartbeats.a.severity"),
        ('[heartbeats.a]\nevery = "1m"\nsummary = ""\n', "heartbeats.a.summary"),
        ('[heartbeats.a]\nevery = "1m"\nlabels = { "1x" = "y" }\n', "heartbeats.a.labels.1x"),
        ('[heartbeats.a]\nevery = "1m"\nlabels = { heartbeat = "b" }\n', "heartbeats.a.labels."),
        ('[heartbeats.a]\nevery = "1m"\ncolour = "red"\n', "heartbeats.a.colour: unknown key"),
        ('[heartbeats."a.b"]\nevery = "1m"\n', "heartbeats.a.b: heartbeat names"),
    ],
)
def test_bad_heartbeats_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert load_error(tmp_path, text).startswith(key)


def test_the_heartbeat_command_reads_only_the_heartbeats(tmp_path: Path) -> None:
    """Catches ``tocsin heartbeat`` needing the receivers' variables (which the machine
    that sends beats may not have) to check a name."""
    path = write(
        tmp_path,
        """\
[receivers.hook]
channel = "webhook"
url = "${UNSET_ON_THIS_MACHINE}"

[heartbeats.backup]
every = "${EVERY:-1h}"
""",
    )
    assert list(load_heartbeats(path, {})) == ["backup"]
    assert load_heartbeats(path, {"EVERY": "2h"})["backup"].every_seconds == 7200.0
    assert load_heartbeats(None, {}) == {}


def test_the_shown_config_masks_secrets_written_or_expanded(tmp_path: Path) -> None:
    """Catches a ``config.loaded`` or ``GET /api/v1/config`` that shows a credential:
    one written in the file under a secret key, one expanded from ``${VAR}`` into a
    Slack URL (the URL is the credential), and a secret-looking header; what is no
    secret (the route) is shown as written."""
    config = load_text(
        tmp_path,
        """
[[route]]
match = { severity = "critical" }
receivers = ["hook", "chat"]

[receivers.hook]
channel = "webhook"
url = "https://example.com/hook"
secret = "hunter2-hunter2"
headers = { Authorization = "Bearer abcdef123456" }

[receivers.chat]
channel = "slack"
url = "https://hooks.slack.com/services/${SLACK_PATH}"
""",
        {"SLACK_PATH": "T000/B000/XXXXSECRETXXXX"},
    )
    shown = config.shown
    text = repr(shown)
    for secret in ("hunter2-hunter2", "abcdef123456", "XXXXSECRETXXXX"):
        assert secret not in text
    assert shown["receivers"]["hook"]["secret"] == "***"
    assert shown["receivers"]["hook"]["channel"] == "webhook"
    assert shown["route"] == [{"match": {"severity": "critical"}, "receivers": ["hook", "chat"]}]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[partitions]\ncount = 0\n", "partitions.count: must be 1 to 64"),
        ("[partitions]\ncount = 65\n", "partitions.count: must be 1 to 64"),
        ('[partitions]\ncount = "two"\n', "partitions.count"),
        ('[partitions]\nkey = ["severity"]\n', "partitions.key: 'severity' is not"),
        ('[partitions]\nkey = ["labels.a", "labels.a"]\n', "partitions.key: a key is named"),
        ("[partitions]\nshards = 2\n", "partitions.shards: unknown key"),
    ],
)
def test_bad_partitions_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert load_error(tmp_path, text).startswith(key)


def test_partitions_default_to_one_and_load_their_key(tmp_path: Path) -> None:
    assert load_text(tmp_path, "").partitions.count == 1
    loaded = load_text(tmp_path, '[partitions]\ncount = 4\nkey = ["labels.cluster"]\n')
    assert (loaded.partitions.count, loaded.partitions.key) == (4, ("labels.cluster",))


def test_a_partitions_router_keeps_only_the_heartbeats_whose_beats_it_gets(
    tmp_path: Path,
) -> None:
    """Each heartbeat's deadline is kept by the one router its beats reach (catches
    every partition's clock opening a ``heartbeat.missed`` alert for beats that went
    to another partition); together the partitions keep every heartbeat once."""
    beats = "".join(f'[heartbeats.job-{i}]\nevery = "1m"\n' for i in range(12))
    loaded = load_text(tmp_path, "[partitions]\ncount = 3\n" + beats)
    kept = [set(for_partition(loaded, k).heartbeats) for k in range(3)]
    assert all(kept)
    assert sorted(name for names in kept for name in names) == sorted(loaded.heartbeats)
    for k, names in enumerate(kept):
        assert all(of_heartbeat(name, 3) == k for name in names)
    with pytest.raises(ConfigError, match="--partition: 3 is not a partition"):
        for_partition(loaded, 3)
