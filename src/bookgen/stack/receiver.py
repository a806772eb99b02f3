"""The built-in alert receiver: Alertmanager's webhook, recording notifications as JSON lines."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from bookgen.stack.ports import HOST

WEBHOOK_PATH = "/alerts"
Notification = dict[str, Any]


def describe(labels: dict[str, str]) -> str:
    """`BookGenX {severity=critical, worker=0}`."""
    rest = dict(labels)
    name = rest.pop("alertname", "?")
    return f"{name} {{{', '.join(f'{k}={v}' for k, v in sorted(rest.items()))}}}"


def summary(notification: Notification) -> str:
    """One line per alert: `FIRING   BookGenX {severity=critical, worker=0}`."""
    return "\n".join(
        f"{str(alert.get('status', '?')).upper():8} {describe(alert.get('labels', {}))}"
        for alert in notification.get("alerts", [])
    )


class AlertReceiver:
    """HTTP server on 127.0.0.1 appending each POSTed notification to `path`, one a line."""

    def __init__(
        self, path: Path, port: int = 0, *, echo: TextIO | None = None, host: str = HOST
    ) -> None:
        self.path = path
        self._echo = echo
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{WEBHOOK_PATH}"

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="alert-receiver", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> AlertReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, notification: Notification) -> None:
        entry = {"received_at": time.time(), **notification}
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")
        if self._echo is not None:
            print(summary(notification), file=self._echo, flush=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    notification = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._reply(HTTPStatus.BAD_REQUEST)
                    return
                if not isinstance(notification, dict):
                    self._reply(HTTPStatus.BAD_REQUEST)
                    return
                receiver.record(notification)
                self._reply(HTTPStatus.OK)

            def do_GET(self) -> None:
                self._reply(HTTPStatus.OK if self.path == "/-/ready" else HTTPStatus.NOT_FOUND)

            def _reply(self, status: HTTPStatus) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the notification itself is what gets printed."""

        return Handler


def read_notifications(path: Path) -> list[Notification]:
    """Every recorded notification, oldest first; a half-written last line is skipped."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def alert_events(path: Path, since: float = 0.0) -> Iterator[tuple[float, Notification]]:
    """(received_at, alert) for every alert of every notification received at or after `since`."""
    for notification in read_notifications(path):
        received = float(notification.get("received_at", 0.0))
        if received >= since:
            for alert in notification.get("alerts", []):
                yield received, alert


def matches(labels: dict[str, str]) -> Callable[[Notification], bool]:
    """A predicate: the alert carries every one of `labels`."""

    def predicate(alert: Notification) -> bool:
        have = alert.get("labels", {})
        return all(have.get(k) == v for k, v in labels.items())

    return predicate


def main(argv: list[str] | None = None) -> None:
    """`python -m bookgen.stack.receiver --port 9095 --out alerts.jsonl` (compose, Kubernetes)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--out", type=Path, default=Path("alerts.jsonl"))
    args = parser.parse_args(argv)
    receiver = AlertReceiver(args.out, args.port, echo=sys.stdout, host=args.host)
    print(f"alert receiver on {receiver.url}, recording to {args.out}", flush=True)
    receiver.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()
