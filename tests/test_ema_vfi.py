"""EMA-VFI: our network against golden outputs of the authors' reference code, plus loading,
the user-facing interpolator and the (offline) weights lookup.

The golden files (tests/data/ema_vfi_golden/, see its README.md) come from the reference run
with fake weights that the fill rule below rebuilds from the keys files alone.
"""

from __future__ import annotations

import hashlib
import logging
import math
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from allegro.errors import InterpolationError
from allegro.interpolation import ema_vfi_weights
from allegro.interpolation.ema_vfi import (
    VARIANTS,
    EmaVfiInterpolator,
    EmaVfiNet,
    load_checkpoint,
    pad_to_multiple,
)
from allegro.interpolation.ema_vfi_weights import WEIGHTS_ENV_VAR, availability, find_weights

GOLDEN = Path(__file__).parent / "data" / "ema_vfi_golden"
FAKE_WEIGHTS_SHA256 = {
    "ours_small_t": "9b164ec67aa27140653be893dcf72886167935a140bbc2593f3acb610312f288",
    "ours_t": "c8bf996f6beb2ed72f7cc2087bc682dc6679e90551e18196bc81b28c95e3a3e5",
}
TIMESTEPS = {"t050": 0.5, "t025": 0.25}
# Reference float32 vs float64 differs by up to 6e-6; these leave room for BLAS differences.
TOLERANCE = {"pred": 1e-4, "pred_padded": 1e-4, "pred_tta": 1e-4, "flow": 1e-3, "mask": 1e-4}


def fake_checkpoint(variant: str) -> tuple[dict[str, torch.Tensor], str]:
    """The golden README's fake weights as a `module.`-prefixed checkpoint, and their sha256.

    Line i of the keys file is filled from a generator seeded with i. The lazily registered
    mask buffers are written with a shape of their own: a loader must drop them unread.
    """
    lines = (GOLDEN / f"{variant}.keys.tsv").read_text().splitlines()[1:]
    checkpoint: dict[str, torch.Tensor] = {}
    digest = hashlib.sha256()
    for index, line in enumerate(lines):
        key, shape_text, _, fill, _ = line.split("\t")
        shape = [int(size) for size in shape_text.split(",")]
        generator = torch.Generator().manual_seed(index)
        if fill == "dropped":
            checkpoint[key] = torch.full((3, 49, 49) if key.endswith("attn_mask") else (1,), 7.0)
            continue
        if fill == "randn":
            scale = 1.0 / math.sqrt(math.prod(shape[1:]))
            tensor = torch.randn(shape, generator=generator, dtype=torch.float32) * scale
        else:
            tensor = torch.full(shape, {"ones": 1.0, "zeros": 0.0, "prelu": 0.25}[fill])
        digest.update(tensor.numpy().tobytes())
        checkpoint[key] = tensor
    return checkpoint, digest.hexdigest()


def golden(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(GOLDEN / f"{name}.npy"))


def max_diff(actual: torch.Tensor, name: str) -> float:
    expected = golden(name)
    assert actual.shape == expected.shape, name
    return (actual - expected).abs().max().item()


@pytest.fixture(scope="module", autouse=True)
def _few_threads() -> Iterator[None]:
    # The test machines are small and shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory) -> Callable[[str], tuple[Path, EmaVfiNet]]:
    """variant -> (checkpoint path, network loaded from it), each built once per module."""
    built: dict[str, tuple[Path, EmaVfiNet]] = {}

    def get(variant: str) -> tuple[Path, EmaVfiNet]:
        if variant not in built:
            checkpoint, digest = fake_checkpoint(variant)
            assert digest == FAKE_WEIGHTS_SHA256[variant], "fill rule does not match the README"
            path = tmp_path_factory.mktemp(variant) / f"{variant}.pkl"
            torch.save(checkpoint, path)
            model = load_checkpoint(path)  # the variant is worked out from the weights
            assert model.config == VARIANTS[variant]
            built[variant] = path, model
        return built[variant]

    return get


@pytest.mark.parametrize("variant", ["ours_small_t", "ours_t"])
def test_outputs_match_the_reference(fake_model, variant: str) -> None:
    _, model = fake_model(variant)
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        # Case C runs after case A on the same instance: both have the same padded token
        # areas, which the reference's stale mask cache would mix up.
        for case in ("case_a", "case_c"):
            img0, img1 = golden(f"{case}.img0"), golden(f"{case}.img1")
            for tag, timestep in TIMESTEPS.items():
                out = model(img0, img1, timestep)
                diffs[f"{case}.{tag}.pred"] = max_diff(out.pred, f"{variant}.{case}.{tag}.pred")
                if case == "case_a":
                    diffs[f"{case}.{tag}.flow"] = max_diff(out.flow, f"{variant}.{case}.{tag}.flow")
                    diffs[f"{case}.{tag}.mask"] = max_diff(out.mask, f"{variant}.{case}.{tag}.mask")
        tta = model.inference(golden("case_a.img0"), golden("case_a.img1"), 0.5, tta=True)
        diffs["case_a.t050.pred_tta"] = max_diff(tta, f"{variant}.case_a.t050.pred_tta")

        img0, (rows, cols) = pad_to_multiple(golden("case_b.img0"))
        img1, _ = pad_to_multiple(golden("case_b.img1"))
        for tag, timestep in TIMESTEPS.items():
            padded = model.inference(img0, img1, timestep)
            name = f"{variant}.case_b.{tag}"
            diffs[f"case_b.{tag}.pred_padded"] = max_diff(padded, f"{name}.pred_padded")
            diffs[f"case_b.{tag}.pred"] = max_diff(padded[..., rows, cols], f"{name}.pred")

    print(variant, {name: f"{diff:.1e}" for name, diff in diffs.items()})
    failures = {
        name: diff for name, diff in diffs.items() if diff > TOLERANCE[name.rsplit(".", 1)[1]]
    }
    assert not failures, f"{variant} differs from the reference: {failures}"


