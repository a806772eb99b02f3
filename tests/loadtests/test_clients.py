"""The simulated clients' addresses: stable, distinct, and believed only from the harness."""

from __future__ import annotations

import ipaddress

from bookgen.acceptance.clients import (
    CLIENT_NETWORK,
    TRUSTED_PROXY,
    client_address,
    client_headers,
)
from bookgen.service.auth import TrustedProxies


def test_each_name_has_a_stable_address_of_its_own() -> None:
    names = [f"user-{n}" for n in range(40)]
    addresses = [client_address(name) for name in names]
    assert addresses == [client_address(name) for name in names]
    assert len(set(addresses)) == len(names)
    for address in addresses:
        parsed = ipaddress.ip_address(address)
        assert parsed in CLIENT_NETWORK
        assert parsed not in (CLIENT_NETWORK.network_address, CLIENT_NETWORK.broadcast_address)
    assert client_headers("user-1") == {"X-Forwarded-For": client_address("user-1")}


def test_a_server_trusting_the_harness_sees_the_simulated_client() -> None:
    proxies = TrustedProxies(TRUSTED_PROXY)
    sent = client_headers("user-1")["X-Forwarded-For"]
    assert proxies.client(TRUSTED_PROXY, sent) == client_address("user-1")
    # From any other peer the header is ignored.
    assert proxies.client("192.0.2.7", sent) == "192.0.2.7"
