"""Which URLs the scraper may fetch: the SSRF guard.

A profile URL comes from whoever can send a webhook, and every page it loads can
point the browser somewhere else (a redirect, an image, a script's fetch). So
the policy is checked for every connection, not only for the first URL:

* only `http` and `https`;
* the host is resolved and refused when *any* of its addresses is loopback,
  private, link-local, unique-local, multicast, unspecified, reserved, a cloud
  metadata address, or one of those embedded in an IPv6 address (IPv4-mapped,
  IPv4-compatible, 6to4, NAT64, Teredo). Odd numeric hosts such as `2130706433`
  or `0x7f.1` need no special case: the resolver turns them into 127.0.0.1 and
  the address check refuses that;
* unless the host (or host:port) is allowed by `STEPLOG_SCRAPE_ALLOW_HOSTS` or by
  `allow_host()` (the app allows its own demo site that way).

`Guard` applies the policy to one run and remembers what it refused, so the run
can fail saying why. It is enforced twice: by `route()` on every request the
browser context makes (URL-level, early), and by the run's egress proxy
(`functions.scrape.egress.proxy`) on every connection, which also sees redirect hops
that route interception never does, and connects only to the address it checked
(no DNS rebinding between check and connect).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urlsplit

from functions.errors import PermanentError, TransientError
from functions.scrape.egress.addresses import IPAddress, address_kind

if TYPE_CHECKING:
    from playwright.async_api import Request, Route, WebSocketRoute

log = logging.getLogger("steplog.scrape.targets")

ALLOW_ENV = "STEPLOG_SCRAPE_ALLOW_HOSTS"
SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class TargetRefused(PermanentError):
    """The scraper will not fetch this target; another attempt would not change that."""

    def __init__(self, target: str, reason: str, context: str = "") -> None:
        self.target = target
        self.reason = reason
        where = f" ({context})" if context else ""
        super().__init__(f"refused to fetch {target}{where}: {reason}")


class TargetUnresolvable(TransientError):
    """The host did not resolve; DNS trouble can pass, so the run may be retried."""


# --- the allow-list ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostEntry:
    """One allow-list entry: a host, optionally the only port, optionally a path prefix.

    With a prefix (`127.0.0.1:8000/demo/`) only paths under it may be fetched there:
    the app allows its own demo site that way, and not its `/metrics` or API beside it.
    """

    host: str
    port: int | None = None
    path: str = ""
    """"" allows every path; else a prefix such as "/demo" (matching /demo and /demo/…)."""

    def matches(self, host: str, port: int) -> bool:
        return self.host == host and (self.port is None or self.port == port)

    def allows_path(self, path: str) -> bool:
        return path_under(path, self.path)


def path_under(path: str, prefix: str) -> bool:
    """Whether `path` lies under `prefix` ("" is everything); dot segments never do.

    Browsers resolve `..` before sending, so a path still carrying one (or its
    percent-encoded form) was written by hand to climb out of the prefix.
    """
    if not prefix:
        return True
    segments = unquote(path).replace("\\", "/").split("/")
    if any(segment in (".", "..") for segment in segments):
        return False
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


_allowed: set[HostEntry] = set()
_described: dict[HostEntry, str] = {}
"""What an `allow_host()` entry is, in words ("the demo site at 127.0.0.1:8000/demo"), so a
refusal can say what *is* allowed instead of leaving the user to guess the port."""


def canonical_host(host: str) -> str:
    """Lower-case, without brackets or a trailing dot; IP literals in their usual form.

    So `0x7f.1`, `2130706433` and `127.0.0.1` name the same allow-list entry, the
    way the browser (which canonicalises URLs the same way) will ask for it.
    """
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if host and all(part.isalnum() for part in host.split(".")):
        try:  # inet_aton accepts the old numeric forms: 2130706433, 0x7f.1, 0177.1
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            pass
    return host


def parse_entry(text: str) -> HostEntry:
    """`host`, `host:port`, `[v6]` or `[v6]:port`, each optionally followed by a `/path` prefix."""
    text = text.strip()
    if not text:
        raise ValueError("empty allow-list entry")
    text, slash, path = text.partition("/")
    path = slash + path
    if not text:
        raise ValueError("an allow-list entry needs a host before its path")
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host = text
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return HostEntry(canonical_host(host), port, path.rstrip("/"))


def allow_host(entry: str, what: str = "") -> None:
    """Allow `host`, `host:port` or `host:port/prefix` in this process (the demo site, `what`)."""
    parsed = parse_entry(entry)
    _allowed.add(parsed)
    if what:
        _described[parsed] = what


def allow_hint(ip: IPAddress) -> str:
    """What to do about a refused non-public `ip`: what this process allows, and the setting."""
    if ip.is_loopback:
        allowed = sorted(set(_described.values()))
        if allowed:
            return (
                f"only {' and '.join(allowed)} may be scraped on a loopback address;"
                f" set {ALLOW_ENV} to allow others"
            )
    return f"set {ALLOW_ENV}=host:port to allow it"


def allowed_entries(env: dict[str, str] | None = None) -> set[HostEntry]:
    """`allow_host()` entries plus `STEPLOG_SCRAPE_ALLOW_HOSTS`, read now (so tests can set it)."""
    raw = (os.environ if env is None else env).get(ALLOW_ENV, "")
    entries = set(_allowed)
    for part in raw.split(","):
        if part.strip():
            try:
                entries.add(parse_entry(part))
            except ValueError as exc:
                log.warning("ignoring %s entry %r: %s", ALLOW_ENV, part, exc)
    return entries


def is_allowed(host: str, port: int, env: dict[str, str] | None = None) -> bool:
    host = canonical_host(host)
    return any(entry.matches(host, port) for entry in allowed_entries(env))


def path_prefixes(
    host: str, port: int, env: dict[str, str] | None = None
) -> tuple[str, ...] | None:
    """The only path prefixes allowed on `host:port`, or None when every path is.

    None as well when no entry names the host: the address policy alone decides then.
    """
    host = canonical_host(host)
    prefixes = {entry.path for entry in allowed_entries(env) if entry.matches(host, port)}
    if not prefixes or "" in prefixes:
        return None
    return tuple(sorted(prefixes))


def path_refusal(host: str, port: int, path: str) -> str | None:
    """Why `path` may not be fetched on `host:port` (an allow entry's prefix), or None."""
    prefixes = path_prefixes(host, port)
    if prefixes is None or any(path_under(path or "/", p) for p in prefixes):
        return None
    where = _host_port(canonical_host(host), port)
    return f"only {', '.join(p + '/' for p in prefixes)} may be fetched on {where}"


# --- addresses --------------------------------------------------------------------------------


def refusal_reason(ip: IPAddress, host: str | None = None) -> str | None:
    """Why the scraper must not connect to `ip` (reached through `host`), or None."""
    kind = address_kind(ip)
    if kind is None:
        return None
    if host is not None and canonical_host(host) != str(ip):
        return f"{host} resolves to {ip}, {kind}"
    return f"{ip} is {kind}"


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (IP literals and numeric forms included)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolvable(f"could not resolve {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise TargetUnresolvable(f"{host!r} resolved to no address")
    return addresses


async def check_host(host: str, port: int, *, target: str | None = None) -> list[IPAddress]:
    """The addresses to connect to for `host:port`, or `TargetRefused` saying why not."""
    shown = target or f"{host}:{port}"
    addresses = await resolve(host, port)
    if is_allowed(host, port):
        return addresses
    for ip in addresses:
        reason = refusal_reason(ip, host)
        if reason is not None:
            raise TargetRefused(shown, f"{reason} ({allow_hint(ip)})")
    return addresses


def split_url(url: str) -> SplitResult:
    """The URL's parts, after the checks that need no network: scheme, host, no userinfo."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise TargetRefused(_short(url), f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise TargetRefused(_short(url), f"only http and https URLs are fetched, not {scheme!r}")
    if not parts.hostname:
        raise TargetRefused(_short(url), "the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused(_short(url), "credentials inside the URL are not accepted")
    return parts


def url_port(parts: SplitResult) -> int:
    return parts.port or DEFAULT_PORTS[parts.scheme.lower()]


async def check_url(url: str) -> list[IPAddress]:
    """Refuse `url` unless it is http(s) to an allowed or public host."""
    parts = split_url(url)
    assert parts.hostname is not None
    addresses = await check_host(parts.hostname, url_port(parts), target=_short(url))
    if (reason := path_refusal(parts.hostname, url_port(parts), parts.path)) is not None:
        raise TargetRefused(_short(url), reason)
    return addresses


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _short(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[: limit - 1] + "…"


# --- one run's guard ---------------------------------------------------------------------------


@dataclass
class Guard:
    """The policy for one run: checks, caches verdicts, and remembers every refusal.

    The browser only reports a refused request as a failed load; the refusal kept
    here is what lets the run fail with the real reason.
    """

    refusals: list[TargetRefused] = field(default_factory=list)
    checked: int = 0
    _verdicts: dict[tuple[str, int], list[IPAddress] | TargetRefused] = field(default_factory=dict)

    def refuse(self, refusal: TargetRefused) -> None:
        """Remember a refusal once (the browser retries a refused connection a few times)."""
        if any(r.target == refusal.target and r.reason == refusal.reason for r in self.refusals):
            return
        self.refusals.append(refusal)
        log.warning("%s", refusal)

    def raise_if_refused(self) -> None:
        """Fail the run with the first refusal, if anything was refused so far."""
        if self.refusals:
            raise self.refusals[0]

    async def _verdict(self, host: str, port: int) -> list[IPAddress] | TargetRefused:
        """The policy's answer for `host:port`, checked once per run (not recorded here)."""
        key = (canonical_host(host), port)
        verdict = self._verdicts.get(key)
        if verdict is None:
            self.checked += 1
            try:
                verdict = await check_host(host, port, target=_host_port(key[0], port))
            except TargetRefused as exc:
                verdict = exc
            self._verdicts[key] = verdict
        return verdict

    async def connect_addresses(self, host: str, port: int, context: str) -> list[IPAddress]:
        """Addresses the proxy may connect to for `host:port`; a refusal is recorded."""
        verdict = await self._verdict(host, port)
        if isinstance(verdict, TargetRefused):
            refusal = TargetRefused(verdict.target, verdict.reason, context)
            self.refuse(refusal)
            raise refusal
        return verdict

    async def check_request_url(self, url: str, context: str) -> TargetRefused | None:
        """The refusal for one browser request (recorded), or None when it may go ahead."""
        try:
            parts = split_url(url)
            assert parts.hostname is not None
            verdict = await self._verdict(parts.hostname, url_port(parts))
            reason = path_refusal(parts.hostname, url_port(parts), parts.path)
            if reason is not None and not isinstance(verdict, TargetRefused):
                verdict = TargetRefused(_short(url), reason)
        except TargetRefused as exc:
            verdict = exc
        except TargetUnresolvable:
            return None  # let the proxy and the browser report it as a failed load
        if isinstance(verdict, TargetRefused):
            refusal = TargetRefused(_short(url), verdict.reason, context)
            self.refuse(refusal)
            return refusal
        return None

    async def route(self, route: Route, request: Request) -> None:
        """`context.route("**/*", guard.route)`: abort a refused request before it leaves."""
        kind = request.resource_type
        kind = "the page" if request.is_navigation_request() else f"{_article(kind)} {kind}"
        try:
            refusal = await self.check_request_url(request.url, f"requested by {kind}")
        except Exception:  # never leave a request hanging on a bug here
            log.exception("checking %s failed; aborting it", _short(request.url))
            await route.abort("blockedbyclient")
            return
        if refusal is not None:
            await route.abort("blockedbyclient")
        else:
            await route.fallback()

    async def websocket(self, ws: WebSocketRoute) -> None:
        """`context.route_web_socket("**/*", guard.websocket)`: the same check for sockets."""
        url = ws.url
        for old, new in (("wss://", "https://"), ("ws://", "http://")):
            if url.startswith(old):
                url = new + url[len(old) :]
        refusal = await self.check_request_url(url, "a WebSocket")
        if refusal is not None:
            await ws.close(code=1008, reason="refused by the scraper's target policy")
        else:
            ws.connect_to_server()
