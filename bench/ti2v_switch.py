"""Switching between text-to-video and image-to-video in one process.

Loads a T2V checkpoint, then alternates with a TI2V checkpoint through one PipelineCache and
prints each switch's seconds, side by side for a TI2V checkpoint whose text encoder and VAE
are the T2V checkpoint's very files (kept in memory: only the transformer loads) and one with
its own copies (everything loads). Without arguments it uses tiny checkpoints made on the
spot (random weights; on a CPU the VAE preview fit dominates a full load); pass real folders
or hub ids to measure those.

    python bench/ti2v_switch.py [--t2v SRC --ti2v SRC --ti2v-unshared SRC] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allegro.loading import PipelineCache, PipelineSpec


def _tiny_sources(folder: Path) -> tuple[str, str, str]:
    from allegro.tiny import make_tiny

    t2v = make_tiny(folder / "t2v")
    unshared = make_tiny(folder / "ti2v-own-copies", ti2v=True)
    shared = folder / "ti2v-shared"
    shutil.copytree(unshared, shared)
    for part in ("text_encoder", "vae"):  # as two hub snapshots share blobs
        shutil.rmtree(shared / part)
        (shared / part).mkdir()
        for file in (t2v / part).iterdir():
            os.symlink(file, shared / part / file.name)
    return str(t2v), str(shared), str(unshared)


def _switch_seconds(t2v: str, ti2v: str, rounds: int) -> tuple[list[float], tuple[str, ...]]:
    cache = PipelineCache()
    cache.get(PipelineSpec(model=t2v))
    seconds = []
    for _ in range(rounds):
        for source in (ti2v, t2v):
            started = time.monotonic()
            cache.get(PipelineSpec(model=source))
            seconds.append(time.monotonic() - started)
    return seconds, cache.loaded.reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t2v")
    parser.add_argument("--ti2v", help="TI2V sharing the T2V text encoder and VAE files")
    parser.add_argument("--ti2v-unshared", help="TI2V with its own copies")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        if args.t2v:
            sources = (args.t2v, args.ti2v, args.ti2v_unshared)
        else:
            sources = _tiny_sources(Path(temporary))
        t2v, shared, unshared = sources
        for label, ti2v in (("shared weights", shared), ("own copies", unshared)):
            if ti2v is None:
                continue
            seconds, reused = _switch_seconds(t2v, ti2v, args.rounds)
            print(
                f"{label:15s} switch median {statistics.median(seconds):7.2f} s "
                f"(min {min(seconds):.2f}, max {max(seconds):.2f}, {len(seconds)} switches); "
                f"kept: {', '.join(reused) or 'nothing'}"
            )


if __name__ == "__main__":
    main()
