"""A library: the catalog, the store and the model of one configuration, opened together.

The model is loaded lazily: a re-index that finds nothing new, `status`, and similar-by-id never
pay for loading it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence

from pixseek.catalog import Catalog, FileRow
from pixseek.config import Settings
from pixseek.embedder import Embedder, collection_name, model_key, resolve_devices
from pixseek.imaging import Limits
from pixseek.lock import StoreOwnedError, WriterLock
from pixseek.store import Store
from pixseek.tags import TagTable, tag_metadata


class Library:
    """Everything a command needs, for one `Settings`."""

    def __init__(
        self,
        settings: Settings,
        writer: bool = False,
        take_over: bool = False,
        serving: bool = False,
    ) -> None:
        """Open the library; a `writer` takes the data directory's lock and claims the
        collection for this catalog (`take_over` claims it from another catalog). A `serving`
        library's model is made ready for a stream of text queries (see `Embedder`)."""
        self.settings = settings
        self.serving = serving
        self._model_lock = threading.RLock()  # the indexer's loader thread and queries may race
        self._embedder: Embedder | None = None
        self._embedders: list[Embedder] | None = None
        self.lock = WriterLock(settings.data_path) if writer else None
        self.model_key = model_key(settings.model.name)
        self.catalog = Catalog(settings.catalog_path)
        self.store = Store(
            settings.store, settings.chroma_path, collection_name(settings.model.name)
        )
        self.owner = f"{socket.gethostname()}:{self.catalog.path}"
        if writer:
            try:
                self.store.claim(self.owner, take_over)
            except StoreOwnedError:
                self.close()
                raise

    def confirm_claim(self) -> None:
        """Raise StoreOwnedError if another catalog has taken the collection over since this
        one claimed it (a writer checks before each run, so it never repairs away that
        catalog's records)."""
        if self.lock is not None:
            self.store.claim(self.owner)

    @property
    def embedder(self) -> Embedder:
        """The CLIP model, loaded on first use (once, whichever thread asks first)."""
        with self._model_lock:
            if self._embedder is None:
                self._embedder = Embedder(self.settings.model, text_graph=self.serving)
            return self._embedder

    @property
    def embedders(self) -> list[Embedder]:
        """One model per indexing device (every visible GPU for `cuda`); the first also queries."""
        with self._model_lock:
            if self._embedders is None:
                devices = resolve_devices(self.settings.model.device)
                others = [Embedder(self.settings.model, device) for device in devices[1:]]
                self._embedders = [self.embedder, *others]
            return self._embedders

    @property
    def limits(self) -> Limits:
        """Decode caps from the indexer settings."""
        return Limits.of(self.settings.indexer)

    def publish(self, rows: Sequence[FileRow]) -> None:
        """Write rows to Chroma with cached embeddings and tags (the catalog is the source), in
        the client's largest batches.

        `store.metadata: lean` gives each record its path and tags only: pixseek itself reads
        every other fact from the catalog, and Chroma writes fewer fields faster.
        """
        lean = self.settings.store.metadata == "lean"
        step = self.store.batch_size
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            hashes = [row.content_hash for row in chunk]
            vectors = self.catalog.vectors(self.model_key, hashes)
            tags = TagTable(self.catalog).for_hashes(self.model_key, hashes)
            metadatas = []
            for row in chunk:
                extra = tag_metadata(tags.get(row.content_hash, []))
                metadatas.append(
                    {"path": row.path, **extra} if lean else row.metadata(self.model_key, extra)
                )
            self.store.upsert([row.id for row in chunk], vectors, metadatas)

    def close(self) -> None:
        """Release the catalog connection and the writer lock."""
        self.catalog.close()
        if self.lock:
            self.lock.release()
