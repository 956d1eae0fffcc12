"""Several workers on one machine: 4 jobs on 2 CPU workers against 1 worker, on the tiny
checkpoint, side by side in one run (the runs alternate, each pipeline loaded beforehand).

Three set-ups, each a JobRunner over its own store with its own pipelines:
- 1 worker with every core (torch's default thread count): the baseline of the ratio;
- 1 worker with 1 thread: the reference for identical videos;
- 2 workers with cores/2 threads each (what ``--devices cpu,cpu`` gives).
Prints the median wall time of each and the ratio 2 workers / 1 worker (target: <= 0.6 on
2 cores), and checks that the 2-worker videos' frames are identical to the 1-worker run's
with the same seeds and thread count. (On the CPU the frames also depend on the thread
count, float sums split differently; a GPU worker always has the whole GPU.)

    python bench/multi_worker.py [--rounds 2] [--steps 4]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

JOBS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    from allegro.engine import Engine
    from allegro.jobs import EngineWorker, JobRunner, JobState, JobStore
    from allegro.loading import PipelineCache, PipelineSpec
    from allegro.request import GenerationRequest
    from allegro.tiny import make_tiny
    from allegro.video import read_frames

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = make_tiny(root / "tiny")
        spec = PipelineSpec(model=str(model))

        def workers(count: int, threads: int, name: str) -> list[EngineWorker]:
            made = []
            for slot in range(count):
                engine = Engine(spec, root / name / "out", cache=PipelineCache("cpu"))
                engine.load()
                made.append(EngineWorker(engine, engine.output_dir, f"cpu {slot}", threads))
            return made

        setups = {
            f"1 worker x {cores} threads": workers(1, cores, "one-all"),
            "1 worker x 1 thread": workers(1, 1, "one-single"),
            f"2 workers x {max(1, cores // 2)} threads": workers(2, max(1, cores // 2), "two"),
        }
        requests = [
            GenerationRequest(
                f"a kite over the sea {seed}", seed=seed, steps=args.steps, frames=24,
                height=160, width=160,
            )
            for seed in range(1, JOBS + 1)
        ]  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in setups}
        frames: dict[str, list[str]] = {}
        for round_index in range(args.rounds):
            for name, setup in setups.items():
                store = JobStore(root / f"{name}-{round_index}.sqlite")
                runner = JobRunner(store, setup)
                jobs = [runner.submit(request, owner="bench") for request in requests]
                started = time.perf_counter()
                runner.start()
                finals = [runner.wait(job.id) for job in jobs]
                times[name].append(time.perf_counter() - started)
                runner.stop(timeout=30)
                store.close()
                assert all(final.state == JobState.DONE for final in finals), finals
                frames[name] = [
                    hashlib.sha256(read_frames(final.video)[0].tobytes()).hexdigest()
                    for final in finals
                ]
                print(f"round {round_index + 1}: {name}: {times[name][-1]:.2f} s", flush=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    one_all, one_single, two = medians
    print(f"\n{JOBS} jobs of {args.steps} steps at 24x160x160 on {cores} cores (median of "
          f"{args.rounds}):")  # fmt: skip
    for name, median in medians.items():
        print(f"  {name:<24} {median:6.2f} s")
    print(f"ratio 2 workers / 1 worker (all cores): {medians[two] / medians[one_all]:.2f}x")
    print(f"ratio 2 workers / 1 worker (1 thread):  {medians[two] / medians[one_single]:.2f}x")
    same = frames[two] == frames[one_single] if cores // 2 == 1 else None
    print(f"2-worker frames identical to the 1-worker, 1-thread run: {same}")
    threads_matter = frames[one_all] != frames[one_single]
    print(f"1-worker frames differ between all cores and 1 thread: {threads_matter}")


if __name__ == "__main__":
    main()
