"""The run directory's `stack.json`: what `bookgen up` started, read back by `bookgen status`."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

if TYPE_CHECKING:
    from bookgen.stack.supervisor import Stack

STATE_FILE = "stack.json"


def write(stack: Stack) -> None:
    data = {
        "supervisor_pid": os.getpid(),
        "started_at": time.time(),
        "profile": stack.profile_name,
        "engine": stack.engine,
        "workers": stack.workers,
        "faults": stack.faults,
        "debug_token": stack.debug_token,
        "urls": stack.urls(),
        "notifications": str(stack.notifications_path),
        "components": {
            c.name: {
                "pid": c.pid,
                "ready_url": c.ready_url,
                "ready_tcp": list(c.ready_tcp) if c.ready_tcp else None,
                "address": c.address,
                "log": str(c.log),
            }
            for c in stack.components
        },
    }
    path = stack.run_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)


def clear(run_dir: Path) -> None:
    (run_dir / STATE_FILE).unlink(missing_ok=True)


def read(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    ready: bool
    url: str


@dataclass(frozen=True, slots=True)
class TargetStatus:
    job: str
    instance: str
    health: str
    error: str


@dataclass(frozen=True, slots=True)
class Status:
    components: list[ComponentStatus]
    firing: list[dict[str, Any]]
    error: str | None = None
    targets: list[TargetStatus] = field(default_factory=list)
    targets_error: str | None = None


def _answers(client: httpx.Client, info: dict[str, Any], timeout_s: float) -> bool:
    if info.get("ready_url"):
        try:
            return client.get(info["ready_url"]).is_success
        except httpx.HTTPError:
            return False
    if info.get("ready_tcp"):
        host, port = info["ready_tcp"]
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError:
            return False
    return True


def _targets(client: httpx.Client, prometheus_url: str) -> list[TargetStatus]:
    response = client.get(f"{prometheus_url}/api/v1/targets", params={"state": "active"})
    response.raise_for_status()
    found = [
        TargetStatus(
            t["labels"].get("job", "?"),
            t["labels"].get("instance", "?"),
            t.get("health", "unknown"),
            t.get("lastError", ""),
        )
        for t in response.json()["data"]["activeTargets"]
    ]
    return sorted(found, key=lambda t: (t.job, t.instance))


def probe(data: dict[str, Any], timeout_s: float = 2.0) -> Status:
    """Which recorded components run and answer, how Prometheus sees each target, and which
    alerts Alertmanager holds."""
    components = []
    with httpx.Client(timeout=timeout_s) as client:
        for name, info in data.get("components", {}).items():
            pid = info.get("pid")
            running = bool(pid) and psutil.pid_exists(pid)
            ready = _answers(client, info, timeout_s)
            address = info.get("address") or info.get("ready_url") or ""
            components.append(ComponentStatus(name, pid, running, ready, address))
        targets: list[TargetStatus] = []
        targets_error = None
        try:
            targets = _targets(client, data["urls"]["prometheus"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            targets_error = f"prometheus unreachable: {type(exc).__name__}"
        firing: list[dict[str, Any]] = []
        error = None
        try:
            response = client.get(
                f"{data['urls']['alertmanager']}/api/v2/alerts",
                params={"active": "true", "silenced": "false", "inhibited": "false"},
            )
            response.raise_for_status()
            firing = sorted(response.json(), key=lambda a: a["labels"].get("alertname", ""))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            error = f"alertmanager unreachable: {type(exc).__name__}"
    return Status(components, firing, error, targets, targets_error)
