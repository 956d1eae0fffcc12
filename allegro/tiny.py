"""A tiny random-initialised Allegro checkpoint of the real classes, in diffusers layout.

Real weights are 25 GB; tests, previews on machines without a GPU and the CI build this
instead, save it with ``save_pretrained`` and load it back through the very same
``AllegroPipeline.from_pretrained`` path that real weights use. Its output is noise.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from allegro.model_libraries import import_model_libraries

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


def make_tiny_pipeline(seed: int = 0, ti2v: bool = False, layers: int = 1):
    """Build the tiny pipeline in memory (random weights, seeded); ``ti2v``: the
    image-to-video model, with its condition branches randomised (their official zero init
    would make the condition invisible); ``layers`` transformer blocks (the step cache's
    tests need more than the blocks it always computes)."""
    import torch

    import_model_libraries()
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
    transformer_class = AllegroTransformer3DModel
    if ti2v:
        from allegro.ti2v.transformer import AllegroTI2VTransformer3DModel

        transformer_class = AllegroTI2VTransformer3DModel
    transformer = transformer_class(
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
    if ti2v:
        for name, parameter in transformer.named_parameters():
            if name.startswith("pos_embed_") and name.endswith(".1.weight"):
                torch.nn.init.normal_(parameter, std=parameter.shape[1] ** -0.5)
    # The official scheduler settings of rhymes-ai/Allegro.
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="linear", timestep_spacing="linspace"
    )
    pipeline_class = AllegroPipeline
    if ti2v:
        from allegro.ti2v.pipeline import AllegroTI2VPipeline

        pipeline_class = AllegroTI2VPipeline
    return pipeline_class(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def make_tiny(directory: str | Path, seed: int = 0, ti2v: bool = False, layers: int = 1) -> Path:
    """Save a tiny checkpoint to ``directory`` (safetensors, diffusers layout). ``ti2v``
    writes it as rhymes-ai/Allegro-TI2V is laid out: ``model_index.json`` names the T2V
    pipeline, the transformer config is the official class's, with its keys."""
    directory = Path(directory)
    make_tiny_pipeline(seed, ti2v, layers).save_pretrained(directory, safe_serialization=True)
    if ti2v:
        _as_official_ti2v_layout(directory)
    return directory


def _as_official_ti2v_layout(directory: Path) -> None:
    from allegro.ti2v.transformer import OFFICIAL_CLASS_NAME

    index_path = directory / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = "AllegroPipeline"
    index["transformer"] = ["diffusers", "AllegroTransformer3DModel"]
    index_path.write_text(json.dumps(index, indent=2))
    config_path = directory / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["_class_name"] = OFFICIAL_CLASS_NAME
    config["sample_size"] = [config.pop("sample_height"), config.pop("sample_width")]
    config["sample_size_t"] = config.pop("sample_frames")
    config.update(norm_type="ada_norm_single", use_rope=True, sa_attention_mode="flash")
    config_path.write_text(json.dumps(config, indent=2))
