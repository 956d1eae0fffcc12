"""A job-running process for the crash test: ``python -m tests.job_process DB OUT MODEL
[--submit PROMPT ...]``. Loads the model, starts a runner on the jobs database, submits the
prompts given (seeds left random: fixed at submit), and exits once no job is left."""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("out")
    parser.add_argument("model")
    parser.add_argument("--submit", nargs="*", default=[])
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()

    from allegro.engine import Engine
    from allegro.jobs import ACTIVE_STATES, EngineWorker, JobRunner, JobStore
    from allegro.loading import PipelineSpec
    from allegro.request import GenerationRequest

    engine = Engine(PipelineSpec(model=args.model), args.out)
    engine.load()  # before the runner starts, so "running" in the store means generating
    store = JobStore(args.db)
    runner = JobRunner(store, [EngineWorker(engine, args.out)])
    for prompt in args.submit:
        request = GenerationRequest(prompt, steps=args.steps, frames=24, height=160, width=160)
        runner.submit(request, owner="tester")
    runner.start()
    while store.count(ACTIVE_STATES):
        time.sleep(0.05)
    runner.stop()


if __name__ == "__main__":
    main()
