from __future__ import annotations

import json

import pytest
import yaml

from bookgen.stack import profile


def test_fast_profile_bounds_match_the_committed_fast_profile_table() -> None:
    fast = profile.load("fast")
    assert (fast.intervals.scrape, fast.intervals.evaluation) == ("1s", "1s")
    table = json.loads((profile.repo_root() / "alerts" / "fast-profile.json").read_text())
    assert table["alerts"], table
    for row in table["alerts"]:
        assert fast.for_s(row["alert"], row["severity"]) == row["for_s"], row
        assert fast.detection_bound_s(row["alert"], row["severity"]) == row["bound_s"], row


def test_default_profile_uses_the_production_intervals() -> None:
    default = profile.load("default")
    assert default.intervals.scrape == "15s"
    assert default.detection_bound_s("Watchdog") == 2 * (15 + 15 + default.group_wait_s)


def test_a_name_with_several_severities_needs_the_severity() -> None:
    fast = profile.load("fast")
    with pytest.raises(KeyError, match="2 rules match"):
        fast.for_s("BookGenAPILatencyErrorBudgetBurn")
    # Burn alerts wait for nothing: their short window is the delay (Sloth's convention).
    assert fast.for_s("BookGenAPILatencyErrorBudgetBurn", "critical") == 0
    assert fast.for_s("BookGenWorkersMissing", "warning") == 1


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        profile.load("slow")


def test_alertmanager_config_posts_every_receiver_to_the_given_webhook() -> None:
    config = profile.alertmanager_config("http://127.0.0.1:1234/alerts", "fast")
    assert config["route"]["group_wait"] == "1s"
    hooks = [hook for r in config["receivers"] for hook in r.get("webhook_configs", [])]
    urls = {hook["url"] for hook in hooks}
    assert urls == {"http://127.0.0.1:1234/alerts"}
    yaml.safe_dump(config)  # serialisable as the stack writes it
