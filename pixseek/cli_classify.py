"""`pixseek classify`, `pixseek retag` and `pixseek export`: labels, tags and dataset export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixseek.cli_support import (
    ConfigOpt,
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    TopKOpt,
    err,
    model_settings,
    open_library,
    out,
    settings,
)

LabelsOpt = Annotated[
    str, typer.Option("--labels", "-l", help="Comma-separated labels, e.g. 'cat,dog,car'.")
]
QueryOpt = Annotated[
    str | None, typer.Option("--query", "-q", help="Classify the -k images best matching a text.")
]
IdOpt = Annotated[
    list[str] | None, typer.Option("--id", help="An indexed record id (repeat for more).")
]


def register(app: typer.Typer) -> None:
    """Add the commands of this module to the `pixseek` app."""
    app.command()(classify)
    app.command()(retag)
    app.command()(export)


def classify(
    labels: LabelsOpt,
    paths: Annotated[list[str] | None, typer.Argument(help="Image files (indexed or not).")] = None,
    query: QueryOpt = None,
    record: IdOpt = None,
    k: TopKOpt = 10,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Probability of each label for images: files, record ids, or a text search's results."""
    from pixseek.search.classify import (
        classify_images,
        classify_records,
        classify_search,
        parse_labels,
    )
    from pixseek.search.query import QueryError

    loaded = model_settings(config, model, device, data_dir)
    if sum(bool(source) for source in (paths, query, record)) != 1:
        err.print("error: give image PATHs, --query TEXT or --id RECORD (one of them)")
        raise typer.Exit(2)
    try:
        wanted = parse_labels(labels)
        with open_library(loaded) as library:
            if query:
                found = classify_search(library, wanted, query, k)
            elif record:
                found = classify_records(library, wanted, record)
            else:
                found = classify_images(library, wanted, paths or [])
    except QueryError as error:
        err.print(f"error: {error}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    if json_output:
        out.print_json(data=[item.as_dict() for item in found])
        return
    for item in found:
        out.print(item.path or item.target, highlight=False, markup=False)
        ranked = sorted(item.probabilities.items(), key=lambda pair: -pair[1])
        for label, probability in ranked:
            out.print(f"  {probability:7.2%}  {label}", highlight=False, markup=False)


def retag(
    force: Annotated[
        bool, typer.Option("--force", help="Re-tag even when the label sets did not change.")
    ] = False,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Re-tag from the embedding cache after editing classify.label_sets (no image is embedded)."""
    from pixseek.indexer.tagging import sync_tags

    loaded = model_settings(config, model, device, data_dir)
    with open_library(loaded, writer=True) as library:
        report = sync_tags(library, force=force)
    if json_output:
        out.print_json(data=vars(report))
    elif report.scored == 0 and not force:
        out.print("tags are up to date with the label sets (--force re-tags anyway)")
    else:
        out.print(
            f"scored {report.scored} cached embeddings: {report.tagged} tagged, "
            f"tags changed on {report.changed} records"
        )


def export(
    path: Annotated[Path, typer.Argument(help="The file to write.")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="parquet or npz (default: from the file's suffix)."),
    ] = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write ids, paths, metadata, tags and embeddings of every indexed image to a file."""
    from pixseek.search.export import ExportError
    from pixseek.search.export import export as write_export

    loaded = settings(config, **{"model.name": model, "data_dir": data_dir})
    fmt = fmt or path.suffix.lstrip(".").lower()
    try:
        with open_library(loaded) as library:
            report = write_export(library.catalog, library.model_key, path, fmt)
    except ExportError as error:
        err.print(f"error: {error}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    if json_output:
        out.print_json(data=vars(report))
    else:
        out.print(
            f"wrote {report.records} records ({report.dim}-d embeddings of {report.model}) "
            f"to {report.path}",
            highlight=False,
            markup=False,
        )
