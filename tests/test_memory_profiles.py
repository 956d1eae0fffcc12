"""Memory profiles on the tiny model: fp8 transformer storage and the int8 T5 shrink the
weights as the cost model says, change outputs only within a stated tolerance, and the
combinations that cannot work are refused before anything loads."""

from __future__ import annotations

import pytest
import torch

from allegro import costs
from allegro.engine import Engine
from allegro.errors import UnsupportedSetupError
from allegro.loading import PipelineCache, PipelineSpec, check_memory_profile, load_pipeline
from allegro.request import GenerationRequest
from allegro.video import read_settings

# Measured on the tiny model (random weights, bf16 compute): about 0.9% relative L2 error
# for each; the bounds leave room for other seeds.
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
    # diffusers' default ones (proj_out) is stored in fp8; the cost model counts the same.
    config = plain.transformer.config
    assert stored_bytes(plain.transformer) == costs.transformer_weight_bytes(config, "bf16")
    assert stored_bytes(small.transformer) == costs.transformer_weight_bytes(config, "bf16", True)
    assert small.transformer.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert small.transformer.adaln_single.linear.weight.dtype == torch.bfloat16
    # The released model: half the bytes, give or take the layers kept in bf16.
    released = costs.ALLEGRO_TRANSFORMER_CONFIG
    ratio = costs.transformer_weight_bytes(released, "bf16", True) / (
        costs.transformer_weight_bytes(released, "bf16")
    )
    assert 0.5 < ratio < 0.51

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 6, 20, 20, generator=generator, dtype=torch.bfloat16)
    text = torch.randn(2, 16, 24, generator=generator, dtype=torch.bfloat16)
    timestep = torch.tensor([500, 500])
    with torch.no_grad():
        reference = plain.transformer(latents, text, timestep).sample
        stored_fp8 = small.transformer(latents, text, timestep).sample
    assert stored_fp8.dtype == torch.bfloat16  # computed in bf16
    assert 0 < relative_error(reference, stored_fp8) < FP8_RELATIVE_TOLERANCE


def test_int8_text_encoder_halves_its_linear_layers(pipelines):
    plain, small = pipelines
    linear_layers = [m for m in small.text_encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert linear_layers
    linear_params = sum(m.in_features * m.out_features for m in linear_layers)
    rows = sum(m.out_features for m in linear_layers)
    other_params = sum(p.numel() for p in plain.text_encoder.parameters()) - linear_params
    # int8 weights, an fp32 scale and an int8 zero point per row: what costs counts.
    assert stored_bytes(small.text_encoder) == (
        linear_params * costs.INT8_BYTES + rows * costs.INT8_ROW_BYTES + other_params * 2
    )
    assert stored_bytes(small.text_encoder) < stored_bytes(plain.text_encoder)
    # T5-XXL is nearly all linear layers: about half the bytes (its embedding stays bf16).
    ratio = costs.text_encoder_weight_bytes("bf16", int8=True) / costs.text_encoder_weight_bytes(
        "bf16"
    )
    assert 0.5 < ratio < 0.52

    ids = torch.randint(
        3, len(plain.tokenizer), (1, 40), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        reference = plain.text_encoder(ids).last_hidden_state
        quantized = small.text_encoder(ids).last_hidden_state
    assert 0 < relative_error(reference, quantized) < INT8_RELATIVE_TOLERANCE


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
