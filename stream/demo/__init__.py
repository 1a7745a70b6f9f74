"""The built-in demo site (`steplog serve --demo`, `STEPLOG_DEMO=1`): profiles to scrape.

Off by default. When on, it is served under `/demo` and the scraper's target
guard allows this server's own host and port under `/demo` (and nothing else
there), so `steplog trigger scrape -p url=http://127.0.0.1:8000/demo/in/ada-lovelace`
works out of the box.
"""

from __future__ import annotations

import logging

from quart import Quart

from stream.settings import Settings

log = logging.getLogger("steplog.demo")

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def install(app: Quart, settings: Settings) -> list[str]:
    """Serve the demo on `app` and let this process's scraper reach it; returns what it allowed."""
    from stream.demo import rendered  # noqa: F401 - its routes join the demo blueprint
    from stream.demo.site import DemoState, demo

    app.extensions["steplog.demo"] = DemoState()
    app.register_blueprint(demo)
    return allow_targets(settings)


def allow_targets(settings: Settings) -> list[str]:
    """Let this process's scraper fetch the demo site served at the settings' host and port.

    Only under `/demo`: the rest of this server (its API, `/metrics`) stays refused,
    checked per request by the route handler and per tunnel by the egress proxy.

    A separate `steplog worker` calls this too (with `STEPLOG_DEMO=1` and the
    server's `STEPLOG_HOST`/`STEPLOG_PORT`), since it scrapes the same site.
    """
    from functions.scrape.egress.targets import allow_host

    hosts = [settings.host]
    if settings.host in WILDCARD_HOSTS:
        hosts = ["127.0.0.1", "localhost", "::1"]
    allowed = [f"{_host_port(h, settings.port)}/demo" for h in hosts]
    where = f"the demo site at {_host_port(hosts[0], settings.port)}/demo"
    for entry in allowed:
        allow_host(entry, where)
    log.info("demo site on /demo; the scraper may fetch %s", ", ".join(allowed))
    return allowed


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
