"""Where the CLI finds the server's address and API key, and the per-user file that records them.

People run `steplog runs` from wherever their shell happens to be, not from the
directory `steplog serve` was started in, so a key file relative to the current
directory is not enough. The key is looked for, in order:

1. `STEPLOG_API_KEY`;
2. the `api-key` file beside the SQLite database named by `--db` / `STEPLOG_DB`
   (default `data/steplog.db`, where `serve` keeps it);
3. the per-user file `$XDG_CONFIG_HOME/steplog/config.json` (`~/.config/…`),
   which `steplog serve` writes when it starts (the server's URL and the *path*
   of its key file, never the key) and `steplog login` writes for a server
   elsewhere (URL and key, mode 0600).

The URL is `--url` / `STEPLOG_URL`, else the one in the per-user file, else
http://127.0.0.1:8000. When no key is found, the error lists every place looked.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.cli.errors import NO_KEY, CliError

DEFAULT_URL = "http://127.0.0.1:8000"
WRITTEN_BY_SERVE = "steplog serve"


def config_path() -> Path:
    """`$XDG_CONFIG_HOME/steplog/config.json`, or `~/.config/steplog/config.json`."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "steplog" / "config.json"


def read_config() -> dict[str, Any]:
    """The per-user file's contents; {} when it does not exist."""
    path = config_path()
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc} (fix or delete it)", NO_KEY) from None
    if not isinstance(loaded, dict):
        raise CliError(f"cannot read {path}: not a JSON object (fix or delete it)", NO_KEY)
    return loaded


def write_config(values: dict[str, Any]) -> Path:
    """Replace the per-user file atomically, readable by its owner only (it may hold a key)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".config.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(values, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def remember_server(url: str, key_file: Path) -> Path | None:
    """Record a starting `serve`'s URL and key file, unless `steplog login` chose a server.

    Only the key's path is written: the key stays in the one file the server reads.
    """
    try:
        current = read_config()
    except CliError:
        return None  # a file the user broke is theirs to fix; do not overwrite it
    if current and current.get("written_by") != WRITTEN_BY_SERVE:
        return None
    return write_config(
        {"written_by": WRITTEN_BY_SERVE, "url": url, "api_key_file": str(key_file.resolve())}
    )


@dataclass(frozen=True)
class Target:
    """The server the CLI talks to, the key it sends, and where that key came from."""

    url: str
    key: str
    key_source: str


def resolve_url(url: str | None) -> str:
    """`--url`/`STEPLOG_URL`, else the per-user file's, else the default."""
    if url:
        return url.rstrip("/")
    configured = read_config().get("url")
    return str(configured).rstrip("/") if configured else DEFAULT_URL


def resolve(url: str | None, db: str) -> Target:
    """Find the URL and API key (see the module docstring), or say where we looked."""
    looked: list[str] = []
    key = os.environ.get("STEPLOG_API_KEY", "").strip()
    if key:
        return Target(resolve_url(url), key, "STEPLOG_API_KEY")
    looked.append("STEPLOG_API_KEY (unset)")
    from storage.backends import log_file

    database_file = log_file(db)
    if database_file is not None:
        beside = database_file.parent / "api-key"
        found = _read_key(beside)
        if found:
            return Target(resolve_url(url), found, str(beside))
        looked.append(f"{beside.absolute()} (beside the database; --db or STEPLOG_DB)")
    config = read_config()
    path = config_path()
    if config.get("api_key"):
        return Target(resolve_url(url), str(config["api_key"]).strip(), str(path))
    if config.get("api_key_file"):
        key_file = Path(str(config["api_key_file"]))
        found = _read_key(key_file)
        if found:
            return Target(resolve_url(url), found, str(key_file))
        looked.append(f"{path} (names {key_file}, which is gone)")
    else:
        looked.append(f"{path} ({'no key in it' if config else 'none'})")
    raise CliError(
        "no API key found; looked in " + ", ".join(looked) + ". Start `steplog serve`,"
        " set STEPLOG_API_KEY, or run `steplog login --url URL` for a server elsewhere",
        NO_KEY,
    )


def _read_key(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
