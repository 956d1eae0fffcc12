"""Submit to first step: a job through the persistent runner (SQLite store on disk, a worker
thread) against today's direct path (``Engine.generate`` started in a thread, as the page's
handler does), on the same loaded tiny checkpoint.

The two alternate, every round with a new prompt (the prompt-embedding cache cannot help
either), and each run is cancelled at its first denoising step. Prints the median seconds
from submit to that step for each, and the difference (target: under 0.2 s).

    python bench/job_latency.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from allegro.engine import Engine
    from allegro.errors import Cancelled
    from allegro.events import CancelToken, Stage
    from allegro.jobs import EngineWorker, JobRunner, JobState, JobStore
    from allegro.loading import PipelineSpec
    from allegro.request import GenerationRequest
    from allegro.tiny import make_tiny

    first_step: dict[str, float] = {}

    def stamp(key: str, cancel: CancelToken):
        def on_progress(event) -> None:
            if event.stage == Stage.DENOISING and event.step >= 1 and key not in first_step:
                first_step[key] = time.perf_counter()
                cancel.cancel()

        return on_progress

    class TimedWorker(EngineWorker):
        def run(self, job, on_progress, cancel):
            timed = stamp(job.id, cancel)

            def both(event) -> None:
                timed(event)
                on_progress(event)

            return super().run(job, both, cancel)

    def request(prompt: str) -> GenerationRequest:
        return GenerationRequest(prompt, steps=8, frames=24, height=160, width=160)

    with tempfile.TemporaryDirectory() as folder:
        model = make_tiny(Path(folder, "tiny"))
        output = Path(folder, "out")
        engine = Engine(PipelineSpec(model=str(model)), output)
        engine.load()
        store = JobStore(Path(folder, "jobs.sqlite"))
        runner = JobRunner(store, [TimedWorker(engine, output)])
        runner.start()

        direct, queued = [], []
        for round_index in range(args.rounds + 1):  # round 0 warms both up
            key = f"direct-{round_index}"
            cancel = CancelToken()
            started = time.perf_counter()

            def work(key=key, cancel=cancel, round_index=round_index) -> None:
                with contextlib.suppress(Cancelled):
                    engine.generate(
                        request(f"a lighthouse at dusk, take {round_index}"),
                        stamp(key, cancel),
                        cancel,
                    )

            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
            direct_seconds = first_step[key] - started

            started = time.perf_counter()
            job = runner.submit(request(f"a windmill in fog, take {round_index}"), owner="bench")
            final = runner.wait(job.id)
            assert final.state == JobState.CANCELLED, final
            queued_seconds = first_step[job.id] - started
            if round_index:
                direct.append(direct_seconds)
                queued.append(queued_seconds)
        runner.stop()
        store.close()

    print(f"tiny checkpoint, 24x160x160, submit -> first denoising step, {args.rounds} rounds")
    for name, times in (("today (thread)", direct), ("job + store", queued)):
        listed = ", ".join(f"{seconds:.3f}" for seconds in times)
        print(f"{name:15s} median {statistics.median(times):.3f} s  (all: {listed})")
    extra = statistics.median(queued) - statistics.median(direct)
    print(f"added by the job runner and its store: {extra:+.3f} s  (target < 0.2 s)")


if __name__ == "__main__":
    main()
