"""Memory profiles on the tiny model: fp8 transformer storage and the int8 T5 shrink the
weights as the cost model says, change outputs only within a stated tolerance, and the
combinations that cannot work are refused before anything loads."""

from __future__ import annotations

import pytest
import torch

from allegro import costs
from allegro.engine import Engine
from allegro.errors import UnsupportedSetupError
from allegro.loading import (
    PipelineCache,
    PipelineSpec,
    check_memory_profile,
    load_pipeline,
    store_transformer_in_fp8,
)
from allegro.request import GenerationRequest
from allegro.video import read_settings

# Measured on the tiny model (random weights, bf16 compute, four seeds): 0.85-0.89% relative
# L2 error for the transformer, 1.0-1.2% for T5 (int8 embedding included); the bounds leave
# room for other seeds.
FP8_RELATIVE_TOLERANCE = 0.03  # transformer output, fp8 storage vs bf16 storage
INT8_RELATIVE_TOLERANCE = 0.03  # prompt embeddings, int8 T5 vs bf16 T5


def stored_bytes(module: torch.nn.Module) -> int:
    """Bytes the parameters really occupy, inner tensors of quantized ones included."""
    total = 0
    for parameter in module.parameters():
        if hasattr(parameter, "__tensor_flatten__"):  # a torchao tensor subclass
            names, _ = parameter.__tensor_flatten__()
            tensors = [getattr(parameter, name) for name in names]
        else:
            tensors = [parameter]
        total += sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    return total


@pytest.fixture(scope="module")
def pipelines(tiny_model):
    plain = load_pipeline(PipelineSpec(model=str(tiny_model), precision="bf16"))
    small = load_pipeline(
        PipelineSpec(model=str(tiny_model), precision="bf16", memory_profile="low-memory")
    )
    return plain.pipe, small.pipe


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    reference, other = reference.float(), other.float()
    return ((reference - other).norm() / reference.norm()).item()


def test_fp8_storage_matches_the_cost_model_and_stays_close(pipelines):
    plain, small = pipelines
    # Every layer but the transformer's skip patterns (pos_embed, norm, adaln_single) and
    # diffusers' default ones (proj_out) is stored in fp8, adaln_single in int8; the cost
    # model counts the same.
    config = plain.transformer.config
    assert stored_bytes(plain.transformer) == costs.transformer_weight_bytes(config, "bf16")
    assert stored_bytes(small.transformer) == costs.transformer_weight_bytes(config, "bf16", True)
    assert small.transformer.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert hasattr(small.transformer.adaln_single.linear.weight, "__tensor_flatten__")  # int8
    assert small.transformer.proj_out.weight.dtype == torch.bfloat16

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 6, 20, 20, generator=generator, dtype=torch.bfloat16)
    text = torch.randn(2, 16, 24, generator=generator, dtype=torch.bfloat16)
    timestep = torch.tensor([500, 500])
    with torch.no_grad():
        reference = plain.transformer(latents, text, timestep).sample
        stored_fp8 = small.transformer(latents, text, timestep).sample
    assert stored_fp8.dtype == torch.bfloat16  # computed in bf16
    assert 0 < relative_error(reference, stored_fp8) < FP8_RELATIVE_TOLERANCE


def test_fp8_storage_halves_the_released_transformer():
    """The released architecture built on the meta device (no weights, no memory) and stored
    as the profile stores it: the bytes the layers hold, not only the cost model's sum."""
    from diffusers import AllegroTransformer3DModel

    config = costs.ALLEGRO_TRANSFORMER_CONFIG
    with torch.device("meta"):
        transformer = AllegroTransformer3DModel.from_config(dict(config)).to(torch.bfloat16)
    plain = stored_bytes(transformer)
    store_transformer_in_fp8(transformer, "bf16")
    stored = stored_bytes(transformer)
    assert plain == costs.transformer_weight_bytes(config, "bf16")
    assert stored == costs.transformer_weight_bytes(config, "bf16", True)
    # 50.01%: fp8 is one byte for two, and pos_embed, proj_out, the scale-shift tables and
    # the int8 rows' scales (1 MB of 5.5 GB) keep more; 50.7% when adaln_single stayed bf16.
    assert 0.5 < stored / plain < 0.5002


