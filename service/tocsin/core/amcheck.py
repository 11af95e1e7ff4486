"""What Alertmanager itself refuses to load, with its own message (pure; DESIGN.md
section 14).

``tocsin config import-alertmanager`` translates a running Alertmanager's file. A file
Alertmanager refuses is not one anybody runs, and translating it anyway would hide a
mistake behind a config that looks fine: so the import refuses the same files, naming
the same cause in the same words, before it translates anything.

The rules are Alertmanager 0.34's (``config/config.go``, ``config/notifiers.go``,
``config/common/matchers.go``, ``notify/*/config.go``), in the order it applies them:
each integration's own checks while the YAML is read, then the global secrets, then
each receiver's integrations against the global defaults, then the route tree.
Not reproduced: Alertmanager's strict YAML (an unknown field is an error there; the
import lists fields it does not translate instead), label-name syntax, URL and
template syntax. ``tests/test_amimport.py`` checks every configuration of
Alertmanager's ``doc/examples/`` and ``config/testdata/`` against Alertmanager's own
verdict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

Check = Callable[[Mapping[str, Any]], str | None]
_ZERO = re.compile(r"(?:0+(?:y|w|d|h|ms|m|s)?)+")
SLACK_CHAT_POST_MESSAGE = "https://slack.com/api/chat.postMessage"


def _set(node: Mapping[str, Any], key: str) -> bool:
    """Set as Go sees it: present and not the zero value."""
    return node.get(key) not in (None, "", [], {})


def _one_of(*keys: str, message: str = "") -> Check:
    text = message or f"one of {' or '.join(keys)} must be configured"
    return lambda node: None if any(_set(node, k) for k in keys) else text


def _at_most_one(first: str, second: str, prefix: str = "") -> Check:
    text = f"at most one of {prefix}{first} & {prefix}{second} must be configured"
    return lambda node: text if _set(node, first) and _set(node, second) else None


def _url_or_token(node: Mapping[str, Any]) -> str | None:
    url = _set(node, "api_url") or _set(node, "api_url_file")
    token = _set(node, "app_token") or _set(node, "app_token_file")
    if url and token:
        return "at most one of api_url/api_url_file & app_token/app_token_file must be configured"
    return None


def _slack_update_message(node: Mapping[str, Any]) -> str | None:
    if node.get("update_message") is True and node.get("api_url") != SLACK_CHAT_POST_MESSAGE:
        return (
            "update_message can only be used with bot tokens. "
            f"api_url must be set to {SLACK_CHAT_POST_MESSAGE}"
        )
    return None


def _sns_target(node: Mapping[str, Any]) -> str | None:
    # Alertmanager's own expression, quirk included: (a != b) != c on "is empty".
    target, topic, phone = (not _set(node, k) for k in ("target_arn", "topic_arn", "phone_number"))
    if (target != topic) != phone:
        return "must provide either a Target ARN, Topic ARN, or Phone Number for SNS config"
    return None


_OWN_CHECKS: dict[str, tuple[Check, ...]] = {
    # Each integration's UnmarshalYAML, in its order.
    "webhook_configs": (_one_of("url", "url_file"), _at_most_one("url", "url_file")),
    "email_configs": (_one_of("to", message="missing to address in email config"),),
    "slack_configs": (
        _at_most_one("api_url", "api_url_file"),
        _at_most_one("app_token", "app_token_file"),
        _url_or_token,
        _slack_update_message,
    ),
    "wechat_configs": (_at_most_one("api_secret", "api_secret_file"),),
    "victorops_configs": (
        _one_of("routing_key", message="missing Routing key in VictorOps config"),
        _at_most_one("api_key", "api_key_file"),
    ),
    "discord_configs": (
        _one_of("webhook_url", "webhook_url_file"),
        _at_most_one("webhook_url", "webhook_url_file"),
    ),
    "msteams_configs": (
        _one_of("webhook_url", "webhook_url_file"),
        _at_most_one("webhook_url", "webhook_url_file"),
    ),
    "msteamsv2_configs": (
        _one_of("webhook_url", "webhook_url_file"),
        _at_most_one("webhook_url", "webhook_url_file"),
    ),
    "opsgenie_configs": (_at_most_one("api_key", "api_key_file"),),
    "pagerduty_configs": (
        _one_of(
            "routing_key",
            "routing_key_file",
            "service_key",
            "service_key_file",
            message="missing service or routing key in PagerDuty config",
        ),
        _at_most_one("routing_key", "routing_key_file"),
        _at_most_one("service_key", "service_key_file"),
    ),
    "pushover_configs": (
        _one_of("user_key", "user_key_file"),
        _at_most_one("user_key", "user_key_file"),
        _one_of("token", "token_file"),
        _at_most_one("token", "token_file"),
        _at_most_one("monospace", "html"),
    ),
    "rocketchat_configs": (
        _at_most_one("token", "token_file"),
        _at_most_one("token_id", "token_id_file"),
    ),
    "sns_configs": (_sns_target,),
    "telegram_configs": (
        _at_most_one("bot_token", "bot_token_file"),
        _one_of(
            "chat_id", "chat_id_file", message="missing chat_id or chat_id_file on telegram_config"
        ),
        _at_most_one("chat_id", "chat_id_file"),
    ),
    "mattermost_configs": (_at_most_one("webhook_url", "webhook_url_file"),),
    "webex_configs": (_one_of("room_id", message="missing room_id on webex_config"),),
    "jira_configs": (
        _one_of("project", message="missing project in jira_config"),
        _one_of("issue_type", message="missing issue_type in jira_config"),
    ),
    "incidentio_configs": (_one_of("url", "url_file"), _at_most_one("url", "url_file")),
}

_GLOBAL_PAIRS = (
    ("slack_app_token", "slack_app_token_file"),
    ("slack_api_url", "slack_api_url_file"),
    None,  # Slack's URL against its app token, between these two as Alertmanager has it
    ("opsgenie_api_key", "opsgenie_api_key_file"),
    ("victorops_api_key", "victorops_api_key_file"),
    ("telegram_bot_token", "telegram_bot_token_file"),
    ("smtp_auth_password", "smtp_auth_password_file"),
    ("rocketchat_token", "rocketchat_token_file"),
    ("rocketchat_token_id", "rocketchat_token_id_file"),
    ("smtp_auth_secret", "smtp_auth_secret_file"),
    ("wechat_api_secret", "wechat_api_secret_file"),
    ("mattermost_webhook_url", "mattermost_webhook_url_file"),
)


def _global(glob: Mapping[str, Any]) -> str | None:
    for pair in _GLOBAL_PAIRS:
        if pair is None:
            token = _set(glob, "slack_app_token") or _set(glob, "slack_app_token_file")
            url = _set(glob, "slack_api_url") or _set(glob, "slack_api_url_file")
            app_url = glob.get("slack_app_url", SLACK_CHAT_POST_MESSAGE)
            if token and url and glob.get("slack_api_url") != app_url:
                return (
                    "at most one of slack_app_token/slack_app_token_file & "
                    "slack_api_url/slack_api_url_file must be configured"
                )
        elif error := _at_most_one(*pair)(glob):
            return error
    return None


def _secret(
    local: Sequence[str], default: Sequence[str], message: str
) -> Callable[..., str | None]:
    """The integration's secret, inline or in a file, here or in ``global``."""

    def check(node: Mapping[str, Any], glob: Mapping[str, Any]) -> str | None:
        if any(_set(node, k) for k in local) or any(_set(glob, k) for k in default):
            return None
        return message

    return check


