"""The vector store: one Chroma collection per model, cosine space, embeddings always explicit."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import httpx
import numpy as np
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError

from pixseek.config import HnswSettings, StoreSettings
from pixseek.lock import StoreOwnedError

OWNER_KEY = "pixseek_catalog"
"""Collection metadata naming the catalog (`host:path`) that writes the collection."""
Metadata = dict[str, str | int | float | bool]


class StoreUnavailableError(RuntimeError):
    """Chroma cannot be opened: a server (`store.mode: http`) that cannot be reached or stopped
    answering, or an embedded store that is damaged."""


class _Reached:
    """A Chroma client or collection whose calls raise StoreUnavailableError when its server
    is lost."""

    def __init__(self, wrapped: Any, location: str) -> None:
        self._wrapped, self._location = wrapped, location

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._wrapped, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except httpx.TransportError as error:
                raise StoreUnavailableError(
                    f"lost the Chroma server at {self._location}: {error}"
                ) from None

        return call


def _client(settings: StoreSettings, chroma_path: Path) -> tuple[Any, str]:
    """A Chroma client for `settings.mode` (a server's is `_Reached`), and where it keeps its
    data."""
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.mode == "http":
        location = f"{'https' if settings.ssl else 'http'}://{settings.host}:{settings.port}"
        try:
            client = chromadb.HttpClient(
                host=settings.host,
                port=settings.port,
                ssl=settings.ssl,
                headers=settings.headers or None,
                settings=chroma_settings,
            )
        except (ValueError, httpx.TransportError) as error:  # chromadb: "Could not connect"
            raise StoreUnavailableError(
                f"cannot reach the Chroma server at {location} (store.host, store.port): "
                f"{error} Start it with `chroma run --path DIR --host H --port P`."
            ) from None
        return _Reached(client, location), location
    chroma_path.mkdir(parents=True, exist_ok=True)
    try:
        client = chromadb.PersistentClient(path=str(chroma_path), settings=chroma_settings)
    except ChromaError as error:
        raise StoreUnavailableError(
            f"cannot open the Chroma store at {chroma_path}: {error}. It holds nothing the "
            "catalog lacks: move it aside, and `pixseek repair` rebuilds it from the catalog"
        ) from None
    return client, str(chroma_path)


@dataclass
class Hit:
    """One query result: record id, cosine similarity (1 = same direction) and metadata."""

    id: str
    score: float
    metadata: Metadata


class Store:
    """A Chroma collection; writes are chunked to the client's maximum batch size."""

    def __init__(self, settings: StoreSettings, chroma_path: Path, collection: str) -> None:
        self.mode = settings.mode
        self.client, self.location = _client(settings, chroma_path)
        try:
            self.collection = self._open(collection, settings.hnsw)
        except ChromaError as error:
            message = f"cannot open the Chroma store at {self.location}: {error}"
            raise StoreUnavailableError(message) from None
        if self.mode == "http":
            self.collection = _Reached(self.collection, self.location)
        self.batch_size = self.client.get_max_batch_size()

    def _open(self, collection: str, hnsw: HnswSettings) -> Any:
        return self.client.get_or_create_collection(
            collection,
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "max_neighbors": hnsw.m,
                    "ef_construction": hnsw.construction_ef,
                    "ef_search": hnsw.search_ef,
                    "batch_size": hnsw.batch_size,
                    "sync_threshold": hnsw.sync_threshold,
                    **({"num_threads": hnsw.num_threads} if hnsw.num_threads else {}),
                }
            },
            embedding_function=None,
        )

    @property
    def name(self) -> str:
        """The collection name."""
        return self.collection.name

    def claim(self, owner: str, take_over: bool = False) -> None:
        """Mark the collection as written from the catalog `owner`, or refuse if another is.

        Every catalog repairs the collection to hold exactly its own records, so two catalogs
        writing one collection would delete each other's. `take_over` moves the claim here.
        """
        fresh = self.client.get_collection(self.name, embedding_function=None)  # not a cached copy
        current = (fresh.metadata or {}).get(OWNER_KEY)
        if current == owner:
            return
        if current is not None and not take_over:
            raise StoreOwnedError(
                f"collection {self.name} at {self.location} is written from another catalog "
                f"({current}); each collection has one indexer. Serve it from more processes "
                "with `pixseek serve --no-index` next to that catalog, give this indexer its "
                "own Chroma server or model, or, if that catalog is gone for good, take the "
                "collection over with `pixseek repair --take-over`"
            )
        self.collection.modify(metadata={OWNER_KEY: owner})

    def count(self) -> int:
        """Number of records."""
        return self.collection.count()

    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, metadatas: Sequence[Metadata]
    ) -> None:
        """Insert or replace records."""
        for start in range(0, len(ids), self.batch_size):
            stop = start + self.batch_size
            self.collection.upsert(
                ids=list(ids[start:stop]),
                embeddings=np.asarray(vectors[start:stop], dtype=np.float32),
                metadatas=list(metadatas[start:stop]),
            )

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        """Merge fields into the metadata of existing records (vectors are left alone)."""
        for start in range(0, len(ids), self.batch_size):
            stop = start + self.batch_size
            self.collection.update(ids=list(ids[start:stop]), metadatas=list(metadatas[start:stop]))

    def delete(self, ids: Sequence[str]) -> None:
        """Remove records (ids that are not there are ignored)."""
        for start in range(0, len(ids), self.batch_size):
            self.collection.delete(ids=list(ids[start : start + self.batch_size]))

    def ids(self) -> Iterator[str]:
        """Every record id, read in pages."""
        offset = 0
        while True:
            page = self.collection.get(include=[], limit=self.batch_size, offset=offset)["ids"]
            yield from page
            if len(page) < self.batch_size:
                return
            offset += len(page)

    def metadata(self, record: str) -> Metadata | None:
        """The metadata of one record, or None when absent."""
        found = self.collection.get(ids=[record], include=["metadatas"])
        return found["metadatas"][0] if found["ids"] else None

    def query(
        self,
        vector: np.ndarray,
        k: int,
        where: dict[str, Any] | None = None,
        with_metadata: bool = True,
    ) -> list[Hit]:
        """The k nearest records to a unit vector, best first."""
        if k <= 0:
            return []
        result = self.collection.query(
            query_embeddings=np.asarray(vector, dtype=np.float32).reshape(1, -1),
            n_results=k,
            where=where,
            include=["distances", "metadatas"] if with_metadata else ["distances"],
        )
        metadatas = result["metadatas"][0] if with_metadata else [None] * len(result["ids"][0])
        return [
            Hit(id=record, score=1.0 - float(distance), metadata=metadata or {})
            for record, distance, metadata in zip(
                result["ids"][0], result["distances"][0], metadatas, strict=True
            )
        ]
