"""The JSON API under /api: search, similar, metadata, thumbnails, original files, status."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from PIL import Image
from pydantic import BaseModel, Field

from pixseek.catalog import INDEXED, FileRow
from pixseek.imaging import ImageError, open_image
from pixseek.library import Library
from pixseek.search.filters import Filters
from pixseek.search.query import Page, Result, search, similar
from pixseek.tags import TagTable
from pixseek.web.deps import AuthDep, LibraryDep, ModelLockDep, ThumbnailDirDep
from pixseek.web.query_params import FiltersDep, MinScore, Sort

public = APIRouter(prefix="/api", tags=["api"])
router = APIRouter(prefix="/api", tags=["api"], dependencies=[AuthDep])

THUMBNAIL_SIZES = (64, 1024)
UPLOAD_CHUNK = 1 << 20

K = Annotated[int, Query(ge=1, le=200, description="Results per page (1 to 200).")]
Offset = Annotated[int, Query(ge=0, le=100_000, description="Results to skip.")]
Q = Annotated[
    str,
    Query(
        max_length=1000,
        description="Texts and id:RECORD terms joined by ' + ' and ' - ', with optional weights: "
        "'2:golden retriever + id:abc - fruit'.",
    ),
]


class Health(BaseModel):
    status: str


class Hit(BaseModel):
    id: str
    path: str
    score: float
    name: str
    width: int | None = None
    height: int | None = None
    date: float | None = None


class Results(BaseModel):
    results: list[Hit]
    offset: int
    k: int


class TagInfo(BaseModel):
    label_set: str
    label: str
    score: float
    flag: bool


class ImageInfo(BaseModel):
    id: str
    path: str
    name: str
    size: int
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: float | None = None
    camera: str | None = None
    tags: list[TagInfo] = []
    flagged: bool = False


class StoreInfo(BaseModel):
    mode: str
    location: str
    collection: str
    records: int


class Failure(BaseModel):
    path: str
    reason: str | None


class RootState(BaseModel):
    root: str
    state: str = Field(description="watching, polling, missing (unmounted?) or off")


class Queue(BaseModel):
    pending_paths: int = Field(description="Changed paths waiting to settle.")
    decode: int = Field(description="Files of the current run still to decode and embed.")


class WatchInfo(BaseModel):
    roots: list[RootState]
    observer: str = Field(description="native, polling or off")
    running: bool
    queue: Queue
    images_per_s: float = Field(description="Images indexed per second over the last 10 s.")
    embedded: int = Field(0, description="Images run through the model since the server started.")
    overflows: int = Field(description="Times more paths changed at once than watch.max_pending.")
    rescans: int = Field(description="Full rescans run because of an overflow.")
    last_reconcile: float | None = Field(description="End of the last full scan, epoch seconds.")
    last_report: dict[str, object] | None
    notes: list[str]


class Status(BaseModel):
    indexed: int
    failed: int
    cached_embeddings: int
    model: str
    store: StoreInfo
    failures: list[Failure]
    watch: WatchInfo | None
    tags: dict[str, int] = {}


def hit(result: Result) -> Hit:
    """The API form of a search result."""
    width, height = result.metadata.get("width"), result.metadata.get("height")
    return Hit(
        id=result.id,
        path=result.path,
        score=round(result.score, 6),
        name=Path(result.path).name,
        width=int(width) if isinstance(width, (int, float)) else None,
        height=int(height) if isinstance(height, (int, float)) else None,
        date=result.date,
    )


def indexed_row(library: Library, record: str) -> FileRow:
    """The catalog row of an indexed record, or 404."""
    row = library.catalog.get(record)
    if row is None or row.status != INDEXED:
        raise HTTPException(status_code=404, detail="no indexed image with this id")
    return row


async def save_upload(upload: UploadFile, directory: Path, max_bytes: int) -> Path:
    """Copy an upload to a temporary file (the decoder only ever reads files)."""
    target = directory / "upload"
    written = 0
    with open(target, "wb") as handle:
        while chunk := await upload.read(UPLOAD_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise HTTPException(status_code=413, detail="upload too large")
            handle.write(chunk)
    if written == 0:
        raise HTTPException(status_code=400, detail="the uploaded file is empty")
    return target


def search_upload_file(
    library: Library, lock, path: Path, q: str, page: Page, filters: Filters
) -> list[Result]:
    """Decode an uploaded image (ImageError → 400 upstream), embed it, add `q`, and search."""
    decoded = open_image(path, library.limits)
    with lock:
        vector = library.embedder.encode_images([decoded.image])[0]
        return search(library, q, page, filters, uploads=[vector], read_files=False)


async def search_upload(
    request: Request,
    library: Library,
    lock,
    upload: UploadFile,
    q: str,
    page: Page,
    filters: Filters,
) -> list[Result]:
    """Search by an uploaded image plus an optional query, shared by the API and the page."""
    from starlette.concurrency import run_in_threadpool

    with tempfile.TemporaryDirectory(prefix="pixseek-upload-") as folder:
        path = await save_upload(upload, Path(folder), request.app.state.max_upload_bytes)
        return await run_in_threadpool(search_upload_file, library, lock, path, q, page, filters)


def query_results(library: Library, lock, q: str, page: Page, filters: Filters) -> list[Result]:
    """A query (see `pixseek.search.combined`) with the model lock held; no files are read."""
    with lock:
        return search(library, q, page, filters, read_files=False)


def make_thumbnail(library: Library, row: FileRow, size: int, cache: Path) -> Path:
    """The cached WebP thumbnail of a record, made on first request (no metadata kept)."""
    cached = cache / f"{row.content_hash}-{size}.webp"
    if cached.is_file():
        return cached
    decoded = open_image(Path(row.path), library.limits, draft_target=size)
    image = decoded.image
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    cache.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=cache, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            image.save(out, "WEBP", quality=80, method=4)
        os.replace(temporary, cached)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return cached


@public.get("/health", summary="Liveness check", response_model=Health)
def health() -> Health:
    return Health(status="ok")


@router.get("/search", summary="Search images by text", response_model=Results)
def search_query(
    library: LibraryDep,
    lock: ModelLockDep,
    filters: FiltersDep,
    q: Q = "",
    k: K = 20,
    offset: Offset = 0,
    min_score: MinScore = None,
    sort: Sort = "score",
) -> Results:
    results = query_results(library, lock, q, Page(k, offset, min_score, sort), filters)
    return Results(results=[hit(r) for r in results], offset=offset, k=k)


@router.post("/search/image", summary="Search by an uploaded image", response_model=Results)
async def search_image(
    request: Request,
    library: LibraryDep,
    lock: ModelLockDep,
    filters: FiltersDep,
    file: Annotated[UploadFile, File(description="An image file (JPEG, PNG, WebP, ...).")],
    q: Annotated[
        str,
        Query(
            max_length=1000,
            description="Terms to add or subtract: '+ red - circle' (without an operator, added).",
        ),
    ] = "",
    k: K = 20,
    offset: Offset = 0,
    min_score: MinScore = None,
    sort: Sort = "score",
) -> Results:
    page = Page(k, offset, min_score, sort)
    results = await search_upload(request, library, lock, file, q, page, filters)
    return Results(results=[hit(r) for r in results], offset=offset, k=k)


@router.get("/images/{record}", summary="Metadata of an indexed image", response_model=ImageInfo)
def image_info(library: LibraryDep, record: str) -> ImageInfo:
    row = indexed_row(library, record)
    tags = TagTable(library.catalog).for_hashes(library.model_key, [row.content_hash or ""])
    found = [TagInfo(**vars(tag)) for tag in tags.get(row.content_hash or "", [])]
    return ImageInfo(
        id=row.id,
        path=row.path,
        name=Path(row.path).name,
        size=row.size,
        width=row.width,
        height=row.height,
        format=row.format,
        taken_at=row.taken_at,
        camera=row.camera,
        tags=found,
        flagged=any(tag.flag for tag in found),
    )


@router.get(
    "/images/{record}/similar", summary="Images similar to an indexed one", response_model=Results
)
def image_similar(
    library: LibraryDep,
    record: str,
    filters: FiltersDep,
    k: K = 20,
    offset: Offset = 0,
    min_score: MinScore = None,
    sort: Sort = "score",
) -> Results:
    indexed_row(library, record)
    results = similar(library, record, Page(k, offset, min_score, sort), filters)
    return Results(results=[hit(r) for r in results], offset=offset, k=k)


@router.get(
    "/images/{record}/thumbnail",
    summary="WebP thumbnail of an indexed image",
    response_class=Response,
    responses={200: {"content": {"image/webp": {}}}},
)
def image_thumbnail(
    library: LibraryDep,
    cache: ThumbnailDirDep,
    record: str,
    size: Annotated[int, Query(ge=THUMBNAIL_SIZES[0], le=THUMBNAIL_SIZES[1])] = 256,
) -> Response:
    row = indexed_row(library, record)
    try:
        path = make_thumbnail(library, row, size, cache)
    except ImageError as error:
        if not os.path.exists(row.path):
            raise HTTPException(status_code=404, detail="the file is gone") from None
        raise HTTPException(status_code=422, detail=f"cannot read: {error.reason}") from None
    return FileResponse(
        path, media_type="image/webp", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.get(
    "/images/{record}/file",
    summary="The original file of an indexed image",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}},
)
def image_file(library: LibraryDep, record: str) -> FileResponse:
    row = indexed_row(library, record)
    if not os.path.isfile(row.path):
        raise HTTPException(status_code=404, detail="the file is gone")
    return FileResponse(row.path, filename=Path(row.path).name, content_disposition_type="inline")


def status_report(request: Request, library: Library) -> Status:
    """Counts, model, store, failures and watcher state (shared with the status page)."""
    counts = library.catalog.counts(library.model_key)
    watch = request.app.state.watch_status
    return Status(
        indexed=counts["indexed"],
        failed=counts["failed"],
        cached_embeddings=counts["cached_embeddings"],
        model=library.settings.model.name,
        store=StoreInfo(
            mode=library.store.mode,
            location=library.store.location,
            collection=library.store.name,
            records=library.store.count(),
        ),
        failures=[Failure(path=row.path, reason=row.reason) for row in library.catalog.failures()],
        watch=WatchInfo.model_validate(watch.as_dict()) if watch is not None else None,
        tags=TagTable(library.catalog).counts(library.model_key),
    )


@router.get("/status", summary="Index and watcher status", response_model=Status)
def status(request: Request, library: LibraryDep) -> Status:
    return status_report(request, library)
