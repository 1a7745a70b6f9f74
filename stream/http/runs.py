"""Webhook intake and the run API.

Every input is checked before anything is written: a request that is refused
leaves no run and no event behind.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import Blueprint, Response, request

from functions import registry
from functions.sealing import REVEAL_SECRETS, SealingRefused, mask_sealed, seal_params
from storage import IdempotencyConflict, Run, RunNotFound, RunStatus, SteplogError
from storage.envelope import envelope
from storage.jsonenc import dumps
from storage.runids import is_run_id
from storage.timefmt import iso
from storage.writer.idempotency import fingerprint
from storage.writer.validate import json_text
from stream.http.archived import archived_json, archived_source
from stream.http.auth import holds_api_key, require_api_key, require_run_access
from stream.http.internal_runs import is_internal, user_counts, user_runs
from stream.http.json_depth import MAX_JSON_DEPTH, too_deep
from stream.http.metrics import metrics
from stream.http.params import int_arg
from stream.http.problems import HTTPProblem, idempotency_conflict
from stream.http.tokens import mint_for
from stream.http.webhook_signature import verify as verify_signature
from stream.state import state

api = Blueprint("api", __name__)


def _json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status=status, content_type="application/json", headers=headers)


def run_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "function": run.function,
        "params": public_params(run.function, run.params),
        "status": run.status.value,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "last_seq": run.last_seq,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "updated_at": run.updated_at,
        "result": run.result,
        "error": run.error,
        "steps": list(_plan(run.function)),
        "trigger": trigger_of(run.idempotency_key),
        # steplog's own runs (the archiver's) and runs of a function this server does
        # not know cannot be started again: the pages offer no Re-run for them.
        "internal": is_internal(run.function),
        "rerunnable": run.function in registry.names(),
    }


def trigger_of(key: str | None) -> str:
    """How a run was started, read from its idempotency key's namespace.

    Webhooks always carry one (`webhook:`), a re-run gets `rerun:`, the stream view's
    form sends `form-…` keys and `steplog trigger` `cli-…` keys; any other API call
    reads as `api`.
    """
    if key is None:
        return "api"
    namespace, _, value = key.partition(":")
    if namespace == "api" and value.startswith(("form-", "cli-")):
        return value.partition("-")[0]
    return namespace if namespace in {"webhook", "rerun"} else "api"


def _plan(function: str) -> tuple[str, ...]:
    try:
        return registry.get(function).steps
    except SteplogError:
        return ()


MASK = "**********"


def public_params(function: str, params: dict[str, Any]) -> dict[str, Any]:
    """Params as callers may see them: the function's own model masks its secrets again.

    Sealed secrets are never opened here (only a worker does that): they read as the
    mask, which the model then shows as it shows any secret.
    """
    masked = mask_sealed(params, MASK)
    try:
        model = registry.get(function).params.model_validate(masked)
    except Exception:  # the model changed since the run was stored: show no values at all
        return dict.fromkeys(params, MASK)
    shown: dict[str, Any] = model.model_dump(mode="json")
    return shown


def _parse_json_object(body: bytes, what: str) -> dict[str, Any]:
    """The body as a JSON object: UTF-8 (400), at most `MAX_JSON_DEPTH` deep (422), JSON (400)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPProblem(
            400,
            "Body not UTF-8",
            f"the {what} is not UTF-8: byte {body[exc.start]:#04x} at offset {exc.start}"
            f" ({exc.reason}); JSON must be sent as UTF-8",
        ) from None
    if too_deep(body):
        raise HTTPProblem(
            422,
            "JSON nested too deeply",
            f"the {what} nests arrays and objects more than {MAX_JSON_DEPTH} levels deep;"
            f" at most {MAX_JSON_DEPTH} are accepted",
            max_depth=MAX_JSON_DEPTH,
        )
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise HTTPProblem(400, "Malformed JSON", f"the {what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPProblem(422, "Invalid params", f"the {what} must be a JSON object")
    return value


def _validate_params(
    function: str, params: dict[str, Any], *, fingerprinted: bool
) -> tuple[dict[str, Any], str | None]:
    """The params to store (secrets sealed) and, when `fingerprinted`, the request's
    idempotency fingerprint.

    The fingerprint is taken over the params as validated, before sealing (a sealed
    value differs every time). When they hold a secret it is keyed with the sealing
    key, so a copy of the database cannot be used to test guesses at a password.
    """
    spec = registry.get(function)
    try:
        model = spec.params.model_validate(params)
    except ValidationError as exc:
        errors = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise HTTPProblem(
            422,
            "Invalid params",
            f"the params for {function!r} failed validation ({len(errors)} error(s))",
            errors=errors,
        ) from None
    plain: dict[str, Any] = model.model_dump(mode="json", context=REVEAL_SECRETS)
    # Refused before sealing, naming the field (never the value): a secret is checked
    # like any param, though what is stored of it is its ciphertext.
    json_text("params", plain)
    # What is stored: every secret sealed with STEPLOG_SECRET_KEY (functions/sealing.py).
    sealer = state().sealer
    try:
        sealed = seal_params(model, sealer)
    except SealingRefused as exc:
        raise HTTPProblem(422, "Secret not accepted", str(exc)) from None
    if not fingerprinted:
        return sealed, None
    key = sealer.fingerprint_key() if sealer is not None and sealed != plain else None
    return sealed, fingerprint(plain, key=key)


async def _start(
    function: str, params: dict[str, Any], key: tuple[str, str, str] | None
) -> Response:
    """Validate and queue a run; `key` is (header, value, namespace) when the caller sent one."""
    app_state = state()
    params, request_fingerprint = _validate_params(function, params, fingerprinted=key is not None)
    spec = registry.get(function)
    stored_key = None if key is None else f"{key[2]}:{key[1]}"
    try:
        run, created = await app_state.events.create_run(
            function,
            params,
            idempotency_key=stored_key,
            max_attempts=spec.max_attempts,
            fingerprint=request_fingerprint,
        )
    except IdempotencyConflict as exc:
        assert key is not None
        raise idempotency_conflict(exc, key[0], key[1]) from None
    if created and app_state.pool is not None:
        app_state.pool.notify()
    body = {"run_id": run.id, "status": run.status.value, **await _links(run.id)}
    return _json_response(body, 202 if created else 200, {"Location": f"/runs/{run.id}"})


async def _links(run_id: str) -> dict[str, Any]:
    """A fresh run token for `run_id` (valid `STEPLOG_TOKEN_TTL` from now) and its URLs."""
    app_state = state()
    token = mint_for(
        await app_state.token_key.get(), run_id, app_state.settings.token_ttl, app_state.clock()
    )
    return {
        "stream_url": f"/runs/{run_id}/events?token={token.value}",
        "view_url": f"/runs/{run_id}?token={token.value}",
        "token": token.value,
        "token_expires_at": iso(token.expires_at),
    }


@api.post("/hooks/<function>")
async def webhook(function: str) -> Response:
    """Start a run from a Standard Webhooks request; `webhook-id` makes it idempotent."""
    app_state = state()
    try:
        body = await request.get_data(cache=False)
        assert isinstance(body, bytes)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            verify_signature(app_state.settings.webhook_secret or "", body, headers)
        except Exception as exc:  # a malformed header or secret raises other types too
            reason = str(exc) or type(exc).__name__
            raise HTTPProblem(
                401, "Invalid webhook signature", f"webhook verification failed: {reason}"
            ) from None
        registry.get(function)  # 404 for an unknown function, after authentication
        params = _parse_json_object(body, "webhook body")
        return await _start(function, params, ("webhook-id", headers["webhook-id"], "webhook"))
    except Exception as exc:  # counted by reason on /metrics, then answered as before
        metrics().webhook_rejected(exc)
        raise


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    function: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)


