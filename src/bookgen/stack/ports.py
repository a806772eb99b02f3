"""Ports for the local stack: configured ones are checked, the rest are picked free on 127.0.0.1."""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

HOST = "127.0.0.1"
_ATTEMPTS = 200


class PortError(RuntimeError):
    """A configured port is taken, or no free port could be found."""


def is_free(port: int, host: str = HOST) -> bool:
    """Whether a TCP listener could bind `host:port` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A port the kernel says is free now (a race remains until the user binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _below_ephemeral(default: int = 32_768) -> int:
    """The lowest port the kernel hands out to outgoing connections and to bind(port 0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def free_range(count: int, host: str = HOST, exclude: frozenset[int] = frozenset()) -> int:
    """The first of `count` consecutive free ports (per-worker metrics ports are base + index).

    Picked below the kernel's ephemeral range: a port checked free there could be taken, before
    the worker binds it, by any outgoing connection on the machine."""
    rng = random.Random()
    low, high = 20_000, _below_ephemeral()
    if high - low < 1_000 + count:  # an unusual ephemeral range: take the wide one
        high = 60_000
    for _ in range(_ATTEMPTS):
        base = rng.randrange(low, high - count)
        candidates = range(base, base + count)
        if not exclude.intersection(candidates) and all(is_free(p, host) for p in candidates):
            return base
    raise PortError(f"no {count} consecutive free ports found on {host}")


@dataclass(frozen=True, slots=True)
class Ports:
    api: int
    sim: int
    prometheus: int
    alertmanager: int
    receiver: int
    metrics_base: int
    workers: int
    # Ports of optional components by name (data services, exporters, Celery workers).
    extra: Mapping[str, int] = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[int, ...]:
        return tuple(self.metrics_base + i for i in range(self.workers))

    def all(self) -> tuple[int, ...]:
        return (
            self.api,
            self.sim,
            self.prometheus,
            self.alertmanager,
            self.receiver,
            *self.metrics,
            *self.extra.values(),
        )


def allocate(
    workers: int,
    *,
    api: int | None = None,
    sim: int | None = None,
    prometheus: int | None = None,
    alertmanager: int | None = None,
    receiver: int | None = None,
    metrics_base: int | None = None,
    extra: Sequence[str] = (),
) -> Ports:
    """Configured ports must be free; the others (and one per `extra` name) free and distinct."""
    configured = {
        "api": api,
        "sim": sim,
        "prometheus": prometheus,
        "alertmanager": alertmanager,
        "receiver": receiver,
    }
    configured.update({name: None for name in extra})
    taken: set[int] = set()
    chosen: dict[str, int] = {}
    for name, port in configured.items():
        if port is not None:
            if port in taken or not is_free(port):
                raise PortError(f"{name} port {HOST}:{port} is already in use")
            chosen[name] = port
            taken.add(port)
    if metrics_base is not None:
        wanted = range(metrics_base, metrics_base + workers)
        busy = [p for p in wanted if p in taken or not is_free(p)]
        if busy:
            raise PortError(f"worker metrics ports {busy} are already in use")
    else:
        metrics_base = free_range(workers, exclude=frozenset(taken))
    taken.update(range(metrics_base, metrics_base + workers))
    for name in configured:
        if name not in chosen:
            port = free_port()
            for _ in range(_ATTEMPTS):
                if port not in taken:
                    break
                port = free_port()
            chosen[name] = port
            taken.add(port)
    named = {name: chosen.pop(name) for name in extra}
    return Ports(metrics_base=metrics_base, workers=workers, extra=named, **chosen)
