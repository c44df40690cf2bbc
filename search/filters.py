"""Search filters: what a user may restrict results to, parsed from text, as SQL over the catalog.

The catalog is the source of truth for every filtered fact (path, date, format, size, and the
flagging tags), so filters are evaluated there; `pixseek.search.ranking` decides how to combine
them with the vector search.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from pixseek.imaging import ALLOWED_FORMATS
from pixseek.search.combined import QueryError

Flagged = Literal["any", "only", "hide"]
FLAGGED_CHOICES: tuple[Flagged, ...] = ("any", "only", "hide")
FORMAT_ALIASES = {"JPG": "JPEG", "HEIC": "HEIF", "TIF": "TIFF"}
WHEN_SQL = "COALESCE(f.taken_at, f.mtime_ns / 1e9)"
"""A file's date: when it was taken (EXIF), else when it was last modified."""

_DATE = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?")


class FilterError(QueryError):
    """A filter value that cannot be understood; the message names the filter."""


@dataclass(frozen=True)
class Filters:
    """Restrictions on results; the default restricts nothing."""

    folder: str | None = None
    since: float | None = None
    until: float | None = None
    formats: tuple[str, ...] = field(default_factory=tuple)
    min_width: int | None = None
    min_height: int | None = None
    flagged: Flagged = "any"

    @property
    def active(self) -> bool:
        """True when any filter restricts the results."""
        return self != NO_FILTERS


NO_FILTERS = Filters()


def parse_filters(
    *,
    folder: str | None = None,
    since: str | None = None,
    until: str | None = None,
    formats: list[str] | None = None,
    min_width: int | str | None = None,
    min_height: int | str | None = None,
    flagged: str | None = None,
    hide_flagged_by_default: bool = False,
) -> Filters:
    """Filters from user input (blank values mean "no filter"); bad values raise FilterError."""
    start = parse_date("since", since, end=False)
    stop = parse_date("until", until, end=True)
    if start is not None and stop is not None and start >= stop:
        raise FilterError(f"since ({since}) must be before until ({until})")
    return Filters(
        folder=_folder(folder),
        since=start,
        until=stop,
        formats=_formats(formats or []),
        min_width=_pixels("min_width", min_width),
        min_height=_pixels("min_height", min_height),
        flagged=_flagged(flagged, hide_flagged_by_default),
    )


def parse_date(name: str, text: str | None, end: bool) -> float | None:
    """A date bound in epoch seconds (UTC): YYYY, YYYY-MM, YYYY-MM-DD or an ISO date-time.

    A `since` bound is the start of the period and an `until` bound its end (exclusive), so
    `--since 2023 --until 2023` is the whole of 2023. EXIF dates without a time zone are stored
    as UTC, so a day here is the day on the camera's clock.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        return _bound(text, end)
    except (ValueError, OverflowError):
        raise FilterError(
            f"{name}: {text!r} is not a date; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None


def _bound(text: str, end: bool) -> float:
    matched = _DATE.fullmatch(text)
    if not matched:
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    year, month, day = (int(part) if part else None for part in matched.groups())
    start = datetime(year, month or 1, day or 1, tzinfo=timezone.utc)  # type: ignore[arg-type]
    if not end:
        return start.timestamp()
    if day is not None:
        return (start + timedelta(days=1)).timestamp()
    if month is not None:
        return (start + timedelta(days=calendar.monthrange(start.year, start.month)[1])).timestamp()
    return start.replace(year=start.year + 1).timestamp()


def _folder(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.startswith("~"):
        try:
            text = str(Path(text).expanduser())
        except RuntimeError:  # ~name for a user this machine does not know
            raise FilterError(f"folder {text!r}: no home directory for that user") from None
    if text.startswith("/"):
        return "/" + text.strip("/")
    relative = text.removeprefix("./").strip("/")
    return relative if relative not in ("", ".") else None


def _formats(values: list[str]) -> tuple[str, ...]:
    chosen: list[str] = []
    for value in values:
        for name in filter(None, (part.strip().upper() for part in value.split(","))):
            name = FORMAT_ALIASES.get(name, name)
            if name not in ALLOWED_FORMATS:
                allowed = ", ".join(ALLOWED_FORMATS)
                raise FilterError(f"format: unknown format {name!r}; allowed: {allowed}")
            if name not in chosen:
                chosen.append(name)
    return tuple(chosen)


def _pixels(name: str, value: int | str | None) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(value)
    except ValueError:
        raise FilterError(f"{name}: {value!r} is not a whole number of pixels") from None
    if not 1 <= number <= 1_000_000:
        raise FilterError(f"{name}: must be between 1 and 1000000 pixels (got {number})")
    return number


def _flagged(value: str | None, hide_by_default: bool) -> Flagged:
    if value is None or not value.strip():
        return "hide" if hide_by_default else "any"
    value = value.strip().lower()
    if value not in FLAGGED_CHOICES:
        raise FilterError(f"flagged: {value!r} is not one of {', '.join(FLAGGED_CHOICES)}")
    return value  # type: ignore[return-value]


def sql_conditions(filters: Filters, model: str) -> tuple[str, list[object]]:
    """The filters as one SQL condition over `files f`, with its parameters."""
    # what the store holds for this model: indexed files whose embedding is cached
    clauses: list[str] = [
        "f.status = 'indexed' AND EXISTS (SELECT 1 FROM embeddings e "
        "WHERE e.model = ? AND e.content_hash = f.content_hash)"
    ]
    args: list[object] = [model]
    if filters.folder is not None:
        column = "f.path" if filters.folder.startswith("/") else "f.rel_path"
        prefix = filters.folder.rstrip("/") + "/"
        # every path under the folder sorts in [prefix, prefix with its "/" replaced by "0")
        clauses.append(f"{column} >= ? AND {column} < ?")
        args += [prefix, prefix[:-1] + "0"]
    for test, bound in ((">=", filters.since), ("<", filters.until)):
        if bound is not None:
            clauses.append(f"{WHEN_SQL} {test} ?")
            args.append(bound)
    # Without planner statistics SQLite would rather use the format index than a folder or date
    # range; a "+" keeps it off these usually broad columns when a folder or date is given.
    plus = "+" if len(clauses) > 1 else ""
    if filters.formats:
        clauses.append(f"{plus}f.format IN ({','.join('?' * len(filters.formats))})")
        args += filters.formats
    for column, least in (("width", filters.min_width), ("height", filters.min_height)):
        if least is not None:
            clauses.append(f"{plus}f.{column} >= ?")
            args.append(least)
    if filters.flagged != "any":
        negate = "NOT " if filters.flagged == "hide" else ""
        flagged = "SELECT content_hash FROM tags WHERE model = ? AND flag = 1"
        clauses.append(f"f.content_hash {negate}IN ({flagged})")
        args.append(model)
    return " AND ".join(clauses), args
