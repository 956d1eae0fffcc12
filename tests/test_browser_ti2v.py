"""Image to video in a real headless Chromium, with tiny text-to-video and image-to-video
checkpoints: upload a first frame, see the crop the model gets, generate, find the video and
its input image in the gallery, bring them back with "Reuse settings", then extend the video
and get a longer one that opens with the original clip."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.studio_server import StudioServer, start_studio
from tests.test_browser import DESKTOP, browser, screenshot, set_steps  # noqa: F401

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def studio(tiny_model, tiny_ti2v_model, tmp_path_factory) -> Iterator[StudioServer]:
    workdir = tmp_path_factory.mktemp("ti2v-browser")
    server = start_studio(
        tiny_model,
        workdir / "outputs",
        workdir / "app.log",
        env={"ALLEGRO_TI2V_MODEL": str(tiny_ti2v_model)},
    )
    yield server
    server.stop()


def open_page(browser, studio):  # noqa: F811
    page = browser.new_context(viewport=DESKTOP).new_page()
    page.set_default_timeout(90_000)
    page.goto(studio.url)
    page.wait_for_selector("#generate:not([disabled])")
    return page


def _new_video(studio: StudioServer, before: set[str], page) -> Path:
    page.wait_for_function(
        f"document.querySelectorAll('#gallery .thumbnail-item').length > {len(before)}"
    )
    (name,) = studio.videos() - before
    return studio.output_dir / name


def test_image_to_video_then_extend(browser, studio, tmp_path):  # noqa: F811
    from allegro.video import read_frames

    page = open_page(browser, studio)
    frame = tmp_path / "harbour.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (120, 300, 3), dtype=np.uint8)).save(frame)

    page.get_by_label("Image to video").check()
    page.wait_for_selector("#first-image")
    page.locator("#first-image input[type=file]").set_input_files(str(frame))
    page.wait_for_selector("#first-crop img[src]")  # the crop the model will be given
    page.locator("#prompt textarea").fill("a harbour at dawn")
    set_steps(page, 2)
    before = studio.videos()
    page.locator("#generate").click()
    page.wait_for_selector("#result-video video[src]")
    video = _new_video(studio, before, page)
    settings = json.loads(video.with_suffix(".json").read_text())
    assert settings["first_image"] == f"{video.stem}.first.png"
    screenshot(page, "ti2v-result")

    # In a fresh page: the gallery shows the input image with the video, and Reuse
    # settings brings back the mode, the prompt and the image.
    page.context.close()
    page = open_page(browser, studio)
    assert page.locator("#first-image img[src]").count() == 0
    page.locator("#gallery .thumbnail-item:has-text('a harbour at dawn')").first.click()
    page.wait_for_selector("#selected video[src]")
    page.wait_for_selector("#selected-inputs img")
    page.locator("#reuse").click()
    page.wait_for_selector("#first-image img[src]")
    assert page.get_by_label("Image to video").is_checked()
    assert page.locator("#prompt textarea").input_value() == "a harbour at dawn"
    screenshot(page, "ti2v-selected")

    # Extend the selected video: a longer one opening with the original clip.
    before = studio.videos()
    page.locator("#extend").click()
    longer = _new_video(studio, before, page)
    original, _fps = read_frames(video)
    extended, _fps = read_frames(longer)
    assert len(extended) == len(original) + 24 - 8
    difference = np.abs(extended[: len(original)].astype(int) - original.astype(int))
    assert difference.mean() < 8, difference.mean()
    page.context.close()
