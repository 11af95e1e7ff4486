"""Alertmanager's own refusals (core/amcheck.py), the rules no file of its testdata
exercises; tests/test_amimport.py checks every file there against its verdict."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tocsin.core.amcheck import refusal

BASE = """
route:
  receiver: r
  routes:
    - matchers: ['a="1"']
      receiver: r
receivers:
  - name: r
    webhook_configs: [{url: 'http://127.0.0.1:9/'}]
"""


def _with(change: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(BASE)
    exec(change, {"c": config})  # the change reads as Python on the parsed file
    return config


def test_a_file_alertmanager_loads_is_not_refused() -> None:
    """Catches a check that refuses what Alertmanager loads (the import would refuse a
    working config)."""
    assert refusal(_with("")) is None
    assert refusal(_with("c['route']['group_interval'] = '10s'")) is None
    assert refusal(_with("c['route']['group_by'] = ['...']")) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("del c['route']", "no routes provided"),
        ("del c['route']['receiver']", "root route must specify a default receiver"),
        ("c['route']['match'] = {'a': '1'}", "root route must not have any matchers"),
        ("c['route']['matchers'] = ['a=1']", "root route must not have any matchers"),
        ("c['route']['continue'] = True", "cannot have continue in root route"),
        (
            "c['route']['mute_time_intervals'] = ['x']",
            "root route must not have any mute time intervals",
        ),
        ("c['route']['routes'][0]['receiver'] = 'gone'", 'undefined receiver "gone" used in route'),
        (
            "c['route']['routes'][0]['active_time_intervals'] = ['hours']",
            'undefined time interval "hours" used in route',
        ),
        ("c['route']['group_interval'] = '0s'", "group_interval cannot be zero"),
        ("c['route']['routes'][0]['repeat_interval'] = '0h0m'", "repeat_interval cannot be zero"),
        ("c['route']['group_by'] = ['a', 'b', 'a']", 'duplicated label "a" in group_by'),
        (
            "c['route']['group_by'] = ['...', 'a']",
            "cannot have wildcard group_by (`...`) and other labels at the same time",
        ),
        ("c['receivers'].append({'name': 'r'})", 'notification config name "r" is not unique'),
        ("c['receivers'].append({'webhook_configs': []})", "missing name in receiver"),
        ("c['receivers'][0]['webhook_configs'] = [None]", "missing webhook config"),
        (
            "c['receivers'][0]['webhook_configs'] = [{'url_file': '/f', 'url': 'http://x/'}]",
            "at most one of url & url_file must be configured",
        ),
        (
            "c['receivers'][0]['email_configs'] = [{'to': 'a@b'}]",
            "no global SMTP smarthost set",
        ),
        (
            "c['receivers'][0]['pagerduty_configs'] = [{'url': 'http://x/'}]",
            "missing service or routing key in PagerDuty config",
        ),
        (
            "c['mute_time_intervals'] = [{'name': 'n'}]; c['time_intervals'] = [{'name': 'n'}]",
            'time interval "n" is not unique',
        ),
        ("c['time_intervals'] = [{'time_intervals': []}]", "missing name in time interval"),
    ],
)
def test_alertmanagers_refusals_with_its_message(change: str, message: str) -> None:
    """Catches a file Alertmanager would refuse translated as if it ran somewhere, or
    refused in other words than Alertmanager's."""
    assert refusal(_with(change)) == message


def test_sns_target_keeps_alertmanagers_own_expression() -> None:
    """Catches a "simpler" reading of Alertmanager's SNS check: it refuses none and two
    targets but loads one, and (a quirk of its expression) all three."""
    sns = "c['receivers'][0]['sns_configs'] = [{}]"
    assert refusal(_with(sns)) is not None
    entry = f"{sns}; c['receivers'][0]['sns_configs'][0].update"
    for targets in ({"topic_arn": "t"}, {"topic_arn": "t", "target_arn": "a", "phone_number": "1"}):
        assert refusal(_with(f"{entry}({targets})")) is None
    assert refusal(_with(f"{entry}({{'topic_arn': 't', 'phone_number': '1'}})")) is not None


def test_slacks_global_token_may_sit_beside_its_own_app_url() -> None:
    """Catches the global token-and-URL rule applied without Alertmanager's exception:
    ``slack_api_url`` equal to the app URL (by default chat.postMessage) is allowed."""
    token = "c['global'] = {'slack_app_token': 'x', 'slack_api_url': "
    assert refusal(_with(token + "'https://slack.com/api/chat.postMessage'}")) is None
    assert refusal(_with(token + "'https://hooks.slack.com/services/T/B/X'}")) is not None
