"""The web app: JSON API and server-rendered pages over one `Library`.

`create_app` is the only place where routers, middleware, exception handlers, templates and
static files are put together.
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixseek.imaging import ImageError
from pixseek.indexer.status import WatchStatus
from pixseek.library import Library
from pixseek.search.query import QueryError
from pixseek.store import StoreUnavailableError
from pixseek.web.deps import AuthDep, LoginRequired
from pixseek.web.routes import api, classify, duplicates, pages

HERE = Path(__file__).parent
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
CSP = (
    b"content-security-policy",
    b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
)
DOCS_PATHS = ("/docs",)  # FastAPI's API docs load their assets from a CDN


class _BodyTooLarge(Exception):
    """Raised from `receive` once a request body has streamed past the cap."""


class GuardMiddleware:
    """Pure ASGI guard: body-size cap, same-origin check for POSTs, security headers.

    A declared Content-Length above the cap is answered 413 before any byte is read. Bodies
    without one (chunked) are counted as they stream; past the cap the app's `receive` raises
    and whatever the app tries to answer is replaced by 413, so no more than the cap is ever
    handed to the app.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.lower(): value for key, value in scope["headers"]}
        if scope["method"] == "POST" and not _same_origin(headers):
            await _plain(send, 403, "cross-origin request refused")
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _plain(send, 400, "invalid Content-Length")
                return
            if length > self.max_body:
                await _plain(send, 413, f"request body above {self.max_body} bytes")
                return

        headers_out = [*SECURITY_HEADERS, CSP]
        seen = 0
        too_large = False
        started = False

        async def counted_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # the app's answer to a truncated body is replaced by 413 below
            if message["type"] == "http.response.start":
                started = True
                extra = SECURITY_HEADERS if scope["path"].startswith(DOCS_PATHS) else headers_out
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await _plain(send, 413, f"request body above {self.max_body} bytes")


def _same_origin(headers: dict[bytes, bytes]) -> bool:
    origin = headers.get(b"origin")
    if origin is None:
        return True
    host = headers.get(b"host", b"").decode("latin-1").lower()
    try:
        netloc = urlsplit(origin.decode("latin-1")).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == host


async def _plain(send: Send, status: int, text: str) -> None:
    body = f'{{"detail": "{text}"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    library: Library,
    watch_status: WatchStatus | None = None,
    token: str | None = None,
    thumbnail_dir: Path | None = None,
    max_upload_bytes: int = 20_000_000,
) -> FastAPI:
    """The pixseek web app for one library."""
    app = FastAPI(
        title="pixseek",
        summary="Semantic image search over your own folders.",
        version="0.1.0",
        docs_url=None,  # served below, behind the same auth as everything else
        redoc_url=None,
        openapi_url=None,
    )
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.autoescape = True
    templates.env.filters["day"] = pages.day
    app.state.library = library
    app.state.watch_status = watch_status
    app.state.token = token or None
    app.state.thumbnail_dir = thumbnail_dir or library.settings.data_path / "thumbnails"
    app.state.max_upload_bytes = max_upload_bytes
    app.state.model_lock = threading.Lock()
    app.state.templates = templates

    docs = APIRouter(include_in_schema=False, dependencies=[AuthDep])

    @docs.get("/openapi.json")
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @docs.get("/docs")
    def swagger() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="pixseek API")

    app.include_router(docs)
    app.include_router(api.public)
    app.include_router(api.router)
    app.include_router(classify.router)
    app.include_router(pages.public)
    app.include_router(pages.router)
    app.include_router(duplicates.api)
    app.include_router(duplicates.pages)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(GuardMiddleware, max_body=max_upload_bytes)

    def _error(request: Request, status: int, detail: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=status)
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "detail": detail}, status_code=status
        )

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, error: QueryError) -> Response:
        return _error(request, 400, str(error))

    @app.exception_handler(StoreUnavailableError)
    async def _store_unavailable(request: Request, error: StoreUnavailableError) -> Response:
        return _error(request, 503, str(error))

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, error: ImageError) -> Response:
        return _error(request, 400, f"not a usable image: {error.reason}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        if request.url.path.startswith(("/api/", "/static/", "/docs", "/openapi")):
            return await http_exception_handler(request, error)
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": error.status_code, "detail": error.detail},
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, error: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(error.next_url, safe='')}", status_code=303)

    return app