def test_weight_errors_of_fp8_cast_and_int8_rows():
    """Why adaln_single is int8, not fp8: a plain e4m3 cast has no scale, so its error grows
    as the weights get small (subnormals below 2**-6), while int8 with a per-row scale does
    not. Weights drawn at the std of trained 2304-wide layers and below."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    generator = torch.Generator().manual_seed(0)
    for std, fp8_bounds in ((0.05, (0.02, 0.035)), (0.005, (0.08, 0.15))):
        layer = torch.nn.Linear(512, 512, bias=False, dtype=torch.bfloat16)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(512, 512, generator=generator) * std)
        weight = layer.weight.detach().clone()
        fp8 = relative_error(weight, weight.to(torch.float8_e4m3fn).to(torch.bfloat16))
        quantize_(layer, Int8WeightOnlyConfig())
        int8 = relative_error(weight, layer.weight.dequantize())
        assert fp8_bounds[0] < fp8 < fp8_bounds[1]
        assert int8 < 0.012


def _int8_bytes_by_layer(encoder: torch.nn.Module, element: int) -> int:
    """What the int8 profile stores, layer by layer: linear layers and the shared embedding
    in int8 with a scale and zero point a row; norms and the position bias as they were."""
    total = 0
    counted = set()
    for name, module in encoder.named_modules():
        weight = getattr(module, "weight", None)
        if weight is None or id(weight) in counted:  # the embedding is tied, counted once
            continue
        counted.add(id(weight))
        rows, columns = weight.shape[0], weight.numel() // weight.shape[0]
        int8 = isinstance(module, torch.nn.Linear) or (
            isinstance(module, torch.nn.Embedding) and "relative_attention_bias" not in name
        )
        if int8:
            total += rows * columns * costs.INT8_BYTES + rows * costs.INT8_ROW_BYTES
        else:
            total += weight.numel() * element
    return total


def test_int8_text_encoder_halves_its_weights(pipelines):
    plain, small = pipelines
    assert small.text_encoder.shared.weight.__tensor_flatten__()  # the embedding is int8 too
    assert small.text_encoder.encoder.embed_tokens.weight is small.text_encoder.shared.weight
    bias = small.text_encoder.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
    assert bias.weight.dtype == torch.bfloat16
    assert stored_bytes(small.text_encoder) == _int8_bytes_by_layer(plain.text_encoder, 2)

    ids = torch.randint(
        3, len(plain.tokenizer), (1, 40), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        reference = plain.text_encoder(ids).last_hidden_state
        quantized = small.text_encoder(ids).last_hidden_state
    assert 0 < relative_error(reference, quantized) < INT8_RELATIVE_TOLERANCE


def test_int8_text_encoder_halves_t5_xxl(t5_xxl_on_meta):
    """T5 v1.1 XXL's layers (on the meta device) counted as the tiny model's stored bytes
    are (above): the cost model's figure, half the bf16 bytes and 0.06%."""
    encoder = t5_xxl_on_meta
    plain = sum(parameter.numel() for parameter in encoder.parameters()) * 2
    stored = _int8_bytes_by_layer(encoder, 2)
    assert plain == costs.text_encoder_weight_bytes("bf16")
    assert stored == costs.text_encoder_weight_bytes("bf16", int8=True)
    # 50.06%: the row scales and zero points (5 MB) and the norms; 51.4% with a bf16 embedding.
    assert 0.5 < stored / plain < 0.5006


def test_low_memory_profile_makes_a_video(tiny_model, tmp_path):
    spec = PipelineSpec(model=str(tiny_model), precision="bf16", memory_profile="low-memory")
    engine = Engine(spec, tmp_path, cache=PipelineCache())
    result = engine.generate(GenerationRequest(prompt="a red kite", seed=1, steps=2))
    settings = read_settings(result.video_path)
    assert settings["memory_profile"] == "low-memory"


