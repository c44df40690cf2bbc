"""The catalog: a SQLite file that is the source of truth for file state and caches embeddings.

Chroma is derived from it. Every indexing batch is committed here (rows and vectors in one
transaction) before it is written to Chroma, so a crash at any moment loses no embedding work and
Chroma can be repaired or rebuilt from the cache without running the model.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path

import numpy as np

INDEXED, FAILED = "indexed", "failed"

_MIGRATIONS = (
    """
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        root TEXT NOT NULL,
        rel_path TEXT NOT NULL,
        path TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        content_hash TEXT,
        status TEXT NOT NULL,
        reason TEXT,
        retryable INTEGER NOT NULL DEFAULT 0,
        width INTEGER,
        height INTEGER,
        format TEXT,
        taken_at REAL,
        camera TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX files_root ON files(root);
    CREATE INDEX files_hash ON files(content_hash);
    CREATE TABLE embeddings (
        model TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        vector BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (model, content_hash)
    );
    """,
    """
    CREATE TABLE tags (
        model TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        label_set TEXT NOT NULL,
        label TEXT NOT NULL,
        score REAL NOT NULL,
        flag INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (model, content_hash, label_set, label)
    );
    CREATE INDEX tags_flag ON tags(model, flag, content_hash);
    """,
    """
    CREATE TABLE tag_state (model TEXT PRIMARY KEY, fingerprint TEXT NOT NULL);
    """,
    """
    CREATE TABLE phashes (
        content_hash TEXT PRIMARY KEY,
        phash INTEGER NOT NULL
    );
    CREATE TABLE dedup_decisions (
        id INTEGER PRIMARY KEY,
        tier TEXT NOT NULL,
        decision TEXT NOT NULL,
        hashes TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (tier, hashes)
    );
    """,
    """
    CREATE INDEX files_rel_path ON files(rel_path);
    CREATE INDEX files_when ON files(COALESCE(taken_at, mtime_ns / 1e9));
    CREATE INDEX files_format ON files(format);
    CREATE INDEX files_width ON files(width);
    CREATE INDEX files_height ON files(height);
    """,
    # counting indexed files (status) probes this index alone, not the rows: 5x faster at 100k
    """
    CREATE INDEX files_hash_status ON files(content_hash, status);
    DROP INDEX files_hash;
    """,
)


def record_id(root: str, rel_path: str) -> str:
    """Stable record id from (library root, path relative to it)."""
    return hashlib.sha256(f"{root}\0{rel_path}".encode()).hexdigest()[:24]


def content_hash(path: Path | str) -> str:
    """BLAKE2b of the file's bytes: the embedding cache key and the move detector."""
    digest = hashlib.blake2b()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:40]


def content_hash_of(data: bytes) -> str:
    """`content_hash` of bytes already read."""
    return hashlib.blake2b(data).hexdigest()[:40]


@dataclass
class FileRow:
    """One file as the catalog knows it."""

    id: str
    root: str
    rel_path: str
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    reason: str | None = None
    retryable: bool = False
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: float | None = None
    camera: str | None = None

    def with_hash(self, content_hash: str) -> FileRow:
        """This row with its content hash (per file on the batched path, where
        `dataclasses.replace` costs several times more)."""
        return FileRow(
            self.id, self.root, self.rel_path, self.path, self.size, self.mtime_ns, content_hash,
            self.status, self.reason, self.retryable, self.width, self.height, self.format,
            self.taken_at, self.camera,
        )  # fmt: skip

    def indexed(
        self,
        width: int | None,
        height: int | None,
        format: str | None,
        taken_at: float | None,
        camera: str | None,
    ) -> FileRow:
        """This row as indexed, with the facts its image gave (per embedded file)."""
        return FileRow(
            self.id, self.root, self.rel_path, self.path, self.size, self.mtime_ns,
            self.content_hash, INDEXED, None, False, width, height, format, taken_at, camera,
        )  # fmt: skip

    def metadata(
        self, model: str, extra: Mapping[str, str | bool] | None = None
    ) -> dict[str, str | int | float | bool]:
        """Chroma metadata for this record (Chroma refuses None, so absent facts are left out).

        `extra` adds derived fields, such as the record's tags.
        """
        values = {
            "path": self.path,
            "root": self.root,
            "dir": str(Path(self.rel_path).parent.as_posix()),
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "hash": self.content_hash,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "taken_at": self.taken_at,
            "camera": self.camera,
            "model": model,
            **(extra or {}),
        }
        return {key: value for key, value in values.items() if value is not None}


_COLUMNS = [field.name for field in fields(FileRow)]
# 2 KB vectors fit 7 to a page instead of 1: new catalogs are 40% smaller and commit a batch in
# about half the time (2-core machine); an existing catalog keeps the page size it was made with
PAGE_SIZE = 16384
MAX_PARAMETERS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999  # SQLite's limit
_values = attrgetter(*_COLUMNS)  # a row's column values (dataclasses.astuple is 25 times slower)
_INDEXED = (  # rows whose embedding for a model (first parameter) is cached
    "FROM files f JOIN embeddings e ON e.content_hash = f.content_hash AND e.model = ? "
    "WHERE f.status = ?"
)


