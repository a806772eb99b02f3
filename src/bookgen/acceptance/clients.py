"""Simulated clients' addresses, for harnesses that play many clients against a loopback server.

Without auth the service keys its limits on the client address after trusted proxy hops
(`BOOKGEN_FORWARDED_ALLOW_IPS`), never on a header a client may choose. Every harness on this
machine reaches a loopback server from 127.0.0.1, so it does what a real edge does: the server
it starts trusts 127.0.0.1 as a proxy, and each simulated client sends X-Forwarded-For with an
address of its own. A server that does not trust the peer ignores the header.
"""

from __future__ import annotations

import hashlib
import ipaddress

# The upper half of RFC 2544's benchmarking range 198.18.0.0/15: never a real client's address,
# and apart from the /24s of 198.18 that `netns.Network` gives its simulated hosts.
CLIENT_NETWORK = ipaddress.IPv4Network("198.19.0.0/16")
# The edge a harness plays, for the servers it starts on loopback.
TRUSTED_PROXY = "127.0.0.1"


def client_address(name: str) -> str:
    """A stable address for the simulated client `name` (the same in every process and run).

    Drawn from a hash over 65,534 addresses: two names share one with a chance of 1 in 65,534,
    so a few dozen clients are almost surely apart, while a thousand give a few pairs sharing a
    bucket (harmless for load; a test counting refusals uses few names).
    """
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    # Skip the network's first and last address.
    offset = 1 + digest % (CLIENT_NETWORK.num_addresses - 2)
    return str(CLIENT_NETWORK.network_address + offset)


def client_headers(name: str) -> dict[str, str]:
    """The headers by which `name` reaches a server that trusts the harness as its proxy."""
    return {"X-Forwarded-For": client_address(name)}
