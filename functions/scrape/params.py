"""What a scrape run accepts, and where its login credentials come from.

Credentials can come from the run's params or from `STEPLOG_SCRAPE_CREDENTIALS`
(a JSON object mapping `host` or `host:port` to `{"username", "password"}`).
The environment is the better place: the secret then never crosses the API.

Params are stored in the runs table and returned by `GET /runs/{id}`, so the
credentials in them are `SecretStr` and serialise masked, except when the
serializer is given `REVEAL_SECRETS` as context: the intake dumps the real
values that way and stores them encrypted with `STEPLOG_SECRET_KEY`
(functions/sealing.py; the worker, which may be another process and may be a
retry after a crash, decrypts them right before the call), and every other dump
(the API's answers, error messages) shows `**********`. Nothing in this package
ever writes them to the event log.
"""

from __future__ import annotations

import json
import os
from datetime import date

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    field_validator,
)

from functions.errors import PermanentError
from functions.scrape.egress.targets import (
    TargetRefused,
    canonical_host,
    parse_entry,
    split_url,
    url_port,
)
from functions.scrape.recipe import recipes
from functions.sealing import REVEAL_SECRETS as REVEAL_SECRETS  # what the intake dumps with

CREDENTIALS_ENV = "STEPLOG_SCRAPE_CREDENTIALS"
MASK = "**********"
DEFAULT_STEP_TIMEOUT = 30.0
DEFAULT_RUN_TIMEOUT = 300.0


def _reveal(info: SerializationInfo) -> bool:
    context = info.context
    return isinstance(context, dict) and context.get("reveal_secrets") is True


class Credentials(BaseModel):
    """A login for the target site; masked in every dump but the stored one."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    username: str = Field(min_length=1, max_length=256)
    password: SecretStr = Field(min_length=1, max_length=1024)

    @field_serializer("username", "password", when_used="json")
    def _masked(self, value: str | SecretStr, info: SerializationInfo) -> str:
        if not _reveal(info):
            return MASK
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    @property
    def masked(self) -> bool:
        """True when only the mask was stored: the real secret is gone."""
        return self.password.get_secret_value() == MASK


class ScrapeParams(BaseModel):
    """The body of `POST /hooks/scrape` (or `params` of `POST /runs`)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = Field(min_length=1, max_length=2048, description="the profile page to scrape")
    credentials: Credentials | None = Field(
        None, description=f"a login for the site (better: {CREDENTIALS_ENV})"
    )
    recipe: str | None = Field(None, description="a recipe name; default: chosen by URL")
    max_pages: int = Field(
        20, ge=1, le=100, description="pagination pages to follow, and scrolls that load more"
    )
    step_timeout_s: float = Field(DEFAULT_STEP_TIMEOUT, gt=0, le=600)
    run_timeout_s: float = Field(DEFAULT_RUN_TIMEOUT, gt=0, le=3600)
    as_of: date | None = Field(None, description="the day 'present' means (default: today)")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if any(ord(c) < 0x20 or c.isspace() for c in value):
            raise ValueError("the URL contains whitespace or control characters")
        try:
            split_url(value)
        except TargetRefused as exc:
            raise ValueError(exc.reason) from None
        return value

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, value: str | None) -> str | None:
        if value is not None and value not in recipes():
            raise ValueError(f"unknown recipe; known: {', '.join(sorted(recipes()))}")
        return value


def credentials_for(
    params: ScrapeParams, env: dict[str, str] | None = None
) -> tuple[Credentials, str] | None:
    """The login for the target: the params' own, else the environment's for its host."""
    if params.credentials is not None:
        if params.credentials.masked:
            raise PermanentError(
                "the run's credentials were stored masked, so the password is gone: start"
                f" the run again, or use {CREDENTIALS_ENV}"
            )
        return params.credentials, "params"
    raw = (os.environ if env is None else env).get(CREDENTIALS_ENV, "").strip()
    if not raw:
        return None
    try:
        table = json.loads(raw)
        if not isinstance(table, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        # Never echo the value: it holds passwords.
        raise PermanentError(f"{CREDENTIALS_ENV} is not a JSON object of logins ({exc})") from None
    parts = split_url(params.url)
    assert parts.hostname is not None
    host, port = canonical_host(parts.hostname), url_port(parts)
    matching: list[tuple[bool, str]] = []
    for key in table:
        try:
            entry = parse_entry(str(key))
        except ValueError:
            continue
        if entry.matches(host, port):
            matching.append((entry.port is not None, str(key)))
    if not matching:
        return None
    key = max(matching)[1]  # host:port before a bare host
    try:
        return Credentials.model_validate(table[key]), "environment"
    except ValueError:
        raise PermanentError(
            f"{CREDENTIALS_ENV}[{key!r}] must be {{'username': …, 'password': …}}"
        ) from None
