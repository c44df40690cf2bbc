"""Pieces every `pixseek` command shares: consoles, option types, config and library opening."""

from __future__ import annotations

import functools
import gc
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from pixseek.config import ConfigError, LoadedConfig, load_config

if TYPE_CHECKING:
    from pixseek.indexer.read_processes import ReadProcesses
    from pixseek.library import Library

T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="model.name: hub id or local directory.")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="model.device: auto|cpu|cuda[:N].")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="data_dir: catalog and Chroma location.")
]
TopKOpt = Annotated[int, typer.Option("-k", "--top-k", min=1, help="Number of results.")]
OffsetOpt = Annotated[int, typer.Option("--offset", min=0, help="Skip this many results.")]
ServerOpt = Annotated[
    str | None,
    typer.Option("--server", help="Ask a running `pixseek serve` at this URL instead."),
]
MinScoreOpt = Annotated[
    float | None, typer.Option("--min-score", help="Drop results below this cosine score.")
]


def settings(config: Path | None, **flags: Any) -> LoadedConfig:
    try:
        return load_config(config, flags)
    except ConfigError as error:
        err.print(f"[red]error:[/] {error}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def remote_call(run: Callable[[], T]) -> T:
    """Run a `--server` request; a refused or unreachable server exits 1 with its message."""
    from pixseek.remote import RemoteError

    try:
        return run()
    except RemoteError as error:
        err.print(f"error: {error}", highlight=False, markup=False)
        raise typer.Exit(1) from None


def model_settings(
    config: Path | None, model: str | None, device: str | None, data_dir: Path | None
) -> LoadedConfig:
    """`settings` with the --model, --device and --data-dir flags of the commands that embed."""
    return settings(config, **{"model.name": model, "model.device": device, "data_dir": data_dir})


@functools.cache  # once per process: later objects are left to the collector
def _set_aside_startup_objects() -> None:
    """Take what exists at the first open (torch, transformers and Chroma: about 400,000 objects,
    living as long as the process) out of the cycle collector's passes, each of which otherwise
    holds the interpreter lock for 0.2-0.35 s while files are scanned and indexed."""
    gc.freeze()


def _fail(message: str) -> NoReturn:
    """End the command with `error: message` and exit status 1."""
    err.print(f"error: {message}", highlight=False, markup=False)
    raise typer.Exit(1)


def start_indexing(loaded: LoadedConfig) -> ReadProcesses | None:
    """Read processes (and decode processes) for a command that indexes, started before the
    rest of its imports, which they do on their own meanwhile (see `read_processes.start_early`);
    then the decode processes make their rings for the model, before the run needs them."""
    from pixseek.indexer.read_processes import start_early

    readers = start_early(loaded.settings)
    if readers is not None:
        readers.configure_decoding(loaded.settings.model)
    return readers


@contextmanager
def open_library(
    loaded: LoadedConfig, writer: bool = False, take_over: bool = False, serving: bool = False
) -> Iterator[Library]:
    """Open the library; torch and Chroma are imported here, so --help and config stay quick."""
    from pixseek.embedder import ModelLoadError
    from pixseek.library import Library
    from pixseek.lock import StoreLockedError
    from pixseek.store import StoreUnavailableError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    chosen = loaded.settings
    try:
        library = Library(chosen, writer=writer, take_over=take_over, serving=serving)
    except (StoreLockedError, StoreUnavailableError) as error:
        _fail(str(error))
    except sqlite3.DatabaseError as error:
        _fail(
            f"cannot read the catalog {chosen.catalog_path}: {error}. It is the source of "
            "truth: restore it from a backup, or move it aside and index again (every image is "
            "then embedded again)"
        )
    except OSError as error:  # the data directory is a file, or on no writable disk
        reason = f"{error.strerror}: {error.filename}" if error.strerror else str(error)
        reason = "a file is there, not a directory" if chosen.data_path.is_file() else reason
        _fail(f"cannot use data_dir {chosen.data_path}: {reason}")
    _set_aside_startup_objects()
    try:
        yield library
    except (ModelLoadError, StoreLockedError) as error:
        _fail(str(error))
    except StoreUnavailableError as error:
        kept = " What was embedded is kept in the catalog; the next run writes it to Chroma."
        _fail(f"{error}.{kept if writer else ''}")
    finally:
        library.close()
