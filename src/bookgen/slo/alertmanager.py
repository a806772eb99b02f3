"""Alertmanager config: routes by severity, grouping, inhibition, local webhook + examples."""

from __future__ import annotations

from typing import Any

from bookgen.slo import conventions as names
from bookgen.slo.rules import alerts
from bookgen.slo.spec import Spec
from bookgen.slo.yamlio import dump_yaml

SECRETS_DIR = "/etc/alertmanager/secrets"
RECEIVERS = {"critical": "critical", "warning": "warning", "info": "watchdog"}
EXAMPLE_RECEIVERS = ("email-example", "pagerduty-example", "slack-example")


def _webhook(url: str) -> dict[str, Any]:
    return {"webhook_configs": [{"url": url, "send_resolved": True}]}


def _examples() -> list[dict[str, Any]]:
    """Real integrations to copy into a route; secrets only ever come from files."""
    return [
        {
            "name": "email-example",
            "email_configs": [
                {
                    "to": "bookgen-oncall@example.org",
                    "from": "alertmanager@example.org",
                    "smarthost": "smtp.example.org:587",
                    "auth_username": "alertmanager@example.org",
                    "auth_password_file": f"{SECRETS_DIR}/smtp-password",
                    "send_resolved": True,
                }
            ],
        },
        {
            "name": "pagerduty-example",
            "pagerduty_configs": [
                {
                    "routing_key_file": f"{SECRETS_DIR}/pagerduty-routing-key",
                    "description": "{{ .CommonAnnotations.summary }}",
                    "send_resolved": True,
                }
            ],
        },
        {
            "name": "slack-example",
            "slack_configs": [
                {
                    "api_url_file": f"{SECRETS_DIR}/slack-webhook-url",
                    "channel": "#bookgen-alerts",
                    "title": "[{{ .Status | toUpper }}] {{ .CommonAnnotations.summary }}",
                    "text": "{{ range .Alerts }}{{ .Annotations.description }}\n"
                    "{{ .Annotations.runbook_url }}\n{{ end }}",
                    "send_resolved": True,
                }
            ],
        },
    ]


def render(
    spec: Spec, webhook_url: str = names.DEFAULT_WEBHOOK_URL, profile: str = "default"
) -> dict[str, Any]:
    """The Alertmanager config; every routed receiver posts to `webhook_url`."""
    p = spec.profile(profile)
    timing = {
        "group_wait": names.format_duration(p.group_wait),
        "group_interval": names.format_duration(p.group_interval),
        "repeat_interval": names.format_duration(p.repeat_interval),
    }
    down = sorted({a.name for a in alerts(spec) if a.key in ("target_down", "target_absent")})
    return {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", names.SLO_LABEL, "severity"],
            **timing,
            "routes": [
                {
                    "receiver": RECEIVERS["info"],
                    "matchers": [f'alertname="{names.WATCHDOG}"'],
                },
                {"receiver": RECEIVERS["critical"], "matchers": ['severity="critical"']},
                {"receiver": RECEIVERS["warning"], "matchers": ['severity="warning"']},
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", names.SLO_LABEL],
            },
            {
                "source_matchers": [f'alertname=~"{"|".join(down)}"'],
                "target_matchers": [f'alertname!~"{"|".join([*down, names.WATCHDOG])}"'],
            },
        ],
        "receivers": [
            {"name": name, **_webhook(webhook_url)}
            for name in ("default", *sorted(set(RECEIVERS.values())))
        ]
        + _examples(),
    }


def render_text(
    spec: Spec, webhook_url: str = names.DEFAULT_WEBHOOK_URL, profile: str = "default"
) -> str:
    """The Alertmanager config as YAML text, header included."""
    return dump_yaml(render(spec, webhook_url, profile))


def route_cases(spec: Spec) -> list[tuple[dict[str, str], str]]:
    """(labels, receiver) pairs every config must route as stated: one per alert rule."""
    cases = [
        ({"alertname": a.name, "severity": a.severity}, RECEIVERS["info"])
        if a.name == names.WATCHDOG
        else ({"alertname": a.name, "severity": a.severity}, RECEIVERS[a.severity])
        for a in alerts(spec)
    ]
    cases.append(({"alertname": "SomethingElse", "severity": "none"}, "default"))
    return cases
