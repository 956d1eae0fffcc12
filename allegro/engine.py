"""The generation engine every front end uses: one request in, one MP4 out, with a stream
of progress events, cancel, and out-of-memory recovery.

Stages: loading (once per process) -> encoding prompt -> denoising -> decoding ->
[interpolating] -> saving. Denoising runs diffusers' own ``AllegroPipeline.__call__`` with
cached prompt embeddings and ``output_type="latent"``; we decode with the pipeline's own
``decode_latents`` so decoding is its own observable, cancellable stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from allegro import __version__
from allegro.costs import Hardware, estimate_request, request_shape
from allegro.errors import AllegroError, Cancelled, GpuOutOfMemoryError, InvalidRequestError
from allegro.events import CancelToken, ProgressCallback, ProgressEvent, Stage, ignore_progress
from allegro.loading import (
    PIPELINE_CACHE,
    LoadedPipeline,
    PipelineCache,
    PipelineSpec,
    device_context,
    free_accelerator_memory,
)
from allegro.request import (
    FPS,
    TI2V_MODEL,
    GenerationRequest,
    positive_prompt,
    resolve_request,
)
from allegro.settings import InterpolationRecord, VideoSettings, request_record
from allegro.tiling import TileGeometry, apply_tiling, fit_tiling
from allegro.video import release_path

if TYPE_CHECKING:
    from allegro.interpolation.base import Interpolator
    from allegro.interpolation.driver import InterpolationCounts, InterpolationResult
    from allegro.prompts import EncodedPrompt
    from allegro.ti2v.inputs import ConditionInputs

PREVIEW_EVERY = 2  # steps between live previews (each costs one 4x3 matrix product)
INTERPOLATED_FPS = 30
T = TypeVar("T")

# Share of the whole job each stage takes, for one progress bar over every stage.
_STAGE_WEIGHTS = {
    Stage.ENCODING: 0.02,
    Stage.ENCODING_IMAGES: 0.02,
    Stage.DENOISING: 0.80,
    Stage.DECODING: 0.12,
    Stage.INTERPOLATING: 0.04,
    Stage.SAVING: 0.02,
}


@dataclass(frozen=True)
class GenerationResult:
    video_path: Path
    settings_path: Path
    poster_path: Path
    record: VideoSettings
    seconds: float
    warnings: tuple[str, ...] = ()

    @property
    def settings(self) -> dict[str, Any]:
        """The saved settings as JSON (what the API and the page show)."""
        return self.record.to_dict()

    @property
    def seed(self) -> int:
        return int(self.record.seed)  # type: ignore[arg-type] - a made video has its seed


@dataclass
class _ProgressClock:
    """Turns stage-local progress into whole-job events with elapsed time and ETA."""

    on_progress: ProgressCallback
    interpolate: bool
    encode_images: bool = False
    started: float = field(default_factory=time.monotonic)

    def _weights(self) -> dict[Stage, float]:
        weights = dict(_STAGE_WEIGHTS)
        if not self.interpolate:
            weights.pop(Stage.INTERPOLATING)
        if not self.encode_images:
            weights.pop(Stage.ENCODING_IMAGES)
        total = sum(weights.values())
        return {stage: weight / total for stage, weight in weights.items()}

    def emit(
        self,
        stage: Stage,
        within: float = 0.0,
        step: int = 0,
        total: int = 0,
        eta: float | None = None,
        message: str = "",
        preview: np.ndarray | None = None,
    ) -> None:
        weights = self._weights()
        done = 0.0
        for candidate, weight in weights.items():
            if candidate == stage:
                done += weight * min(max(within, 0.0), 1.0)
                break
            done += weight
        fraction = 1.0 if stage == Stage.DONE else min(done, 0.999)
        self.on_progress(
            ProgressEvent(
                stage=stage,
                fraction=fraction,
                step=step,
                total=total,
                elapsed=time.monotonic() - self.started,
                eta=eta,
                message=message,
                preview=preview,
            )
        )


def output_path_for(directory: Path, request: GenerationRequest, now: datetime) -> Path:
    """``20261125-031500-seed7-pink-fish-swim.mp4``: sortable and readable, and reserved for
    the caller (release it with ``release_path``). The same prompt and seed twice in one
    second get ``-2``, ``-3``…: a finished video is never overwritten, and two workers never
    pick the same name (the reservation is an ``O_EXCL`` file)."""
    from allegro.video import reserve_path

    slug = re.sub(r"[^a-z0-9]+", "-", request.prompt.lower()).strip("-")[:40] or "video"
    stem = f"{now:%Y%m%d-%H%M%S}-seed{request.seed}-{slug}"
    candidate, number = stem, 1
    while not reserve_path(directory / f"{candidate}.mp4"):
        number += 1
        candidate = f"{stem}-{number}"
    return directory / f"{candidate}.mp4"


@contextlib.contextmanager
def _count_decoded_tiles(vae, on_tile, part: str = "decoder") -> Iterator[None]:
    """Report each decoded (or, with part="encoder", encoded) VAE tile (the tiled decode
    has no callback of its own)."""
    handle = getattr(vae, part).register_forward_hook(lambda *_: on_tile())
    try:
        yield
    finally:
        handle.remove()


def _run_on_gpu(loaded: LoadedPipeline, work: Callable[[], T], advice: Callable[[], str]) -> T:
    """``work()``, with a CUDA out-of-memory error turned into ``advice()``; after any failure
    or cancel the GPU is left clean for the next request. (On success the pipeline has
    already released its offload hooks itself.)

    An OOM or a cancel is released only after its ``except`` block: until then the traceback
    keeps the failed run's frames, and the activations they hold, alive, so empty_cache
    would return little. Their replacement is raised without that traceback. A bug keeps its
    traceback for the log, so it is released where it is caught."""
    import torch

    try:
        return work()
    except torch.OutOfMemoryError:
        failure: AllegroError = GpuOutOfMemoryError(advice())
    except Cancelled as cancelled:
        failure = Cancelled(*cancelled.args)
    except BaseException:
        _release(loaded)
        raise
    _release(loaded)
    raise failure


def _release(loaded: LoadedPipeline) -> None:
    with contextlib.suppress(Exception):
        loaded.pipe.maybe_free_model_hooks()  # offloaded components back to the CPU
    free_accelerator_memory()


def loaded_hardware(loaded: LoadedPipeline) -> Hardware:
    """What the cost model needs to know about a loaded pipeline and its machine."""
    spec = loaded.spec
    return Hardware(
        gpu_name=loaded.device_name,
        offload=loaded.offload.mode,
        precision=spec.precision or "bf16",
        vae_precision=spec.vae_precision,
        transformer_config=dict(loaded.pipe.transformer.config),
        memory_profile=spec.memory_profile,
        gpu_memory_bytes=loaded.gpu_memory_bytes,
        multiprocessors=loaded.multiprocessors,
        compiled=loaded.compiled,
    )


def estimated_seconds(loaded: LoadedPipeline, request: GenerationRequest) -> float | None:
    """The cost model's time for the rest of the job once the prompts are encoded, until
    real steps are measured (the same estimator as the page's hint and ZeroGPU's duration);
    None where it has nothing to say (CPU, or a transformer it does not model)."""
    estimate = estimate_request(request_shape(request), loaded_hardware(loaded))
    return None if estimate is None else estimate.after_text_seconds


def oom_advice(loaded: LoadedPipeline, request: GenerationRequest) -> str:
    """What to change after running out of GPU memory, most effective first: the step cache
    or fast mode off (fast mode's attention cache is the largest single item), then offload
    modes, smaller memory profiles and a smaller size, each counted with the step cache or
    fast mode as asked, and only those that fit the GPU where known."""
    from allegro import costs

    offload = loaded.offload.mode
    precision = loaded.spec.precision or "bf16"
    vae_precision = loaded.spec.vae_precision
    current = costs.memory_profile(loaded.spec.memory_profile)
    fast = request.fast_mode
    size = f"{request.frames}x{request.height}x{request.width}"

    def need(
        mode: str,
        frames: int,
        height: int,
        width: int,
        fast_mode: bool = fast,
        profile: str = current.name,
    ) -> int:
        return costs.estimate_memory(
            mode,
            precision,
            frames,
            height,
            width,
            vae_precision,
            fast_mode=fast_mode,
            profile=profile,
            step_cache=request.step_cache,
        ).peak_bytes

    def fits(size_bytes: int) -> bool:
        capacity = loaded.gpu_memory_bytes
        return capacity is None or size_bytes <= capacity

    shape = (request.frames, request.height, request.width)
    suggestions = []
    if request.step_cache:
        buffers = costs.step_cache_buffer_bytes(loaded.pipe.transformer.config, *shape)
        suggestions.append(f"turn the step cache off (saves about {buffers / 1e9:.1f} GB)")
    if fast:
        without = need(offload, *shape, fast_mode=False)
        suggestions.append(f"turn fast mode off (about {without / 1e9:.1f} GB)")
    for mode in costs.OFFLOAD_ORDER[costs.OFFLOAD_ORDER.index(offload) + 1 :]:
        if mode in current.offload_modes and fits(mode_need := need(mode, *shape)):
            suggestions.append(
                f"start with --offload {mode} (needs about {mode_need / 1e9:.1f} GB)"
            )
    for profile in costs.MEMORY_PROFILES.values():
        smaller = (profile.fp8_transformer >= current.fp8_transformer) and (
            profile.int8_text_encoder >= current.int8_text_encoder
        )
        if profile == current or not smaller or offload not in profile.offload_modes:
            continue
        if fits(profile_need := need(offload, *shape, profile=profile.name)):
            suggestions.append(
                f"start with --memory-profile {profile.name} "
                f"(needs about {profile_need / 1e9:.1f} GB)"
            )
    smaller = need(offload, 40, 368, 640)
    suggestions.append(
        f"make a smaller video, e.g. 40 frames at 368x640 (about {smaller / 1e9:.1f} GB "
        f"with offload '{offload}')"
    )
    fast_note = " and fast mode" if fast else ""
    return (
        f"The GPU ran out of memory making a {size} video with offload '{offload}'{fast_note}. "
        "Settings that should fit: " + "; or ".join(suggestions) + ". The app keeps running."
    )


def interpolation_oom_advice(method: str) -> str:
    return (
        f"The GPU ran out of memory interpolating to {INTERPOLATED_FPS} fps with '{method}', "
        f"so the video was saved at {FPS} fps. The flow method runs on the CPU; or "
        "interpolate it later with `python -m allegro interpolate`."
    )


def fast_mode_off_reason(loaded: LoadedPipeline, request: GenerationRequest) -> str | None:
    """Why this request cannot run in fast mode here (said to the user), or None."""
    if not request.fast_mode:
        return None
    from allegro import costs

    return costs.fast_mode_blocker(
        loaded.gpu_memory_bytes,
        loaded.compiled,
        loaded.offload.mode,
        loaded.spec.precision or "bf16",
        request.frames,
        request.height,
        request.width,
        loaded.spec.vae_precision,
        loaded.pipe.transformer.config,
        guidance=request.guidance_scale > 1,
        profile=loaded.spec.memory_profile,
    )


class Engine:
    """Makes videos from requests with the process's cached pipeline."""

    def __init__(
        self,
        spec: PipelineSpec,
        output_dir: str | Path,
        ema_vfi_weights: str | None = None,
        cache: PipelineCache = PIPELINE_CACHE,
        ti2v_spec: PipelineSpec | None = None,
    ) -> None:
        self.spec = spec
        self.output_dir = Path(output_dir)
        self.ema_vfi_weights = ema_vfi_weights
        self.cache = cache
        # The model for image-to-video requests (None: ``spec`` serves every request).
        self.ti2v_spec = ti2v_spec

    def spec_for(self, request: GenerationRequest) -> PipelineSpec:
        if request.image_to_video and self.ti2v_spec is not None:
            return self.ti2v_spec
        return self.spec

    def load(
        self,
        on_progress: ProgressCallback = ignore_progress,
        request: GenerationRequest | None = None,
    ) -> LoadedPipeline:
        spec = self.spec if request is None else self.spec_for(request)
        return self.cache.get(spec, on_progress)

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback = ignore_progress,
        cancel: CancelToken | None = None,
        output_path: str | Path | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> GenerationResult:
        """Make one video. Raises AllegroError subclasses with readable messages; on
        cancel or error no file is left behind."""
        with device_context(self.cache.device):  # this engine's GPU, for this thread
            return self._generate(request, on_progress, cancel, output_path, labels)

    def _generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        cancel: CancelToken | None,
        output_path: str | Path | None,
        labels: Mapping[str, str] | None,
    ) -> GenerationResult:
        cancel = cancel or CancelToken()
        clock = _ProgressClock(
            on_progress,
            interpolate=bool(request.interpolate),
            encode_images=request.image_to_video,
        )
        # Loading is not cancellable: other requests wait for the same load.
        loaded = self.load(on_progress, request)
        request = resolve_request(request, loaded.native)
        _check_task(loaded, request)
        if request.interpolate:
            self._check_interpolation(request)  # before the denoising, not after
        condition = None
        if request.image_to_video:
            from allegro.ti2v.inputs import read_condition

            condition = read_condition(request)
        cancel.raise_if_cancelled()
        clock.emit(Stage.ENCODING, message="Encoding the prompt …")
        # Caption cleaning is CPU work (quadratic in the text's length in diffusers): done
        # before taking the GPU, so a long prompt never holds the lock, and cancellable.
        texts = clean_texts(loaded.pipe, request, cancel)
        prompts = None
        if loaded.offload.mode == "none":
            # With no offload the text encoder never moves and one prompt (at most 512
            # tokens) needs megabytes, so it is encoded before the lock too. Offload hooks
            # move whole modules between devices when called (accelerate hooks.py
            # CpuOffload.pre_forward; diffusers hooks/group_offloading.py onload_), which
            # must not happen during another job's denoising: there it waits for the lock.
            prompts = _encode_texts(loaded, texts, cancel)

        warnings: list[str] = []
        run_info: dict[str, Any] = {}  # what the run's accelerations report
        if reason := fast_mode_off_reason(loaded, request):
            warnings.append(f"Fast mode was switched off: {reason}.")
            request = replace(request, fast_mode=False)
        fps: float = FPS
        interpolation: InterpolationRecord | None = None
        with loaded.run_lock:  # one job on the GPU at a time, interpolation included
            frames = _run_on_gpu(
                loaded,
                lambda: self._make_frames(
                    loaded,
                    request,
                    clock,
                    cancel,
                    warnings,
                    prompts or texts,
                    run_info,
                    condition,
                ),
                lambda: oom_advice(loaded, request),
            )
            if request.interpolate:
                from allegro.interpolation import DEFAULT_METHOD

                source = frames
                method = request.interpolation_method or DEFAULT_METHOD
                try:
                    frames, interpolation = _run_on_gpu(
                        loaded,
                        lambda: _run_interpolation(
                            source, self._interpolator(loaded, request), clock, cancel
                        ),
                        lambda: interpolation_oom_advice(method),
                    )
                    fps = INTERPOLATED_FPS
                except GpuOutOfMemoryError as error:  # the video itself is kept, at 15 fps
                    warnings.append(str(error))
        cancel.raise_if_cancelled()

        clock.emit(Stage.SAVING, message="Saving the video …")
        now = datetime.now(timezone.utc)
        seconds = time.monotonic() - clock.started
        settings = self._settings(
            loaded, request, fps, interpolation, seconds, now, labels, run_info
        )
        if output_path:
            path, reserved = Path(output_path), False
        else:
            path, reserved = output_path_for(self.output_dir, request, now.astimezone()), True
        try:
            saving_inputs: contextlib.AbstractContextManager = contextlib.nullcontext()
            if condition is not None:
                frames = condition.joined(frames)
                recorded = condition.settings(path, len(frames))
                settings = VideoSettings.from_dict({**settings.to_dict(), **recorded})
                saving_inputs = condition.saved_beside(path)
            with saving_inputs:
                save_video(path, frames, fps, settings)
        finally:
            if reserved:
                release_path(path)
        clock.emit(Stage.DONE, 1.0, message=f"Done in {seconds:.0f} s")
        return GenerationResult(
            video_path=path,
            settings_path=path.with_suffix(".json"),
            poster_path=path.with_suffix(".jpg"),
            record=settings,
            seconds=seconds,
            warnings=tuple(warnings),
        )

    def _check_interpolation(self, request: GenerationRequest) -> None:
        from allegro.interpolation import DEFAULT_METHOD, require_available

        require_available(request.interpolation_method or DEFAULT_METHOD, self.ema_vfi_weights)

    def _interpolator(self, loaded: LoadedPipeline, request: GenerationRequest) -> Interpolator:
        """The method's interpolator, made once per loaded pipeline (EMA-VFI reads its
        checkpoint then); the caller holds the run lock, so two jobs never load it twice."""
        from allegro.interpolation import DEFAULT_METHOD, create_interpolator

        key = (request.interpolation_method or DEFAULT_METHOD, self.ema_vfi_weights)
        if key not in loaded.interpolators:
            device = loaded.device if loaded.device != "cpu" else None  # EMA-VFI: beside it
            loaded.interpolators[key] = create_interpolator(key[0], weights=key[1], device=device)
        return loaded.interpolators[key]

    def _make_frames(
        self,
        loaded: LoadedPipeline,
        request: GenerationRequest,
        clock: _ProgressClock,
        cancel: CancelToken,
        warnings: list[str],
        prompts: tuple[str, str] | tuple[EncodedPrompt, EncodedPrompt] | None = None,
        run_info: dict[str, Any] | None = None,  # receives the step cache's statistics
        condition: ConditionInputs | None = None,
    ) -> np.ndarray:
        """``prompts``: the positive and negative prompts, cleaned (clean_texts) or already
        encoded (_encode_texts); cleaned and encoded here if not given."""
        import torch

        pipe = loaded.pipe
        clean_caption = _clean_caption_available()

        from allegro.prompts import find_truncation

        notice = find_truncation(pipe.tokenizer, positive_prompt(request))
        if notice is not None:
            warnings.append(notice.message())
        if prompts is None:
            prompts = clean_texts(pipe, request, cancel)
        if isinstance(prompts[0], str):
            prompts = _encode_texts(loaded, prompts, cancel)
        positive, negative = prompts

        if loaded.preview_map is None:
            loaded.preview_map = _fit_preview_map(pipe)
        _set_fast_mode(pipe, request.fast_mode)
        geometry = fit_tiling(
            request.frames, request.height, request.width, pipe.vae_scale_factor_spatial
        )
        tiles = geometry.tile_count(request.frames, request.height, request.width)

        steps = request.steps
        denoise_started = time.monotonic()

        def decode_estimate(denoise_seconds_per_step: float) -> float:
            if loaded.seconds_per_tile is not None:
                return tiles * loaded.seconds_per_tile
            return 0.15 * steps * denoise_seconds_per_step  # until the first decode is timed

        def on_step_end(pipeline, index: int, timestep, callback_kwargs: dict) -> dict:
            cancel.raise_if_cancelled()  # stops within one step, before any decode
            done = index + 1
            per_step = (time.monotonic() - denoise_started) / done
            preview = None
            if done % PREVIEW_EVERY == 0 or done == steps:
                from allegro.preview import latents_to_preview

                preview = latents_to_preview(callback_kwargs["latents"], loaded.preview_map)
            clock.emit(
                Stage.DENOISING,
                done / steps,
                step=done,
                total=steps,
                eta=(steps - done) * per_step + decode_estimate(per_step),
                message=f"Denoising step {done} of {steps}",
                preview=preview,
            )
            return {}

        extra: dict[str, Any] = {}
        counting: contextlib.AbstractContextManager = contextlib.nullcontext()
        if condition is not None:
            extra["condition"] = condition.frames(request.height, request.width)
            encoded = 0

            def on_encoded_tile() -> None:
                nonlocal encoded, denoise_started
                cancel.raise_if_cancelled()
                encoded += 1
                clock.emit(
                    Stage.ENCODING_IMAGES,
                    encoded / tiles,
                    step=encoded,
                    total=tiles,
                    message=f"Encoding images: tile {encoded} of {tiles}",
                )
                denoise_started = time.monotonic()  # the steps' clock starts after encoding

            # The pipeline encodes the images inside the call, after drawing the initial noise
            # (the official order of random draws): count the encoder's tiles from here.
            counting = _count_decoded_tiles(pipe.vae, on_encoded_tile, part="encoder")
            clock.emit(Stage.ENCODING_IMAGES, 0.0, total=tiles, message="Encoding images …")
        else:
            clock.emit(
                Stage.DENOISING,
                0.0,
                step=0,
                total=steps,
                eta=estimated_seconds(loaded, request),
                message="Denoising …",
            )
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        with counting, _step_cache(pipe, request) as step_cache_stats:
            latents = pipe(
                prompt_embeds=positive.embeds,
                prompt_attention_mask=positive.attention_mask,
                negative_prompt_embeds=negative.embeds,
                negative_prompt_attention_mask=negative.attention_mask,
                negative_prompt=None,
                num_inference_steps=steps,
                guidance_scale=request.guidance_scale,
                num_frames=request.frames,
                height=request.height,
                width=request.width,
                generator=generator,
                output_type="latent",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents"],
                clean_caption=clean_caption,
                **extra,
            ).frames
        if step_cache_stats and run_info is not None:
            run_info["step_cache"] = step_cache_stats[0].settings()
        cancel.raise_if_cancelled()
        return self._decode(loaded, latents, request, geometry, tiles, clock, cancel)

    def _decode(
        self,
        loaded: LoadedPipeline,
        latents: Any,  # torch.Tensor (1, C, T, h, w)
        request: GenerationRequest,
        geometry: TileGeometry,
        tiles: int,
        clock: _ProgressClock,
        cancel: CancelToken,
    ) -> np.ndarray:
        import torch

        pipe = loaded.pipe
        apply_tiling(pipe.vae, geometry)
        decoded = 0
        started = time.monotonic()

        def on_tile() -> None:
            nonlocal decoded
            cancel.raise_if_cancelled()
            decoded += 1
            per_tile = (time.monotonic() - started) / decoded
            clock.emit(
                Stage.DECODING,
                decoded / tiles,
                step=decoded,
                total=tiles,
                eta=(tiles - decoded) * per_tile,
                message=f"Decoding tile {decoded} of {tiles}",
            )

        clock.emit(Stage.DECODING, 0.0, step=0, total=tiles, message="Decoding …")
        with torch.inference_mode(), _count_decoded_tiles(pipe.vae, on_tile):
            video = pipe.decode_latents(latents.to(pipe.vae.dtype))
        pipe.maybe_free_model_hooks()  # the VAE back to the CPU under model offload
        loaded.seconds_per_tile = (time.monotonic() - started) / max(tiles, 1)
        video = video[:, :, : request.frames, : request.height, : request.width]
        frames = pipe.video_processor.postprocess_video(video=video, output_type="np")[0]
        return np.round(np.clip(frames, 0.0, 1.0) * 255).astype(np.uint8)

    def _settings(
        self,
        loaded: LoadedPipeline,
        request: GenerationRequest,
        fps: float,
        interpolation: InterpolationRecord | None,
        seconds: float,
        now: datetime,
        labels: Mapping[str, str] | None,
        run_info: Mapping[str, Any],
    ) -> VideoSettings:
        spec = loaded.spec
        return VideoSettings(
            app_version=__version__,
            created=now.isoformat(timespec="seconds"),
            **request_record(request),  # the parameters saved as they are
            fps=fps,
            step_cache=_step_cache_record(request, run_info),
            memory_profile=spec.memory_profile,
            interpolation=interpolation,
            model=spec.model,
            transformer=spec.transformer,
            precision=spec.precision,
            vae_precision=spec.vae_precision,
            offload=loaded.offload.mode,
            offload_reason=loaded.offload.reason,
            compiled=loaded.compiled,
            device=loaded.device,
            run_seconds=round(seconds, 2),
            labels=dict(labels or {}),
        )


