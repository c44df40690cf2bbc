"""GPU parity: the batched GPU path against the reference CLIPProcessor + CLIPModel in fp32 on CPU.

A full-size ViT-B/32 with random weights (fixed seed, built locally) embeds a mixed set — 12 MP
baseline and progressive JPEGs, EXIF-rotated JPEGs, CMYK JPEG, grayscale JPEG, PNG with alpha, a
small 200x150 JPEG — through (1) each GPU JPEG decoder present (nvImageCodec hardware engines,
torchvision nvjpeg) + GPU resize + fp16 model, and (2) `embed_batched` end to end, where files the
GPU decoders can't take fall back to the CPU decode path. Every cosine to the reference must be
>= 0.999; texts too (batch-1 queries through the CUDA graph). Run on a GPU machine:

    HF_HUB_OFFLINE=1 python bench/parity_gpu.py [--workdir bench/out/parity_gpu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from index_cpu import ensure_model, make_image

from pixseek.catalog import FileRow
from pixseek.config import ModelSettings
from pixseek.embedder import Embedder
from pixseek.imaging import Limits, prepare_image, read_jpeg_header
from pixseek.indexer.batched import embed_batched
from pixseek.indexer.jpeg_decoders import NvImageCodecDecoder, NvjpegDecoder
from pixseek.tensor_preprocess import orient, resize_crop

LIMITS = Limits(max_bytes=200_000_000, max_pixels=100_000_000)
THRESHOLD = 0.999
TEXTS = ["a photo of the dog", "a red car", "the sky", "a cat on the beach", "tree"]


def twelve_megapixel(seed: int) -> Image.Image:
    """A photo-like 4000x3000 frame (the 1600x1200 generator, upscaled, with fresh detail)."""
    base = make_image(seed).resize((4000, 3000), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(seed)
    noisy = np.asarray(base, np.float32) + rng.normal(0, 4, (3000, 4000, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_set(folder: Path) -> dict[str, Path]:
    """The mixed set; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    big, photo = twelve_megapixel(1), make_image(2)
    files: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **options) -> None:
        files[name] = folder / name
        image.save(files[name], **options)

    save("12mp-baseline.jpg", big, quality=92)
    save("12mp-progressive.jpg", twelve_megapixel(3), quality=92, progressive=True)
    for orientation in (6, 8, 3):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save(f"rotated-{orientation}.jpg", photo, quality=92, exif=exif)
    save("cmyk.jpg", photo.convert("CMYK"), quality=92)
    save("grey.jpg", photo.convert("L"), quality=92)
    save("small-200x150.jpg", photo.resize((200, 150), Image.Resampling.LANCZOS), quality=92)
    rgba = photo.convert("RGBA")
    alpha = Image.new("L", photo.size, 255)
    ImageDraw.Draw(alpha).ellipse((100, 100, 900, 900), fill=0)
    rgba.putalpha(alpha)
    save("alpha.png", rgba)
    return files


def reference_image(path: Path) -> Image.Image:
    """What a careful user feeds the reference processor: upright RGB, alpha over white."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode == "RGBA":
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, img).convert("RGB")
        return img.convert("RGB")


def reference_vectors(model_dir: Path, files: dict[str, Path]) -> tuple[dict, np.ndarray]:
    """fp32 CPU embeddings from CLIPProcessor + CLIPModel."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = CLIPProcessor.from_pretrained(model_dir)
    images = {}
    with torch.no_grad():
        for name, path in files.items():
            inputs = processor(images=reference_image(path), return_tensors="pt")
            images[name] = _unit(model.get_image_features(**inputs))[0]
        tokens = processor(text=TEXTS, padding=True, return_tensors="pt")
        texts = _unit(model.get_text_features(**tokens))
    return images, texts


def _unit(output) -> np.ndarray:
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(features.float(), dim=-1).numpy()


def decoder_vectors(decoder, embedder: Embedder, files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Embeddings through one GPU decoder for every file it takes."""
    taken = {}
    for name, path in files.items():
        data = path.read_bytes()
        header = read_jpeg_header(data, LIMITS)
        if header is None:
            continue
        pixels = decoder.decode([data])[0]
        if pixels is None:
            continue
        crops = resize_crop([orient(pixels, header.orientation)], embedder.spec)
        taken[name] = embedder.encode_uint8(crops)[0]
    return taken


def pipeline_vectors(embedder: Embedder, files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Embeddings through `embed_batched`, leftovers through the CPU decode path."""
    rows = {
        str(path): FileRow(
            id=name, root=str(path.parent), rel_path=name, path=str(path), size=0,
            mtime_ns=0, content_hash=name, status="pending",
        )
        for name, path in files.items()
    }  # fmt: skip
    out: dict[str, np.ndarray] = {}

    def leftover(row: FileRow) -> None:
        prepared = prepare_image(Path(row.path), LIMITS, embedder.spec)
        out[row.id + " (cpu decode)"] = embedder.encode_pixels([prepared.pixels])[0]

    embed_batched(
        list(rows.values()), [embedder], LIMITS, 8,
        on_embedded=lambda done: out.update({row.id: v for row, _, v in done}),
        on_leftover=leftover,
        on_refused=lambda row, error: print(f"refused {row.path}: {error}"),
    )  # fmt: skip
    return out


def main() -> int:
    """Build inputs, compare every path, print a table; exit 1 if any cosine is under 0.999."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/parity_gpu"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this script compares the GPU path")
        return 2
    model_dir = args.workdir / "model"
    ensure_model(model_dir)
    files = make_set(args.workdir / "images")
    ref_images, ref_texts = reference_vectors(model_dir, files)
    settings = ModelSettings(name=str(model_dir), device="cuda", dtype="fp16")
    embedder = Embedder(settings, text_graph=True)
    print(f"GPU: {torch.cuda.get_device_name()}  model dtype: {embedder.dtype}")
    worst = 1.0
    runs: dict[str, dict[str, np.ndarray]] = {}
    for factory in (NvImageCodecDecoder, NvjpegDecoder):
        try:
            runs[factory.name] = decoder_vectors(factory(embedder.device), embedder, files)
        except (ImportError, RuntimeError) as error:
            print(f"{factory.name}: not available ({error})")
    runs["embed_batched"] = pipeline_vectors(embedder, files)
    print(f"\n{'path':<16} {'file':<34} {'cosine':>9}")
    for run, vectors in runs.items():
        for name, vector in vectors.items():
            cosine = float(vector @ ref_images[name.split(" ")[0]])
            worst = min(worst, cosine)
            print(f"{run:<16} {name:<34} {cosine:9.5f}")
    text_cosines = [
        float(embedder.encode_texts([text])[0] @ ref)
        for text, ref in zip(TEXTS, ref_texts, strict=True)
    ]
    graph = "CUDA graph" if embedder.text_graph_ready else "eager"
    for text, cosine in zip(TEXTS, text_cosines, strict=True):
        print(f"{'text (' + graph + ')':<16} {text:<34} {cosine:9.5f}")
    worst = min(worst, *text_cosines)
    verdict = "PASS" if worst >= THRESHOLD else "FAIL"
    print(f"\nminimum cosine {worst:.5f} (threshold {THRESHOLD}): {verdict}")
    return 0 if worst >= THRESHOLD else 1


if __name__ == "__main__":
    sys.exit(main())
