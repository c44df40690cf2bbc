"""What the lanes embed with, and what every kind of lane shares.

A lane may start before its model has loaded (`LoadingModel`): it then holds resized batches, up
to `HELD_CROP_BYTES`, until the model is ready, and embeds them all at once (`HeldBatches`).
"""

from __future__ import annotations

import queue
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from pixseek.catalog import FileRow
from pixseek.embedder import Embedder
from pixseek.imaging import PreprocessSpec
from pixseek.indexer.reads import Item, Timer

if TYPE_CHECKING:
    from collections.abc import Sequence

HELD_CROP_BYTES = 1 << 31  # resized images held on the device while the model loads (14,000)
LANE_DONE = object()  # a lane's last message on the done queue
Resized = tuple[list[Item], torch.Tensor | None, list[FileRow]]  # items, their crops, failures


class LaneModel(Protocol):
    """What a lane needs of a model: where it runs, its geometry and batch size, and encoding."""

    device: torch.device
    spec: PreprocessSpec
    batch_size: int

    def encode_uint8(self, batch: torch.Tensor) -> np.ndarray: ...


class LoadingModel:
    """A model still loading on another thread: its device, geometry and batch size are known
    already (from the settings and the image processor's config), so lanes can read, decode and
    resize meanwhile; `encode_uint8` waits for the model."""

    def __init__(
        self,
        device: torch.device,
        spec: PreprocessSpec,
        batch_size: int,
        models: Future[list[Embedder]],
        position: int,
    ) -> None:
        self.device, self.spec, self.batch_size = device, spec, batch_size
        self._models, self._position = models, position

    @property
    def loaded(self) -> bool:
        """Whether the model is ready (or failed to load: `encode_uint8` then raises why)."""
        return self._models.done()

    def wait(self) -> None:
        """Block until the model is loaded; raise what stopped it from loading."""
        self._models.result()

    def encode_uint8(self, batch: torch.Tensor) -> np.ndarray:
        """Embed with the loaded model, waiting for it first."""
        return self._models.result()[self._position].encode_uint8(batch)


def still_loading(model: LaneModel) -> LoadingModel | None:
    """The stand-in whose model has not loaded yet; None once it has (or for a loaded model)."""
    return model if isinstance(model, LoadingModel) and not model.loaded else None


class HeldBatches:
    """Resized batches a lane holds before it embeds them: while its model still loads (up to
    `HELD_CROP_BYTES`), or until they fill a model batch (each model call has a fixed cost in
    Python)."""

    def __init__(self, model: LaneModel, done: queue.Queue, timed: Timer) -> None:
        self.model, self._done, self._timed = model, done, timed
        self._batches: list[Resized] = []
        self.images = self._bytes = 0

    def add(self, batch: Resized) -> None:
        """Hold one more batch: (items, their crops or None, failed rows)."""
        self._batches.append(batch)
        self.images += len(batch[0])
        self._bytes += batch[1].nbytes if batch[1] is not None else 0

    @property
    def waiting_for_model(self) -> bool:
        """Whether the model still loads and there is room to hold more meanwhile."""
        return self._bytes < HELD_CROP_BYTES and still_loading(self.model) is not None

    def embed(self) -> None:
        """Embed what is held (waiting for the model first, if it still loads), joined into
        batches of up to the model's batch size, and put each on `done` as (items, vectors,
        failed rows)."""
        if loading := still_loading(self.model):
            with self._timed("model_wait"):
                loading.wait()
        for items, crops, failed in _joined(self._batches, self.model.batch_size):
            vectors = None
            if crops is not None:
                with self._timed("model"):
                    vectors = self.model.encode_uint8(crops)
            self._done.put((items, vectors, failed))
        self._batches = []
        self.images = self._bytes = 0


def _joined(held: Sequence[Resized], size: int) -> list[Resized]:
    """Consecutive batches joined while they hold at most `size` crops together (each group's
    crops copied together once)."""
    groups: list[list[Resized]] = []
    in_last = 0  # crops in the last group
    for batch in held:
        if groups and batch[1] is not None and in_last + len(batch[0]) <= size:
            groups[-1].append(batch)
            in_last += len(batch[0])
        else:
            groups.append([batch])
            in_last = len(batch[0])
    return [_together(group) for group in groups]


def _together(group: list[Resized]) -> Resized:
    crops = [crops for _, crops, _ in group if crops is not None]
    return (
        [item for items, _, _ in group for item in items],
        (crops[0] if len(crops) == 1 else torch.cat(crops)) if crops else None,
        [row for _, _, failed in group for row in failed],
    )
