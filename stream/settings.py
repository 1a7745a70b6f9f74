"""One typed settings object, read from `STEPLOG_*` environment variables.

Every field is listed in the README's configuration table and, where the CLI
has a flag for it, in `steplog serve --help`.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.backends import log_file
from storage.errors import SteplogError

if TYPE_CHECKING:
    from functions.sealing import Sealer

DEFAULT_DB = "data/steplog.db"
DEFAULT_TOKEN_TTL = 7 * 24 * 3600.0
"""A week: long enough to share a link, short enough that a leaked one dies."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    db: str = DEFAULT_DB
    processes: int = 1
    """Serving processes sharing the port (`steplog serve` defaults to one per core)."""
    workers: int = 4
    """Worker slots of the whole server, shared out among its serving processes."""
    lease_seconds: float = 30.0
    poll_interval: float = 0.5
    tail_poll_interval: float = 0.05
    ping_interval: float = 15.0
    retry_ms: int = 2000
    api_key: str | None = None
    webhook_secret: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    """Fernet keys, comma-separated, for secrets in stored params (the first encrypts)."""
    token_ttl: float = DEFAULT_TOKEN_TTL
    """Seconds a run token (a `view_url`) stays valid after it is handed out."""
    max_body_bytes: int = 1024 * 1024
    subscriber_buffer: int = 4096
    public_url: str | None = None
    functions: tuple[str, ...] = ()
    sqlite_synchronous: str = "NORMAL"
    log_level: str = "INFO"
    log_format: str = "text"
    event_loop: str = "uvloop"
    """The loop `serve` and `worker` run on (stream/eventloop.py)."""
    demo: bool = False
    # TLS (README "Configuration"): both set, the server speaks HTTPS and HTTP/2 (ALPN).
    certfile: str | None = None
    keyfile: str | None = None
    # Limits and shutdown (README "Operations").
    max_streams: int = 10_000
    max_streams_per_token: int = 10
    max_stream_seconds: float = 900.0
    write_timeout: float = 30.0
    graceful_timeout: float = 10.0
    # Slow clients (README "Limits"): request heads and bodies that take too long.
    header_timeout: float = 10.0
    max_pending_headers: int = 1024
    body_timeout: float = 30.0
    # A full disk (README "Operations", "Disk"): below this many MB free, new runs get 503.
    min_free_mb: float = 64.0
    # Retention (README "Operations", "Retention"): unset = never archive automatically.
    retention_days: float | None = None
    archive_dir: str | None = None
    """Where segments go; default `<the database's directory>/archive`."""
    archive_db: str | None = field(default=None, repr=False)
    """The URL retention archives through (PostgreSQL: the archiver role); default `db`."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Refuse nonsense at start-up, naming the variable, rather than misbehave later.
        if self.log_format not in {"text", "json"}:
            raise ValueError(f"STEPLOG_LOG_FORMAT must be text or json, not {self.log_format!r}")
        if self.event_loop not in {"uvloop", "asyncio"}:
            raise ValueError(
                f"STEPLOG_EVENT_LOOP must be uvloop or asyncio, not {self.event_loop!r}"
            )
        for name in ("processes", "max_streams", "max_streams_per_token", "max_pending_headers"):
            if getattr(self, name) < 1:
                raise ValueError(f"STEPLOG_{name.upper()} must be at least 1")
        for name in (
            "max_stream_seconds",
            "write_timeout",
            "graceful_timeout",
            "header_timeout",
            "body_timeout",
            "token_ttl",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"STEPLOG_{name.upper()} must be a positive number of seconds")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError(
                "STEPLOG_CERTFILE and STEPLOG_KEYFILE go together: set both or neither"
            )
        if not self.min_free_mb >= 0:
            raise ValueError("STEPLOG_MIN_FREE_MB must be a number of MB, 0 or more")
        if self.retention_days is not None and not 0 <= self.retention_days <= 100_000:
            raise ValueError("STEPLOG_RETENTION_DAYS must be a number of days, 0 or more")
        if self.secret_key is not None:
            from functions.sealing import parse_keys

            parse_keys(self.secret_key)  # a ValueError naming the variable, not the key

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for name, kind in _FIELDS.items():
            raw = env.get(f"STEPLOG_{name.upper()}")
            if raw is None or raw == "":
                continue
            if kind is tuple:
                values[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            else:
                values[name] = kind(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_credentials(self) -> Settings:
        """Fill in an API key and webhook secret, generating and keeping them if unset.

        They live beside the database (`api-key`, `webhook-secret`, mode 0600) so the
        CLI on the same machine finds them and they survive restarts. The secret key
        is filled in too (`with_secret_key`).
        """
        return replace(
            self.with_secret_key(),
            api_key=self.api_key or credential(self.db, "api-key", _new_api_key),
            webhook_secret=self.webhook_secret
            or credential(self.db, "webhook-secret", new_webhook_secret),
        )

    def with_secret_key(self) -> Settings:
        """Fill in the key that encrypts secrets in params, generating and keeping it if unset.

        With SQLite it is kept beside the database (`secret-key`, mode 0600), where
        `serve` and `steplog worker` on the same file both find it. With PostgreSQL
        there is no such place shared by every instance, and the `meta` table would
        defeat the purpose (a dump of the database would carry the key with the
        secrets), so it stays unset: runs whose params hold a secret are then refused
        until `STEPLOG_SECRET_KEY` is set (runs without one are not affected).
        """
        if self.secret_key is not None or log_file(self.db) is None:
            return self
        from functions.sealing import new_key

        return replace(self, secret_key=credential(self.db, "secret-key", new_key))

    def sealer(self) -> Sealer | None:
        """What seals and opens secrets in params; None without a key (PostgreSQL, unset)."""
        if self.secret_key is None:
            return None
        from functions.sealing import Sealer, parse_keys

        return Sealer(parse_keys(self.secret_key))

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_mb * 2**20)

    @property
    def archive_path(self) -> Path:
        """Where archive segments are written and looked for."""
        if self.archive_dir:
            return Path(self.archive_dir)
        return Path("archive") if log_file(self.db) is None else self.data_dir / "archive"

    @property
    def data_dir(self) -> Path:
        return (log_file(self.db) or Path(self.db)).parent


def _flag(raw: str) -> bool:
    """An on/off variable: `1`, `true`, `yes` or `on` (any case) mean on."""
    return raw.strip().lower() in {"1", "true", "yes", "on"}


_FIELDS: dict[str, Callable[[str], Any]] = {
    "host": str,
    "port": int,
    "db": str,
    "processes": int,
    "workers": int,
    "lease_seconds": float,
    "poll_interval": float,
    "tail_poll_interval": float,
    "ping_interval": float,
    "retry_ms": int,
    "api_key": str,
    "webhook_secret": str,
    "secret_key": str,
    "token_ttl": float,
    "max_body_bytes": int,
    "subscriber_buffer": int,
    "public_url": str,
    "functions": tuple,
    "sqlite_synchronous": str,
    "log_level": str,
    "log_format": str,
    "event_loop": str,
    "demo": _flag,
    "certfile": str,
    "keyfile": str,
    "max_streams": int,
    "max_streams_per_token": int,
    "max_stream_seconds": float,
    "write_timeout": float,
    "graceful_timeout": float,
    "header_timeout": float,
    "max_pending_headers": int,
    "body_timeout": float,
    "min_free_mb": float,
    "retention_days": float,
    "archive_dir": str,
    "archive_db": str,
}


def credential(db: str, name: str, make: Any) -> str:
    """Read the credential file `name` beside the database, creating it when missing.

    Only for an SQLite file: instances sharing a PostgreSQL log must share their
    credentials too, so there they have to be given (a file per machine would differ).
    """
    file = log_file(db)
    if file is None:
        variable = "STEPLOG_" + name.upper().replace("-", "_")
        raise SteplogError(
            f"set {variable}: with a PostgreSQL log every instance must use the same one"
        )
    directory = file.parent
    path = directory / name
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    directory.mkdir(parents=True, exist_ok=True)
    value: str = make()
    # Written whole under another name, then linked into place: a process starting at
    # the same time (`serve` and `steplog worker`) never reads a half-written file,
    # and whichever links first wins; the other reads the winner's value.
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_text(encoding="utf-8").strip()
    finally:
        os.unlink(temporary)
    return value


def _new_api_key() -> str:
    return "slk_" + secrets.token_urlsafe(24)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
