"""`steplog webhook-secret new`: a secret to hand every instance and the webhook sender."""

from __future__ import annotations

from pathlib import Path

from standardwebhooks import Webhook

from tests.server.cli import steplog, user_env


def test_webhook_secret_new_prints_one_the_server_accepts(tmp_path: Path) -> None:
    done = steplog("webhook-secret", "new", env=user_env(tmp_path / "config"))
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("whsec_") and len(done.stdout.splitlines()) == 1
    Webhook(secret)  # parses as a Standard Webhooks secret
    again = steplog("webhook-secret", "new", env=user_env(tmp_path / "config"))
    assert again.stdout.strip() != secret
