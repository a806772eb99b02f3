"""Alertmanager config: routes by severity, grouping, inhibition, local webhook + examples.

Pages (critical) and tickets (warning) go to different receivers; the Watchdog goes to its own,
repeated every `watchdog_repeat_interval` so a dead man's switch outside notices when it stops.
Every inhibit rule has an `equal` list, so an alert only ever hides alerts about the same thing.
"""

from __future__ import annotations

from typing import Any

from bookgen.slo import conventions as names
from bookgen.slo.rules import alerts
from bookgen.slo.spec import Spec
from bookgen.slo.yamlio import dump_yaml

SECRETS_DIR = "/etc/alertmanager/secrets"
RECEIVERS = {"critical": "page", "warning": "ticket", "info": "watchdog"}
DEFAULT_RECEIVER = "default"
# One SLI: the SLIs are recorded per namespace and job, so a page in one deployment (or tier)
# hides nothing in another.
SAME_SLI = [names.NAMESPACE_LABEL, names.JOB_LABEL, names.SERVICE_LABEL, names.SLO_LABEL]
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
    heartbeat = names.format_duration(p.watchdog_repeat_interval)
    down = sorted({a.name for a in alerts(spec) if a.key == "target_down"})
    on_slo = f'{names.SLO_LABEL}=~".+"'
    return {
        "route": {
            "receiver": DEFAULT_RECEIVER,
            # By namespace too: staging's alerts never join production's notification.
            "group_by": [
                "alertname",
                names.NAMESPACE_LABEL,
                names.SERVICE_LABEL,
                names.SLO_LABEL,
                "severity",
            ],
            **timing,
            "routes": [
                {
                    "receiver": RECEIVERS["info"],
                    "matchers": [f'alertname="{names.WATCHDOG}"'],
                    "group_wait": "0s",
                    "group_interval": heartbeat,
                    "repeat_interval": heartbeat,
                },
                {"receiver": RECEIVERS["critical"], "matchers": ['severity="critical"']},
                {"receiver": RECEIVERS["warning"], "matchers": ['severity="warning"']},
            ],
        },
        "inhibit_rules": [
            # A page hides the ticket of the same alert (burn rates, missing workers).
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", *SAME_SLI],
            },
            # An SLO's page hides every ticket on the same SLI (the threshold error ratios).
            {
                "source_matchers": ['severity="critical"', on_slo],
                "target_matchers": ['severity="warning"', on_slo],
                "equal": SAME_SLI,
            },
            # A target that cannot be scraped hides only the alerts read from that target.
            {
                "source_matchers": [f'alertname=~"{"|".join(down)}"'],
                "target_matchers": [f'alertname!~"{"|".join([*down, names.WATCHDOG])}"'],
                "equal": [names.NAMESPACE_LABEL, names.JOB_LABEL, "instance"],
            },
        ],
        "receivers": [
            {"name": name, **_webhook(webhook_url)}
            for name in (DEFAULT_RECEIVER, *sorted(set(RECEIVERS.values())))
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
    cases.append(({"alertname": "SomethingElse", "severity": "none"}, DEFAULT_RECEIVER))
    return cases
