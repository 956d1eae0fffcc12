"""Prompt encoding with a small LRU cache: T5-XXL is the largest part of the model, and
people re-run the same prompt (and always the same negative prompt) with new seeds."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from allegro.request import MAX_PROMPT_TOKENS


@dataclass(frozen=True)
class EncodedPrompt:
    embeds: Any  # torch.Tensor (1, tokens, dim)
    attention_mask: Any  # torch.Tensor (1, tokens)


@dataclass(frozen=True)
class TruncationNotice:
    tokens: int
    cut_text: str

    def message(self) -> str:
        return (
            f"Your prompt is {self.tokens} tokens long; Allegro reads at most "
            f"{MAX_PROMPT_TOKENS}, so it was cut before: “{self.cut_text.strip()}”."
        )


def find_truncation(tokenizer, text: str) -> TruncationNotice | None:
    """Where the text encoder will cut ``text``, if it is over the token limit."""
    ids = tokenizer(text, add_special_tokens=True).input_ids
    if len(ids) <= MAX_PROMPT_TOKENS:
        return None
    # The last kept position holds the end-of-sequence token, as in the pipeline.
    cut = tokenizer.decode(ids[MAX_PROMPT_TOKENS - 1 : -1], skip_special_tokens=True)
    return TruncationNotice(tokens=len(ids), cut_text=cut[:120])


class PromptEmbeddingCache:
    """Maps (text, clean_caption) to its embeddings, least recently used out first.

    Texts are encoded one at a time through the pipeline's own ``encode_prompt`` exactly
    as the pipeline encodes a prompt or a negative prompt, so frames are identical with and
    without the cache."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, bool], EncodedPrompt] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, pipe, text: str, clean_caption: bool, device) -> EncodedPrompt:
        key = (text, clean_caption)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
        import torch

        with torch.no_grad():
            embeds, mask, _, _ = pipe.encode_prompt(
                text,
                do_classifier_free_guidance=False,
                device=device,
                clean_caption=clean_caption,
                max_sequence_length=MAX_PROMPT_TOKENS,
            )
        encoded = EncodedPrompt(embeds=embeds, attention_mask=mask)
        with self._lock:
            self.misses += 1
            self._entries[key] = encoded
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return encoded

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
