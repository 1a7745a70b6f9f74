"""`steplog serve --certfile/--keyfile`: HTTPS with HTTP/2, and one line when it cannot."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.tls import self_signed
from tests.server.cli import error_lines, steplog, user_env


def test_serve_with_a_certificate_speaks_h2_and_http1_over_tls(
    server_factory: Any, tmp_path: Path
) -> None:
    certfile, keyfile = self_signed(tmp_path / "tls")
    server = server_factory(certfile=certfile, keyfile=keyfile)
    assert f"steplog serving on {server.url} " in server.log_path.read_text()
    context = ssl.create_default_context(cafile=str(certfile))  # verified, not ignored
    with httpx.Client(http2=True, verify=context) as http:
        answer = http.get(f"{server.url}/healthz")
    assert (answer.status_code, answer.http_version) == (200, "HTTP/2")
    with httpx.Client(verify=context) as http:  # a client without h2 still gets in
        answer = http.get(f"{server.url}/healthz")
    assert (answer.status_code, answer.http_version) == (200, "HTTP/1.1")


def test_a_certificate_without_its_key_or_an_unreadable_one_is_one_line(tmp_path: Path) -> None:
    certfile, keyfile = self_signed(tmp_path / "tls")
    db = str(tmp_path / "steplog.db")
    env = user_env(tmp_path / "config")
    alone = steplog("serve", "--port", "0", "--db", db, "--certfile", str(certfile),
                    env=env, timeout=30)  # fmt: skip
    assert alone.returncode != 0
    assert "STEPLOG_CERTFILE and STEPLOG_KEYFILE go together" in alone.stderr
    assert "Traceback" not in alone.stdout + alone.stderr
    swapped = steplog("serve", "--port", "0", "--db", db, "--certfile", str(keyfile),
                      "--keyfile", str(tmp_path / "missing.pem"), env=env, timeout=30)  # fmt: skip
    assert swapped.returncode == 1
    [line] = error_lines(swapped)
    assert line.startswith(f"error: cannot use --certfile {keyfile} with --keyfile"), line
    assert "Traceback" not in swapped.stdout + swapped.stderr