@api.post("/runs")
async def start_run() -> Response:
    """Start a run for an API caller; an `Idempotency-Key` header makes it idempotent."""
    require_api_key(request, state().api_key)
    body = await request.get_data(cache=False)
    assert isinstance(body, bytes)
    raw = _parse_json_object(body, "request body")
    try:
        req = StartRun.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise HTTPProblem(
            422, "Invalid request", "expected {function, params}", errors=errors
        ) from None
    registry.get(req.function)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 255:
        raise HTTPProblem(400, "Bad Idempotency-Key", "it must be 1 to 255 characters")
    return await _start(
        req.function, req.params, None if key is None else ("Idempotency-Key", key, "api")
    )


@api.get("/runs")
async def list_runs() -> Response:
    app_state = state()
    require_api_key(request, app_state.api_key)
    limit = int_arg("limit", 100, 1, 1000)
    head = await app_state.events.head()  # read first: later events refresh the list
    before = request.args.get("before")
    if before is not None and not is_run_id(before):
        raise HTTPProblem(400, "Bad cursor", "before must be a run id")
    status = request.args.get("status")
    if status is not None and status not in RunStatus.__members__.values():
        known = ", ".join(RunStatus)
        raise HTTPProblem(400, "Bad filter", f"status must be one of {known}, not {status!r}")
    function = request.args.get("function")
    include = request.args.get("include")
    if include not in (None, "", "internal"):
        raise HTTPProblem(400, "Bad filter", f"include must be 'internal', not {include[:64]!r}")
    if function or include:  # asked by name, or for everything: as stored
        runs = await app_state.events.list_runs(
            status=status, function=function, limit=limit, before=before
        )
        counts = await app_state.events.run_counts()
    else:  # the users' runs: steplog's own (the archiver's) left out, counts too
        runs = await user_runs(app_state.events, status=status, limit=limit, before=before)
        counts = await user_counts(app_state.events)
    body: dict[str, Any] = {
        "runs": [run_json(r) for r in runs],
        "head": head,
        "functions": registry.names(),
        "counts": counts,
    }
    if app_state.settings.demo:
        host = app_state.settings.host
        host = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
        body["demo_url"] = f"http://{host}:{app_state.settings.port}/demo/in/ada-lovelace"
    return _json_response(body)


