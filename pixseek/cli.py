"""The `pixseek` command line: one command per job, each with --config and --json."""

from __future__ import annotations

import json
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from pixseek import cli_classify, remote
from pixseek.cli_dedup import dedup_app
from pixseek.cli_search import search, similar
from pixseek.cli_support import (
    ConfigOpt,
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    ServerOpt,
    err,
    model_settings,
    open_library,
    out,
    remote_call,
    settings,
    start_indexing,
)
from pixseek.config import flatten

if TYPE_CHECKING:
    from pixseek.indexer.pipeline import IndexReport

app = typer.Typer(
    name="pixseek",
    help="Semantic image search over your folders: CLIP embeddings in Chroma.",
    no_args_is_help=True,
    add_completion=False,
)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.1f} files/s")


class _Bar:
    """Adapts a rich progress bar to the indexer's Progress protocol."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def start(self, phase: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(phase, total=total)

    def advance(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def embedded(self, count: int) -> None:
        pass


@app.command()
def index(
    paths: Annotated[list[Path] | None, typer.Argument(help="Folders to index.")] = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="model.batch_size")] = None,
    workers: Annotated[int | None, typer.Option(help="indexer.workers (0 = one per core)")] = None,
    allow_deletes: Annotated[
        bool, typer.Option(help="Apply deletions the delete guard would refuse.")
    ] = False,
) -> None:
    """Index folders once: new, edited, moved and deleted files are brought up to date."""
    loaded = settings(
        config,
        **{"model.name": model, "model.device": device, "data_dir": data_dir},
        **{"model.batch_size": batch_size, "indexer.workers": workers},
    )
    roots = paths or loaded.settings.indexer.roots
    if not roots:
        err.print("error: name at least one folder, or set indexer.roots in the config")
        raise typer.Exit(2)
    early_readers = start_indexing(loaded)
    from pixseek.indexer.pipeline import index_roots

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    )
    with (
        early_readers or nullcontext(),
        open_library(loaded, writer=True) as library,
        Progress(*columns, console=err, disable=json_output, transient=True) as progress,
    ):
        report = index_roots(
            library, roots, _Bar(progress), allow_deletes, early_readers=early_readers
        )
    if json_output:
        out.print_json(data=report.as_dict())
        return
    _show_report(report, out)


def _show_report(report: IndexReport, console: Console) -> None:
    """A run's notes as warnings, then its one-line summary on `console`."""
    for note in report.notes:
        err.print(f"[yellow]warning:[/] {note}", highlight=False)
    console.print(report.summary(), highlight=False, markup=False)


