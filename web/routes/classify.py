"""Zero-shot classification over the JSON API: indexed images by id, or an uploaded image."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from pixseek.imaging import open_image
from pixseek.library import Library
from pixseek.search.classify import (
    MAX_LABELS,
    Classification,
    check_labels,
    classify_embedding,
    classify_records,
    parse_labels,
)
from pixseek.search.query import QueryError
from pixseek.web.deps import AuthDep, LibraryDep, ModelLockDep
from pixseek.web.routes.api import save_upload

router = APIRouter(prefix="/api", tags=["api"], dependencies=[AuthDep])

MAX_IDS = 200


class ClassifyRequest(BaseModel):
    labels: list[str] = Field(
        min_length=2, max_length=MAX_LABELS, description="Labels, e.g. ['cat', 'dog', 'car']."
    )
    ids: list[str] = Field(min_length=1, max_length=MAX_IDS, description="Ids of indexed images.")


class ClassifyResult(BaseModel):
    id: str | None
    path: str | None
    best: str
    probabilities: dict[str, float]


class ClassifyResults(BaseModel):
    labels: list[str]
    results: list[ClassifyResult]


def _results(labels: list[str], found: list[Classification]) -> ClassifyResults:
    return ClassifyResults(
        labels=labels,
        results=[
            ClassifyResult(
                id=item.id, path=item.path, best=item.best, probabilities=item.probabilities
            )
            for item in found
        ],
    )


@router.post(
    "/classify",
    summary="Label probabilities for indexed images",
    response_model=ClassifyResults,
)
def classify(library: LibraryDep, lock: ModelLockDep, body: ClassifyRequest) -> ClassifyResults:
    labels = check_labels(body.labels)
    with lock:
        found = classify_records(library, labels, body.ids)
    return _results(labels, found)


def classify_for_page(
    library: Library, lock, record: str, labels: str
) -> tuple[list[tuple[str, float]] | None, str | None]:
    """The detail page's form: (label, probability) best first, or the problem with the labels."""
    if not labels.strip():
        return None, None
    try:
        wanted = parse_labels(labels)
        with lock:
            found = classify_records(library, wanted, [record])[0]
    except QueryError as error:
        return None, str(error)
    return sorted(found.probabilities.items(), key=lambda pair: -pair[1]), None


def _classify_file(library: Library, lock, labels: list[str], path: Path, name: str):
    decoded = open_image(path, library.limits)
    with lock:
        vector = library.embedder.encode_images([decoded.image])[0]
        return classify_embedding(library, labels, name, vector)


@router.post(
    "/classify/image",
    summary="Label probabilities for an uploaded image",
    response_model=ClassifyResults,
)
async def classify_image(
    request: Request,
    library: LibraryDep,
    lock: ModelLockDep,
    file: Annotated[UploadFile, File(description="An image file (JPEG, PNG, WebP, ...).")],
    labels: Annotated[
        str, Form(max_length=MAX_LABELS * 201, description="Comma-separated labels.")
    ],
) -> ClassifyResults:
    wanted = parse_labels(labels)
    with tempfile.TemporaryDirectory(prefix="pixseek-upload-") as folder:
        path = await save_upload(file, Path(folder), request.app.state.max_upload_bytes)
        found = await run_in_threadpool(
            _classify_file, library, lock, wanted, path, file.filename or "upload"
        )
    return _results(wanted, [found])
