"""The CLI's exit codes, in one place, and the one-line error that carries them.

A script that runs `steplog` can tell apart what went wrong without reading the
message: the run's outcome (`tail`, `trigger --follow`), a server that cannot be
reached, a run that does not exist, or a missing or refused API key. Every
error a user can cause is one line on stderr, never a traceback.

| code | meaning |
| ---- | ------- |
| 0 | done; for `tail` / `trigger --follow`: the run succeeded |
| 1 | the run failed; or the request was refused (invalid params, a server error) |
| 2 | the run was cancelled; or the command line was wrong (click's usage errors) |
| 3 | the server could not be reached (`tail`: gave up reconnecting) |
| 4 | no such run or function |
| 5 | no API key found, or the server refused it |

`steplog audit …` keeps its own (0 verified, 1 problems found, 2 could not audit).
"""

from __future__ import annotations

import click

OK = 0
FAILED = 1
CANCELLED = 2
UNREACHABLE = 3
NOT_FOUND = 4
NO_KEY = 5

RUN_OUTCOMES = {"completed": OK, "failed": FAILED, "cancelled": CANCELLED}
"""`tail`'s exit code by the stream's terminal event name."""

EXIT_CODES_HELP = (
    "Exit codes: 0 ok (the run succeeded), 1 the run failed or the request was refused,"
    " 2 the run was cancelled or a usage error, 3 the server could not be reached,"
    " 4 no such run or function, 5 no API key or a refused one."
)


class CliError(click.ClickException):
    """One line on stderr (`error: …`) and a chosen exit code."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def unreachable(url: str, why: str = "") -> CliError:
    """The server at `url` did not answer: say where we looked and how to point elsewhere."""
    reason = f" ({why})" if why else ""
    return CliError(
        f"cannot reach steplog at {url}{reason} — is `steplog serve` running?"
        " Set STEPLOG_URL or pass --url to use another address",
        UNREACHABLE,
    )