@pytest.mark.parametrize(
    ("profile", "offload", "compile", "zero_gpu", "message"),
    [
        ("fp8-transformer", "sequential", False, False, "does not work with 'sequential'"),
        ("int8-text-encoder", "sequential", False, False, "does not work with 'sequential'"),
        ("fp8-transformer", "none", True, False, "cannot be combined with --compile"),
        ("low-memory", "auto", True, False, "cannot be combined with --compile"),
        ("low-memory", "auto", False, True, "not available on ZeroGPU"),
        ("tiny", "auto", False, False, "Unknown memory profile"),
    ],
)
def test_impossible_combinations_are_refused(profile, offload, compile, zero_gpu, message):
    with pytest.raises(UnsupportedSetupError, match=message):
        check_memory_profile(profile, offload, compile, zero_gpu)


def test_possible_combinations_pass():
    check_memory_profile("off", "sequential", True, True)
    check_memory_profile("int8-text-encoder", "group", True)
    for mode in ("auto", "none", "model", "group"):
        check_memory_profile("low-memory", mode)


def test_load_refuses_before_loading(tmp_path):
    spec = PipelineSpec(model=str(tmp_path / "missing"), memory_profile="fp8-transformer")
    with pytest.raises(UnsupportedSetupError, match="--compile"):
        load_pipeline(PipelineSpec(**{**spec.__dict__, "compile": True}))


def test_oom_advice_names_the_step_cache_and_smaller_profiles():
    from types import SimpleNamespace

    from allegro.engine import oom_advice
    from allegro.loading import AppliedOffload

    loaded = SimpleNamespace(
        offload=AppliedOffload("model", "chosen by the user"),
        spec=PipelineSpec(precision="bf16", memory_profile="fp8-transformer"),
        pipe=SimpleNamespace(transformer=SimpleNamespace(config=costs.ALLEGRO_TRANSFORMER_CONFIG)),
        gpu_memory_bytes=None,  # not known: every setting is proposed
    )
    request = GenerationRequest(prompt="a kite", frames=88, height=720, width=1280, step_cache=True)
    advice = oom_advice(loaded, request)
    assert advice.index("turn the step cache off (saves about 1.5 GB)") == advice.index("fit: ") + 5
    assert "--offload group" in advice and "--offload sequential" not in advice  # fp8
    # Counted with the step cache still on, as asked (12.2 GB without its 1.5 GB buffers).
    assert "--memory-profile low-memory (needs about 13.7 GB)" in advice
    assert "--memory-profile int8-text-encoder" not in advice  # would drop fp8: bigger
    # On a 12 GB card only what fits is proposed: group offload (11.8 GB), not low-memory.
    advice = oom_advice(
        SimpleNamespace(**{**vars(loaded), "gpu_memory_bytes": 12 * 10**9}), request
    )
    assert "--offload group" in advice and "--memory-profile" not in advice


def test_profiles_compose_with_group_offloading_hooks(tiny_model):
    """Group offload is allowed with both profiles: diffusers' group offloading hooks run on
    top of layerwise casting and of torchao tensors (hooks/group_offloading.py:39-81) and
    give the same outputs. Onloading to the CPU exercises the hooks, not a GPU copy."""
    from diffusers import AllegroTransformer3DModel
    from diffusers.hooks import apply_group_offloading
    from transformers import T5EncoderModel

    from allegro.loading import int8_text_encoder_config, store_transformer_in_fp8

    cpu = torch.device("cpu")
    transformer = AllegroTransformer3DModel.from_pretrained(
        tiny_model, subfolder="transformer", dtype=torch.bfloat16
    )
    store_transformer_in_fp8(transformer, "bf16")
    generator = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(2, 4, 6, 20, 20, generator=generator, dtype=torch.bfloat16),
        torch.randn(2, 16, 24, generator=generator, dtype=torch.bfloat16),
        torch.tensor([500, 500]),
    )
    with torch.no_grad():
        before = transformer(*inputs).sample
        transformer.enable_group_offload(
            onload_device=cpu,
            offload_device=cpu,
            offload_type="block_level",
            num_blocks_per_group=1,
        )
        assert torch.equal(transformer(*inputs).sample, before)

    encoder = T5EncoderModel.from_pretrained(
        tiny_model,
        subfolder="text_encoder",
        dtype=torch.bfloat16,
        quantization_config=int8_text_encoder_config(),
    )
    ids = torch.randint(3, 60, (1, 20), generator=generator)
    with torch.no_grad():
        before = encoder(ids).last_hidden_state
        apply_group_offloading(
            encoder, onload_device=cpu, offload_device=cpu, offload_type="leaf_level"
        )
        assert torch.equal(encoder(ids).last_hidden_state, before)


