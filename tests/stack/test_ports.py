from __future__ import annotations

import socket

import pytest

from bookgen.stack.ports import HOST, PortError, allocate, free_port, is_free


def test_allocate_gives_distinct_free_ports_with_consecutive_metrics_ports() -> None:
    ports = allocate(3)
    assert len(set(ports.all())) == len(ports.all()) == 8
    assert ports.metrics == (ports.metrics_base, ports.metrics_base + 1, ports.metrics_base + 2)
    assert all(is_free(p) for p in ports.all())
    # Below the kernel's ephemeral range, where no outgoing connection can take one meanwhile.
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    assert ports.metrics_base + 2 < ephemeral_low


def test_a_configured_port_in_use_is_refused_with_its_name() -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not is_free(port)
        with pytest.raises(PortError, match=f"api port {HOST}:{port} is already in use"):
            allocate(1, api=port)


def test_configured_ports_are_kept() -> None:
    api = free_port()
    ports = allocate(2, api=api)
    assert ports.api == api
    assert api not in ports.metrics
