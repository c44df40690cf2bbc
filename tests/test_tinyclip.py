"""The locally built tiny CLIP: word-level tokenizer and a random model loadable offline.

conftest.py sets HF_HUB_OFFLINE=1 before transformers is imported.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from tests.tinyclip import build_random_clip, build_tokenizer, draw_shape


def test_tokenizer_gives_one_token_per_word() -> None:
    tokenizer = build_tokenizer(["a red circle", "a yellow triangle"])
    ids = tokenizer("A  Red CIRCLE")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<|startoftext|>", "a</w>", "red</w>", "circle</w>", "<|endoftext|>"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red circle"


def test_tokenizer_splits_unknown_words_into_characters() -> None:
    tokenizer = build_tokenizer(["red"])
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("purple café!")["input_ids"])
    assert tokens[1:4] == ["p", "u", "r"]
    assert tokens[-1] == "<|endoftext|>"


def test_random_clip_loads_offline(tmp_path: Path) -> None:
    path = build_random_clip(tmp_path / "clip")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    images = processor(images=[draw_shape("red", "circle", 256)], return_tensors="pt")
    text = processor(text=["a red circle", "a blue square"], padding=True, return_tensors="pt")
    with torch.no_grad():
        image_out = model.get_image_features(**images)
        text_out = model.get_text_features(**text)
    image_embeds = getattr(image_out, "pooler_output", image_out)
    text_embeds = getattr(text_out, "pooler_output", text_out)
    assert images["pixel_values"].shape == (1, 3, 32, 32)
    assert image_embeds.shape == (1, 32)
    assert text_embeds.shape == (2, 32)