async def find_run(run_id: str) -> Run:
    """The run named in the URL, after checking the caller may read it."""
    app_state = state()
    if not is_run_id(run_id):
        raise RunNotFound(f"no run with id {run_id[:64]!r}")
    token_key = await app_state.token_key.get()
    require_run_access(request, app_state.api_key, token_key, run_id, app_state.clock())
    return await app_state.events.get_run(run_id)


@api.get("/runs/<run_id>")
async def get_run(run_id: str) -> Response:
    """The run record; a browser asking for HTML gets the run's page instead.

    Asked with the API key, it also hands out a fresh run token and `view_url` (how
    a link that expired is replaced); asked with a run token, it does not, or a
    token could renew itself forever.
    """
    from stream.web.pages import run_page, wants_html

    if wants_html():
        return await run_page(run_id)
    run = await find_run(run_id)
    body = run_json(run) | await archived_json(state().events, run)
    if holds_api_key(request, state().api_key):
        body.update(await _links(run_id))
    return _json_response(body)


@api.get("/runs/<run_id>/log")
async def run_log(run_id: str) -> Response:
    """A page of the run's event envelopes as JSON (for replay and scripts)."""
    run = await find_run(run_id)
    after = int_arg("after", 0, 0, 2**62)
    limit = int_arg("limit", 1000, 1, 5000)
    source = await archived_source(state().events, state().settings, run) or state().events
    events = await source.read_run(run.id, after, limit)
    body = ",".join(envelope(event) for event in events)
    return Response(
        f'{{"run_id":"{run.id}","last_seq":{run.last_seq},"events":[{body}]}}',
        content_type="application/json",
    )


@api.post("/runs/<run_id>/cancel")
async def cancel_run(run_id: str) -> Response:
    """End a queued or running run as `cancelled`; its worker stops within about a second."""
    app_state = state()
    run = await find_run(run_id)
    if run.status.finished and run.status.value != "cancelled":
        raise HTTPProblem(409, "Run already finished", f"the run has already {run.status.value}")
    cancelled = await app_state.events.cancel_run(run.id, "cancelled through the API")
    if cancelled and app_state.pool is not None:
        app_state.pool.cancel(run.id)
    return _json_response(run_json(await app_state.events.get_run(run.id)))


@api.post("/runs/<run_id>/rerun")
async def rerun(run_id: str) -> Response:
    """A new run of the same function with the same params (the stream view's Re-run).

    API key only. The params are copied as stored, so a secret stays sealed and is
    never shown to or re-entered by the caller; the new run is answered like POST /runs.
    """
    app_state = state()
    require_api_key(request, app_state.api_key)
    run = await find_run(run_id)
    if is_internal(run.function):
        raise HTTPProblem(
            409, "Not rerunnable", f"run {run.id} is steplog's own ({run.function}): it is"
            " written by steplog, not started by a function",
        )  # fmt: skip
    spec = registry.get(run.function)
    # A fresh key: never a replay of another request, and the run reads as a re-run.
    new, _ = await app_state.events.create_run(
        run.function,
        run.params,
        idempotency_key=f"rerun:{run.id}:{secrets.token_hex(8)}",
        max_attempts=spec.max_attempts,
    )
    if app_state.pool is not None:
        app_state.pool.notify()
    body = {
        "run_id": new.id,
        "status": new.status.value,
        "rerun_of": run.id,
        **await _links(new.id),
    }
    return _json_response(body, 202, {"Location": f"/runs/{new.id}"})
