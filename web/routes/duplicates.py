"""Duplicates: the JSON API under /api/duplicates and the review page at /duplicates.

Groups come from one `Finder` per app, which caches pairs until the catalog changes, so paging
through thousands of groups only regroups. State-changing routes are POSTs (the app's guard
refuses them from a foreign Origin). Quarantine moves files under `dedup.quarantine_dir`; undo
takes a manifest *name* from that folder, never a path from the request.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from pixseek.indexer.quarantine import QuarantineError, manifests, quarantine, read_manifest, undo
from pixseek.library import Library
from pixseek.search import decisions
from pixseek.search.dedup import DedupError, Finder, Group, check_threshold, default_threshold
from pixseek.web.deps import AuthDep, LibraryDep, TemplatesDep

api = APIRouter(prefix="/api/duplicates", tags=["duplicates"], dependencies=[AuthDep])
pages = APIRouter(include_in_schema=False, dependencies=[AuthDep])

PAGE = 20
Tier = Literal["exact", "near", "semantic"]
Action = Literal["keep", "dismiss", "quarantine"]
VERDICTS: dict[str, decisions.Decision] = {"keep": "keep_all", "dismiss": "not_duplicates"}
TierQuery = Annotated[Tier, Query(description="exact, near (pHash) or semantic (CLIP).")]
ThresholdQuery = Annotated[
    float | None,
    Query(ge=0, le=64, description="near: max differing bits; semantic: min cosine."),
]


def get_finder(request: Request) -> Finder:
    """The app's duplicate finder, made on first use."""
    state = request.app.state
    if getattr(state, "finder", None) is None:
        state.finder = Finder(state.library)
    return state.finder


FinderDep = Annotated[Finder, Depends(get_finder)]


class Member(BaseModel):
    id: str
    path: str
    content_hash: str
    size: int
    width: int | None
    height: int | None
    format: str | None
    taken_at: float | None
    keeper: bool
    protected: bool


class GroupOut(BaseModel):
    id: str
    tier: Tier
    score: float
    keeper: str
    reclaimable_bytes: int
    members: list[Member]


class GroupPage(BaseModel):
    tier: Tier
    threshold: float
    total: int
    offset: int
    limit: int
    groups: list[GroupOut]


class DecideRequest(BaseModel):
    tier: Tier
    threshold: float | None = Field(None, ge=0, le=64)
    action: Action
    groups: list[str] = Field(min_length=1, max_length=10_000)


class Skipped(BaseModel):
    path: str
    reason: str


class DecideResult(BaseModel):
    action: Action
    groups: int
    moved: int = 0
    manifest: str | None = None
    skipped: list[Skipped] = Field(default_factory=list)


class ManifestInfo(BaseModel):
    name: str
    files: int


class UndoRequest(BaseModel):
    manifest: str = Field(min_length=1, max_length=255)


class UndoResult(BaseModel):
    restored: list[str]
    skipped: list[Skipped]


def quarantine_dir(library: Library) -> Path:
    """Where web actions move non-keepers."""
    settings = library.settings
    return (settings.dedup.quarantine_dir or settings.data_path / "quarantine").expanduser()


def current_groups(finder: Finder, tier: Tier, threshold: float | None) -> list[Group]:
    """Groups of a tier, with a bad threshold answered 400."""
    try:
        check_threshold(tier, threshold)
        return finder.groups(tier, threshold)
    except DedupError as error:
        raise HTTPException(status_code=400, detail=str(error)) from None


def apply(
    library: Library,
    finder: Finder,
    tier: Tier,
    threshold: float | None,
    action: Action,
    ids: list[str],
) -> DecideResult:
    """Keep, dismiss or quarantine groups by id; 404 (and nothing done) if any id is stale."""
    current = {group.id: group for group in current_groups(finder, tier, threshold)}
    unknown = [group for group in dict.fromkeys(ids) if group not in current]
    if unknown:
        raise HTTPException(
            status_code=404,
            detail=f"no current {tier} group with id {', '.join(unknown[:5])}; reload the list",
        )
    chosen = [current[group] for group in dict.fromkeys(ids)]
    if action != "quarantine":
        for group in chosen:
            decisions.record(library.catalog, tier, VERDICTS[action], group.hashes)
        return DecideResult(action=action, groups=len(chosen))
    try:
        report = quarantine(library, chosen, quarantine_dir(library))
    except QuarantineError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    return DecideResult(
        action=action,
        groups=len(chosen),
        moved=len(report.moved),
        manifest=Path(report.manifest).name,
        skipped=[Skipped(**item) for item in report.skipped],
    )


def undo_named(library: Library, name: str) -> UndoResult:
    """Undo the quarantine manifest with this file name (only names listed in the folder)."""
    known = {path.name: path for path in manifests(quarantine_dir(library))}
    if name not in known:
        raise HTTPException(status_code=404, detail=f"no manifest named {name!r}")
    try:
        report = undo(library, known[name])
    except QuarantineError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    return UndoResult(
        restored=report.restored, skipped=[Skipped(**item) for item in report.skipped]
    )


