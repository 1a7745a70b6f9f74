"""The stream view: the runs list, one run's page, and a login that keeps the API key.

Pages are static HTML and ES modules (no build step, no CDN). Everything a run
or a scraped page wrote reaches the DOM only as text, and a Content-Security-
Policy without inline script makes that a rule the browser enforces too.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, redirect, request, send_file

from stream.http.auth import COOKIE, is_api_key
from stream.state import state

STATIC = Path(__file__).parent / "static"

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
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
        return await page("login.html", 401)
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
