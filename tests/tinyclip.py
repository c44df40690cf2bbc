"""Tiny, locally built CLIP models for tests.

Nothing here touches the network: the tokenizer, the model weights and the processor are all
made in-process and written with ``save_pretrained`` so that ``AutoModel.from_pretrained`` and
``AutoProcessor.from_pretrained`` load them with ``HF_HUB_OFFLINE=1``.

``build_random_clip`` gives an untrained model (for plumbing tests); ``train_shapes_clip`` trains
the same architecture for a few seconds on images of coloured shapes, so that a text query such
as "a red circle" really retrieves red circles.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from itertools import product
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tokenizers import pre_tokenizers
from tokenizers.models import BPE
from transformers import (
    AutoModel,
    AutoProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
}
SHAPES = ("circle", "square", "triangle")

IMAGE_SIZE = 32
MAX_TEXT_LENGTH = 16
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def caption(colour: str, shape: str) -> str:
    """The caption used for training and evaluation, e.g. ``"a red circle"``."""
    return f"a {colour} {shape}"


def classes() -> list[tuple[str, str]]:
    """All (colour, shape) pairs, in a fixed order."""
    return list(product(COLOURS, SHAPES))


def draw_shape(
    colour: str, shape: str, size: int = 32, rng: random.Random | None = None
) -> Image.Image:
    """Draw one filled shape on a light background as an RGB ``size``x``size`` image.

    Without ``rng`` the shape is centred and covers 60% of the side on a fixed light grey;
    with ``rng`` the background shade, the scale and the position vary. All coordinates are
    fractions of ``size``, so a large image downscaled looks like a small one.
    """
    if rng is None:
        background = (235, 235, 235)
        scale, cx, cy = 0.6, 0.5, 0.5
    else:
        grey = rng.randint(200, 255)
        background = tuple(min(255, grey + rng.randint(-8, 8)) for _ in range(3))
        scale = rng.uniform(0.45, 0.8)
        cx = rng.uniform(scale / 2, 1 - scale / 2)
        cy = rng.uniform(scale / 2, 1 - scale / 2)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    half = scale * size / 2
    x0, y0, x1, y1 = cx * size - half, cy * size - half, cx * size + half, cy * size + half
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx * size, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return image


def build_tokenizer(words: Iterable[str]) -> CLIPTokenizer:
    """Build a CLIP BPE tokenizer whose merges turn each of ``words`` into one token.

    The vocabulary holds the two special tokens, the 256 byte-level characters (plain and with
    the ``</w>`` end-of-word suffix) and every intermediate piece the merges produce. Words are
    normalised and split exactly as ``CLIPTokenizer`` does (lower-cased, punctuation apart), so
    text made of unknown words still tokenises, into characters.
    """
    backend = CLIPTokenizer().backend_tokenizer
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {BOS: 0, EOS: 1}
    for token in alphabet + [char + "</w>" for char in alphabet]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    pieces = {
        piece
        for word in words
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(
            backend.normalizer.normalize_str(word)
        )
    }
    for piece in sorted(pieces):
        while len(tokens := _bpe(vocab, merges, piece)) > 1:
            # Each new merge ranks after all earlier ones, so it never changes earlier words.
            merges.append((tokens[0], tokens[1]))
            vocab.setdefault(tokens[0] + tokens[1], len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TEXT_LENGTH)


def _bpe(vocab: dict[str, int], merges: list[tuple[str, str]], piece: str) -> list[str]:
    """Split one pre-tokenised piece with the given merges, as ``CLIPTokenizer`` would."""
    model = BPE(
        vocab=vocab,
        merges=merges,
        continuing_subword_prefix="",
        end_of_word_suffix="</w>",
        unk_token=EOS,
    )
    return [token.value for token in model.tokenize(piece)]


def _caption_tokenizer() -> CLIPTokenizer:
    return build_tokenizer(caption(colour, shape) for colour, shape in classes())


def _config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": MAX_TEXT_LENGTH,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 8,
        "image_size": IMAGE_SIZE,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def _processor(tokenizer: CLIPTokenizer) -> CLIPProcessor:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_random_clip(path: Path, seed: int = 0) -> Path:
    """Save an untrained tiny CLIP model and its processor to ``path``; return ``path``."""
    tokenizer = _caption_tokenizer()
    torch.manual_seed(seed)
    CLIPModel(_config(tokenizer)).save_pretrained(path)
    _processor(tokenizer).save_pretrained(path)
    return path


def pixel_values(processor: CLIPProcessor, images: list[Image.Image]) -> torch.Tensor:
    """``processor(images=...)["pixel_values"]`` for images already at the model's size.

    For such images resizing and centre-cropping are no-ops, so this is the processor's own
    rescale and normalisation, without its per-image overhead.
    """
    image_processor = processor.image_processor
    array = np.stack([np.asarray(image) for image in images]).astype(np.float64)
    array = (array * image_processor.rescale_factor).astype(np.float32)
    array = (array - np.float32(image_processor.image_mean)) / np.float32(image_processor.image_std)
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def train_shapes_clip(path: Path, steps: int = 2500, seed: int = 0) -> Path:
    """Train a tiny CLIP on coloured shapes, save it with its processor to ``path``.

    Each step is one batch with one random 32x32 image per (colour, shape) class, so no caption
    repeats within a batch; AdamW at 2e-3 with a short linear warm-up and cosine decay (a
    constant rate left some seeds at precision@5 0.77). Runs on one thread, as fast as two for
    a model this small. Returns ``path``.
    """
    tokenizer = _caption_tokenizer()
    processor = _processor(tokenizer)
    pairs = classes()
    text = tokenizer([caption(*pair) for pair in pairs], padding=True, return_tensors="pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        rng = random.Random(seed)
        model = CLIPModel(_config(tokenizer))
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        warmup = max(1, min(200, steps // 10))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: min(1.0, (step + 1) / warmup) * (1 + math.cos(math.pi * step / steps)) / 2,
        )
        for _ in range(steps):
            images = [draw_shape(colour, shape, IMAGE_SIZE, rng) for colour, shape in pairs]
            batch = pixel_values(processor, images)
            loss = model(**text, pixel_values=batch, return_loss=True).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _embedding(output: torch.Tensor | object) -> torch.Tensor:
    """The embedding tensor from ``get_*_features`` (an output object in transformers 5)."""
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(tensor, dim=-1)


def precision_at_5(path: Path, size: int = 128, per_class: int = 5) -> float:
    """Mean text-to-image precision@5 of the saved model over all 12 captions.

    The gallery holds ``per_class`` random ``size``x``size`` images of each class (with fewer
    than 5 per class the score cannot reach 1).
    """
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    rng = random.Random(12345)
    pairs = classes()
    gallery = [(pair, draw_shape(*pair, size, rng)) for pair in pairs for _ in range(per_class)]
    with torch.no_grad():
        images = processor(images=[image for _, image in gallery], return_tensors="pt")
        texts = processor(
            text=[caption(*pair) for pair in pairs], padding=True, return_tensors="pt"
        )
        image_embeds = _embedding(model.get_image_features(**images))
        text_embeds = _embedding(model.get_text_features(**texts))
    top = (text_embeds @ image_embeds.T).topk(5, dim=1).indices
    hits = [
        sum(gallery[index][0] == pair for index in row.tolist()) / 5
        for pair, row in zip(pairs, top, strict=True)
    ]
    return sum(hits) / len(hits)