def _step_cache_record(
    request: GenerationRequest, run_info: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The step cache's statistics when it was on ({} if it reported none), else None."""
    if not request.step_cache:
        return None
    return dict(run_info.get("step_cache") or {})


def save_video(path: Path, frames: np.ndarray, fps: float, settings: VideoSettings) -> None:
    """write_video with disk errors turned into a message (nothing half-written remains)."""
    from allegro.video import write_video

    try:
        write_video(path, frames, fps, settings.to_dict())
    except OSError as error:
        raise _save_error(path, error) from None


def _save_error(path: Path, error: OSError) -> AllegroError:
    return AllegroError(
        f"Could not save the video to {path.parent}: {error.strerror or error}. "
        "Free some disk space or choose another output folder."
    )


def _run_interpolation(
    frames: np.ndarray, interpolator: Interpolator, clock: _ProgressClock, cancel: CancelToken
) -> tuple[np.ndarray, InterpolationRecord]:
    from allegro.interpolation.driver import interpolate_frames

    result = interpolate_frames(frames, interpolator, _interpolation_progress(clock), cancel)
    return result.frames, interpolation_settings(interpolator.name, result)


def _interpolation_progress(clock: _ProgressClock) -> Callable[[int, int], None]:
    """Progress events for pairs done of total, with an ETA from the pace so far."""
    started = time.monotonic()

    def on_pairs(done: int, total: int) -> None:
        per_pair = (time.monotonic() - started) / max(done, 1)
        clock.emit(
            Stage.INTERPOLATING,
            done / max(total, 1),
            step=done,
            total=total,
            eta=(total - done) * per_pair,
            message=f"Interpolating to {INTERPOLATED_FPS} fps: pair {done} of {total}",
        )

    clock.emit(Stage.INTERPOLATING, 0.0, message="Interpolating …")
    return on_pairs


def interpolate_video(
    source: str | Path,
    destination: str | Path,
    method: str,
    weights: str | None = None,
    on_progress: ProgressCallback = ignore_progress,
    cancel: CancelToken | None = None,
) -> Path:
    """15 fps MP4 in, 30 fps MP4 out; the source's settings (if it has any) are carried over
    with the interpolation recorded.

    Pipelined: a thread decodes ahead, pairs are interpolated as their frames arrive, and a
    thread encodes each 30 fps frame as soon as it is made, so the command takes about as
    long as its slowest stage rather than the sum of all three. Methods that take I420
    frames get the decoder's yuv420p planes and hand theirs to the encoder: no colour
    conversion anywhere, and the original frames reach the encoder bit for bit. Other
    inputs (RGB, 4:2:2, 4:4:4, 10-bit) are converted once, with their own matrix and range;
    the output is tagged with what it is (``allegro.video_colour``)."""
    from allegro.errors import InterpolationError
    from allegro.interpolation import create_interpolator
    from allegro.interpolation.base import PixelFormat, takes_yuv420p
    from allegro.interpolation.driver import interpolate_stream
    from allegro.video import PipelinedVideoWriter, read_settings, stream_frames

    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise InterpolationError(f"{source} does not exist.")
    if destination.suffix.lower() != ".mp4":
        raise InterpolationError(f"The output must be an .mp4 file, not {destination.name}.")
    interpolator = create_interpolator(method, weights=weights)
    try:
        settings = VideoSettings.from_dict(read_settings(source))
    except AllegroError:
        settings = VideoSettings(extra={"source": source.name})
    pixel_format: PixelFormat = "yuv420p" if takes_yuv420p(interpolator) else "rgb24"
    try:
        frames = stream_frames(source, pixel_format=pixel_format)
    except AllegroError as error:
        raise InterpolationError(str(error)) from None
    if frames.width % 2 or frames.height % 2:
        frames.close()
        raise InterpolationError(
            f"{source.name} is {frames.width}x{frames.height}; H.264 in yuv420p, which every "
            "browser plays, needs an even width and height."
        )
    clock = _ProgressClock(on_progress, interpolate=True)
    on_pairs = _interpolation_progress(clock)
    total_pairs = frames.frame_count - 1 if frames.frame_count > 1 else None
    try:
        # The poster is the middle one of the 2N frames written.
        with (
            frames,
            PipelinedVideoWriter(
                destination, INTERPOLATED_FPS, frames.frame_count, pixel_format, frames.colour
            ) as writer,
        ):
            counts = interpolate_stream(
                frames,
                interpolator,
                writer.put,
                on_pairs,
                cancel or CancelToken(),
                total_pairs,
                pixel_format,
                frames.colour.full_range,
            )
            interpolation = interpolation_settings(method, counts, 2 * (counts.pairs + 1))
            interpolation = dataclasses.replace(interpolation, source_fps=frames.fps)
            settings = dataclasses.replace(
                settings, fps=INTERPOLATED_FPS, interpolation=interpolation
            )
            clock.emit(Stage.SAVING, message="Saving the video …")
            writer.finish(settings.to_dict())
    except OSError as error:
        raise _save_error(destination, error) from None
    clock.emit(Stage.DONE, 1.0)
    return destination


def interpolation_settings(
    method: str, result: InterpolationResult | InterpolationCounts, frames: int | None = None
) -> InterpolationRecord:
    return InterpolationRecord(
        method=method,
        fps=INTERPOLATED_FPS,
        source_fps=FPS,
        frames=len(result.frames) if frames is None else frames,
        layout="every source frame kept; one new frame between each pair; last repeated",
        fallback_pairs=int(result.fallback_pairs),
    )


def _fit_preview_map(pipe) -> np.ndarray:
    """The live preview's latent -> RGB map, fitted on the first run rather than at load:
    on ZeroGPU the load happens before launch, where every CUDA op runs on the CPU under
    spaces' emulation, and this fit runs the real VAE."""
    from allegro.preview import fit_latent_to_rgb

    mapping = fit_latent_to_rgb(pipe.vae, pipe._execution_device, pipe.vae.dtype)
    pipe.maybe_free_model_hooks()  # under model offload the VAE goes back to the CPU
    return mapping


def _check_task(loaded: LoadedPipeline, request: GenerationRequest) -> None:
    if request.image_to_video and not loaded.ti2v:
        raise InvalidRequestError(
            f"{loaded.spec.model} makes videos from text only. Image to video needs "
            f"Allegro-TI2V: choose the allegro-ti2v model ({TI2V_MODEL})."
        )
    if loaded.ti2v and not request.image_to_video:
        raise InvalidRequestError(
            f"{loaded.spec.model} (Allegro-TI2V) makes videos from a first frame: add a first "
            "image, or choose a text-to-video model."
        )


def _set_fast_mode(pipe, enabled: bool) -> None:
    """Pyramid Attention Broadcast through diffusers' cache API, with the pipeline's current
    timestep wired in. The cache is re-armed for every run: its hooks keep state (the last
    attention output, an iteration count) that must not leak from one video into the next."""
    transformer = pipe.transformer
    if transformer.is_cache_enabled:
        transformer.disable_cache()
    if enabled:
        from diffusers import PyramidAttentionBroadcastConfig

        from allegro.costs import FAST_MODE_BLOCK_SKIP, FAST_MODE_TIMESTEP_WINDOW

        transformer.enable_cache(
            PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=FAST_MODE_BLOCK_SKIP,
                spatial_attention_timestep_skip_range=FAST_MODE_TIMESTEP_WINDOW,
                current_timestep_callback=lambda: pipe.current_timestep,
            )
        )


