"""The stream view: the runs list, one run's page, and a login that keeps the API key.

Pages are static HTML and ES modules (no build step, no CDN). Everything a run
or a scraped page wrote reaches the DOM only as text, and a Content-Security-
Policy without inline script makes that a rule the browser enforces too.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, redirect, request, send_file

from storage import RunNotFound
from stream.http.auth import COOKIE, is_api_key
from stream.http.problems import HTTPProblem
from stream.state import state

STATIC = Path(__file__).parent / "static"

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'"
    ),
    # Run pages carry a token in their URL: never send it on to another site.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

pages = Blueprint("pages", __name__)


async def page(name: str, status: int = 200) -> Response:
    response = await send_file(STATIC / name, mimetype="text/html")
    response.status_code = status
    response.headers.update(PAGE_HEADERS)
    return response


def html(text: str, status: int) -> Response:
    """A page built from a static file's text (never from request data)."""
    return Response(
        text, status=status, content_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


async def error_page() -> Response:
    """The one answer for a run page that cannot be shown.

    Unknown run, a token for another run, a forged or expired token, no token at
    all: the same page, the same words and the same status, so a token never tells
    its holder whether some other run exists.
    """
    return await page("error.html", 404)


async def run_page(run_id: str) -> Response:
    """The run's page, or the error page when the caller may not see that run.

    Checked here, before any script runs, so a bad link is a page that says so
    rather than an empty run view waiting for data that will never come.
    """
    from stream.http.runs import find_run

    try:
        await find_run(run_id)
    except (HTTPProblem, RunNotFound):
        return await error_page()
    return await page("run.html")


def logged_in() -> bool:
    return is_api_key(request.cookies.get(COOKIE), state().api_key)


@pages.get("/")
async def index() -> Response:
    if not logged_in():
        return redirect("/login", 303)  # type: ignore[return-value]
    return await page("index.html")


@pages.get("/login")
async def login_form() -> Response:
    return await page("login.html")


@pages.post("/login")
async def login() -> Response:
    form = await request.form
    key = (form.get("api_key") or "").strip()
    if not is_api_key(key, state().api_key):
        # The form again, with its static notice shown (the key itself is never echoed).
        text = (STATIC / "login.html").read_text(encoding="utf-8")
        return html(text.replace('id="login-error" hidden', 'id="login-error"'), 401)
    response: Response = redirect("/", 303)  # type: ignore[assignment]
    secure = request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https"
    response.set_cookie(
        COOKIE, key, httponly=True, samesite="Strict", secure=secure, path="/", max_age=86400 * 30
    )
    return response


@pages.post("/logout")
async def logout() -> Response:
    response: Response = redirect("/login", 303)  # type: ignore[assignment]
    response.delete_cookie(COOKIE, path="/")
    return response


def wants_html() -> bool:
    """A browser navigating to `/runs/{id}` gets the page; API clients get JSON."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


@pages.get("/favicon.ico")
async def favicon() -> Response:
    return Response(b"", status=204)