_WITH_GLOBAL: dict[str, tuple[Callable[..., str | None], ...]] = {
    # Config.UnmarshalYAML, integration kinds in its order; None entries first.
    "webhook_configs": (),
    "email_configs": (
        _secret(["smarthost"], ["smtp_smarthost"], "no global SMTP smarthost set"),
        _secret(["from"], ["smtp_from"], "no global SMTP from set"),
    ),
    "slack_configs": (
        _secret(
            ["api_url", "api_url_file", "app_token", "app_token_file"],
            ["slack_api_url", "slack_api_url_file", "slack_app_token", "slack_app_token_file"],
            "no Slack API URL nor App token set either inline or in a file",
        ),
    ),
    "pushover_configs": (),
    "pagerduty_configs": (),
    "incidentio_configs": (),
    "opsgenie_configs": (
        _secret(
            ["api_key", "api_key_file"],
            ["opsgenie_api_key", "opsgenie_api_key_file"],
            "no global OpsGenie API Key set either inline or in a file",
        ),
    ),
    "wechat_configs": (
        _secret(
            ["api_secret", "api_secret_file"],
            ["wechat_api_secret", "wechat_api_secret_file"],
            "no global Wechat Api Secret set either inline or in a file",
        ),
        _secret(["corp_id"], ["wechat_api_corp_id"], "no global Wechat CorpID set"),
    ),
    "victorops_configs": (
        _secret(
            ["api_key", "api_key_file"],
            ["victorops_api_key", "victorops_api_key_file"],
            "no global VictorOps API Key set",
        ),
    ),
    "sns_configs": (),
    "telegram_configs": (
        _secret(
            ["bot_token", "bot_token_file"],
            ["telegram_bot_token", "telegram_bot_token_file"],
            "missing bot_token or bot_token_file on telegram_config",
        ),
    ),
    "discord_configs": (),
    "webex_configs": (),
    "msteams_configs": (),
    "msteamsv2_configs": (),
    "jira_configs": (_secret(["api_url"], ["jira_api_url"], "no global Jira Cloud URL set"),),
    "rocketchat_configs": (
        _secret(
            ["token_id", "token_id_file"],
            ["rocketchat_token_id", "rocketchat_token_id_file"],
            "no global Rocketchat TokenID set either inline or in a file",
        ),
        _secret(
            ["token", "token_file"],
            ["rocketchat_token", "rocketchat_token_file"],
            "no global Rocketchat Token set either inline or in a file",
        ),
    ),
    "mattermost_configs": (
        _secret(
            ["webhook_url", "webhook_url_file"],
            ["mattermost_webhook_url", "mattermost_webhook_url_file"],
            "missing webhook_url or webhook_url_file on mattermost_config",
        ),
    ),
}
_MAY_BE_EMPTY = {"slack_configs", "wechat_configs", "opsgenie_configs", "rocketchat_configs"}
"""Kinds Alertmanager fills in from ``global`` when a list entry is empty; any other
empty entry is ``missing <kind> config``."""


