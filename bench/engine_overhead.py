"""Engine overhead: ``Engine.generate`` against a hand-written minimal diffusers script doing
the same work (encode, denoise, decode, write an MP4) on the same tiny checkpoint.

The two alternate in one process, pipelines loaded once each beforehand, and every round
uses a new prompt so the engine's prompt-embedding cache cannot help it. Prints the median
seconds of each and their ratio (target <= 1.10).

    python bench/engine_overhead.py [--rounds 5 --steps 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def minimal_script(pipe, prompt: str, seed: int, steps: int, path: Path) -> None:
    """What a person would write with diffusers and PyAV alone."""
    import av
    import numpy as np
    import torch

    from allegro.request import DEFAULT_NEGATIVE_PROMPT, apply_template

    frames = pipe(
        prompt=apply_template(prompt),
        negative_prompt=DEFAULT_NEGATIVE_PROMPT,
        num_inference_steps=steps,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).frames[0]
    frames = (frames * 255).round().astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(15))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "17", "preset": "faster"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    from diffusers import AllegroPipeline

    from allegro.engine import Engine
    from allegro.loading import PipelineSpec
    from allegro.request import GenerationRequest
    from allegro.tiny import make_tiny

    with tempfile.TemporaryDirectory() as folder:
        model = make_tiny(Path(folder, "tiny"))
        engine = Engine(PipelineSpec(model=str(model)), Path(folder, "out"))
        engine.load()
        pipe = AllegroPipeline.from_pretrained(model)
        pipe.vae.enable_tiling()
        pipe.set_progress_bar_config(disable=True)

        ours, minimal = [], []
        for round_index in range(args.rounds + 1):  # round 0 warms both up
            prompt = f"a paper boat on a pond, take {round_index}"
            started = time.perf_counter()
            engine.generate(GenerationRequest(prompt=prompt, seed=round_index, steps=args.steps))
            ours_seconds = time.perf_counter() - started
            started = time.perf_counter()
            minimal_script(
                pipe, prompt, round_index, args.steps, Path(folder, f"m{round_index}.mp4")
            )
            minimal_seconds = time.perf_counter() - started
            if round_index:
                ours.append(ours_seconds)
                minimal.append(minimal_seconds)
    ours_median, minimal_median = statistics.median(ours), statistics.median(minimal)
    print(f"tiny checkpoint, 24x160x160, {args.steps} steps, {args.rounds} alternated rounds")
    for name, times in (("engine.generate", ours), ("minimal script", minimal)):
        listed = ", ".join(f"{seconds:.2f}" for seconds in times)
        print(f"{name:16s} median {statistics.median(times):.3f} s  (all: {listed})")
    print(
        f"overhead ratio (engine / minimal): {ours_median / minimal_median:.3f}  (target <= 1.10)"
    )


if __name__ == "__main__":
    main()
