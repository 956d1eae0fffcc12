"""The step cache (cache-dit's DBCache) really skips transformer blocks, agrees with its own
statistics, is re-armed for every run, reproducible, and leaves no trace when off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from allegro.costs import STEP_CACHE_FIRST_BLOCKS, STEP_CACHE_WARMUP_STEPS
from allegro.engine import Engine
from allegro.errors import InvalidRequestError
from allegro.loading import PipelineCache, PipelineSpec
from allegro.request import GenerationRequest
from allegro.tiny import make_tiny
from allegro.video import read_frames, read_settings

STEPS = 12  # past the 8 warm-up steps, so some steps can be cached
LAYERS = 10  # more than the 8 blocks the cache always computes


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    model = make_tiny(tmp_path_factory.mktemp("tiny-10-blocks"), layers=LAYERS)
    return Engine(
        PipelineSpec(model=str(model)), tmp_path_factory.mktemp("cached"), cache=PipelineCache()
    )


def generate_counting_blocks(engine, step_cache: bool, **fields):
    """Generate, counting every transformer block forward and keeping the transformer's
    output at every step."""
    request = GenerationRequest(
        prompt="a red kite", seed=5, steps=STEPS, step_cache=step_cache, **fields
    )
    pipe = engine.load(request=request).pipe
    transformer = pipe.transformer
    calls = [0]
    predictions = []

    def count(*_):
        calls[0] += 1

    handles = [block.register_forward_hook(count) for block in transformer.transformer_blocks]
    handles.append(
        transformer.register_forward_hook(
            lambda _module, _args, output: predictions.append(output[0].detach().clone())
        )
    )
    try:
        result = engine.generate(request)
    finally:
        for handle in handles:
            handle.remove()
    return result, calls[0], torch.stack(predictions)


def test_step_cache_skips_blocks_as_its_statistics_say(engine):
    plain, plain_calls, plain_predictions = generate_counting_blocks(engine, False)
    cached, cached_calls, cached_predictions = generate_counting_blocks(engine, True)
    again, again_calls, again_predictions = generate_counting_blocks(engine, True)

    assert plain_calls == STEPS * LAYERS
    stats = read_settings(cached.video_path)["step_cache"]
    assert stats["library"] == "cache-dit DBCache"
    cached_steps = stats["cached_steps"]
    assert cached_steps, "the cache skipped nothing: the test cannot tell it works"
    assert min(cached_steps) >= STEP_CACHE_WARMUP_STEPS  # no cache during warm-up
    # Every cached step still runs the first 8 blocks and skips the other 2: the block
    # calls counted here equal the library's own account.
    skipped = len(cached_steps) * (LAYERS - STEP_CACHE_FIRST_BLOCKS)
    assert cached_calls == plain_calls - skipped == stats["computed_blocks"]
    assert stats["kept_fraction"] == pytest.approx(cached_calls / plain_calls, abs=1e-4)
    assert cached.settings["step_cache"] == stats

    # Re-armed for each run: the second run caches the same steps (no state carried over
    # from the first), and with the same seed it makes the same video.
    assert read_settings(again.video_path)["step_cache"] == stats
    assert again_calls == cached_calls
    torch.testing.assert_close(again_predictions, cached_predictions, rtol=0, atol=0)
    np.testing.assert_array_equal(
        read_frames(again.video_path)[0], read_frames(cached.video_path)[0]
    )
    # Reusing blocks changes the prediction of cached steps only.
    torch.testing.assert_close(
        cached_predictions[: min(cached_steps)], plain_predictions[: min(cached_steps)]
    )
    assert not torch.equal(cached_predictions, plain_predictions)

    # Off restores diffusers' plain pipeline and transformer, bit for bit.
    pipe = engine.load().pipe
    assert not getattr(type(pipe), "_is_cached", False)
    assert pipe.transformer.forward.__func__ is type(pipe.transformer).forward  # unwrapped
    off, off_calls, off_predictions = generate_counting_blocks(engine, False)
    assert off_calls == plain_calls
    assert read_settings(off.video_path)["step_cache"] is False
    torch.testing.assert_close(off_predictions, plain_predictions, rtol=0, atol=0)
    np.testing.assert_array_equal(read_frames(off.video_path)[0], read_frames(plain.video_path)[0])


def test_fast_mode_and_step_cache_are_alternatives(engine):
    with pytest.raises(InvalidRequestError, match="alternatives"):
        engine.generate(
            GenerationRequest(prompt="a kite", steps=2, fast_mode=True, step_cache=True)
        )


def test_step_cache_on_image_to_video(tmp_path_factory, tmp_path):
    """Allegro-TI2V's pipeline is an AllegroPipeline subclass and its transformer runs
    diffusers' T2V blocks with the condition added around them (allegro/ti2v/): cache-dit
    caches those blocks as for T2V, the condition reaches every step, and disarming leaves
    both pipeline classes plain."""
    from diffusers import AllegroPipeline
    from PIL import Image

    from allegro.ti2v.pipeline import AllegroTI2VPipeline

    model = make_tiny(tmp_path_factory.mktemp("tiny-ti2v-10-blocks"), ti2v=True, layers=LAYERS)
    engine = Engine(PipelineSpec(model=str(model)), tmp_path, cache=PipelineCache())
    image = tmp_path / "first.png"
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    masks: list[int] = []  # the mask branch runs once per step, on the 12-channel input
    pipe = engine.load(request=GenerationRequest(prompt="a kite", first_image=str(image))).pipe
    handle = pipe.transformer.pos_embed_mask[0].register_forward_hook(
        lambda _module, args, _output: masks.append(args[0].shape[1])
    )
    try:
        plain, plain_calls, plain_predictions = generate_counting_blocks(
            engine, False, first_image=str(image)
        )
        cached, cached_calls, cached_predictions = generate_counting_blocks(
            engine, True, first_image=str(image)
        )
    finally:
        handle.remove()

    assert masks == [4] * (2 * STEPS)  # the condition's mask channels, at every step of both
    stats = cached.settings["step_cache"]
    assert stats["cached_steps"] and min(stats["cached_steps"]) >= STEP_CACHE_WARMUP_STEPS
    assert plain_calls == STEPS * LAYERS
    assert cached_calls == stats["computed_blocks"] < plain_calls
    first_cached = min(stats["cached_steps"])
    torch.testing.assert_close(cached_predictions[:first_cached], plain_predictions[:first_cached])
    assert not torch.equal(cached_predictions, plain_predictions)
    assert plain.settings["step_cache"] is False
    for cls in (AllegroTI2VPipeline, AllegroPipeline):
        assert not getattr(cls, "_is_cached", False)
