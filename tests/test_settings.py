"""The saved settings record: old sidecars load, unknown keys survive, bad values never crash;
output names are reserved atomically."""

from __future__ import annotations

import json
import threading
from datetime import datetime

from allegro.request import NativeSize, resolve_request
from allegro.settings import SETTINGS_SCHEMA, InterpolationRecord, VideoSettings
from tests.conftest import DATA_DIR

# A sidecar exactly as the app wrote it before the record had a schema version.
SCHEMA_0 = json.loads((DATA_DIR / "sidecar-schema0.json").read_text())


def test_a_schema_0_sidecar_loads_with_every_value():
    record = VideoSettings.from_dict(SCHEMA_0)
    assert record.schema == 0 and record.extra == {}
    assert (record.seed, record.steps, record.guidance_scale) == (1234, 100, 7.5)
    assert (record.frames, record.height, record.width, record.output_frames) == (40, 368, 640, 80)
    assert record.interpolation == InterpolationRecord(
        "flow", 30.0, 15.0, 80, SCHEMA_0["interpolation"]["layout"], 0
    )
    assert record.labels == {"owner": "0f3c2a1b9d8e4f5a6b7c8d9e0f1a2b3c"}
    written = record.to_dict()
    assert {key: written[key] for key in SCHEMA_0} == SCHEMA_0  # nothing lost or changed


def test_new_records_carry_the_schema_and_keep_a_newer_apps_keys():
    assert VideoSettings(prompt="x").to_dict()["schema"] == SETTINGS_SCHEMA
    newer = {**SCHEMA_0, "schema": SETTINGS_SCHEMA + 1, "image": "first.png"}
    record = VideoSettings.from_dict(newer)
    assert record.extra == {"image": "first.png"}
    assert record.to_dict()["image"] == "first.png"


def test_malformed_values_are_dropped_not_fatal():
    record = VideoSettings.from_dict(
        {"prompt": 3, "seed": "abc", "steps": 2.5, "fps": float("nan"), "labels": [1], "x": {}}
    )
    assert record.prompt == "" and record.seed is None and record.steps is None
    assert record.fps == 15.0 and record.labels == {} and record.extra == {"x": {}}


def test_to_request_makes_the_same_video_again():
    request = VideoSettings.from_dict(SCHEMA_0).to_request()
    resolved = resolve_request(request, NativeSize(88, 720, 1280))
    assert (resolved.seed, resolved.frames, resolved.height, resolved.width) == (1234, 40, 368, 640)
    assert resolved.interpolate and resolved.interpolation_method == "flow"


def test_the_page_reads_a_schema_0_sidecar():
    from ui.formatting import entry_markdown, result_markdown
    from ui.presets import controls_from_settings

    assert "80 frames at 640x368, 30 fps" in result_markdown(SCHEMA_0, 412, "a.mp4")
    assert "Seed 1234 · 100 steps" in entry_markdown(SCHEMA_0, "a.mp4")
    values = controls_from_settings(SCHEMA_0, None).values
    assert values.seed == 1234 and values.interpolation_method == "flow"


def test_two_workers_never_reserve_the_same_name(tmp_path):
    from allegro.engine import output_path_for
    from allegro.request import GenerationRequest

    request = GenerationRequest("same prompt", seed=1)
    now = datetime(2026, 12, 1, 12, 0, 0)
    names: list[str] = []
    start = threading.Barrier(8)

    def reserve() -> None:
        start.wait()
        names.append(output_path_for(tmp_path, request, now).name)

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 8


def test_image_to_video_settings_round_trip_typed():
    """The input images' names and a continuation's chain (issue 12) are fields, not extras."""
    continued = {
        "prompt": "more sea",
        "seed": 3,
        "frames": 40,
        "generated_frames": 24,
        "continues": {"video": "b.mp4", "overlap_frames": 8, "source_frames": 24},
        "chain": ["a.mp4", "b.mp4"],
    }
    settings = VideoSettings.from_dict(continued)
    assert settings.continues.video == "b.mp4" and settings.continues.overlap_frames == 8
    assert settings.chain == ("a.mp4", "b.mp4") and settings.extra == {}
    assert {key: settings.to_dict()[key] for key in continued} == continued
    assert settings.to_request().frames == 24  # the clip made, not the joined total
    first = VideoSettings.from_dict({"prompt": "x", "first_image": "v.first.png"})
    assert first.first_image == "v.first.png" and first.last_image is None
    assert VideoSettings.from_dict({"prompt": "x", "chain": "not a list"}).chain == ()
