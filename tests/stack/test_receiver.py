from __future__ import annotations

import io
from pathlib import Path

import httpx

from bookgen.stack.receiver import AlertReceiver, alert_events, matches, read_notifications

NOTIFICATION = {
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "BookGenTargetDown", "severity": "critical", "worker": "1"},
        }
    ],
}


def test_each_notification_is_recorded_as_one_json_line_and_printed(tmp_path: Path) -> None:
    echo = io.StringIO()
    path = tmp_path / "alerts.jsonl"
    with AlertReceiver(path, echo=echo) as receiver:
        assert receiver.url.startswith("http://127.0.0.1:")
        for _ in range(2):
            assert httpx.post(receiver.url, json=NOTIFICATION).status_code == 200
        assert httpx.post(receiver.url, content=b"not json").status_code == 400
        assert httpx.get(receiver.url.replace("/alerts", "/-/ready")).status_code == 200
    found = read_notifications(path)
    assert len(found) == 2
    assert all(n["received_at"] > 0 and n["alerts"] == NOTIFICATION["alerts"] for n in found)
    assert path.read_text().count("\n") == 2
    assert "FIRING   BookGenTargetDown {severity=critical, worker=1}" in echo.getvalue()


def test_alert_events_filter_by_time_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    with AlertReceiver(path) as receiver:
        receiver.record(NOTIFICATION)
    (received, alert), *_ = list(alert_events(path))
    assert matches({"alertname": "BookGenTargetDown", "worker": "1"})(alert)
    assert not matches({"worker": "0"})(alert)
    assert list(alert_events(path, since=received + 1)) == []