def test_interpolator_feeds_bgr_and_returns_rgb(fake_model, caplog) -> None:
    path, model = fake_model("ours_small_t")
    rng = np.random.default_rng(0)
    before = rng.integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    after = np.roll(before, 2, axis=2)

    with caplog.at_level(logging.WARNING):
        interpolator = EmaVfiInterpolator(path, device="cpu")
    assert "CPU" in caplog.text
    frames = interpolator.midframes(before, after)
    assert interpolator.name == "ema-vfi" and interpolator.batch_size >= 1
    assert frames.shape == before.shape and frames.dtype == np.uint8

    def network_frames(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The network fed the arrays' channels in the order given."""
        img0, (rows, cols) = pad_to_multiple(torch.from_numpy(first).permute(0, 3, 1, 2) / 255)
        img1, _ = pad_to_multiple(torch.from_numpy(second).permute(0, 3, 1, 2) / 255)
        with torch.inference_mode():
            pred = model.inference(img0, img1)[..., rows, cols]
        return (pred * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    bgr_frames = network_frames(before[..., ::-1].copy(), after[..., ::-1].copy())
    np.testing.assert_array_equal(frames, bgr_frames[..., ::-1])
    # Channel order matters to the network, so the check above would catch a missing swap.
    assert not np.array_equal(frames, network_frames(before, after))


def test_registry_and_driver_run_the_real_network(fake_model) -> None:
    """The unfaked path the engine takes: registry -> EmaVfiInterpolator -> driver."""
    from allegro.interpolation import create_interpolator, method_availability
    from allegro.interpolation.driver import interpolate_frames

    path, _ = fake_model("ours_small_t")
    assert method_availability("ema-vfi", path).available
    interpolator = create_interpolator("ema-vfi", weights=path, device="cpu")
    base = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, 2 * index, axis=1) for index in range(3)])  # a slow pan
    result = interpolate_frames(frames, interpolator)
    assert result.frames.shape == (6, 48, 64, 3)
    assert result.scene_cuts == 0  # the pairs went through the network
    np.testing.assert_array_equal(result.frames[0::2], frames)
    direct = interpolator.midframes(frames[:1], frames[1:2])[0]
    np.testing.assert_array_equal(result.frames[1], direct)


def test_explicit_variant_must_match_the_weights(fake_model) -> None:
    path, _ = fake_model("ours_small_t")
    assert load_checkpoint(path, variant="ours_small").config == VARIANTS["ours_small"]
    with pytest.raises(InterpolationError, match="does not match"):
        load_checkpoint(path, variant="ours_t")
    with pytest.raises(InterpolationError, match="Unknown EMA-VFI variant"):
        load_checkpoint(path, variant="ours_huge")


@pytest.mark.parametrize(
    "write",
    [
        lambda path: path.write_bytes(b"definitely not a checkpoint"),
        lambda path: torch.save({"weight": torch.zeros(2)}, path),
        lambda path: torch.save([torch.zeros(2)], path),
    ],
    ids=["garbage", "other-network", "not-a-state-dict"],
)
def test_non_checkpoint_file_is_a_clear_error(tmp_path, write) -> None:
    path = tmp_path / "ours_t.pkl"
    write(path)
    with pytest.raises(InterpolationError, match="not an EMA-VFI checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(InterpolationError, match="not found"):
        load_checkpoint(tmp_path / "ours_t.pkl")


@pytest.fixture
def empty_offline_hub(tmp_path, monkeypatch) -> Path:
    """No weights anywhere, and any network connection fails the test."""
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variables when first imported; point it at the empty cache.
    huggingface_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(huggingface_constants, "HF_HUB_CACHE", str(hub))

    def refuse(*args, **kwargs):
        raise AssertionError("the weights lookup tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return hub


def test_no_weights_anywhere_is_unavailable_offline(empty_offline_hub) -> None:
    assert find_weights() is None
    result = availability()
    assert not result.available
    for hint in (WEIGHTS_ENV_VAR, ema_vfi_weights.WEIGHTS_FLAG, "ours_t.pkl", "drive.google.com"):
        assert hint in result.reason


def test_missing_explicit_path_is_named(empty_offline_hub, tmp_path, monkeypatch) -> None:
    missing = tmp_path / "nowhere" / "ours_t.pkl"
    result = availability(str(missing))
    assert not result.available and str(missing) in result.reason
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(missing))
    result = availability()
    assert not result.available and str(missing) in result.reason


def test_weights_are_found_locally_in_order(empty_offline_hub, tmp_path, monkeypatch) -> None:
    # A hub cache entry as huggingface_hub lays it out: refs/main names the snapshot.
    repo = empty_offline_hub / f"models--{ema_vfi_weights.EMA_VFI_HUB_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    cached = repo / "snapshots" / "0123abcd" / ema_vfi_weights.EMA_VFI_HUB_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert find_weights() == cached
    assert availability().available

    from_env = tmp_path / "env.pkl"
    from_env.write_bytes(b"weights")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(from_env))
    assert find_weights() == from_env

    explicit = tmp_path / "explicit.pkl"
    explicit.write_bytes(b"weights")
    assert find_weights(str(explicit)) == explicit
