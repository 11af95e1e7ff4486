"""The redaction helper (issue #7): which parts of a configuration are credentials, how
URLs are shown, and how known secrets are masked in any text."""

from __future__ import annotations

from tocsin import config as config_module
from tocsin.observability.redact import (
    HIDDEN,
    MASK,
    Secret,
    Secrets,
    display_url,
    mask_secret,
    nats_url_secrets,
    secrets_of,
    url_secrets,
)


def test_urls_are_shown_without_their_credentials() -> None:
    assert display_url("https://hooks.slack.com/services/T0/B0/abc") == (
        f"https://hooks.slack.com/{MASK}"
    )
    assert display_url("https://discord.com/api/webhooks/123/tok") == (
        f"https://discord.com/{MASK}"
    )
    assert display_url("https://x.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d") == (
        f"https://x.webhook.office.com/{MASK}"
    )
    assert display_url("http://u:pw@127.0.0.1:8/a/b?token=x&v=1") == (
        f"http://{MASK}@127.0.0.1:8/a/b?token={MASK}&v={MASK}"
    )
    assert display_url("https://h.example/hook/a1b2c3d4e5f6g7h8i9") == (
        f"https://h.example/hook/{MASK}"
    )
    assert display_url("https://events.pagerduty.com/v2/enqueue") == (
        "https://events.pagerduty.com/v2/enqueue"
    )
    assert display_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    # A cluster's seed list: each server shown, each one's credentials dropped.
    assert display_url("nats://u:pw@n1:4222, nats://n2:4222,tls://n3:4222") == (
        f"nats://{MASK}@n1:4222,nats://n2:4222,tls://n3:4222"
    )
    assert display_url("https://h.example/a?x=1,nats://n2:4222") == (
        f"https://h.example/a?x={MASK}"
    )
    # A NATS token written as the user: masked like a password.
    assert display_url("nats://tok3n@nats:4222") == f"nats://{MASK}@nats:4222"


def test_credentials_in_a_nats_url_become_known_secrets() -> None:
    assert nats_url_secrets("nats://tocsin:s3cret@n1:4222,tls://tok3n@n2:4222,nats://n3:4222") == [
        "s3cret",
        "tok3n",
    ]
    assert nats_url_secrets("nats://127.0.0.1:4222") == []


def test_secrets_are_collected_from_the_config_and_masked_anywhere() -> None:
    loaded = config_module.from_mapping(
        {
            "receivers": {
                "w": {
                    "channel": "webhook",
                    "url": "https://h.example/p?k=v123",
                    "secret": "s3cr3t",
                },
                "slack": {"channel": "slack", "url": "https://hooks.slack.com/services/T/B/XYZW"},
                "pd": {"channel": "pagerduty", "routing_key": "rk-12345"},
                "og": {"channel": "opsgenie", "api_key": "og-12345"},
                "h": {
                    "channel": "webhook",
                    "url": "https://h.example/",
                    "headers": {"Authorization": "Bearer tkn-999", "Accept": "text/plain"},
                },
            },
        },
        {},
    )
    found = secrets_of(loaded.receivers, "smtp-pass", {"TOCSIN_API_TOKEN": "api-tok"})
    for value in ("s3cr3t", "v123", "/services/T/B/XYZW", "rk-12345", "og-12345"):
        assert value in found
    for value in ("Bearer tkn-999", "tkn-999", "smtp-pass", "api-tok", "/p?k=v123"):
        assert value in found
    assert "text/plain" not in found
    secrets = Secrets(found)
    assert secrets.scrub("got rk-12345 back") == f"got {MASK} back"
    assert secrets.scrub("HTTP 400: echo og-123", cut=True) == f"HTTP 400: echo {MASK}"
    assert secrets.scrub("nothing to hide") == "nothing to hide"
    assert "abc" not in Secrets(["abc"])  # too short to mask without eating words
    assert url_secrets("https://h.example/a?x=1", path_is_secret=True)[-2:] == [
        "/a?x=1",
        "https://h.example/a?x=1",
    ]


def test_urls_in_running_text_keep_the_sentence_around_them() -> None:
    secrets = Secrets()
    assert secrets.scrub("connected to nats://127.0.0.1:4222; ready") == (
        "connected to nats://127.0.0.1:4222; ready"
    )
    assert secrets.scrub("see (http://a.example/c?x=1).") == f"see (http://a.example/c?x={MASK})."
    assert secrets.scrub("at http://u:p@h.example:1/x, then") == (
        f"at http://{MASK}@h.example:1/x, then"
    )


def test_mask_secret_masks_one_known_secret_whole_and_cut_off() -> None:
    assert mask_secret("echo rk-12345 and rk-12345", "rk-12345") == f"echo {MASK} and {MASK}"
    assert mask_secret("HTTP 400: echo rk-12", "rk-12345") == "HTTP 400: echo rk-12"
    assert mask_secret("HTTP 400: echo rk-12", "rk-12345", cut=True) == f"HTTP 400: echo {MASK}"
    # A beginning shorter than four characters is ordinary text, not a secret's start.
    assert mask_secret("HTTP 400: echo rk-", "rk-12345", cut=True) == "HTTP 400: echo rk-"
    assert mask_secret("nothing to hide", "") == "nothing to hide"


def test_the_two_marks_each_where_it_is_promised() -> None:
    """Text with a secret taken out says ``[redacted]`` (README, "Secrets stay out"); a
    secret value printed in place of itself says ``***`` (``Secret``, config reprs)."""
    assert MASK == "[redacted]"
    assert HIDDEN == "***"
    assert (repr(Secret("s3cr3t")), str(Secret("s3cr3t")), f"{Secret('s3cr3t')}") == (
        "Secret('***')",
        "***",
        "***",
    )
