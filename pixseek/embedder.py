"""CLIP embeddings through transformers: any CLIP-family checkpoint, a hub id or a local folder.

Images arrive as uint8 pixels already resized and cropped by `pixseek.imaging.preprocess` (in
decode workers); this module only normalises them, runs the towers and L2-normalises the output.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoProcessor
from transformers.utils import logging as hf_logging

from pixseek.config import ModelSettings
from pixseek.imaging import PreprocessSpec, preprocess
from pixseek.text_graph import capture

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


MODEL_FILE_ERRORS = (OSError, ValueError)  # what transformers raises for missing model files


class ModelLoadError(RuntimeError):
    """The model named in `model.name` could not be loaded."""


def model_key(name: str) -> str:
    """A stable identity for a model: the hub id, or the resolved path of a local folder."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def collection_name(name: str) -> str:
    """Chroma collection for a model: 3-512 chars of [a-zA-Z0-9._-], unique per model key."""
    key = model_key(name)
    slug = re.sub(r"[^a-zA-Z0-9._-]+", "-", key.rstrip("/").split("/")[-1])[-48:].strip("-._")
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"pixseek-{slug or 'model'}-{digest}"


def resolve_devices(device: str) -> list[torch.device]:
    """Devices the indexer embeds on: `auto` and `cuda` mean every visible GPU (else the CPU
    for `auto`), `cuda:N` one GPU, `cpu` the CPU. Queries use the first."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return [torch.device("cpu")]
    if not torch.cuda.is_available():
        raise ModelLoadError(f"model.device is {device!r} but no CUDA device is available")
    visible = torch.cuda.device_count()
    if device in ("auto", "cuda"):
        return [torch.device("cuda", index) for index in range(visible)]
    if torch.device(device).index >= visible:
        raise ModelLoadError(
            f"model.device is {device!r} but only {visible} CUDA device(s) are visible"
        )
    return [torch.device(device)]


def resolve_batch_size(configured: int, device: torch.device) -> int:
    """`0` means 256 images per forward pass on a GPU and 32 on a CPU."""
    return configured or (256 if device.type == "cuda" else 32)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto`: fp16 on CUDA; bf16 on CPUs with native bf16 (about twice as fast); else fp32."""
    if dtype != "auto":
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else torch.float32


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Embedder:
    """A loaded model; every `encode_*` method returns float32 rows of unit length."""

    def __init__(
        self, settings: ModelSettings, device: torch.device | None = None, text_graph: bool = False
    ) -> None:
        """Load the model on `device` (default: the first of `model.device`). With `text_graph`,
        on a GPU, capture a CUDA graph for batch-1 text queries: a few seconds once, worth it in
        a server, not in a command that indexes or asks one query."""
        self.name = settings.name
        self.key = model_key(settings.name)
        self.device = device or resolve_devices(settings.device)[0]
        self.batch_size = resolve_batch_size(settings.batch_size, self.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.calls = 0
        self._lock = threading.Lock()
        hf_logging.disable_progress_bar()
        try:
            self.processor = AutoProcessor.from_pretrained(settings.name)
            model = AutoModel.from_pretrained(settings.name, dtype=self.dtype)
        except MODEL_FILE_ERRORS as error:
            raise ModelLoadError(_load_hint(settings.name, error)) from None
        if not hasattr(model, "get_image_features"):
            raise ModelLoadError(f"{settings.name} is not a CLIP-family model (no image tower)")
        self.model = model.to(self.device).eval()
        self.spec = preprocess_spec(self.processor.image_processor)
        image_processor = self.processor.image_processor
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(image_processor.image_mean, device=self.device).view(shape)
        self._std = torch.tensor(image_processor.image_std, device=self.device).view(shape)
        self._rescale = float(getattr(image_processor, "rescale_factor", 1 / 255))
        self._max_text = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        self._text_graph = None
        if self.device.type == "cuda" and text_graph:
            self._text_graph = capture(
                self.model, self.processor.tokenizer, self._max_text, self.device
            )
        log.info("loaded %s on %s as %s", settings.name, self.device, self.dtype)

    @property
    def text_graph_ready(self) -> bool:
        """True when batch-1 text queries replay a captured CUDA graph."""
        return self._text_graph is not None

    @property
    def dim(self) -> int:
        """Length of an embedding."""
        return int(self.model.config.projection_dim)

    def encode_pixels(self, pixels: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Embed a batch of uint8 [h, w, 3] arrays made by `imaging.preprocess`."""
        batch = np.stack(list(pixels)) if not isinstance(pixels, np.ndarray) else pixels
        host = torch.from_numpy(batch).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            host = host.pin_memory()
        return self.encode_uint8(host.to(self.device, non_blocking=True))

    def encode_uint8(self, batch: torch.Tensor) -> np.ndarray:
        """Embed uint8 [n, 3, h, w] pixels already resized and cropped (on any device)."""
        chunks = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size].to(self.device, non_blocking=True)
            values = (chunk.float() * self._rescale - self._mean) / self._std
            chunks.append(self._run(self.model.get_image_features, pixel_values=values))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB PIL images (query images, tests); same geometry as the indexing path."""
        return self.encode_pixels([preprocess(image, self.spec) for image in images])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; long texts are truncated to the model's context length."""
        if len(texts) == 1 and self._text_graph is not None:
            ids = self.processor.tokenizer(texts[0], truncation=True, max_length=self._max_text)
            with self._lock:
                return _unit_rows(self._text_graph(ids["input_ids"]))
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.processor.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self._max_text,
                return_tensors="pt",
            ).to(self.device)
            chunks.append(self._run(self.model.get_text_features, **tokens))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def _run(self, tower, **inputs: torch.Tensor) -> np.ndarray:
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with self._lock, torch.inference_mode():
            output = tower(**inputs)
            self.calls += 1
        return _unit_rows(output if isinstance(output, torch.Tensor) else output.pooler_output)


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32, copy=False)