@app.command()
def watch(
    paths: Annotated[list[Path] | None, typer.Argument(help="Folders to watch.")] = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Index folders, then keep watching them until interrupted (Ctrl-C)."""
    import threading

    from pixseek.indexer.scan import normalise_root

    loaded = model_settings(config, model, device, data_dir)
    roots = [normalise_root(root) for root in paths or loaded.settings.indexer.roots]
    if not roots:
        err.print("error: name at least one folder, or set indexer.roots in the config")
        raise typer.Exit(2)
    early_readers = start_indexing(loaded)
    from pixseek.indexer.watch import watch as run_watch

    def show(report) -> None:
        if json_output:
            out.print(json.dumps(report.as_dict()), highlight=False, markup=False)
        else:
            _show_report(report, out)

    with early_readers or nullcontext(), open_library(loaded, writer=True) as library:
        err.print(f"watching {', '.join(roots)} (Ctrl-C to stop)", highlight=False)
        try:
            run_watch(library, roots, threading.Event(), show, early_readers=early_readers)
        except KeyboardInterrupt:
            err.print("stopped")


NO_INDEX_HELP = (
    "Only serve, without indexing or watching: the index is written by another process "
    "(`pixseek watch` on this data_dir, with store.mode: http)."
)


@app.command()
def serve(
    paths: Annotated[list[Path] | None, typer.Argument(help="Folders to index and watch.")] = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="web.host: bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="web.port: bind port.")] = None,
    no_index: Annotated[bool, typer.Option("--no-index", help=NO_INDEX_HELP)] = False,
) -> None:
    """Index, keep watching, and serve the search UI and JSON API, all in one process."""
    import threading

    from pixseek.indexer.scan import normalise_root

    loaded = settings(
        config,
        **{"model.name": model, "model.device": device, "data_dir": data_dir},
        **{"web.host": host, "web.port": port},
    )
    web = loaded.settings.web
    if not _is_loopback(web.host) and not web.token:
        err.print(
            f"error: refusing to serve on {web.host} without a token: set web.token "
            "(or PIXSEEK_WEB_TOKEN), or bind 127.0.0.1"
        )
        raise typer.Exit(2)
    if no_index and paths:
        err.print("error: --no-index serves what another process indexes: name no folders")
        raise typer.Exit(2)
    if problem := _cannot_listen(web.host, web.port):
        err.print(f"error: cannot listen on {web.host}:{web.port} (web.host, web.port): {problem}")
        raise typer.Exit(1)
    roots = [] if no_index else [normalise_root(r) for r in paths or loaded.settings.indexer.roots]
    early_readers = start_indexing(loaded) if roots else None
    import uvicorn

    from pixseek.indexer.status import WatchStatus
    from pixseek.indexer.tagging import sync_tags
    from pixseek.indexer.watch import watch as run_watch
    from pixseek.web.app import create_app

    # a web-only process needs no lock with a Chroma server, but embedded Chroma is its alone
    writer = not no_index or loaded.settings.store.mode == "embedded"
    with (
        early_readers or nullcontext(),
        open_library(loaded, writer=writer, serving=True) as library,
    ):
        # A model that cannot load ends the command here, before anything is served.
        _ = library.embedder if no_index else library.embedders
        status, stop = WatchStatus(roots=roots), threading.Event()
        app_ = create_app(
            library,
            watch_status=None if no_index else status,
            token=web.token,
            max_upload_bytes=int(web.max_upload_mb * 1e6),
        )
        server = uvicorn.Server(
            uvicorn.Config(app_, host=web.host, port=web.port, log_level="warning")
        )
        ended: list[BaseException] = []

        def watch_then_stop() -> None:
            """The watch loop; what ends it (errors it cannot retry) ends the server too,
            rather than leave it serving an index that no longer follows the folders."""
            try:
                run_watch(
                    library, roots, stop, partial(_show_report, console=err), status, early_readers
                )
            except BaseException as error:
                ended.append(error)
                server.should_exit = True

        watcher = threading.Thread(target=watch_then_stop, daemon=True)
        if roots:
            watcher.start()  # its first reconcile re-tags if the label sets changed
        elif not no_index:
            sync_tags(library)
        err.print(f"serving http://{web.host}:{web.port}", highlight=False)
        try:
            server.run()
        finally:
            stop.set()
            if watcher.is_alive():
                watcher.join(timeout=60)
        if ended:
            raise ended[0]  # open_library says what it was
        if not server.started:
            raise typer.Exit(1)  # uvicorn said why


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the web server could not bind `host:port` (taken, or not an address of this
    machine), checked before anything loads; None when it can."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as error:
        return error.strerror or str(error)
    return None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


app.command()(search)
app.command()(similar)


@app.command()
def status(
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    server: ServerOpt = None,
) -> None:
    """Counts, model, store, and every file that could not be indexed with the reason."""
    loaded = settings(config, **{"model.name": model, "data_dir": data_dir})
    if server:
        report = remote_call(lambda: remote.status(server, loaded.settings.web.token))
        _print_status(report, json_output)
        return
    from pixseek.tags import TagTable

    with open_library(loaded) as library:
        counts = library.catalog.counts(library.model_key)
        report = {
            "indexed": counts["indexed"],
            "failed": counts["failed"],
            "cached_embeddings": counts["cached_embeddings"],
            "model": loaded.settings.model.name,
            "store": {
                "mode": library.store.mode,
                "location": library.store.location,
                "collection": library.store.name,
                "records": library.store.count(),
            },
            "catalog": str(library.catalog.path),
            "tags": TagTable(library.catalog).counts(library.model_key),
            "failures": [
                {"path": row.path, "reason": row.reason} for row in library.catalog.failures()
            ],
        }
    _print_status(report, json_output)


def _print_status(report: dict[str, Any], json_output: bool) -> None:
    if json_output:
        out.print_json(data=report)
        return
    store = report["store"]
    out.print(f"model:    {report['model']}", highlight=False, markup=False)
    out.print(
        f"store:    {store['mode']} at {store['location']}, collection {store['collection']}, "
        f"{store['records']} records",
        highlight=False,
        markup=False,
    )
    out.print(f"catalog:  {report['catalog']}", highlight=False, markup=False)
    out.print(f"indexed:  {report['indexed']}\nfailed:   {report['failed']}")
    for failure in report["failures"]:
        out.print(f"  {failure['path']!r}: {failure['reason']}", highlight=False, markup=False)
    for tag, count in report.get("tags", {}).items():
        out.print(f"tag {tag}: {count}", highlight=False, markup=False)


@app.command("config")
def show_config(config: ConfigOpt = None, json_output: JsonOpt = False) -> None:
    """The effective configuration and where each value came from."""
    loaded = settings(config)
    values = flatten(loaded.settings.model_dump(mode="json"))
    for secret in ("web.token", "store.headers"):
        if values.get(secret):
            values[secret] = "(set, hidden)"
    if json_output:
        data = {key: {"value": values[key], "source": loaded.sources[key]} for key in values}
        out.print_json(data=data)
        return
    table = Table("key", "value", "source")
    for key, value in values.items():
        table.add_row(key, json.dumps(value), loaded.sources[key])
    out.print(table)


TAKE_OVER_HELP = (
    "Claim a collection that another catalog writes (that catalog is gone): its records "
    "that this catalog lacks are removed."
)


@app.command()
def repair(
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    data_dir: DataDirOpt = None,
    take_over: Annotated[bool, typer.Option(help=TAKE_OVER_HELP)] = False,
):
    """Make Chroma agree with the catalog, restoring vectors from the cache (no re-embedding)."""
    from pixseek.indexer.repair import repair as run_repair

    loaded = settings(config, data_dir=data_dir)
    with open_library(loaded, writer=True, take_over=take_over) as library:
        result = run_repair(library)
    if json_output:
        out.print_json(data=vars(result))
    else:
        out.print(
            f"{result.expected} records expected: restored {result.restored}, "
            f"removed {result.removed}"
        )


cli_classify.register(app)
app.add_typer(dedup_app, name="dedup")

if __name__ == "__main__":
    app()
