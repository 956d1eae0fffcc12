"""Image to video through the app's API, as a process with tiny checkpoints: /generate with
uploaded images, /extend of one's own video, /history with the input images, and bad images
(or paths on the server) refused before anything is queued.

The server listens on all addresses, so it is shared: every caller sends a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.gradio_http import PageSession
from tests.studio_server import StudioServer, start_studio
from tests.test_app_api import ALICE, BOB


@pytest.fixture(scope="module")
def server(tiny_model, tiny_ti2v_model, tmp_path_factory) -> Iterator[StudioServer]:
    workdir = tmp_path_factory.mktemp("ti2v-app")
    studio = start_studio(
        tiny_model,
        workdir / "outputs",
        workdir / "app.log",
        "--ti2v-model",
        str(tiny_ti2v_model),
        "--host",
        "0.0.0.0",
    )
    yield studio
    studio.stop()
    assert "Traceback" not in studio.log_text()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Good and bad image files."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {name: folder / f"{name}.png" for name in ("first", "last", "tiny", "huge")}
    Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(paths["first"])
    Image.fromarray(rng.integers(0, 255, (90, 90, 3), dtype=np.uint8)).save(paths["last"])
    Image.new("RGB", (16, 16)).save(paths["tiny"])
    Image.new("1", (8000, 6000)).save(paths["huge"])  # 48 megapixels in a few kB
    paths["text"] = folder / "notes.png"
    paths["text"].write_text("not an image at all")
    paths["broken"] = folder / "broken.png"
    paths["broken"].write_bytes(paths["first"].read_bytes()[:200])  # cut short
    return paths


@pytest.fixture(scope="module")
def made(server, images) -> tuple[str, dict]:
    """Alice makes a video from a first and a last frame."""
    video, settings = server.client(ALICE).predict(
        prompt="a boat drifts",
        seed=3,
        steps=2,
        image=handle_file(images["first"]),
        last_image=handle_file(images["last"]),
        api_name="/generate",
    )
    return video, settings


def test_generate_from_images_saves_them_beside_the_video(server, made):
    video, settings = made
    name = Path(video).stem
    assert settings["first_image"] == f"{name}.first.png"
    assert settings["last_image"] == f"{name}.last.png"
    assert settings["guidance_scale"] == 8.0  # the official TI2V setting when left empty
    assert (server.output_dir / f"{name}.first.png").is_file()


def test_history_links_the_input_images_for_their_owner_only(server, made):
    name = Path(made[0]).stem
    history = server.client(ALICE).predict(api_name="/history")
    record = next(r for r in history if r["name"] == name)
    assert set(record["image_urls"]) == {"first_image", "last_image"}
    response = httpx.get(server.url.rstrip("/") + record["image_urls"]["first_image"])
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"
    assert name not in {r["name"] for r in server.client(BOB).predict(api_name="/history")}


def test_extend_continues_ones_own_video_frame_for_frame(server, made):
    from allegro.video import read_frames

    video, _settings = made
    name = Path(video).stem
    longer, settings = server.client(ALICE).predict(
        video=name, prompt="the boat turns", seed=4, steps=2, overlap_frames=8, api_name="/extend"
    )
    original, _fps = read_frames(server.output_dir / f"{name}.mp4")
    extended, fps = read_frames(longer)
    assert fps == 15 and len(extended) == len(original) + 24 - 8
    assert settings["continues"]["video"] == f"{name}.mp4"
    # The original clip opens the longer one, frame for frame (up to a second encoding).
    difference = np.abs(extended[: len(original)].astype(int) - original.astype(int))
    assert difference.mean() < 8, difference.mean()
    with pytest.raises(Exception, match="not in your gallery"):
        server.client(BOB).predict(video=name, prompt="mine now", steps=2, api_name="/extend")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("text", "is not an image"),
        ("tiny", "only 16x16 pixels"),
        ("broken", "damaged"),
        ("huge", "megapixels are accepted"),
    ],
)
def test_bad_images_are_refused_before_queueing(server, images, image, message):
    before = server.videos()
    client: Client = server.client(ALICE)
    with pytest.raises(Exception, match=message):
        client.predict(prompt="x", steps=2, image=handle_file(images[image]), api_name="/generate")
    with pytest.raises(Exception, match=message):  # a bad last frame too
        client.predict(
            prompt="x",
            steps=2,
            image=handle_file(images["first"]),
            last_image=handle_file(images[image]),
            api_name="/generate",
        )
    assert server.videos() == before


def test_a_path_on_the_server_is_not_an_upload(server):
    """Raw HTTP: an image that names a server file (marked as a file or not) is refused."""
    api = PageSession(server.url, headers={"X-Allegro-Key": ALICE})
    for image in (
        {"path": "/etc/passwd"},
        {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
        str(server.output_dir),
    ):
        fields = ["a cat", None, 1, 2, None, None, None, None, True, False, None, False, False]
        outcome = api.call("generate", *fields, image, None)
        assert outcome.error is not None and "upload" in outcome.error, outcome.error
    assert "root:" not in server.log_text()


def test_submit_with_images_keeps_its_own_copies_until_the_job_ends(server, images):
    """/submit takes the images like /generate; the queued job keeps copies beside the jobs
    database (a restart finds them there), removed once the video is made."""
    import time

    alice = server.client(ALICE)
    job = alice.predict(
        prompt="a kite over dunes",
        steps=2,
        image=handle_file(images["first"]),
        api_name="/submit",
    )
    kept = server.output_dir / ".allegro-jobs-inputs" / job["id"]
    assert [path.name for path in kept.iterdir()] == ["first_image.png"]  # seconds to go
    while job["state"] in ("queued", "running"):
        time.sleep(0.2)
        job = alice.predict(job["id"], api_name="/job")
    assert job["state"] == "done", job["error"]
    assert not kept.exists()
    stem = Path(job["video"]).stem
    assert (server.output_dir / f"{stem}.first.png").is_file()  # the video keeps its input
    with pytest.raises(Exception, match="no job"):
        server.client(BOB).predict(job["id"], api_name="/job")
