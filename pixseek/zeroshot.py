"""Zero-shot scoring shared by `pixseek classify` and the tags made at index time.

A label becomes one text vector by a prompt ensemble: the label is put in every template, each
prompt is embedded, the unit vectors are averaged and the mean is renormalised (as in the CLIP
paper). Images are scored against a list of such label vectors with a softmax over cosine
similarity times the model's learned `logit_scale`, so probabilities compare labels with each
other, not with the world: a label list needs its alternatives.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from pixseek.embedder import Embedder

DEFAULT_LOGIT_SCALE = 100.0  # CLIP's trained value, for models that do not carry one
_CACHE_SIZE = 4096  # label vectors kept per process (labels from requests must not grow it)

_cache: OrderedDict[tuple[str, tuple[str, ...], str], np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()


def logit_scale(embedder: Embedder) -> float:
    """The temperature the model was trained with (exp of its `logit_scale` parameter)."""
    parameter = getattr(embedder.model, "logit_scale", None)
    if parameter is None:
        return DEFAULT_LOGIT_SCALE
    return float(parameter.detach().float().exp().cpu())


def label_vectors(
    embedder: Embedder, templates: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    """Unit text vectors [len(labels), d], one prompt ensemble per label, cached in the process.

    The cache key is (model, templates, label), so changing either never reuses a stale vector.
    """
    templates = tuple(templates)
    keys = [(embedder.key, templates, label) for label in labels]
    with _cache_lock:
        found = {key: _cache[key] for key in keys if key in _cache}
        for key in found:
            _cache.move_to_end(key)
    missing = list(dict.fromkeys(key for key in keys if key not in found))
    if missing:
        prompts = [template.format(label) for _, _, label in missing for template in templates]
        texts = embedder.encode_texts(prompts).reshape(len(missing), len(templates), -1)
        means = texts.mean(axis=1)
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        with _cache_lock:
            for key, vector in zip(missing, means, strict=True):
                found[key] = _cache[key] = vector.astype(np.float32)
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return np.stack([found[key] for key in keys])


def probabilities(images: np.ndarray, labels: np.ndarray, scale: float) -> np.ndarray:
    """Softmax over labels of scale * cosine: [n images, m labels], each row sums to 1.

    Both inputs are unit rows; the maximum is subtracted before `exp` so no scale overflows.
    """
    logits = scale * (np.asarray(images, np.float32) @ np.asarray(labels, np.float32).T)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)
