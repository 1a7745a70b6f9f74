"""`steplog trigger`, `tail`, `runs` and `login`: the commands that talk to a running server.

What they print is for a person first: absolute links one can click, a header
over tables, the result at the end; `--json` gives the machine-readable form.
Every failure is one line with an exit code from `stream.cli.errors`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import click

from stream.cli.client import LinkState, absolute, follow_run, request
from stream.cli.config import Target, resolve, resolve_url, write_config
from stream.cli.errors import RUN_OUTCOMES, CliError
from stream.settings import DEFAULT_DB

url_option = click.option(
    "--url",
    envvar="STEPLOG_URL",
    default=None,
    help="The server [default: STEPLOG_URL, else the one `steplog serve` or `steplog login`"
    " recorded, else http://127.0.0.1:8000].",
)
db_option = click.option(
    "--db",
    envvar="STEPLOG_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="Where `serve` keeps its API key (beside this file), when STEPLOG_API_KEY is unset.",
)
give_up_option = click.option(
    "--give-up",
    "give_up",
    envvar="STEPLOG_TAIL_GIVE_UP",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Stop (exit 3) after this long without reaching the server.",
)


def _parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-p")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


@click.command()
@click.argument("function")
@click.option("-p", "--param", "params", multiple=True, help="key=value (value parsed as JSON).")
@click.option("--follow", is_flag=True, help="Then tail the run until it ends (exit as `tail`).")
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@give_up_option
@url_option
@db_option
def trigger(
    function: str,
    params: tuple[str, ...],
    follow: bool,
    as_json: bool,
    give_up: float,
    url: str | None,
    db: str,
) -> None:
    """Start a run of FUNCTION; print its id and the links to watch it."""
    target = resolve(url, db)
    body = request(
        target,
        "POST",
        "/runs",
        f"start {function!r}",
        # A fresh key per command: the run shows "cli" as its trigger, and a retried
        # request cannot start the run twice.
        headers={"Idempotency-Key": f"cli-{uuid.uuid4().hex}"},
        json={"function": function, "params": _parse_params(params)},
    )
    for link in ("view_url", "stream_url"):
        if isinstance(body.get(link), str):
            body[link] = absolute(target.url, body[link])
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False))
    else:
        click.echo(f"run {body['run_id']} ({function}) {body.get('status', 'queued')}")
        click.echo(f"  view:   {body.get('view_url', '')}")
        click.echo(f"  stream: {body.get('stream_url', '')}")
    if follow:
        sys.exit(follow_to_end(target, body["run_id"], 0, as_json=as_json, give_up=give_up))


@click.command()
@click.argument("run_id")
@click.option("--from", "from_seq", default=0, type=click.IntRange(min=0),
              help="Resume after this seq (event id).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one event envelope per line.")
@give_up_option
@url_option
@db_option
def tail(
    run_id: str, from_seq: int, as_json: bool, give_up: float, url: str | None, db: str
) -> None:
    """Follow a run's events until it ends.

    Exit 0 succeeded, 1 failed, 2 cancelled, 3 the server could not be reached
    for --give-up seconds, 4 no such run, 5 no API key or a refused one.
    """
    target = resolve(url, db)
    sys.exit(follow_to_end(target, run_id, from_seq, as_json=as_json, give_up=give_up))


def follow_to_end(
    target: Target, run_id: str, from_seq: int, *, as_json: bool, give_up: float
) -> int:
    """Print a run's events (JSON lines, or lines above a live view); return the exit code."""
    from rich.live import Live
    from rich.text import Text

    from stream.cli.tailview import RunView, make_console

    console = make_console()
    view = RunView(run_id)
    # The live view is drawn once the server answered with the run's stream: an unknown
    # run or a server that is down gets its one error line, not a frame of a run that
    # was never read ("queued, 0%").
    live = None if as_json or not console.is_terminal else Live(view.render(), console=console)
    drawn = False

    def draw() -> None:
        nonlocal drawn
        if live is None:
            return
        if not drawn:
            live.start()
            drawn = True
        live.update(view.render())

    def show(envelope: dict[str, Any], raw: str) -> None:
        if as_json:
            click.echo(raw)
            return
        view.apply(envelope)
        if live is None:
            click.echo(view.line(envelope))
            return
        draw()
        live.console.print(Text(view.line(envelope)))  # stays in the scrollback
        live.update(view.render())

    def on_state(state: LinkState) -> None:
        view.connection = state.line()
        if state.state == "live" or (drawn and live is not None):
            draw()
        elif state.state == "reconnecting":
            click.echo(state.line(), err=True)

    try:
        outcome = asyncio.run(
            follow_run(target, run_id, from_seq, show, on_state=on_state, give_up_after=give_up)
        )
    except KeyboardInterrupt:
        outcome = "interrupted"
    finally:
        if live is not None and drawn:
            view.connection = "ended"
            live.update(view.render())
            live.stop()
    if outcome == "interrupted":
        click.echo(f"stopped following; resume with `steplog tail {run_id} --from "
                   f"{view.last_seq or from_seq}`", err=True)  # fmt: skip
        return 130
    if not as_json:
        for line in view.ending():
            click.echo(line)
    return RUN_OUTCOMES.get(outcome, 1)


@click.group("runs", invoke_without_command=True)
@click.option("--status", default=None)
@click.option("--function", default=None)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@url_option
@db_option
@click.pass_context
def runs_cmd(
    ctx: click.Context,
    status: str | None,
    function: str | None,
    limit: int,
    as_json: bool,
    url: str | None,
    db: str,
) -> None:
    """List recent runs, newest first (`runs show RUN_ID` prints one run's timeline)."""
    if ctx.invoked_subcommand is not None:
        return
    target = resolve(url, db)
    query = {k: v for k, v in {"status": status, "function": function}.items() if v}
    body = request(target, "GET", "/runs", "list runs", params={**query, "limit": limit})
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False))
        return
    runs = body.get("runs") or []
    if not runs:
        click.echo("no runs" + (" match" if query else " yet: start one with `steplog trigger`"))
        return
    click.echo(
        f"{'ID':<28}  {'STATUS':<9}  {'FUNCTION':<10}  {'ATTEMPT':>7}  {'EVENTS':>6}  CREATED"
    )
    for run in runs:
        click.echo(
            f"{run['id']:<28}  {run['status']:<9}  {run['function']:<10}  {run['attempt']:>7}"
            f"  {run['last_seq']:>6}  {run['created_at']}"
        )


@click.command()
@click.option(
    "--url", envvar="STEPLOG_URL", required=True, help="The server, e.g. https://steplog.example."
)
@click.option("--api-key-file", type=click.File("r"), default=None,
              help="Read the key from this file (default: ask for it).")  # fmt: skip
def login(url: str, api_key_file: Any) -> None:
    """Remember a server and its API key for this user (for a server on another machine).

    The key is checked against the server, then kept in the per-user config file
    ($XDG_CONFIG_HOME/steplog/config.json, mode 0600); `steplog serve` on this
    machine no longer records itself there afterwards.
    """
    key = (
        api_key_file.read() if api_key_file else click.prompt("API key", hide_input=True)
    ).strip()
    if not key:
        raise CliError("no API key given", 2)
    target = Target(resolve_url(url), key, "the key given")
    request(target, "GET", "/runs", "list runs", params={"limit": 1})
    path = write_config({"written_by": "steplog login", "url": target.url, "api_key": key})
    click.echo(f"logged in to {target.url}; saved in {path}")