@api.get("", summary="Duplicate groups of a tier, one page at a time", response_model=GroupPage)
def list_groups(
    library: LibraryDep,
    finder: FinderDep,
    tier: TierQuery = "exact",
    threshold: ThresholdQuery = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> GroupPage:
    groups = current_groups(finder, tier, threshold)
    return GroupPage(
        tier=tier,
        threshold=default_threshold(library, tier) if threshold is None else threshold,
        total=len(groups),
        offset=offset,
        limit=limit,
        groups=[GroupOut.model_validate(g.as_dict()) for g in groups[offset : offset + limit]],
    )


@api.post(
    "/decisions",
    summary="Keep all, dismiss (not duplicates) or quarantine groups",
    response_model=DecideResult,
    responses={404: {"description": "a group id is not current"}},
)
def decide(library: LibraryDep, finder: FinderDep, body: DecideRequest) -> DecideResult:
    return apply(library, finder, body.tier, body.threshold, body.action, body.groups)


class DecisionOut(BaseModel):
    id: int
    tier: Tier
    decision: decisions.Decision
    hashes: list[str]
    created_at: float


@api.get(
    "/decisions",
    summary="Stored keep-all and not-duplicates decisions",
    response_model=list[DecisionOut],
)
def list_decisions(library: LibraryDep) -> list[DecisionOut]:
    return [
        DecisionOut(
            id=d.id,
            tier=d.tier,
            decision=d.decision,
            hashes=sorted(d.hashes),
            created_at=d.created_at,
        )
        for d in decisions.stored(library.catalog)
    ]


@api.post(
    "/decisions/{number}/forget",
    summary="Forget a decision: its group is reported again",
    response_model=DecisionOut,
    responses={404: {"description": "no such decision"}},
)
def forget_decision(library: LibraryDep, number: int) -> DecisionOut:
    known = {d.id: d for d in list_decisions(library)}
    if number not in known or not decisions.forget(library.catalog, number):
        raise HTTPException(status_code=404, detail=f"no decision {number}")
    return known[number]


def manifest_infos(library: Library, limit: int) -> list[ManifestInfo]:
    """The newest readable manifests of the quarantine folder."""
    found: list[ManifestInfo] = []
    for path in manifests(quarantine_dir(library)):
        if len(found) >= limit:
            break
        try:
            found.append(ManifestInfo(name=path.name, files=len(read_manifest(path))))
        except QuarantineError:
            continue
    return found


@api.get(
    "/manifests", summary="Quarantine manifests, newest first", response_model=list[ManifestInfo]
)
def list_manifests(library: LibraryDep) -> list[ManifestInfo]:
    return manifest_infos(library, limit=1000)


@api.post(
    "/undo",
    summary="Put back every file of a quarantine manifest",
    response_model=UndoResult,
    responses={404: {"description": "no such manifest"}},
)
def undo_manifest(library: LibraryDep, body: UndoRequest) -> UndoResult:
    return undo_named(library, body.manifest)


@pages.get("/duplicates", response_class=HTMLResponse)
def duplicates_page(
    request: Request,
    templates: TemplatesDep,
    library: LibraryDep,
    finder: FinderDep,
    tier: Tier = "exact",
    threshold: Annotated[float | None, Query(ge=0, le=64)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    message: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    groups = current_groups(finder, tier, threshold)
    pages_total = max(1, math.ceil(len(groups) / PAGE))
    shown = groups[(page - 1) * PAGE : page * PAGE]
    return templates.TemplateResponse(
        request,
        "duplicates.html",
        {
            "tier": tier,
            "threshold": threshold,
            "effective": default_threshold(library, tier) if threshold is None else threshold,
            "page": page,
            "pages": pages_total,
            "total": len(groups),
            "groups": shown,
            "message": message,
            "manifests": manifest_infos(library, limit=5),
            "link": lambda **changes: _link(**{"tier": tier, "threshold": threshold} | changes),
        },
    )


@pages.post("/duplicates/decide")
def decide_form(
    library: LibraryDep,
    finder: FinderDep,
    tier: Annotated[Tier, Form()],
    target: Annotated[str, Form(max_length=100)],
    threshold: Annotated[float | None, Form(ge=0, le=64)] = None,
    page: Annotated[int, Form(ge=1, le=1_000_000)] = 1,
    group: Annotated[list[str] | None, Form(max_length=100)] = None,
) -> Response:
    """One form for the page: `target` is `ACTION:GROUP` or `ACTION:selected`."""
    action, _, which = target.partition(":")
    if action not in ("keep", "dismiss", "quarantine") or not which:
        raise HTTPException(status_code=400, detail=f"unknown action {target!r}")
    ids = (group or []) if which == "selected" else [which]
    if not ids:
        raise HTTPException(status_code=400, detail="select at least one group first")
    result = apply(library, finder, tier, threshold, action, ids)  # type: ignore[arg-type]
    done = {"keep": "kept as they are", "dismiss": "marked not duplicates"}.get(action)
    message = (
        f"{result.groups} group(s) {done}"
        if done
        else f"moved {result.moved} file(s) to quarantine ({result.manifest})"
        + (f"; {len(result.skipped)} left in place" if result.skipped else "")
    )
    return RedirectResponse(
        _link(tier=tier, threshold=threshold, page=page, message=message), status_code=303
    )


@pages.post("/duplicates/undo")
def undo_form(
    library: LibraryDep,
    tier: Annotated[Tier, Form()],
    manifest: Annotated[str, Form(max_length=255)],
) -> Response:
    result = undo_named(library, manifest)
    message = f"restored {len(result.restored)} file(s)" + (
        f"; {len(result.skipped)} not restored: {result.skipped[0].reason}"
        if result.skipped
        else ""
    )
    return RedirectResponse(_link(tier=tier, message=message), status_code=303)


def _link(**query: object) -> str:
    """The page's URL with these query values (empty ones left out)."""
    if query.get("page") == 1:
        del query["page"]
    return "/duplicates?" + urlencode({k: v for k, v in query.items() if v not in (None, "")})
