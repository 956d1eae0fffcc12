"""Request validation: every message is one a non-programmer understands."""

import pytest

from allegro.errors import InvalidRequestError
from allegro.request import (
    DEFAULT_NEGATIVE_PROMPT,
    MAX_SEED,
    GenerationRequest,
    NativeSize,
    apply_template,
    check_request,
    parse_seed,
    resolve_request,
)

NATIVE = NativeSize(88, 720, 1280)


def resolve(**fields):
    return resolve_request(GenerationRequest(**{"prompt": "pink fish", **fields}), NATIVE)


def test_defaults_are_the_official_settings():
    request = resolve()
    assert (request.steps, request.guidance_scale) == (100, 7.5)
    assert (request.frames, request.height, request.width) == (88, 720, 1280)
    assert request.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    assert request.use_template is True
    assert 0 <= request.seed <= MAX_SEED


def test_template_lowercases_and_strips_like_the_official_script():
    text = apply_template("  Pink Fish Swim  ")
    assert text.startswith("(masterpiece), (best quality), (ultra-detailed), (unwatermarked), ")
    assert "pink fish swim emotional, harmonious" in text


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_empty_prompt(prompt):
    with pytest.raises(InvalidRequestError, match="Please write a prompt"):
        resolve(prompt=prompt)


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        (-5, "between 0 and 4294967295"),
        (2**32, "between 0"),
        ("abc", "whole number"),
        (1.5, "whole number"),
    ],
)
def test_bad_seeds(seed, message):
    with pytest.raises(InvalidRequestError, match=message):
        resolve(seed=seed)


@pytest.mark.parametrize("seed", [None, "", -1, "-1"])
def test_random_seed_is_chosen_and_recorded(seed):
    assert parse_seed(seed) is None
    assert isinstance(resolve(seed=seed).seed, int)


def test_seed_as_text_or_float_number_is_accepted():
    assert resolve(seed="42").seed == 42
    assert resolve(seed=7.0).seed == 7


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"steps": 0}, "Steps must be between 1 and 500"),
        ({"steps": "many"}, "Steps must be a whole number"),
        ({"guidance_scale": 0.5}, "Guidance scale must be between 1 and 20"),
        ({"guidance_scale": "high"}, "Guidance scale must be a number"),
        ({"guidance_scale": float("nan")}, "finite"),
    ],
)
def test_steps_and_guidance(fields, message):
    with pytest.raises(InvalidRequestError, match=message):
        resolve(**fields)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"frames": 50}, "50 frames"),
        ({"height": 721}, "height 721"),
        ({"width": 1296}, "width 1296"),
        ({"height": 1280, "width": 1280}, "1280x1280"),
        ({"height": 64}, "height 64"),
    ],
)
def test_sizes_the_model_cannot_make_list_what_is_accepted(fields, named):
    with pytest.raises(InvalidRequestError) as caught:
        resolve(**fields)
    message = str(caught.value)
    assert named in message
    assert "24, 40, 56, 72, 88, 104, 120 frames" in message
    assert "multiples of 16" in message


@pytest.mark.parametrize(
    ("frames", "height", "width"),
    [(88, 720, 1280), (40, 720, 1280), (40, 368, 640), (88, 1280, 720), (40, 640, 368)],
)
def test_official_sizes_and_portrait_forms_are_accepted(frames, height, width):
    request = resolve(frames=frames, height=height, width=width)
    assert (request.frames, request.height, request.width) == (frames, height, width)


def test_check_request_validates_only_what_is_set():
    check_request(GenerationRequest(prompt="a cat"))
    with pytest.raises(InvalidRequestError):
        check_request(GenerationRequest(prompt="a cat", steps=-1))
