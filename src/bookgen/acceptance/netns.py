"""Simulated hosts on one machine: network namespaces on a private bridge (Linux, root).

Each host is a namespace with one interface on a bridge that lives in a namespace of its own; the
root namespace joins the bridge too, so the caller can reach every host. The subnet is one /24 of
198.18.0.0/15 (reserved for network testing); nothing routes it off the machine, and every
namespace and link is deleted on `close()`.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import replace
from types import TracebackType

from bookgen.acceptance.fleet import Host
from bookgen.stack.process import Component

ROOT_ADDRESS_SUFFIX = 1


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here; the message says why."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {result.stderr.strip()}")


def why_unavailable() -> str | None:
    """None when hosts can be made; else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    probe = f"bgprobe{random.randrange(16**6):06x}"
    try:
        _ip("netns", "add", probe)
    except NetnsUnavailable as error:
        return str(error)
    _ip("netns", "del", probe)
    return None


class Network:
    """`Network(["data", "api", ...])`: one host per name, each `Host(name, address, wrap)`."""

    def __init__(self, names: list[str]) -> None:
        self.tag = f"{random.randrange(16**4):04x}"
        self.subnet = f"198.18.{random.randrange(1, 255)}"
        self.switch = f"bg{self.tag}-sw"
        self.namespaces: dict[str, str] = {}
        self.hosts: dict[str, Host] = {}
        self._root_link = f"bg{self.tag}r"
        try:
            self._build(names)
        except BaseException:
            self.close()
            raise

    @property
    def root_address(self) -> str:
        return f"{self.subnet}.{ROOT_ADDRESS_SUFFIX}"

    def _build(self, names: list[str]) -> None:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for number, name in enumerate(names):
            namespace = f"bg{self.tag}-{name}"
            inner, outer = f"bg{self.tag}h{number}", f"bg{self.tag}s{number}"
            _ip("netns", "add", namespace)
            self.namespaces[name] = namespace
            _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            _ip("link", "set", inner, "netns", namespace)
            _ip("link", "set", outer, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", outer, "master", "br0", "up")
            _ip("-n", namespace, "link", "set", inner, "name", "eth0")
            address = f"{self.subnet}.{10 + number}"
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            self.hosts[name] = Host(name, address, ("ip", "netns", "exec", namespace))
        outer = f"bg{self.tag}sr"
        _ip("link", "add", self._root_link, "type", "veth", "peer", "name", outer)
        _ip("link", "set", outer, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", outer, "master", "br0", "up")
        _ip("addr", "add", f"{self.root_address}/24", "dev", self._root_link)
        _ip("link", "set", self._root_link, "up")

    def link(self, name: str, up: bool) -> None:
        """Take a host off the network (`up=False`) or put it back."""
        _ip("-n", self.namespaces[name], "link", "set", "eth0", "up" if up else "down")

    def close(self) -> None:
        for namespace in [*self.namespaces.values(), self.switch]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self._root_link], capture_output=True, check=False)
        self.namespaces.clear()

    def __enter__(self) -> Network:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def on_host(component: Component, host: Host) -> Component:
    """The same component, run on `host` (its user, if any, taken after entering the host)."""
    if not host.wrap:
        return component
    argv = list(component.argv)
    if component.user:
        argv = [
            "setpriv",
            f"--reuid={component.user}",
            f"--regid={component.user}",
            "--init-groups",
            *argv,
        ]
    return replace(component, argv=[*host.wrap, *argv], user=None)
