"""The Allegro-TI2V port against golden vectors made with the official implementation on
tiny random weights (tests/data/ti2v_golden, see its README in ../shared/ti2v_golden)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import DATA_DIR

GOLDEN = DATA_DIR / "ti2v_golden"
FORWARD_TOLERANCE = 1e-5  # the golden README's recommendation
# End to end on this machine the outputs differ by up to 1.14e-5, all of it from the timestep
# sinusoid: sin/cos of t * freq (arguments up to ~900 rad) differ between CPU math libraries.
# Here the timestep embedding is 1.3e-7 from a float64 computation, the golden's 4.4e-6 from
# it; with the golden's own embedding substituted the outputs agree to 1.2e-6
# (test_forward_matches_official_given_its_timestep_embedding).
PLATFORM_TOLERANCE = 2e-5
IMAGE_TOLERANCE = 1e-5


def _rope(transformer, batch: int, frames: int, height: int, width: int):
    """Rotary tables exactly as diffusers' AllegroPipeline builds them (latent sizes in)."""
    from diffusers import AllegroPipeline

    stand_in = SimpleNamespace(vae_scale_factor_spatial=8, transformer=transformer)
    return AllegroPipeline._prepare_rotary_positional_embeddings(
        stand_in, batch, height * 8, width * 8, frames, "cpu"
    )


@pytest.fixture(scope="module")
def golden_transformer(tmp_path_factory):
    """The golden checkpoint laid out as on the hub (official config + safetensors) and loaded
    with from_pretrained, which must find every key."""
    from allegro.ti2v.transformer import AllegroTI2VTransformer3DModel

    folder = tmp_path_factory.mktemp("ti2v-golden")
    shutil.copy(GOLDEN / "config.json", folder / "config.json")
    shutil.copy(GOLDEN / "weights.safetensors", folder / "diffusion_pytorch_model.safetensors")
    model = AllegroTI2VTransformer3DModel.from_pretrained(folder, dtype=torch.float32)
    return model.eval()


def test_golden_weights_load_strictly():
    from allegro.ti2v.transformer import AllegroTI2VTransformer3DModel

    config = json.loads((GOLDEN / "config.json").read_text())
    assert config["_class_name"] == "AllegroTransformerTI2V3DModel"
    model = AllegroTI2VTransformer3DModel.from_config(config)
    weights = load_file(GOLDEN / "weights.safetensors")
    result = model.load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(weights) == 66
    assert model.config.sample_height == 8 and model.config.sample_width == 12
    assert model.config.interpolation_scale_w == 1.5


def test_from_pretrained_loads_every_golden_weight(golden_transformer):
    weights = load_file(GOLDEN / "weights.safetensors")
    state = golden_transformer.state_dict()
    assert set(state) == set(weights)
    for key, value in weights.items():
        assert torch.equal(state[key], value), key


def _run_case(transformer, case: str) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = load_file(GOLDEN / "cases.safetensors")
    hidden = tensors[f"{case}.hidden_states"]
    batch, _, frames, height, width = hidden.shape
    with torch.no_grad():
        sample = transformer(
            hidden_states=hidden,
            encoder_hidden_states=tensors[f"{case}.encoder_hidden_states"],
            encoder_attention_mask=tensors[f"{case}.encoder_attention_mask"],
            timestep=tensors[f"{case}.timestep"],
            image_rotary_emb=_rope(transformer, batch, frames, height, width),
            return_dict=False,
        )[0]
    expected = tensors[f"{case}.sample"]
    assert sample.shape == expected.shape
    return sample, expected


@pytest.mark.parametrize("case", ["case_a", "case_b", "case_c"])
def test_forward_matches_official_given_its_timestep_embedding(golden_transformer, case):
    official = load_file(GOLDEN / "embedded_timestep.safetensors")[f"{case}.embedded_timestep"]
    embedder = golden_transformer.adaln_single.emb.timestep_embedder
    handle = embedder.register_forward_hook(lambda *_: official)
    try:
        sample, expected = _run_case(golden_transformer, case)
    finally:
        handle.remove()
    assert (sample - expected).abs().max().item() <= FORWARD_TOLERANCE