def refusal(config: Mapping[str, Any]) -> str | None:
    """Alertmanager's message for why it would not load ``config``, or ``None``."""
    return next(_refusals(config), None)


def _refusals(config: Mapping[str, Any]) -> Iterator[str]:
    yield from _while_reading(config)
    glob = config.get("global") or {}
    if isinstance(glob, Mapping) and (error := _global(glob)):
        yield error
    yield from _receivers(config.get("receivers") or [], glob if isinstance(glob, Mapping) else {})
    yield from _route_tree(config)


def _while_reading(config: Mapping[str, Any]) -> Iterator[str]:
    """The checks Alertmanager makes while it decodes each part, in file order."""
    for key, value in config.items():
        if key == "route" and isinstance(value, Mapping):
            yield from _route_node(value)
        elif key == "receivers" and isinstance(value, list):
            for receiver in value:
                yield from _receiver_fields(receiver)
        elif key == "inhibit_rules" and isinstance(value, list):
            for rule in value:
                if isinstance(rule, Mapping):
                    for side in ("source_match_re", "target_match_re"):
                        yield from _regexps(rule.get(side))
        elif key in ("time_intervals", "mute_time_intervals") and isinstance(value, list):
            for interval in value:
                if isinstance(interval, Mapping) and not _set(interval, "name"):
                    kind = "mute time interval" if key == "mute_time_intervals" else "time interval"
                    yield f"missing name in {kind}"


