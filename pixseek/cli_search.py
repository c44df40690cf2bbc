"""`pixseek search` and `pixseek similar`: combined queries, filters, minimum score, date order."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixseek import remote
from pixseek.cli_support import (
    ConfigOpt,
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    MinScoreOpt,
    ModelOpt,
    OffsetOpt,
    ServerOpt,
    TopKOpt,
    err,
    model_settings,
    open_library,
    out,
    remote_call,
)
from pixseek.config import LoadedConfig

if TYPE_CHECKING:
    from pixseek.library import Library
    from pixseek.search.filters import Filters
    from pixseek.search.query import Page, Result

SortOpt = Annotated[
    str,
    typer.Option(
        "--sort", help="score: best first; date: newest first among the best matches (max 1000)."
    ),
]
FolderOpt = Annotated[
    str | None,
    typer.Option(help="Only under this folder: an absolute path, or relative to a library root."),
]
SinceOpt = Annotated[
    str | None, typer.Option(help="Taken (else modified) on or after: YYYY[-MM[-DD]], UTC.")
]
UntilOpt = Annotated[
    str | None, typer.Option(help="Taken (else modified) up to the end of: YYYY[-MM[-DD]], UTC.")
]
FormatOpt = Annotated[
    list[str] | None,
    typer.Option("--format", help="Only these formats (repeat or comma-separate): jpeg,png,..."),
]
MinWidthOpt = Annotated[int | None, typer.Option(help="Only images at least this wide (px).")]
MinHeightOpt = Annotated[int | None, typer.Option(help="Only images at least this tall (px).")]
FlaggedOpt = Annotated[
    str | None,
    typer.Option(
        help="any | only | hide flagged images (default: hide when a label set flags, else any)."
    ),
]


def search(
    query: Annotated[
        list[str],
        typer.Argument(
            help="Words, image paths and id:RECORD terms joined by ' + ' and ' - ', each with "
            "an optional weight: '2:golden retriever' + ./pool.jpg - fruit"
        ),
    ],
    k: TopKOpt = 10,
    offset: OffsetOpt = 0,
    min_score: MinScoreOpt = None,
    sort: SortOpt = "score",
    folder: FolderOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    formats: FormatOpt = None,
    min_width: MinWidthOpt = None,
    min_height: MinHeightOpt = None,
    flagged: FlaggedOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
    server: ServerOpt = None,
) -> None:
    """Images matching a query (text, images, or both combined), best first, with scores."""
    from pixseek.search import query as queries

    text = " ".join(query)
    raw = _raw_filters(folder, since, until, formats, min_width, min_height, flagged)
    _run(
        model_settings(config, model, device, data_dir),
        lambda library, page, filters: queries.search(library, text, page, filters),
        lambda token, params: remote.search(server, token, _for_server(text), params),
        (k, offset, min_score, sort),
        raw,
        server,
        json_output,
    )


def similar(
    target: Annotated[str, typer.Argument(help="An image path (indexed or not) or a record id.")],
    k: TopKOpt = 10,
    offset: OffsetOpt = 0,
    min_score: MinScoreOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
    server: ServerOpt = None,
) -> None:
    """Images that look like an image, best first (filters: `search ./a.jpg --folder …`)."""
    from pixseek.search import query as queries

    _run(
        model_settings(config, model, device, data_dir),
        lambda library, page, filters: queries.similar(library, target, page, filters),
        lambda token, params: remote.similar(server, token, target, params),
        (k, offset, min_score, "score"),
        _raw_filters(None, None, None, None, None, None, None),
        server,
        json_output,
    )


def _raw_filters(
    folder: str | None,
    since: str | None,
    until: str | None,
    formats: list[str] | None,
    min_width: int | None,
    min_height: int | None,
    flagged: str | None,
) -> dict[str, Any]:
    if (folder and folder.startswith(("~", "./", "../"))) or folder in (".", ".."):
        folder = os.path.abspath(os.path.expanduser(folder))
    return {
        "folder": folder,
        "since": since,
        "until": until,
        "formats": formats,
        "min_width": min_width,
        "min_height": min_height,
        "flagged": flagged,
    }


def _run(
    loaded: LoadedConfig,
    local: Callable[[Library, Page, Filters], list[Result]],
    on_server: Callable[[str | None, dict[str, Any]], list[dict[str, Any]]],
    paging: tuple[int, int, float | None, str],
    raw_filters: dict[str, Any],
    server: str | None,
    json_output: bool,
) -> None:
    """Check the arguments, then answer locally or from the server, and print."""
    from pixseek.search.filters import parse_filters
    from pixseek.search.query import SORTS, Page, QueryError

    k, offset, min_score, sort = paging
    try:
        if sort not in SORTS:
            raise QueryError(f"--sort must be one of {', '.join(SORTS)} (got {sort!r})")
        default_hide = loaded.settings.classify.safe_search_default
        filters = parse_filters(**raw_filters, hide_flagged_by_default=default_hide)
        page = Page(k, offset, min_score, sort)  # type: ignore[arg-type]
        if server:
            params = {"k": k, "offset": offset, "min_score": min_score, "sort": sort}
            params |= {"format" if key == "formats" else key: v for key, v in raw_filters.items()}
            token = loaded.settings.web.token
            hits = remote_call(lambda: on_server(token, _without_none(params)))
            _print_hits([_keep(hit) for hit in hits], json_output)
            return
        with open_library(loaded) as library:
            empty = library.store.count() == 0  # then the model need not load
            results = [] if empty else local(library, page, filters)
            if empty and not json_output:
                err.print(
                    f"nothing is indexed with model {loaded.settings.model.name} in "
                    f"{loaded.settings.data_path} yet: run `pixseek index FOLDER` "
                    "(or `pixseek serve FOLDER`) first",
                    highlight=False,
                    markup=False,
                )
    except QueryError as error:
        err.print(f"error: {error}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    _print_hits([result.as_dict() for result in results], json_output)


def _for_server(text: str) -> str:
    """The query with image paths made absolute, so the server finds them in its catalog."""
    from dataclasses import replace

    from pixseek.search.combined import parse, unparse

    terms = parse(text)
    return unparse(
        [
            replace(term, value=os.path.abspath(os.path.expanduser(term.value)))
            if term.kind == "image"
            else term
            for term in terms
        ]
    )


def _without_none(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def _keep(hit: dict[str, Any]) -> dict[str, Any]:
    return {key: hit.get(key) for key in ("id", "path", "score", "date")}


def _print_hits(hits: list[dict[str, Any]], json_output: bool) -> None:
    if json_output:
        out.print_json(data=hits)
        return
    if not hits:
        out.print("no results")
    for hit in hits:
        when = _day(hit.get("date"))
        out.print(f"{hit['score']:.4f}  {when}  {hit['path']}", highlight=False, markup=False)


def _day(timestamp: float | None) -> str:
    if timestamp is None:
        return " " * 16
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