@pytest.mark.parametrize("case", ["case_a", "case_b", "case_c"])
def test_forward_matches_official(golden_transformer, case):
    sample, expected = _run_case(golden_transformer, case)
    assert (sample - expected).abs().max().item() <= PLATFORM_TOLERANCE
    # The forward leaves no hook behind on the shared T2V modules.
    assert not golden_transformer.pos_embed._forward_hooks
    assert not golden_transformer.adaln_single._forward_hooks


def test_case_c_mask_is_the_official_layout():
    from allegro.ti2v.condition import latent_mask, pixel_condition

    tensors = load_file(GOLDEN / "cases.safetensors")
    images = torch.zeros(2, 3, 64, 96)
    _, mask = pixel_condition(images, [0, -1], frames=8)
    assert torch.equal(latent_mask(mask), tensors["case_c.mask_latent"])
    assert torch.equal(tensors["case_c.hidden_states"][:1, 8:], tensors["case_c.mask_latent"])


@pytest.mark.parametrize("case", ["m_first", "m_first_last", "m_extra_0_5"])
def test_conditioning_matches_official(case):
    from allegro.ti2v.condition import latent_mask, pixel_condition, prepare_image

    tensors = load_file(GOLDEN / "mask_cases.safetensors")
    indices = tensors[f"{case}.conditional_images_indices"].tolist()
    batch, _, frames, height, width = tensors[f"{case}.input_video"].shape
    images = []
    for i in range(len(indices)):
        image = prepare_image(tensors[f"{case}.raw_image_{i}"].numpy(), height, width)
        expected = tensors[f"{case}.conditional_image_{i}"][0]
        assert (image - expected).abs().max().item() <= IMAGE_TOLERANCE
        images.append(expected)
    masked_video, mask = pixel_condition(torch.stack(images), indices, frames, batch)
    assert torch.equal(masked_video, tensors[f"{case}.masked_video_pixel"])
    assert torch.equal(masked_video, tensors[f"{case}.input_video"])
    assert torch.equal(mask, tensors[f"{case}.mask_pixel"])
    assert torch.equal(latent_mask(mask), tensors[f"{case}.mask_latent"])


def test_continuation_mask_uses_the_trained_regrouping():
    """First 4 of 16 frames given: latent mask[c, t] is pixel frame c * 4 + t, so the given
    frames are channel 0, latent frames 0..3 (not latent frame 0, channels 0..3)."""
    from allegro.ti2v.condition import latent_mask, pixel_condition

    _, mask = pixel_condition(torch.zeros(4, 3, 16, 16), [0, 1, 2, 3], frames=16)
    latent = latent_mask(mask)
    assert latent.shape == (1, 4, 4, 2, 2)
    expected = torch.ones(1, 4, 4, 2, 2)
    expected[:, 0] = 0
    assert torch.equal(latent, expected)


def test_crop_box_keeps_the_target_aspect():
    from allegro.ti2v.condition import crop_box

    assert crop_box(1080, 1920, 720, 1280) == crop_box(1080, 1920, 720, 1280)
    box = crop_box(1000, 1000, 720, 1280)
    assert (box.height, box.width) == (562, 1000) and box.top == 219 and box.left == 0
    box = crop_box(300, 1000, 720, 720)
    assert (box.top, box.left, box.height, box.width) == (0, 350, 300, 300)


def test_bad_condition_frames_are_refused():
    from allegro.ti2v.condition import latent_mask, pixel_condition

    with pytest.raises(ValueError, match="outside"):
        pixel_condition(torch.zeros(1, 3, 16, 16), [24], frames=24)
    with pytest.raises(ValueError, match="twice"):
        pixel_condition(torch.zeros(2, 3, 16, 16), [0, -24], frames=24)
    with pytest.raises(ValueError, match="multiple of 4"):
        latent_mask(torch.ones(1, 3, 10, 16, 16))


