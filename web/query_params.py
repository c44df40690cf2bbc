"""Query parameters shared by the search API and the search page: cutoff, order and filters.

The page's form sends every field, empty ones as "", so a blank value means "not set" here.
Bad values get a 4xx naming the parameter: a wrong type or range is 422 (FastAPI), and a date
or format that cannot be understood is 400 (`FilterError`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query
from pydantic import BeforeValidator, Field

from pixseek.search.filters import Filters, parse_filters
from pixseek.web.deps import LibraryDep


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


MinScore = Annotated[
    Annotated[float, Field(ge=-1.0, le=1.0)] | None,
    BeforeValidator(_blank_is_none),
    Query(description="Drop results below this cosine score (-1 to 1)."),
]
Sort = Annotated[
    Literal["score", "date"],
    Query(description="score: best first; date: newest first among the best 1000 matches."),
]
Pixels = Annotated[
    Annotated[int, Field(ge=1, le=1_000_000)] | None,
    BeforeValidator(_blank_is_none),
    Query(description="Minimum size in pixels."),
]
DateBound = Annotated[
    str | None,
    Query(max_length=40, description="YYYY, YYYY-MM, YYYY-MM-DD or an ISO date-time (UTC)."),
]


def search_filters(
    library: LibraryDep,
    folder: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="Only under this folder: an absolute path, or relative to a library root.",
        ),
    ] = None,
    since: DateBound = None,
    until: DateBound = None,
    formats: Annotated[
        list[str] | None,
        Query(alias="format", description="Only these formats (repeat or comma-separate)."),
    ] = None,
    min_width: Pixels = None,
    min_height: Pixels = None,
    flagged: Annotated[
        Literal["any", "only", "hide"] | None,
        BeforeValidator(_blank_is_none),
        Query(description="any, only or hide flagged images (default: the safe-search setting)."),
    ] = None,
) -> Filters:
    """The filters of a request (taken date, else modification date, for the date range)."""
    return parse_filters(
        folder=folder,
        since=since,
        until=until,
        formats=formats,
        min_width=min_width,
        min_height=min_height,
        flagged=flagged,
        hide_flagged_by_default=library.settings.classify.safe_search_default,
    )


FiltersDep = Annotated[Filters, Depends(search_filters)]
