"""Server-rendered pages: search, detail, similar, status and login (all usable without JS)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

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
from pixseek.web.routes.api import (
    hit,
    image_info,
    indexed_row,
    search_upload,
    similar,
    status_report,
    text_results,
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


@router.get("/", response_class=HTMLResponse)
def search_page(
    request: Request,
    templates: TemplatesDep,
    library: LibraryDep,
    lock: ModelLockDep,
    q: Annotated[str, Query(max_length=1000)] = "",
    k: K = PAGE,
    offset: Offset = 0,
) -> Response:
    results = text_results(library, lock, q, k, offset, None) if q.strip() else None
    return templates.TemplateResponse(
        request,
        "search.html",
        {
            "q": q,
            "k": k,
            "offset": offset,
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
    file: Annotated[UploadFile, File()],
) -> Response:
    results = await search_upload(request, library, lock, file, PAGE, 0, None)
    return templates.TemplateResponse(
        request,
        "search.html",
        {
            "q": "",
            "k": PAGE,
            "offset": 0,
            "results": [hit(r) for r in results],
            "more": False,
            "heading": f"Images like {file.filename or 'your upload'}",
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
    record: str,
    k: K = PAGE,
    offset: Offset = 0,
) -> Response:
    row = indexed_row(library, record)
    results = similar(library, record, k, offset)
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
