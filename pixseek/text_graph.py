"""Batch-1 text encoding replayed from a CUDA graph: a search query costs one graph launch
instead of hundreds of small kernel launches (the text tower at batch 1 is launch-bound).

Token ids are padded to the model's full context length with no attention mask. CLIP's text
tower is causal and pools the hidden state at the end-of-text token, so tokens after it cannot
change the result: the graph computes the same embedding as the eager path.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class TextGraph:
    """A captured text tower for one query at a time; call it under the embedder's lock."""

    def __init__(self, model: torch.nn.Module, length: int, pad_id: int, device: torch.device):
        self.length, self.pad_id = length, pad_id
        self.ids = torch.full((1, length), pad_id, dtype=torch.long, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                model.get_text_features(input_ids=self.ids)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            output = model.get_text_features(input_ids=self.ids)
            self.output = output if isinstance(output, torch.Tensor) else output.pooler_output

    def __call__(self, token_ids: list[int]) -> torch.Tensor:
        """The text embedding (unnormalised, model dtype) for one tokenised text."""
        self.ids.copy_(full_length_ids(token_ids, self.length, self.pad_id), non_blocking=False)
        self.graph.replay()
        return self.output


def full_length_ids(token_ids: list[int], length: int, pad_id: int) -> torch.Tensor:
    """One [1, length] row of token ids, cut or padded to `length`: the graph's fixed input."""
    ids = token_ids[:length]
    return torch.tensor([ids + [pad_id] * (length - len(ids))], dtype=torch.long)


def pad_id_of(tokenizer) -> int:
    """The id that fills a query out to the full context length."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def capture(model: torch.nn.Module, tokenizer, length: int, device: torch.device):
    """A TextGraph, or None where capture fails (the eager path is then used)."""
    try:
        return TextGraph(model, length, pad_id_of(tokenizer), device)
    except RuntimeError as error:
        log.warning("text queries run eagerly: CUDA graph capture failed: %s", error)
        return None
