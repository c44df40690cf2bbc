"""Export the index for dataset work: ids, paths, metadata, tags and embeddings.

Parquet (through pyarrow) or NumPy `.npz`. Rows come from the catalog, the source of truth,
in id order and `batch` at a time inside one read transaction, so every column describes the
same moment and memory holds one batch, not the library. The file appears under its name only
when complete: a failed export leaves any earlier file in place.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixseek.catalog import Catalog, FileRow
from pixseek.tags import TagTable, tag_metadata

FORMATS = ("parquet", "npz")
BATCH = 8192

# column name -> numpy dtype in .npz ("U" = text of the longest value's width); missing values
# are null in Parquet and -1, NaN or "" in .npz
COLUMNS: dict[str, str] = {
    "id": "U",
    "path": "U",
    "root": "U",
    "rel_path": "U",
    "size": "int64",
    "mtime_ns": "int64",
    "width": "int32",
    "height": "int32",
    "format": "U",
    "taken_at": "float64",
    "camera": "U",
    "hash": "U",
    "tags": "U",
    "flagged": "bool",
}
_MISSING = {"U": "", "int64": -1, "int32": -1, "float64": np.nan, "bool": False}


class ExportError(ValueError):
    """The export cannot be written as asked (unknown format, missing pyarrow, bad path)."""


@dataclass
class ExportReport:
    """What was written."""

    path: str
    format: str
    records: int
    dim: int
    model: str


def export(catalog: Catalog, model: str, out: Path, fmt: str, batch: int = BATCH) -> ExportReport:
    """Write every indexed record of `model` to `out` as `fmt` (parquet or npz)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    if out.is_dir():
        raise ExportError(f"{out} is a folder: name the file to write")
    if not out.parent.is_dir():
        raise ExportError(f"folder {out.parent} does not exist")
    writer = _write_parquet if fmt == "parquet" else _write_npz
    with _snapshot(catalog), tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        partial = Path(tmp) / out.name
        records, dim = writer(catalog, model, partial, batch)
        os.replace(partial, out)
    return ExportReport(str(out.absolute()), fmt, records, dim, model)


@contextmanager
def _snapshot(catalog: Catalog) -> Iterator[None]:
    """One read transaction: WAL readers see one consistent state while the indexer writes."""
    catalog.db.execute("BEGIN")
    try:
        yield
    finally:
        catalog.db.execute("ROLLBACK")


def _batches(
    catalog: Catalog, model: str, size: int
) -> Iterator[tuple[dict[str, list], np.ndarray]]:
    """Columns (python values, None when missing) and vectors, one batch at a time."""
    tags = TagTable(catalog)
    for rows, vectors in catalog.indexed_batches(model, size):
        found = tags.for_hashes(model, [row.content_hash for row in rows])
        columns: dict[str, list] = {name: [] for name in COLUMNS}
        for row in rows:
            for name, value in _values(row, tag_metadata(found.get(row.content_hash, []))):
                columns[name].append(value)
        yield columns, vectors


def _values(row: FileRow, tags: dict[str, str | bool]) -> Iterator[tuple[str, object]]:
    for name in COLUMNS:
        if name in tags:
            yield name, tags[name]
        else:
            yield name, getattr(row, "content_hash" if name == "hash" else name)


def _dim(catalog: Catalog, model: str) -> int:
    found = catalog.db.execute(
        "SELECT length(vector) / 4 FROM embeddings WHERE model = ? LIMIT 1", (model,)
    ).fetchone()
    return int(found[0]) if found else 0


def _write_parquet(catalog: Catalog, model: str, path: Path, batch: int) -> tuple[int, int]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError(
            "Parquet export needs pyarrow: pip install 'pixseek[parquet]' (or use --format npz)"
        ) from None
    dim = _dim(catalog, model)
    types = {"U": pa.string(), "int64": pa.int64(), "int32": pa.int32()}
    types |= {"float64": pa.float64(), "bool": pa.bool_()}
    fields = [pa.field(name, types[kind]) for name, kind in COLUMNS.items()]
    fields.append(pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False))
    schema = pa.schema(fields, metadata={"pixseek.model": model, "pixseek.dim": str(dim)})
    records = 0
    with pq.ParquetWriter(path, schema) as writer:
        for columns, vectors in _batches(catalog, model, batch):
            flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
            arrays = [pa.array(columns[name], type=types[kind]) for name, kind in COLUMNS.items()]
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, dim))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            records += len(vectors)
    return records, dim


def _write_npz(catalog: Catalog, model: str, path: Path, batch: int) -> tuple[int, int]:
    """Two passes: the first finds the row count and text widths the .npy headers need."""
    records, widths = 0, {name: 1 for name, kind in COLUMNS.items() if kind == "U"}
    for columns, vectors in _batches(catalog, model, batch):
        records += len(vectors)
        for name in widths:
            widths[name] = max(widths[name], *(len(value or "") for value in columns[name]))
    dim = _dim(catalog, model)
    dtypes = {
        name: np.dtype(f"<U{widths[name]}" if kind == "U" else kind)
        for name, kind in COLUMNS.items()
    }
    dtypes["embeddings"] = np.dtype("<f4")
    shapes = {name: (records,) for name in COLUMNS} | {"embeddings": (records, dim)}
    folder = path.parent
    handles = {name: open(folder / f"{name}.npy", "wb") for name in dtypes}  # noqa: SIM115
    try:
        for name, handle in handles.items():
            header = {"descr": np.lib.format.dtype_to_descr(dtypes[name])}
            header |= {"fortran_order": False, "shape": shapes[name]}
            np.lib.format.write_array_header_2_0(handle, header)
        for columns, vectors in _batches(catalog, model, batch):
            for name, kind in COLUMNS.items():
                values = [_MISSING[kind] if value is None else value for value in columns[name]]
                handles[name].write(np.asarray(values, dtypes[name]).tobytes())
            handles["embeddings"].write(np.ascontiguousarray(vectors, "<f4").tobytes())
    finally:
        for handle in handles.values():
            handle.close()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in dtypes:
            archive.write(folder / f"{name}.npy", f"{name}.npy")
        with archive.open("model.npy", "w") as handle:
            np.lib.format.write_array(handle, np.array(model))
    return records, dim