@functools.lru_cache(maxsize=8)
def image_geometry(name: str) -> PreprocessSpec:
    """A model's resize/crop geometry from its image processor's config alone (no weights);
    read once per process, so a watcher's runs don't read it again."""
    return preprocess_spec(AutoImageProcessor.from_pretrained(name))


def preprocess_spec(image_processor) -> PreprocessSpec:
    """Read resize/crop geometry from a transformers image processor (CLIP or SigLIP style)."""
    size = dict(image_processor.size or {})
    crop = dict(getattr(image_processor, "crop_size", None) or {})
    do_crop = bool(getattr(image_processor, "do_center_crop", False)) and crop
    resample = getattr(image_processor, "resample", Image.Resampling.BICUBIC)
    return PreprocessSpec(
        shortest_edge=size.get("shortest_edge"),
        resize_to=(size["height"], size["width"]) if "height" in size else None,
        crop=(crop["height"], crop["width"]) if do_crop else None,
        resample=int(getattr(resample, "value", resample) or Image.Resampling.BICUBIC),
    )


def _load_hint(name: str, error: Exception) -> str:
    if Path(name).is_dir():
        return (
            f"cannot load model {name!r}: the directory holds no complete CLIP model and "
            f"processor ({error})\nSave both into it: `model.save_pretrained(DIR)` and "
            "`processor.save_pretrained(DIR)`."
        )
    if name.startswith(("/", ".", "~")):
        tilde = " (`~` is not expanded in config files: write the full path)"
        tilde = tilde if name.startswith("~") else ""
        return f"cannot load model {name!r}: no such directory{tilde}"
    return (
        f"cannot load model {name!r}: {error}\n"
        "If this machine is offline and the model is not in the Hugging Face cache, download it "
        "once where there is network access (e.g. `huggingface-cli download "
        f"{name}`) or save it with `save_pretrained(DIR)`, then set `model.name` to that local "
        "directory (config.yaml, PIXSEEK_MODEL__NAME, or --model DIR)."
    )
