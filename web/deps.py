"""FastAPI dependencies: the objects a route needs, read from `app.state`, and the auth check.

Every route except `/api/health` and the login page depends on `require_auth` (wired in
`pixseek.web.app`). A request is let in with `Authorization: Bearer <token>` or with the session
cookie that `POST /login` sets; the cookie holds an HMAC of the token, never the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates

from pixseek.library import Library

SESSION_COOKIE = "pixseek_session"


class LoginRequired(Exception):
    """A page was asked for without credentials: answered with a redirect to the login form."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def get_library(request: Request) -> Library:
    """The library the app serves."""
    return request.app.state.library


def get_templates(request: Request) -> Jinja2Templates:
    """The Jinja environment of the pages."""
    return request.app.state.templates


def get_thumbnail_dir(request: Request) -> Path:
    """Where generated thumbnails are cached."""
    return request.app.state.thumbnail_dir


def get_model_lock(request: Request) -> threading.Lock:
    """Serialises model use (and its lazy first load) across worker threads."""
    return request.app.state.model_lock


def session_value(token: str) -> str:
    """The cookie value standing for a token (an HMAC, so the cookie never reveals the token)."""
    return hmac.new(token.encode(), b"pixseek-web-session", hashlib.sha256).hexdigest()


def token_matches(expected: str, given: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return secrets.compare_digest(expected.encode(), given.encode())


def is_authenticated(request: Request) -> bool:
    """True when no token is configured, or the request carries the bearer token or cookie."""
    token: str | None = request.app.state.token
    if not token:
        return True
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token_matches(token, credentials.strip()):
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return bool(cookie) and token_matches(session_value(token), cookie)


def require_auth(request: Request) -> None:
    """401 for the API, a redirect to the login form for pages, when credentials are missing."""
    if is_authenticated(request):
        return
    if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
        raise HTTPException(
            status_code=401,
            detail="a token is required: send 'Authorization: Bearer <token>' or log in",
            headers={"WWW-Authenticate": "Bearer"},
        )
    next_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequired(next_url)


LibraryDep = Annotated[Library, Depends(get_library)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]
ThumbnailDirDep = Annotated[Path, Depends(get_thumbnail_dir)]
ModelLockDep = Annotated[threading.Lock, Depends(get_model_lock)]
AuthDep = Depends(require_auth)
