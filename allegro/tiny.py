"""A tiny random-initialised Allegro checkpoint of the real classes, in diffusers layout.

Real weights are 25 GB; tests, previews on machines without a GPU and the CI build this
instead, save it with ``save_pretrained`` and load it back through the very same
``AllegroPipeline.from_pretrained`` path that real weights use. Its output is noise.
"""

from __future__ import annotations

import string
from pathlib import Path

# Native size of the tiny model: 24 frames (6 latent frames) of 160x160 (20x20 latents).
TINY_FRAMES = 24
TINY_SIZE = 160


def _char_tokenizer():
    """A character-level tokenizer: different prompts give different embeddings, no files
    needed. T5's own tokenizer would need a sentencepiece model we cannot download."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = {token: index for index, token in enumerate(specials + list(chars))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\S"), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def make_tiny_pipeline(seed: int = 0, layers: int = 1):
    """Build the tiny pipeline in memory (random weights, seeded); ``layers`` transformer
    blocks (the step cache's tests need more than the blocks it always computes)."""
    import torch
    from diffusers import (
        AllegroPipeline,
        AllegroTransformer3DModel,
        AutoencoderKLAllegro,
        EulerAncestralDiscreteScheduler,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = _char_tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=24,
            d_kv=8,
            d_ff=48,
            num_layers=2,
            num_heads=3,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    transformer = AllegroTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=layers,
        cross_attention_dim=24,
        caption_channels=24,
        sample_frames=TINY_FRAMES // 4,
        sample_height=TINY_SIZE // 8,
        sample_width=TINY_SIZE // 8,
    )
    vae = AutoencoderKLAllegro(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=TINY_SIZE,
    )
    # The official scheduler settings of rhymes-ai/Allegro.
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="linear", timestep_spacing="linspace"
    )
    return AllegroPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def make_tiny(directory: str | Path, seed: int = 0, layers: int = 1) -> Path:
    """Save a tiny checkpoint to ``directory`` (safetensors, diffusers layout)."""
    directory = Path(directory)
    make_tiny_pipeline(seed, layers).save_pretrained(directory, safe_serialization=True)
    return directory
