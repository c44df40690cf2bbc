"""Server-rendered pages: search, detail, similar, status and login (all usable without JS)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pixseek.imaging import ALLOWED_FORMATS
from pixseek.search.filters import FLAGGED_CHOICES, Filters
from pixseek.search.query import SORTS, Page
from pixseek.web.deps import (
    SESSION_COOKIE,
    AuthDep,
    LibraryDep,
    ModelLockDep,
    TemplatesDep,
    is_authenticated,
    session_value,
    token_matches,
)
from pixseek.web.query_params import FiltersDep, MinScore, Sort
from pixseek.web.routes.api import (
    hit,
    image_info,
    indexed_row,
    query_results,
    search_upload,
    similar,
    status_report,
)
from pixseek.web.routes.classify import classify_for_page

public = APIRouter(include_in_schema=False)
router = APIRouter(include_in_schema=False, dependencies=[AuthDep])

PAGE = 24
K = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=100_000)]


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def _safe_next(target: str) -> str:
    """Only local paths may be redirected to after login."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def day(timestamp: float | None) -> str:
    """A result's date as YYYY-MM-DD in UTC (the camera's clock for EXIF dates)."""
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d")


def _form(request: Request, page: Page, filters: Filters) -> dict[str, object]:
    """What the search form and pager need: the current values and links that keep them."""
    params = request.query_params
    kept = [(key, value) for key, value in params.multi_items() if key not in ("q", "offset")]

    def link(offset: int) -> str:
        return "/?" + urlencode([("q", params.get("q", "")), *kept, ("offset", offset)])

    return {
        "form": params,
        "formats": ALLOWED_FORMATS,
        "chosen_formats": filters.formats,
        "default_k": PAGE,
        "flagged_choices": FLAGGED_CHOICES,
        "sorts": SORTS,
        "page": page,
        "filter_query": urlencode(kept),
        "prev_url": link(max(page.offset - page.k, 0)),
        "next_url": link(page.offset + page.k),
    }


@router.get("/", response_class=HTMLResponse)
def search_page(
    request: Request,
    templates: TemplatesDep,
    library: LibraryDep,
    lock: ModelLockDep,
    filters: FiltersDep,
    q: Annotated[str, Query(max_length=1000)] = "",
    k: K = PAGE,
    offset: Offset = 0,
    min_score: MinScore = None,
    sort: Sort = "score",
) -> Response:
    page = Page(k, offset, min_score, sort)
    results = query_results(library, lock, q, page, filters) if q.strip() else None
    return templates.TemplateResponse(
        request,
        "search.html",
        {
            **_form(request, page, filters),
            "q": q,
            "results": [hit(r) for r in results] if results is not None else None,
            "more": results is not None and len(results) == k,
        },
    )


@router.post("/search/image", response_class=HTMLResponse)
async def search_image_page(
    request: Request,
    templates: TemplatesDep,
    library: LibraryDep,
    lock: ModelLockDep,
    filters: FiltersDep,
    file: Annotated[UploadFile, File()],
    q: Annotated[str, Form(max_length=1000)] = "",
    min_score: MinScore = None,
    sort: Sort = "score",
) -> Response:
    page = Page(PAGE, 0, min_score, sort)
    results = await search_upload(request, library, lock, file, q, page, filters)
    name = file.filename or "your upload"
    return templates.TemplateResponse(
        request,
        "search.html",
        {
            **_form(request, page, filters),
            "q": "",
            "results": [hit(r) for r in results],
            "more": False,
            "heading": f"Images like {name}" + (f" {q}" if q.strip() else ""),
        },
    )


@router.get("/images/{record}", response_class=HTMLResponse)
def detail_page(
    request: Request,
    templates: TemplatesDep,
    library: LibraryDep,
    lock: ModelLockDep,
    record: str,
    labels: Annotated[str, Query(max_length=20_000)] = "",
) -> Response:
    row = indexed_row(library, record)
    info = image_info(library, record)
    classified, problem = classify_for_page(library, lock, record, labels)
    return templates.TemplateResponse(
        request,
        "detail.html",
        {"row": row, "name": info.name, "taken": _when(row.taken_at), "tags": info.tags}
        | {"labels": labels, "classified": classified, "problem": problem},
    )


@router.get("/similar/{record}", response_class=HTMLResponse)
def similar_page(
    request: Request,
    templates: TemplatesDep,
    library: LibraryDep,
    filters: FiltersDep,
    record: str,
    k: K = PAGE,
    offset: Offset = 0,
) -> Response:
    row = indexed_row(library, record)
    results = similar(library, record, Page(k, offset), filters)
    return templates.TemplateResponse(
        request,
        "similar.html",
        {
            "row": row,
            "name": Path(row.path).name,
            "k": k,
            "offset": offset,
            "results": [hit(r) for r in results],
            "more": len(results) == k,
        },
    )


@router.get("/status", response_class=HTMLResponse)
def status_page(request: Request, templates: TemplatesDep, library: LibraryDep) -> Response:
    report = status_report(request, library)
    watch = report.watch
    return templates.TemplateResponse(
        request,
        "status.html",
        {
            "report": report,
            "watch": watch,
            "last_reconcile": _when(watch.last_reconcile if watch else None),
        },
    )


@public.get("/login", response_class=HTMLResponse)
def login_form(request: Request, templates: TemplatesDep, next: str = "/") -> Response:
    if not request.app.state.token:
        return RedirectResponse("/", status_code=303)
    return templates.TemplateResponse(
        request, "login.html", {"next": _safe_next(next), "error": None}
    )


@public.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    templates: TemplatesDep,
    token: Annotated[str, Form(max_length=4096)],
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    expected: str | None = request.app.state.token
    if not expected:
        return RedirectResponse("/", status_code=303)
    if not token_matches(expected, token):
        return templates.TemplateResponse(
            request,
            "login.html",
            {"next": _safe_next(next), "error": "That token is not right."},
            status_code=401,
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_value(expected),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@public.post("/logout")
def logout(request: Request) -> Response:
    if not is_authenticated(request):
        raise HTTPException(status_code=401, detail="not logged in")
    response = RedirectResponse("/login" if request.app.state.token else "/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