class Catalog:
    """SQLite in WAL mode, one connection per thread (the watcher writes while the web reads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._migrate()

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # for a new file only
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def release_thread(self) -> None:
        """Close this thread's connection, if it has one. A thread that ends while the catalog
        stays open (one run's threads, in a watcher or server) calls it; else its connection
        stays open until `close`."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            return
        del self._local.connection
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
        connection.close()

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self.db:
                self.db.executescript(script)
                self.db.execute(f"PRAGMA user_version = {number}")

    # reads

    def rows_under(self, root: str, within: Sequence[str] | None = None) -> dict[str, FileRow]:
        """Rows of a library root keyed by relative path: all, or those at or under `within`."""
        if within is None or "" in within:
            cursor = self.db.execute(
                f"SELECT {','.join(_COLUMNS)} FROM files WHERE root = ?", (root,)
            )
            return {row.rel_path: row for row in map(_row, cursor)}
        rows: dict[str, FileRow] = {}
        for rel in within:  # by the unique index on path: itself, or in ["path/", "path0")
            path = f"{root.rstrip('/')}/{rel}"
            cursor = self.db.execute(
                f"SELECT {','.join(_COLUMNS)} FROM files "
                "WHERE path = ? OR (path >= ? AND path < ?)",
                (path, path + "/", path + "0"),
            )
            rows.update((row.rel_path, row) for row in map(_row, cursor) if row.root == root)
        return rows

    def count_under(self, root: str, status: str) -> int:
        """How many rows of a library root have this status."""
        query = "SELECT COUNT(*) FROM files WHERE root = ? AND status = ?"
        return self.db.execute(query, (root, status)).fetchone()[0]

    def get(self, record: str) -> FileRow | None:
        """The row with this record id."""
        return self._one("id = ?", record)

    def by_path(self, path: str) -> FileRow | None:
        """The row for an absolute path."""
        return self._one("path = ?", path)

    def rows(self, ids: Sequence[str]) -> dict[str, FileRow]:
        """The rows with these record ids, keyed by id (unknown ids are left out)."""
        found: dict[str, FileRow] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            cursor = self.db.execute(
                f"SELECT {','.join(_COLUMNS)} FROM files WHERE id IN ({marks})", chunk
            )
            found.update((row.id, row) for row in map(_row, cursor))
        return found

    def _one(self, where: str, value: str) -> FileRow | None:
        cursor = self.db.execute(f"SELECT {','.join(_COLUMNS)} FROM files WHERE {where}", (value,))
        found = cursor.fetchone()
        return _row(found) if found else None

    def indexed(self, model: str) -> Iterator[FileRow]:
        """Indexed rows whose embedding for `model` is cached: exactly what Chroma should hold."""
        cursor = self.db.execute(
            f"SELECT {','.join('f.' + c for c in _COLUMNS)} {_INDEXED}", (model, INDEXED)
        )
        yield from map(_row, cursor)

    def cached_hashes(self, model: str, hashes: Iterable[str]) -> set[str]:
        """The subset of `hashes` whose embedding for `model` is cached."""
        sql = "SELECT content_hash FROM embeddings WHERE model = ? AND content_hash IN ({})"
        return {value for (value,) in self.execute_in(sql, (model,), hashes)}

    def vectors(self, model: str, hashes: Sequence[str]) -> np.ndarray:
        """Cached embeddings for `hashes`, in order (all must be cached)."""
        sql = "SELECT content_hash, vector FROM embeddings WHERE model = ? AND content_hash IN ({})"
        table = {
            key: np.frombuffer(blob, dtype=np.float32)
            for key, blob in self.execute_in(sql, (model,), hashes)
        }
        return np.stack([table[key] for key in hashes]) if hashes else np.zeros((0, 0), np.float32)

    def indexed_batches(self, model: str, size: int) -> Iterator[tuple[list[FileRow], np.ndarray]]:
        """`indexed(model)` in id order with the vectors, `size` rows at a time."""
        columns = ",".join("f." + c for c in _COLUMNS)
        last = ""
        while True:
            found = self.db.execute(
                # CROSS JOIN keeps files (walked by id) the outer loop: no sort of the whole join
                f"SELECT {columns}, e.vector FROM files f CROSS JOIN embeddings e "
                "ON e.content_hash = f.content_hash AND e.model = ? "
                "WHERE f.status = ? AND f.id > ? ORDER BY f.id LIMIT ?",
                (model, INDEXED, last, size),
            ).fetchall()
            if not found:
                return
            last = found[-1][0]
            vectors = np.stack([np.frombuffer(values[-1], dtype=np.float32) for values in found])
            yield [_row(values[:-1]) for values in found], vectors

    def embedding_batches(self, model: str, size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """Every cached embedding of `model` as (hashes, vectors), `size` at a time."""
        last = ""
        while True:
            found = self.db.execute(
                "SELECT content_hash, vector FROM embeddings WHERE model = ? "
                "AND content_hash > ? ORDER BY content_hash LIMIT ?",
                (model, last, size),
            ).fetchall()
            if not found:
                return
            last = found[-1][0]
            yield (
                [key for key, _ in found],
                np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in found]),
            )

    def records_with_hashes(self, hashes: Iterable[str]) -> list[tuple[str, str]]:
        """(id, content hash) of the indexed records holding any of these contents."""
        sql = "SELECT id, content_hash FROM files WHERE status = ? AND content_hash IN ({})"
        return list(self.execute_in(sql, (INDEXED,), hashes))

    def execute_in(self, sql: str, params: tuple, values: Iterable[str]) -> Iterator[tuple]:
        """Run `sql`, whose `IN ({})` takes the distinct `values`, as many per statement as
        SQLite's limit on parameters allows; yields its rows (none for a write, which happens as
        the iterator is consumed)."""
        wanted = list(set(values))
        step = MAX_PARAMETERS - len(params)
        for start in range(0, len(wanted), step):
            chunk = wanted[start : start + step]
            yield from self.db.execute(sql.format(",".join("?" * len(chunk))), (*params, *chunk))

    def phashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """Stored perceptual hashes for those of `hashes` that have one."""
        sql = "SELECT content_hash, phash FROM phashes WHERE content_hash IN ({})"
        return dict(self.execute_in(sql, (), hashes))

    def generation(self) -> tuple[int, float]:
        """Changes whenever a file row is added, replaced or removed (a cheap cache key)."""
        count, latest = self.db.execute("SELECT COUNT(*), MAX(updated_at) FROM files").fetchone()
        return count, latest or 0.0

    def roots(self) -> list[str]:
        """Every library root the catalog has files under."""
        return [root for (root,) in self.db.execute("SELECT DISTINCT root FROM files")]

    def counts(self, model: str) -> dict[str, int]:
        """Files indexed (for this model), failed, and embeddings cached."""
        failed = self.db.execute("SELECT COUNT(*) FROM files WHERE status = ?", (FAILED,))
        cached = self.db.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,))
        indexed = self.db.execute(f"SELECT COUNT(*) {_INDEXED}", (model, INDEXED))
        return {
            "indexed": indexed.fetchone()[0],
            "failed": failed.fetchone()[0],
            "cached_embeddings": cached.fetchone()[0],
        }

    def failures(self) -> list[FileRow]:
        """Files that could not be indexed, with their reasons."""
        cursor = self.db.execute(  # "+path": sort the few failed rows, not walk the path index
            f"SELECT {','.join(_COLUMNS)} FROM files WHERE status = ? ORDER BY +path", (FAILED,)
        )
        return list(map(_row, cursor))

    # writes

    def save(
        self,
        rows: Sequence[FileRow],
        model: str | None = None,
        embeddings: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Insert or replace rows, and cache new embeddings (keyed by content hash) with them."""
        now = time.time()
        with self.db:
            if embeddings:
                insert_many(
                    self.db,
                    "INSERT OR REPLACE INTO embeddings VALUES",
                    [
                        (model, key, np.asarray(vector, np.float32).tobytes(), now)
                        for key, vector in embeddings.items()
                    ],
                )
            self._put(rows, now)

    def save_phashes(self, phashes: Mapping[str, int]) -> None:
        """Remember perceptual hashes by content hash (moves and touches keep them)."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO phashes VALUES (?, ?)", phashes.items())

    def move(self, old_id: str, row: FileRow) -> None:
        """Re-key a record: the old row goes, the new one keeps its hash and cached embedding."""
        with self.db:
            self.db.execute("DELETE FROM files WHERE id = ?", (old_id,))
            self._put([row], time.time())

    def delete(self, ids: Sequence[str]) -> None:
        """Forget files (their cached embeddings stay: the same content may come back)."""
        with self.db:
            self.db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in ids])

    def _put(self, rows: Sequence[FileRow], now: float) -> None:
        insert_many(
            self.db,
            f"INSERT OR REPLACE INTO files ({','.join(_COLUMNS)}, updated_at) VALUES",
            [(*_values(row), now) for row in rows],
        )


def insert_many(db: sqlite3.Connection, insert: str, rows: Sequence[tuple]) -> None:
    """`insert` ("INSERT ... VALUES") for every row, many rows per statement.

    `executemany` steps once per row, and each step releases and re-takes the interpreter lock,
    which waits whenever other threads keep it busy (reading and decoding files): with three
    such threads, saving embedded rows took 66 µs a row, against 40 µs this way. A statement
    takes as many rows as SQLite's limit on parameters allows (a batch of 256 rows is one).
    """
    if not rows:
        return
    width = len(rows[0])
    per_statement = max(1, MAX_PARAMETERS // width)
    marks = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = [value for row in chunk for value in row]
        db.execute(f"{insert} {','.join([marks] * len(chunk))}", values)


def _row(values: tuple) -> FileRow:
    row = FileRow(*values)
    row.retryable = bool(row.retryable)
    return row
