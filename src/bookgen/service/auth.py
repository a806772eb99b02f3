"""Principals: who is calling (an API key's name, or the client address without auth).

Keys are `bgk_` + 32 random bytes (URL-safe base64); the store keeps only their SHA-256. A slow
password hash (bcrypt, scrypt) buys nothing here: it exists to make guessing a *low-entropy*
password expensive, and a 256-bit random key cannot be guessed at any hash speed. It would cost
tens of milliseconds of CPU on every request (the API's p95 target is 200 ms, and a flood of
bad keys would become a CPU denial of service), and its per-hash salt would rule out finding the
key by an indexed lookup of its hash. An unsalted fast hash of a random secret allows both.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from bookgen.service.settings import Settings
from bookgen.service.store import Store
from bookgen.service.store.models import ApiKeyRow, utcnow

KEY_PREFIX = "bgk_"
# Key names are principals and metric label values: short, no spaces, never "ip:..." (the
# anonymous owners) nor parentheses (the metric's catch-all values).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
KEY_CACHE_ENTRIES = 4096
# A bearer token longer than any key we issue is refused before it is hashed.
MAX_KEY_LENGTH = 128

logger = logging.getLogger("bookgen.auth")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. `name` is the owner recorded on its jobs; `admin` sees every job."""

    name: str
    admin: bool = False
    quota: int | None = None  # queued + running books; None: the default cap
    authenticated: bool = False

    @property
    def scope(self) -> str | None:
        """The owner whose jobs this caller sees; None for every owner."""
        return None if self.admin else self.name


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            "a key name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


async def create_key(
    store: Store, name: str, *, admin: bool = False, quota: int | None = None
) -> tuple[str, ApiKeyRow]:
    """A new key for principal `name`: (the key, shown once; its stored row)."""
    check_name(name)
    if quota is not None and quota < 1:
        raise ValueError("a quota is a number of books, 1 or more")
    key = new_key()
    row = ApiKeyRow(
        id=secrets.token_hex(6),
        name=name,
        key_hash=hash_key(key),
        prefix=key[: len(KEY_PREFIX) + 6],
        admin=admin,
        quota=quota,
        created_at=utcnow(),
    )
    return key, await store.add_key(row)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=64)
def _public_address(host: str) -> bool:
    """Whether the address a request came in on is an IP address off loopback.

    Cached: it is the server's own address (a handful of values), and parsing it twice on
    every request without a key cost ~5 % of the CPU of a cached status read.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False  # a name, as in-process test clients give: no listening socket
    return not is_loopback(host)


def auth_required(settings: Settings) -> bool:
    if settings.auth == "auto":
        return not is_loopback(settings.listen_host)
    return settings.auth == "on"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Which peers' X-Forwarded-For is believed, as uvicorn's `--forwarded-allow-ips`."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.any = "*" in items
        self.networks: list[Network] = []
        for item in items:
            if item != "*":
                try:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ValueError(f"forwarded_allow_ips: {item!r} is not an address") from None

    def trusts(self, host: str) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: the peer, or, behind trusted proxies, the last hop they name.

        Walks X-Forwarded-For from the right (the entries the trusted proxies appended) and
        stops at the first address not trusted: entries left of it were written by the client.
        """
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop[:64]
        return hops[0][:64] if hops else peer


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": challenge}
    )


class Authenticator:
    """Maps a request to its principal; key lookups (and misses) are cached for a few seconds."""

    def __init__(self, settings: Settings) -> None:
        self.required = auth_required(settings)
        # "off" was asked for by name (and warned about at start): no per-request second guess.
        self.disabled = settings.auth == "off"
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        self.ttl_s = settings.key_cache_ttl_s
        self.default_quota = settings.principal_max_active or None
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._reading: dict[str, asyncio.Future[Principal | None]] = {}
        self._loader: asyncio.Task[None] | None = None

    async def start(self, store: Store) -> None:
        """Keep every active key in memory (refreshed each TTL), so that a burst, even from
        principals not seen for a while, is authenticated without a query per request."""
        try:
            await self.load(store)
        except Exception:
            logger.warning(
                "API keys could not be loaded; looking them up one by one", exc_info=True
            )
        self._loader = asyncio.create_task(self._load_loop(store), name="bookgen-keys")

    async def stop(self) -> None:
        if self._loader is not None:
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)

    async def _load_loop(self, store: Store) -> None:
        while True:
            await asyncio.sleep(max(self.ttl_s, 0.5))
            try:
                await self.load(store)
            except Exception:
                logger.warning("API key refresh failed", exc_info=True)

    async def load(self, store: Store) -> None:
        rows = await store.keys()
        # Good until the load after next; a key revoked since the last load is forgotten now.
        expires = time.monotonic() + 2 * self.ttl_s
        active = {row.key_hash for row in rows}
        for key_hash, (_, known) in list(self._cache.items()):
            if known is not None and key_hash not in active:
                del self._cache[key_hash]
        for row in rows:
            self._cache[row.key_hash] = (expires, self._principal(row))
            self._cache.move_to_end(row.key_hash)
        while len(self._cache) > KEY_CACHE_ENTRIES:
            self._cache.popitem(last=False)

    def _principal(self, row: ApiKeyRow) -> Principal:
        quota = row.quota if row.quota is not None else self.default_quota
        return Principal(row.name, admin=row.admin, quota=quota, authenticated=True)

    def client_address(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        return self.proxies.client(peer, request.headers.get("x-forwarded-for"))

    def _must_authenticate(self, request: Request) -> bool:
        if self.required:
            return True
        if self.disabled:
            return False
        # Served on a non-loopback address although the settings say loopback (the app run by
        # a server other than `bookgen serve`): demand a key all the same.
        server = request.scope.get("server")
        if not server:
            return False
        return _public_address(str(server[0]))

    async def principal(self, request: Request, store: Store) -> Principal:
        header = request.headers.get("authorization")
        if header is None:
            if self._must_authenticate(request):
                raise _unauthorized("an API key is required: Authorization: Bearer <key>")
            return Principal(
                "ip:" + self.client_address(request), admin=True, quota=self.default_quota
            )
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise _unauthorized("use Authorization: Bearer <key>", "invalid_request")
        if len(key) > MAX_KEY_LENGTH:
            raise _unauthorized("unknown or revoked API key", "invalid_token")
        found = await self._lookup(hash_key(key), store)
        if found is None:
            raise _unauthorized("unknown or revoked API key", "invalid_token")
        return found

    async def _lookup(self, key_hash: str, store: Store) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        # Concurrent requests with one key share one read: a burst arriving before the first
        # lookup returns would otherwise send one query per request.
        flight = self._reading.get(key_hash)
        if flight is None:
            flight = asyncio.ensure_future(self._read(key_hash, store))
            self._reading[key_hash] = flight
            flight.add_done_callback(lambda _: self._reading.pop(key_hash, None))
        return await asyncio.shield(flight)

    async def _read(self, key_hash: str, store: Store) -> Principal | None:
        row = await store.key_by_hash(key_hash)
        principal = None if row is None else self._principal(row)
        self._cache[key_hash] = (time.monotonic() + self.ttl_s, principal)
        self._cache.move_to_end(key_hash)
        if len(self._cache) > KEY_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return principal


async def current_principal(request: Request) -> Principal:
    authenticator: Authenticator = request.app.state.authenticator
    store: Store = request.app.state.store
    principal = await authenticator.principal(request, store)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