def test_low_memory_profile_on_image_to_video(tiny_ti2v_model, tmp_path):
    """Allegro-TI2V with fp8 storage and the int8 T5: its condition branches match the
    transformer's ``pos_embed`` skip pattern and stay in bf16; a plain text encoder of the
    same files is not taken for the int8 one (their fingerprints differ)."""
    from PIL import Image

    from allegro.loading import ReusableComponent, weights_fingerprint

    image = tmp_path / "first.png"
    Image.new("RGB", (48, 40), "teal").save(image)
    spec = PipelineSpec(model=str(tiny_ti2v_model), precision="bf16", memory_profile="low-memory")
    plain_t5 = ReusableComponent(
        weights_fingerprint(tiny_ti2v_model / "text_encoder", "bf16"), torch.nn.Linear(1, 1)
    )
    loaded = load_pipeline(spec, reusable={"text_encoder": plain_t5})
    assert loaded.ti2v and loaded.reused == ()
    transformer = loaded.pipe.transformer
    assert transformer.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert transformer.pos_embed_mask[0].proj.weight.dtype == torch.bfloat16
    assert transformer.pos_embed_first_frame[1].weight.dtype == torch.bfloat16
    query = loaded.pipe.text_encoder.encoder.block[0].layer[0].SelfAttention.q.weight
    assert hasattr(query, "__tensor_flatten__")  # a torchao int8 tensor

    engine = Engine(spec, tmp_path / "out", cache=PipelineCache())
    request = GenerationRequest(prompt="a red kite", seed=1, steps=2, first_image=str(image))
    result = engine.generate(request)
    assert read_settings(result.video_path)["memory_profile"] == "low-memory"


# What importing torchao 0.18 prints on a machine without its kernels (seen at every start
# before it was imported only for the profiles that use it).
TORCHAO_START_UP_LINES = (
    "_C_mxfp8",
    "Detected no triton",
    "Unable to import `torchao` Tensor objects",
    "_pytree",
    "torchao",
)


def test_torchao_is_imported_only_by_the_profiles_that_use_it(tiny_model):
    """A load without a memory profile (what every start does) imports no torchao and
    prints none of its warnings; a profile loaded afterwards in the same process still gets
    torchao, through transformers' TorchAoConfig."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(
        f"""
        import sys
        from allegro.loading import PipelineSpec, load_pipeline

        load_pipeline(PipelineSpec(model={str(tiny_model)!r}, precision="bf16"))
        print("plain", "torchao" in sys.modules, flush=True)
        print("--- int8 ---", file=sys.stderr, flush=True)
        spec = PipelineSpec(
            model={str(tiny_model)!r}, precision="bf16", memory_profile="int8-text-encoder"
        )
        small = load_pipeline(spec)
        weight = small.pipe.text_encoder.shared.weight
        print("int8", "torchao" in sys.modules, hasattr(weight, "__tensor_flatten__"))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["plain", "False", "int8", "True", "True"]
    start_up = run.stderr.split("--- int8 ---")[0]
    assert not [line for line in TORCHAO_START_UP_LINES if line in start_up], start_up
