"""A small local instruct model through transformers (default Qwen2.5-1.5B-Instruct).

Loaded on first use, from a folder or the hub (safetensors only, with the download reported
as the video model's is: allegro.loading.fetch_source). bf16 on a GPU with room for it beside
a video run's peak (gpu_headroom_bytes), else fp32 on the CPU: it must never take the memory
a video needs. The choice is made once, at load.
Generation is greedy, capped at ``max_tokens`` new tokens, and checked between tokens for
the deadline and the cancel token (a StoppingCriteria), so it stops within one token.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allegro.errors import Cancelled, ModelUnavailableError
from allegro.events import CancelToken, ProgressCallback, ProgressEvent, Stage
from allegro.loading import fetch_source
from allegro.prompting.helper import CANCELLED_MESSAGE, Deadline, Message, PromptHelper

_MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    device: str
    reason: str


def gpu_headroom_bytes() -> int:
    """What a video run may still take on the GPU beyond what it holds between runs: the
    larger activation peak of a native 88x720x1280 video (transformer or VAE decode, from the
    cost model) plus the bf16 text encoder, which model offload brings in for each prompt.
    About 18 GB: the prompt model goes on the GPU only with that much free beside it."""
    from allegro import costs

    frames, height, width = 88, 720, 1280
    activations = max(
        costs.transformer_activation_bytes(costs.ALLEGRO_TRANSFORMER_CONFIG, frames, height, width),
        costs.vae_decode_activation_bytes(frames, height, width),
    )
    return activations + costs.text_encoder_weight_bytes("bf16")


def choose_device(weights_bytes: int) -> tuple[str, str]:
    """(device, why): cuda when it has room for the bf16 weights and gpu_headroom_bytes(),
    else the CPU, so the helper never takes the memory a video needs."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", "no GPU"
    free, _total = torch.cuda.mem_get_info()
    if free < weights_bytes + gpu_headroom_bytes():
        return "cpu", f"the GPU is busy ({free / 1024**3:.1f} GB free)"
    return "cuda", "GPU"


def weights_bytes(folder: Path) -> int:
    """Bytes of the safetensors weights; bf16 checkpoints keep about this size on the GPU."""
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


class LocalHelper(PromptHelper):
    def __init__(self, source: str, timeout: float, device: str | None = None) -> None:
        super().__init__(source, timeout)
        self._device = device  # None: choose_device at load
        self._lock = threading.Lock()  # one load, then one answer at a time
        self._loaded: _Loaded | None = None

    @property
    def loaded(self) -> _Loaded | None:
        return self._loaded

    def describe(self) -> str:
        where = f" on {self._loaded.device} ({self._loaded.reason})" if self._loaded else ""
        return f"{self.source}{where}"

    def load(self, on_progress: ProgressCallback) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        folder = self._fetch(on_progress)
        on_progress(ProgressEvent(Stage.LOADING, 0.0, message="Loading the prompt model …"))
        transformers_logging.disable_progress_bar()
        if self._device is None:
            device, reason = choose_device(weights_bytes(folder))
        else:
            device, reason = self._device, "chosen"
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        self._loaded = _Loaded(model, tokenizer, device, reason)
        return self._loaded

    def _fetch(self, on_progress: ProgressCallback) -> Path:
        """The model's folder (downloaded if need be), with a message about the prompt
        model, not the video model's download hint, when it cannot be had."""
        try:
            return fetch_source(self.source, _MODEL_FILES, on_progress)
        except ModelUnavailableError as error:
            reason = str(error)
            for hint in (" To fix:", " Check the name", " Partly downloaded"):
                reason = reason.split(hint)[0]
            raise ModelUnavailableError(
                f"The prompt model cannot be loaded: {reason} Download it on a machine with "
                f"internet (`hf download {self.source}`), or give a local folder or an "
                "OpenAI-compatible endpoint with --prompt-model, or --prompt-model none to "
                "hide Improve prompt."
            ) from None

    def chat(
        self,
        messages: list[Message],
        max_tokens: int,
        deadline: Deadline,
        cancel: CancelToken,
        on_progress: ProgressCallback,
    ) -> str:
        # Waiting for another person's answer counts against this one's time.
        if not self._lock.acquire(timeout=max(deadline.left(), 0.0)):
            raise deadline.error()
        try:
            # Loading (and a first download) is not counted: it happens once, and is shown.
            started = time.monotonic()
            loaded = self.load(on_progress)
            deadline = Deadline(deadline.at + (time.monotonic() - started), deadline.seconds)
            return self._generate(loaded, messages, max_tokens, deadline, cancel)
        finally:
            self._lock.release()

    @staticmethod
    def _generate(
        loaded: _Loaded,
        messages: list[Message],
        max_tokens: int,
        deadline: Deadline,
        cancel: CancelToken,
    ) -> str:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.cancelled or deadline.left() <= 0

        tokenizer = loaded.tokenizer
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        inputs = {key: value.to(loaded.device) for key, value in inputs.items()}
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        with torch.inference_mode():
            output = loaded.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=False,
                stopping_criteria=StoppingCriteriaList([Stop()]),
                pad_token_id=pad,
            )
        if cancel.cancelled:
            raise Cancelled(CANCELLED_MESSAGE)
        if deadline.left() <= 0:
            raise deadline.error()
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return tokenizer.decode(new_tokens, skip_special_tokens=True)
