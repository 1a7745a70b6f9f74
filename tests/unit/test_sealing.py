"""Secrets in stored params: sealed in place at intake, opened only by the worker.

The scrape's real params model is used, so "which values are secret" is what
the function itself masks in the API's answers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from pydantic import BaseModel, SecretStr

from functions.scrape.params import ScrapeParams
from functions.sealing import (
    SEALED,
    Sealer,
    SealingRefused,
    UnreadableCredentials,
    is_sealed,
    mask_sealed,
    new_key,
    open_params,
    parse_keys,
    seal_params,
)
from stream.cli.main import main
from stream.settings import Settings

LOGIN = {"username": "zoe.reader", "password": "correct-horse-battery-staple"}


def scrape(**params: Any) -> ScrapeParams:
    return ScrapeParams.model_validate({"url": "https://example.com/in/zoe", **params})


def test_only_the_secret_values_are_sealed_and_the_rest_stays_readable() -> None:
    sealer = Sealer([new_key()])
    stored = seal_params(scrape(credentials=LOGIN, max_pages=3), sealer)
    text = json.dumps(stored)
    assert LOGIN["password"] not in text and LOGIN["username"] not in text
    assert stored["url"] == "https://example.com/in/zoe" and stored["max_pages"] == 3
    assert set(stored["credentials"]) == {"username", "password"}
    assert all(is_sealed(value) for value in stored["credentials"].values())
    # The worker gets the params back exactly as they were validated.
    assert ScrapeParams.model_validate(open_params(stored, sealer)) == scrape(
        credentials=LOGIN, max_pages=3
    )


def test_params_without_secrets_are_stored_as_they_are_and_need_no_key() -> None:
    params = scrape(max_pages=2)
    stored = seal_params(params, None)
    assert stored == params.model_dump(mode="json")
    assert open_params(stored, None) == stored


def test_a_plain_secretstr_is_not_stored_at_all() -> None:
    """Only what the stored dump reveals is sealed; pydantic's own SecretStr reveals nothing."""

    class Model(BaseModel):
        token: SecretStr
        name: str

    stored = seal_params(Model(token=SecretStr("s3cret"), name="n"), Sealer([new_key()]))
    # pydantic's SecretStr dumps as the mask in both dumps: the value is never stored
    # (a function that needs it serialises it like the scrape's Credentials do).
    assert stored == {"token": "**********", "name": "n"}


def test_each_sealing_is_fresh() -> None:
    """Fernet tokens carry a random IV: equal passwords do not give equal tokens."""
    sealer = Sealer([new_key()])
    a = seal_params(scrape(credentials=LOGIN), sealer)["credentials"]["password"]
    b = seal_params(scrape(credentials=LOGIN), sealer)["credentials"]["password"]
    assert a != b


def test_a_secret_without_a_key_is_refused() -> None:
    with pytest.raises(SealingRefused, match="STEPLOG_SECRET_KEY"):
        seal_params(scrape(credentials=LOGIN), None)


def test_a_value_shaped_like_a_sealed_one_is_refused_at_intake() -> None:
    class Free(BaseModel):
        extra: dict[str, Any]

    with pytest.raises(SealingRefused, match=r"\$enc"):
        seal_params(Free(extra={SEALED: "gAAAA"}), Sealer([new_key()]))


def test_another_key_fails_with_a_message_and_no_secret() -> None:
    stored = seal_params(scrape(credentials=LOGIN), Sealer([new_key()]))
    with pytest.raises(UnreadableCredentials) as caught:
        open_params(stored, Sealer([new_key()]))
    message = str(caught.value)
    assert message == (
        "cannot decrypt the run's credentials: STEPLOG_SECRET_KEY differs from the one"
        " they were stored with"
    )
    assert LOGIN["password"] not in message
    with pytest.raises(UnreadableCredentials, match="STEPLOG_SECRET_KEY is not set"):
        open_params(stored, None)


def test_rotation_the_first_key_seals_and_every_key_opens() -> None:
    old, new = new_key(), new_key()
    before = seal_params(scrape(credentials=LOGIN), Sealer([old]))
    rotated = Sealer([new, old])
    after = seal_params(scrape(credentials=LOGIN), rotated)
    assert open_params(before, rotated)["credentials"] == LOGIN
    assert open_params(after, rotated)["credentials"] == LOGIN
    # New runs are sealed with the new key alone: dropping the old one later loses nothing.
    assert open_params(after, Sealer([new]))["credentials"] == LOGIN
    token = after["credentials"]["password"][SEALED]
    assert json.loads(Fernet(new.encode()).decrypt(token.encode())) == LOGIN["password"]


def test_the_api_shows_sealed_values_as_the_mask() -> None:
    stored = seal_params(scrape(credentials=LOGIN), Sealer([new_key()]))
    masked = mask_sealed(stored, "**********")
    assert masked["credentials"] == {"username": "**********", "password": "**********"}
    assert masked["url"] == stored["url"]


def test_keys_are_checked_at_start_up_and_never_echoed() -> None:
    good = new_key()
    assert parse_keys(f" {good} , {new_key()} ")[0] == good
    for bad in (" , ", "not-a-key", f"{good},also-not-a-key"):
        with pytest.raises(ValueError, match="STEPLOG_SECRET_KEY") as caught:
            Settings.from_env({"STEPLOG_SECRET_KEY": bad})
        if "not-a-key" in bad:
            assert "not-a-key" not in str(caught.value)
    assert "secret_key" not in repr(Settings(secret_key=good))


def test_sqlite_keeps_a_generated_key_beside_the_database(tmp_path: Any) -> None:
    db = str(tmp_path / "data" / "steplog.db")
    first = Settings(db=db).with_secret_key()
    assert first.secret_key is not None
    key_file = tmp_path / "data" / "secret-key"
    assert key_file.read_text().strip() == first.secret_key
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert Settings(db=db).with_secret_key().secret_key == first.secret_key  # kept
    assert Settings(db=db, secret_key=new_key()).with_secret_key().secret_key != first.secret_key
    assert not [p for p in key_file.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_postgresql_generates_no_key_anywhere(tmp_path: Any) -> None:
    settings = Settings(db="postgresql://127.0.0.1/test").with_secret_key()
    assert settings.secret_key is None and settings.sealer() is None


def test_the_cli_makes_keys_the_settings_take() -> None:
    result = CliRunner().invoke(main, ["secret-key", "new"])
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert Settings.from_env({"STEPLOG_SECRET_KEY": key}).sealer() is not None
    assert CliRunner().invoke(main, ["secret-key", "new"]).output.strip() != key
