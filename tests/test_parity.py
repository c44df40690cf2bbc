"""pixseek's embeddings equal the reference transformers pipeline (CLIPProcessor + CLIPModel)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps
from transformers import AutoModel, AutoProcessor

from pixseek.config import ModelSettings
from pixseek.embedder import Embedder
from pixseek.imaging import Limits, prepare_image
from pixseek.text_graph import full_length_ids, pad_id_of

LIMITS = Limits(max_bytes=50_000_000, max_pixels=50_000_000)


def photo_like(width: int = 480, height: int = 360) -> Image.Image:
    """Smooth gradients, shapes and mild noise: enough structure for embeddings to differ."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(3)
    red = 128 + 100 * np.sin(x / 37.0)
    green = 255 * y / height
    blue = 128 + 90 * np.cos((x + y) / 53.0)
    pixels = np.stack([red, green, blue], axis=-1) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.1, height * 0.2, width * 0.45, height * 0.7), fill=(240, 40, 40))
    draw.rectangle((width * 0.6, height * 0.1, width * 0.9, height * 0.5), fill=(20, 20, 160))
    return image


def _alpha(base: Image.Image, folder: Path) -> tuple[Path, Image.Image]:
    rgba = base.convert("RGBA")
    alpha = Image.new("L", base.size, 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, base.width // 2, base.height), fill=0)
    rgba.putalpha(alpha)
    path = folder / "alpha.png"
    rgba.save(path)
    white = Image.new("RGBA", base.size, (255, 255, 255, 255))
    return path, Image.alpha_composite(white, rgba).convert("RGB")


def _sixteen_bit(base: Image.Image, folder: Path) -> tuple[Path, Image.Image]:
    grey = base.convert("L")
    wide = np.asarray(grey).astype(np.uint16) * 257
    path = folder / "grey16.png"
    Image.fromarray(wide).save(path)
    return path, grey.convert("RGB")


def _rotated(base: Image.Image, folder: Path) -> tuple[Path, Image.Image]:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = folder / "rotated.jpg"
    base.save(path, quality=95, exif=exif)
    return path, ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def _saved(name: str, convert: Callable[[Image.Image], Image.Image], **options):
    def make(base: Image.Image, folder: Path) -> tuple[Path, Image.Image]:
        path = folder / name
        convert(base).save(path, **options)
        return path, Image.open(path).convert("RGB")

    return make


CASES = {
    "jpeg": _saved("plain.jpg", lambda im: im, quality=92),
    "progressive jpeg": _saved("progressive.jpg", lambda im: im, quality=92, progressive=True),
    "png with alpha": _alpha,
    "palette gif": _saved("palette.gif", lambda im: im.convert("P", palette=Image.ADAPTIVE)),
    "cmyk jpeg": _saved("cmyk.jpg", lambda im: im.convert("CMYK"), quality=95),
    "16-bit png": _sixteen_bit,
    "grayscale jpeg": _saved("grey.jpg", lambda im: im.convert("L"), quality=95),
    "webp": _saved("image.webp", lambda im: im, quality=90),
    "heic": _saved("image.heic", lambda im: im, format="HEIF", quality=90),
    "avif": _saved("image.avif", lambda im: im, quality=90),
    "tiff": _saved("image.tiff", lambda im: im),
    "bmp": _saved("image.bmp", lambda im: im),
    "exif-rotated jpeg": _rotated,
}


@pytest.fixture(scope="module")
def reference(random_clip: Path):
    processor = AutoProcessor.from_pretrained(random_clip)
    model = AutoModel.from_pretrained(random_clip).eval()

    def embed_images(images: list[Image.Image]) -> np.ndarray:
        with torch.no_grad():
            inputs = processor(images=images, return_tensors="pt")
            return _unit(model.get_image_features(**inputs))

    def embed_texts(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            inputs = processor(text=texts, padding=True, return_tensors="pt")
            return _unit(model.get_text_features(**inputs))

    return embed_images, embed_texts


def _unit(output) -> np.ndarray:
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(features, dim=-1).numpy()


@pytest.fixture(scope="module")
def embedder(random_clip: Path) -> Embedder:
    return Embedder(ModelSettings(name=str(random_clip), device="cpu", dtype="fp32"))


@pytest.mark.parametrize("case", list(CASES))
def test_image_embedding_matches_reference(case, tmp_path, reference, embedder):
    path, expected_image = CASES[case](photo_like(), tmp_path)
    prepared = prepare_image(path, LIMITS, embedder.spec)
    ours = embedder.encode_pixels([prepared.pixels])[0]
    theirs = reference[0]([expected_image])[0]
    assert ours.dtype == np.float32
    assert abs(np.linalg.norm(ours) - 1) < 1e-5
    assert float(ours @ theirs) >= 0.999, case


def test_exif_rotation_is_applied_before_embedding(tmp_path, embedder):
    base = photo_like()
    rotated_path, _ = _rotated(base, tmp_path)
    plain = tmp_path / "plain.jpg"
    base.save(plain, quality=95)
    upright = embedder.encode_pixels([prepare_image(rotated_path, LIMITS, embedder.spec).pixels])
    unrotated = embedder.encode_pixels([prepare_image(plain, LIMITS, embedder.spec).pixels])
    assert prepare_image(rotated_path, LIMITS, embedder.spec).width == base.height
    assert float(upright[0] @ unrotated[0]) < 0.999


def test_text_embedding_matches_reference(reference, embedder):
    texts = ["a red circle", "a blue square", "a yellow triangle on green"]
    ours = embedder.encode_texts(texts)
    theirs = reference[1](texts)
    assert ours.shape == theirs.shape
    assert np.min(np.sum(ours * theirs, axis=1)) >= 0.999


def test_bf16_on_cpu_stays_close_to_fp32(random_clip, embedder, tmp_path):
    fast = Embedder(ModelSettings(name=str(random_clip), device="cpu", dtype="bf16"))
    path, _ = CASES["jpeg"](photo_like(), tmp_path)
    pixels = prepare_image(path, LIMITS, embedder.spec).pixels
    assert float(fast.encode_pixels([pixels])[0] @ embedder.encode_pixels([pixels])[0]) >= 0.999


QUERIES = ["a red circle", "blue", "a yellow triangle on green " * 12]  # the last one is cut


def test_full_length_ids_embed_like_the_masked_batch(embedder):
    """On a GPU, one query replays a CUDA graph fed ids padded to the whole context with no
    attention mask; those ids give the masked batch's embeddings (CLIP's text tower is causal
    and pools at the end-of-text token)."""
    tokenizer, model = embedder.processor.tokenizer, embedder.model
    length = model.config.text_config.max_position_embeddings
    batched = embedder.encode_texts(QUERIES)
    for text, expected in zip(QUERIES, batched, strict=True):
        ids = tokenizer(text, truncation=True, max_length=length)["input_ids"]
        with torch.inference_mode():
            output = model.get_text_features(
                input_ids=full_length_ids(ids, length, pad_id_of(tokenizer))
            )
        assert float(_unit(output)[0] @ expected) >= 0.99999, text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_text_queries_through_the_cuda_graph_match_the_batch(random_clip):
    model = Embedder(ModelSettings(name=str(random_clip), device="cuda"), text_graph=True)
    assert model.text_graph_ready
    batched = model.encode_texts(QUERIES)
    alone = np.concatenate([model.encode_texts([text]) for text in QUERIES])
    assert np.min(np.sum(alone * batched, axis=1)) >= 0.999
