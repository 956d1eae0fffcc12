"""The TI2V pipeline on a tiny random checkpoint: the condition reaches the transformer at
every step for both guidance halves, random draws come in the official order, a seed
reproduces the video."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

FRAMES, SIZE = 24, 160


@pytest.fixture(scope="module")
def tiny_ti2v():
    from allegro.tiny import make_tiny_pipeline

    return make_tiny_pipeline(seed=0, ti2v=True)


def _condition(indices=(0,), seed=3):
    from allegro.ti2v.pipeline import ConditionFrames

    torch.manual_seed(seed)
    return ConditionFrames(torch.rand(len(indices), 3, SIZE, SIZE) * 2 - 1, tuple(indices))


def _run(pipe, condition, seed=5, steps=2, **kwargs):
    return pipe(
        prompt="a red fox",
        negative_prompt="",
        num_inference_steps=steps,
        guidance_scale=8.0,
        num_frames=FRAMES,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        clean_caption=False,
        condition=condition,
        **kwargs,
    ).frames


def test_condition_reaches_every_step_and_both_guidance_halves(tiny_ti2v, monkeypatch):
    seen = []
    forward = tiny_ti2v.transformer.forward

    def record(*args, **kwargs):  # what the forward itself receives, after every hook
        seen.append(kwargs["hidden_states"].detach().clone())
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_ti2v.transformer, "forward", record)
    _run(tiny_ti2v, _condition((0, -1)), steps=3)
    monkeypatch.undo()
    assert len(seen) == 3
    # The mask written by the pipeline: last pixel frame 23 is latent channel 3, frame 5.
    expected_mask = torch.ones(1, 4, 6, 20, 20)
    expected_mask[:, 0, 0] = 0
    expected_mask[:, 3, 5] = 0
    first_condition = seen[0][:1, 4:8]
    for hidden in seen:
        assert hidden.shape == (2, 12, 6, 20, 20)  # guidance: [negative, positive]
        for half in hidden:
            assert torch.equal(half[8:12], expected_mask[0])
            assert torch.equal(half[4:8], first_condition[0])  # same latent every step
    assert first_condition.abs().sum() > 0
    assert not tiny_ti2v.transformer._forward_pre_hooks  # the pipeline removed its hook


def test_random_draws_follow_the_official_order(tiny_ti2v, monkeypatch):
    """Initial noise, then the VAE posterior sample, then the scheduler's noise."""
    import diffusers.models.autoencoders.vae as vae_module
    import diffusers.pipelines.allegro.pipeline_allegro as pipeline_module
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as scheduler_module

    draws = []
    for name, module in (
        ("noise", pipeline_module),
        ("posterior", vae_module),
        ("scheduler", scheduler_module),
    ):
        real = module.randn_tensor

        def recording(*args, _real=real, _name=name, **kwargs):
            assert kwargs.get("generator") is not None
            draws.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, "randn_tensor", recording)
    # Model offload's hooks (GPU only): the VAE's is asked to offload right after encoding.
    offloads = []
    hooks = [
        SimpleNamespace(model=tiny_ti2v.text_encoder, offload=lambda: offloads.append("text")),
        SimpleNamespace(model=tiny_ti2v.vae, offload=lambda: offloads.append(list(draws))),
    ]
    monkeypatch.setattr(tiny_ti2v, "_all_hooks", hooks, raising=False)
    # diffusers re-arms the offload at the end of a call (pipeline_utils.py:1291): GPU only.
    monkeypatch.setattr(tiny_ti2v, "enable_model_cpu_offload", lambda **_: None)
    _run(tiny_ti2v, _condition(), steps=2)
    assert draws == ["noise", "posterior", "scheduler", "scheduler"]
    assert offloads == [["noise", "posterior"]]


def test_seed_reproduces_and_condition_matters(tiny_ti2v):
    first = _run(tiny_ti2v, _condition())
    assert torch.equal(_run(tiny_ti2v, _condition()), first)
    assert not torch.equal(_run(tiny_ti2v, _condition(seed=4)), first)
    assert not torch.equal(_run(tiny_ti2v, _condition(), seed=6), first)


def test_condition_is_required(tiny_ti2v):
    with pytest.raises(ValueError, match="condition frame"):
        _run(tiny_ti2v, None)