def _random_ti2v(zero_branches: bool, **config):
    from diffusers import AllegroTransformer3DModel

    from allegro.ti2v.transformer import AllegroTI2VTransformer3DModel

    torch.manual_seed(0)
    t2v = AllegroTransformer3DModel(**config).eval()
    ti2v = AllegroTI2VTransformer3DModel(**config).eval()
    missing = ti2v.load_state_dict(t2v.state_dict(), strict=False).missing_keys
    assert all(key.startswith("pos_embed_") for key in missing) and len(missing) == 9
    if not zero_branches:
        for key in missing:
            ti2v.get_parameter(key).data.normal_(0, 0.3)
    return t2v, ti2v


OTHER_CONFIG = dict(
    num_attention_heads=3,
    attention_head_dim=6,
    num_layers=1,
    cross_attention_dim=18,
    caption_channels=10,
    in_channels=4,
    out_channels=4,
    sample_frames=2,
    sample_height=6,
    sample_width=4,
)


def _inputs(ti2v, batch=2, frames=3, height=6, width=4):
    torch.manual_seed(1)
    return dict(
        hidden_states=torch.randn(batch, 12, frames, height, width),
        encoder_hidden_states=torch.randn(batch, 5, 10),
        encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])[:batch],
        timestep=torch.tensor([10.0, 600.0])[:batch],
        image_rotary_emb=_rope(ti2v, batch, frames, height, width),
        return_dict=False,
    )


def test_fresh_model_is_the_t2v_model_on_another_config():
    """Official zero init of the extra Linear layers: a new TI2V model computes exactly its
    T2V backbone, whatever the condition (another size and config than the goldens')."""
    t2v, ti2v = _random_ti2v(zero_branches=True, **OTHER_CONFIG)
    inputs = _inputs(ti2v)
    with torch.no_grad():
        expected = t2v(**{**inputs, "hidden_states": inputs["hidden_states"][:, :4]})[0]
        assert torch.equal(ti2v(**inputs)[0], expected)


def test_condition_channels_and_first_frame_change_the_output():
    _, ti2v = _random_ti2v(zero_branches=False, **OTHER_CONFIG)
    inputs = _inputs(ti2v)
    with torch.no_grad():
        base = ti2v(**inputs)[0]
        for channels in (slice(4, 8), slice(8, 12)):
            changed = inputs["hidden_states"].clone()
            changed[:, channels] += 1
            assert not torch.allclose(ti2v(**{**inputs, "hidden_states": changed})[0], base)
    with pytest.raises(ValueError, match="12 input channels"):
        ti2v(**{**inputs, "hidden_states": inputs["hidden_states"][:, :4]})


def test_official_config_keys_translate():
    from allegro.ti2v.transformer import diffusers_config

    config = diffusers_config({"sample_size": [90, 160], "sample_size_t": 22, "use_rope": True})
    assert config == {
        "sample_height": 90,
        "sample_width": 160,
        "sample_frames": 22,
        "interpolation_scale_t": 22 / 16,  # the official default, not diffusers' 22 // 16
    }
    with pytest.raises(ValueError, match="norm_type"):
        diffusers_config({"norm_type": "ada_norm"})


def test_cost_model_counts_the_ti2v_branches_exactly():
    """costs.ti2v_branch_flops against PyTorch's FLOP counter: TI2V forward minus T2V."""
    from torch.utils.flop_counter import FlopCounterMode

    from allegro import costs

    t2v, ti2v = _random_ti2v(zero_branches=False, **OTHER_CONFIG)
    inputs = _inputs(ti2v, batch=1, frames=3, height=6, width=4)
    counted = []
    for model, hidden in ((ti2v, inputs["hidden_states"]), (t2v, inputs["hidden_states"][:, :4])):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(**{**inputs, "hidden_states": hidden})
        counted.append(counter.get_total_flops())
    config = dict(ti2v.config)
    # frames 3 -> latent 3, 6x4 -> tokens 3*3*2 (the cost model works in pixels)
    expected = costs.ti2v_branch_flops(12, 48, 32, config, guidance=False)
    assert counted[0] - counted[1] == expected