def clean_texts(pipe, request: GenerationRequest, cancel: CancelToken) -> tuple[str, str]:
    """The positive and negative prompts cleaned exactly as the pipeline's encode_prompt
    would (diffusers pipeline_allegro.py ``_text_preprocessing``): CPU only, no lock."""
    clean_caption = _clean_caption_available()
    cleaned = []
    for text in (positive_prompt(request), request.negative_prompt or ""):
        cancel.raise_if_cancelled()
        cleaned.append(pipe._text_preprocessing(text, clean_caption=clean_caption)[0])
    cancel.raise_if_cancelled()
    return cleaned[0], cleaned[1]


def _encode_texts(
    loaded: LoadedPipeline, texts: tuple[str, str], cancel: CancelToken
) -> tuple[EncodedPrompt, EncodedPrompt]:
    """The cleaned positive and negative prompts through the embedding cache. Already
    cleaned: the pipeline only lower-cases and strips them again (a no-op)."""
    pipe = loaded.pipe
    encoded = []
    for text in texts:
        encoded.append(loaded.prompt_cache.encode(pipe, text, False, pipe._execution_device))
        cancel.raise_if_cancelled()
    return encoded[0], encoded[1]


@contextlib.contextmanager
def _step_cache(pipe, request: GenerationRequest) -> Iterator[list]:
    """The step cache armed for this run only (see allegro.step_cache); a plain run yields
    an empty list."""
    if not request.step_cache:
        yield []
        return
    from allegro.step_cache import armed_step_cache

    with armed_step_cache(pipe, request.steps) as stats:
        yield stats


def _clean_caption_available() -> bool:
    """The official preprocessing needs bs4 and ftfy; without them diffusers only
    lower-cases and strips (and warns every call)."""
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("bs4", "ftfy"))