def _regexps(match_re: object) -> Iterator[str]:
    if isinstance(match_re, Mapping):
        for name, value in match_re.items():
            if value is None:
                yield f"invalid regexp value for {str(name)!r}".replace("'", '"')


def _route_node(node: Mapping[str, Any]) -> Iterator[str]:
    yield from _regexps(node.get("match_re"))
    group_by = [str(label) for label in node.get("group_by") or []]
    if "..." in group_by and len(group_by) > 1:
        yield "cannot have wildcard group_by (`...`) and other labels at the same time"
    seen: set[str] = set()
    for label in group_by:
        if label in seen:
            yield f'duplicated label "{label}" in group_by'
        seen.add(label)
    for key in ("group_interval", "repeat_interval"):
        if _set(node, key) and _is_zero(node[key]):
            yield f"{key} cannot be zero"
    for child in node.get("routes") or []:
        if isinstance(child, Mapping):
            yield from _route_node(child)


def _is_zero(value: object) -> bool:
    """A Prometheus duration of zero: ``0``, ``0s``, ``0h0m``..."""
    return _ZERO.fullmatch(str(value).strip()) is not None


def _receiver_fields(receiver: object) -> Iterator[str]:
    if not isinstance(receiver, Mapping):
        return
    if not _set(receiver, "name"):
        yield "missing name in receiver"
    for kind, checks in _OWN_CHECKS.items():
        for entry in receiver.get(kind) or []:
            if isinstance(entry, Mapping):
                for check in checks:
                    if error := check(entry):
                        yield error


def _receivers(receivers: Sequence[Any], glob: Mapping[str, Any]) -> Iterator[str]:
    names: set[str] = set()
    for receiver in receivers:
        if not isinstance(receiver, Mapping):
            continue
        name = str(receiver.get("name", ""))
        if name in names:
            yield f'notification config name "{name}" is not unique'
        for kind, checks in _WITH_GLOBAL.items():
            for entry in receiver.get(kind) or []:
                if entry is None and kind not in _MAY_BE_EMPTY:
                    yield f"missing {kind.removesuffix('_configs')} config"
                node = entry if isinstance(entry, Mapping) else {}
                for check in checks:
                    if error := check(node, glob):
                        yield error
        names.add(name)


def _route_tree(config: Mapping[str, Any]) -> Iterator[str]:
    root = config.get("route")
    if not isinstance(root, Mapping):
        yield "no routes provided"
        return
    if not _set(root, "receiver"):
        yield "root route must specify a default receiver"
    if any(_set(root, key) for key in ("match", "match_re", "matchers")):
        yield "root route must not have any matchers"
    if _set(root, "mute_time_intervals"):
        yield "root route must not have any mute time intervals"
    if _set(root, "active_time_intervals"):
        yield "root route must not have any active time intervals"
    intervals: set[str] = set()
    kinds = (("mute_time_intervals", "mute time interval"), ("time_intervals", "time interval"))
    for key, kind in kinds:
        for interval in config.get(key) or []:
            name = str(interval.get("name", "")) if isinstance(interval, Mapping) else ""
            if name in intervals:
                yield f'{kind} "{name}" is not unique'
            intervals.add(name)
    receivers = {
        str(r.get("name", "")) for r in config.get("receivers") or [] if isinstance(r, Mapping)
    }
    yield from _undefined(root, receivers, intervals)
    if root.get("continue") is True:
        yield "cannot have continue in root route"


def _undefined(node: Mapping[str, Any], receivers: set[str], intervals: set[str]) -> Iterator[str]:
    if _set(node, "receiver") and str(node["receiver"]) not in receivers:
        yield f'undefined receiver "{node["receiver"]}" used in route'
    for key in ("active_time_intervals", "mute_time_intervals"):
        for name in node.get(key) or []:
            if str(name) not in intervals:
                yield f'undefined time interval "{name}" used in route'
    for child in node.get("routes") or []:
        if isinstance(child, Mapping):
            yield from _undefined(child, receivers, intervals)
