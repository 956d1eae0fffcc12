"""The page: components, where they sit, and which Studio handler each event calls."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from allegro.interpolation import DEFAULT_METHOD, METHODS
from allegro.request import (
    DEFAULT_NEGATIVE_PROMPT,
    GUIDANCE_RANGE,
    MAX_SEED,
    OFFICIAL_GUIDANCE,
    OFFICIAL_STEPS,
    STEPS_RANGE,
)
from ui.page_jobs import (
    ASK_PERMISSION_JS,
    MAX_VARIATIONS,
    NOTIFY_JS,
    GalleryOutputs,
    QueuePanel,
    ResultPanel,
    build_queue_panel,
)
from ui.presets import (
    MODEL_DEFAULT,
    RANDOM_SEED,
    TASKS,
    TEXT_TO_VIDEO,
    ControlValues,
    length_choices,
    size_choices,
)
from ui.studio import GENERATION, JobSlot, Studio
from ui.uploads import UploadedImage

ASSETS = Path(__file__).resolve().parent.parent / "assets"
STYLE = ASSETS / "style.css"
FAVICON = ASSETS / "favicon.svg"
STATUS_POLL_SECONDS = 1.0
# Steps above this are offered by the API only; the slider stays usable on a phone.
SLIDER_MAX_STEPS = 200

EXAMPLE_PROMPTS = [
    "Pink fish swim in the sea",
    "An astronaut riding a horse",
    "A seaside harbor with bright sunlight and sparkling seawater, many boats in the water, "
    "seen from above",
    "A cozy cabin in a snowy forest at dusk, warm light glowing from the windows, smoke "
    "curling from the chimney",
    "Close-up of a hummingbird hovering beside a red flower, wings blurred in motion",
]

HEADER = """
<div class="studio-header">
  <div class="studio-title">
    <span class="studio-logo" aria-hidden="true">▶</span>
    <h1>Allegro Studio</h1>
  </div>
  <p class="studio-tagline">Describe a scene, get a 6-second 720p video.
  <a href="https://huggingface.co/rhymes-ai/Allegro" target="_blank" rel="noopener">Allegro</a>
  is an open text-to-video model by Rhymes AI (88 frames at 15 fps, 1280x720).</p>
</div>
"""


@dataclass
class GenerationControls:
    """The controls Generate reads, named as ControlValues' fields (whose order is the
    order of every handler's inputs)."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    seed: gr.Number
    steps: gr.Slider
    guidance_scale: gr.Slider
    length: gr.Dropdown
    size: gr.Dropdown
    use_template: gr.Checkbox
    interpolate: gr.Checkbox
    interpolation_method: gr.Dropdown
    fast_mode: gr.Checkbox
    step_cache: gr.Checkbox
    task: gr.Radio
    first_image: UploadedImage
    last_image: UploadedImage

    def inputs(self) -> list:
        return [getattr(self, field.name) for field in dataclasses.fields(ControlValues)]


def theme() -> gr.themes.Base:
    system_fonts = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"]
    return gr.themes.Soft(
        primary_hue="violet",
        secondary_hue="pink",
        neutral_hue="slate",
        radius_size="lg",
        font=system_fonts,
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


def build_blocks(studio: Studio) -> gr.Blocks:
    private = {"api_visibility": "private"}
    # Off the queue: these answer at once even when the queue is full of generations.
    light = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}

    with gr.Blocks(
        title="Allegro Studio",
        analytics_enabled=False,
        delete_cache=(3600, 24 * 3600),  # copies of served videos, after a day
    ) as demo:
        # Gradio encrypts a BrowserState with this secret, sent to every page in /config
        # (so it protects nothing); a stable one keeps the page token across restarts.
        owner = gr.BrowserState(
            "", storage_key="allegro-studio-owner", secret="allegro-studio-owner"
        )
        job = gr.State(JobSlot())
        last_seed = gr.State(None)
        gallery_names = gr.State([])
        selected_name = gr.State(None)
        timer = gr.Timer(STATUS_POLL_SECONDS)

        gr.HTML(HEADER, elem_id="studio-header-block", js_on_load=None)
        with gr.Row(elem_id="model-banner-row"):
            banner = gr.Markdown("**Starting …**", elem_id="model-banner")
            retry = gr.Button("Retry loading", visible=False, size="sm", scale=0, min_width=140)

        with gr.Row(equal_height=False, elem_id="workspace"):
            with gr.Column(scale=5, min_width=320, elem_id="controls"):
                prompt = gr.Textbox(
                    label="Prompt",
                    placeholder="Describe the video: subject, action, setting, camera, light…",
                    lines=3,
                    max_lines=8,
                    autofocus=True,
                    elem_id="prompt",
                )
                with gr.Row(elem_id="run-row"):
                    generate = gr.Button(
                        "Loading model…",
                        variant="primary",
                        interactive=False,
                        scale=3,
                        min_width=140,
                        elem_id="generate",
                    )
                    cancel = gr.Button(
                        "Cancel", variant="stop", scale=1, min_width=90, elem_id="cancel"
                    )
                hint = gr.Markdown("", elem_id="cost-hint")
                with gr.Row(visible=studio.page_jobs is not None, elem_id="batch-row"):
                    each_line = gr.Checkbox(
                        False,
                        label="One video per line",
                        info="Each line of the prompt is queued as its own video.",
                        elem_id="each-line",
                    )
                    variations = gr.Number(
                        1,
                        label="Variations",
                        info="Videos per prompt, with seeds s, s+1, …",
                        precision=0,
                        minimum=1,
                        maximum=MAX_VARIATIONS,
                        min_width=120,
                        elem_id="variations",
                    )
                task = gr.Radio(
                    list(TASKS),
                    value=TEXT_TO_VIDEO,
                    label="Make a video from",
                    show_label=False,
                    visible=False,  # shown once the model is ready, if it serves images
                    elem_id="task",
                )
                with gr.Group(visible=False, elem_id="image-inputs") as image_inputs:
                    with gr.Row(equal_height=True):
                        first_image = UploadedImage(
                            type="filepath",
                            label="First frame",
                            sources=["upload", "clipboard"],
                            height=200,
                            elem_id="first-image",
                        )
                        last_image = UploadedImage(
                            type="filepath",
                            label="Last frame (optional)",
                            sources=["upload", "clipboard"],
                            height=200,
                            elem_id="last-image",
                        )
                    with gr.Row(equal_height=True):
                        first_crop = gr.Image(
                            label="Used as the first frame (cropped to the size)",
                            interactive=False,
                            buttons=[],
                            height=140,
                            elem_id="first-crop",
                        )
                        last_crop = gr.Image(
                            label="Used as the last frame",
                            interactive=False,
                            buttons=[],
                            height=140,
                            elem_id="last-crop",
                        )
                with gr.Row():
                    # Wide enough for their labels: side by side on a laptop, stacked on a phone.
                    length = gr.Dropdown(
                        length_choices(None),
                        value=MODEL_DEFAULT,
                        label="Length",
                        min_width=240,
                        elem_id="length",
                    )
                    size = gr.Dropdown(
                        size_choices(None),
                        value=MODEL_DEFAULT,
                        label="Size",
                        min_width=240,
                        elem_id="size",
                    )
                with gr.Row(elem_id="seed-row", equal_height=True):
                    seed = gr.Number(
                        RANDOM_SEED,
                        label="Seed",
                        info="-1 picks a new random seed each time",
                        precision=0,
                        minimum=-1,
                        maximum=MAX_SEED,
                        scale=4,
                        elem_id="seed",
                    )
                    random_seed = gr.Button("🎲", scale=0, min_width=52, elem_classes="icon-button")
                    reuse_seed = gr.Button("♻️", scale=0, min_width=52, elem_classes="icon-button")
                with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
                    negative = gr.Textbox(
                        DEFAULT_NEGATIVE_PROMPT,
                        label="Negative prompt",
                        info="What to avoid; prefilled with the official one.",
                        lines=3,
                    )
                    steps = gr.Slider(
                        STEPS_RANGE[0],
                        SLIDER_MAX_STEPS,
                        value=OFFICIAL_STEPS,
                        step=1,
                        label="Steps",
                        info=f"Official: {OFFICIAL_STEPS}. Fewer is faster but rougher.",
                        elem_id="steps",
                    )
                    guidance = gr.Slider(
                        GUIDANCE_RANGE[0],
                        GUIDANCE_RANGE[1],
                        value=OFFICIAL_GUIDANCE,
                        step=0.5,
                        label="Guidance scale",
                        info=f"How closely to follow the prompt. Official: {OFFICIAL_GUIDANCE}.",
                    )
                    with gr.Row():
                        use_template = gr.Checkbox(
                            True,
                            label="Official quality template",
                            info="Wraps the prompt in the model card's quality words.",
                        )
                        fast_mode = gr.Checkbox(
                            False,
                            label="Fast mode",
                            info="About 1.4x faster, slightly less detail.",
                        )
                        step_cache = gr.Checkbox(
                            False,
                            label="Step cache",
                            info="Skips later blocks on steps that change little (cache-dit; "
                            "its authors report 1.36x for Allegro). Instead of fast mode.",
                            elem_id="step-cache",
                        )
                    with gr.Row() as interpolation_row:
                        interpolate = gr.Checkbox(
                            False,
                            label="30 fps",
                            info="Adds a frame between each pair (smoother motion).",
                        )
                        method = gr.Dropdown(
                            list(METHODS),
                            value=DEFAULT_METHOD,
                            label="Interpolation method",
                            visible=False,
                        )
                gr.Examples(
                    [[text] for text in EXAMPLE_PROMPTS],
                    inputs=[prompt],
                    label="Try a prompt",
                    examples_per_page=len(EXAMPLE_PROMPTS),
                )
                with gr.Accordion("Reuse a video's settings", open=False, elem_id="drop-video"):
                    dropped = gr.File(
                        label="Drop an MP4 made by Allegro Studio",
                        file_types=[".mp4"],
                        height=120,
                        elem_id="dropped-video",
                    )

            with gr.Column(scale=6, min_width=320, elem_id="result"):
                preview = gr.Image(
                    label="Live preview",
                    visible=False,
                    interactive=False,
                    show_label=True,
                    height=420,
                    buttons=[],
                    elem_id="live-preview",
                )
                video = gr.Video(
                    label="Result",
                    interactive=False,
                    autoplay=True,
                    loop=True,
                    buttons=["download"],
                    height=420,
                    elem_id="result-video",
                )
                run_status = gr.Markdown("", elem_id="run-status")
                result_info = gr.Markdown("", elem_id="result-info")
                with gr.Accordion("Settings of this video", open=False):
                    result_settings = gr.JSON(label="Settings", show_label=False)
                queue_panel = build_queue_panel() if studio.page_jobs is not None else None

        with gr.Column(elem_id="gallery-section"):
            with gr.Row(equal_height=True, elem_id="gallery-header"):
                gr.Markdown("### Your videos", elem_id="gallery-title")
                refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100)
            gallery_view = gr.Gallery(
                label="Past generations",
                show_label=False,
                columns=5,
                fit_columns=False,  # a lone video stays a thumbnail, not a banner
                height="auto",
                allow_preview=False,
                object_fit="cover",
                interactive=False,
                elem_id="gallery",
            )
            with gr.Row(visible=False, equal_height=False, elem_id="selected") as selected_row:
                with gr.Column(scale=6, min_width=300):
                    selected_video = gr.Video(
                        label="Selected video",
                        interactive=False,
                        buttons=["download"],
                        loop=True,
                        height=360,
                    )
                with gr.Column(scale=5, min_width=300):
                    selected_info = gr.Markdown("")
                    selected_inputs = gr.Gallery(
                        label="Input images",
                        columns=2,
                        height=140,
                        allow_preview=False,
                        interactive=False,
                        visible=False,
                        elem_id="selected-inputs",
                    )
                    with gr.Row():
                        reuse = gr.Button("Reuse settings", variant="secondary", elem_id="reuse")
                        extend = gr.Button(
                            "Extend",
                            variant="secondary",
                            visible=False,
                            elem_id="extend",
                        )
                        delete = gr.Button("Delete", variant="stop", elem_id="delete")
                    with gr.Row(visible=False, elem_id="confirm-delete") as confirm_row:
                        confirm = gr.Button("Delete for good", variant="stop", size="sm")
                        keep = gr.Button("Keep it", size="sm")
                    with gr.Accordion("All settings", open=False):
                        selected_settings = gr.JSON(show_label=False)

        gr.Markdown(
            "Videos are saved with their settings in the output folder. Drop one back on the "
            "page to reuse its settings. Use the API: see the footer link.",
            elem_id="footer-note",
        )

        controls = GenerationControls(
            prompt, negative, seed, steps, guidance, length, size, use_template,
            interpolate, method, fast_mode, step_cache, task, first_image, last_image,
        ).inputs()  # fmt: skip
        hint_inputs = [steps, length, size, fast_mode, step_cache]
        status_outputs = [
            banner,
            generate,
            retry,
            timer,
            length,
            size,
            interpolation_row,
            method,
            task,
            extend,
        ]

        page_loaded = demo.load(
            studio.gallery.on_page_load, [owner], [owner, gallery_view, gallery_names], **light
        )
        demo.load(studio.poll_status, hint_inputs, [*status_outputs, hint], **light)
        timer.tick(studio.poll_status, hint_inputs, [*status_outputs, hint], **light)
        retry.click(studio.retry_loading, None, [timer, retry], **light)
        gr.on(
            [steps.change, length.change, size.change, fast_mode.change, step_cache.change],
            studio.hint,
            hint_inputs,
            hint,
            **light,
        )
        interpolate.change(lambda on: gr.update(visible=on), interpolate, method, **light)
        # Fast mode and the step cache are alternatives: ticking one unticks the other.
        fast_mode.input(lambda on: False if on else gr.skip(), fast_mode, step_cache, **light)
        step_cache.input(lambda on: False if on else gr.skip(), step_cache, fast_mode, **light)
        random_seed.click(lambda: RANDOM_SEED, None, seed, **light)
        reuse_seed.click(reuse_last_seed, last_seed, seed, **private, show_progress="hidden")

        task.change(studio.switch_task, [task, guidance], [image_inputs, guidance], **light)
        for image, crop in ((first_image, first_crop), (last_image, last_crop)):
            gr.on([image.change, size.change], studio.crop_preview, [image, size], crop, **light)

        result = ResultPanel(preview, run_status, video, result_info, result_settings, last_seed)
        gallery_outputs = GalleryOutputs(gallery_view, gallery_names)
        extend_inputs = [selected_name, prompt, negative, seed, steps, guidance, length]
        extend_inputs += [use_template, fast_mode, owner, job]
        if studio.page_jobs is not None and queue_panel is not None:
            wire_jobs(
                studio, controls, [each_line, variations], extend_inputs, owner, cancel,
                generate, extend, result, queue_panel, gallery_outputs, page_loaded,
            )  # fmt: skip
        else:
            wire_direct_runs(
                studio, controls, extend_inputs, owner, job, cancel, generate, extend, result,
                gallery_outputs,
            )  # fmt: skip

        refresh.click(studio.gallery.refresh_gallery, owner, [gallery_view, gallery_names], **light)
        gallery_view.select(
            studio.gallery.select_entry,
            [gallery_names, owner],
            [
                selected_name,
                selected_video,
                selected_info,
                selected_settings,
                selected_inputs,
                selected_row,
            ],
            **light,
        )
        reuse.click(studio.gallery.reuse_entry, [selected_name, owner], controls, **private)
        # Deleting asks once more, in the page (a second button), before anything is removed.
        delete.click(lambda: gr.update(visible=True), None, confirm_row, **light)
        keep.click(lambda: gr.update(visible=False), None, confirm_row, **light)
        confirm.click(
            studio.gallery.delete_entry,
            [selected_name, owner],
            [
                gallery_view,
                gallery_names,
                selected_name,
                selected_video,
                selected_info,
                selected_settings,
                selected_row,
            ],
            **light,
        ).then(lambda: gr.update(visible=False), None, confirm_row, **light)
        dropped.upload(studio.gallery.load_dropped_video, [dropped, owner], controls, **private)

        # With jobs, a call is a job the moment it is accepted (recorded: a restart runs it)
        # and waits in the runner's queue, whose workers run one video per device: no Gradio
        # slot. Without (ZeroGPU), the call itself makes the video: one at a time.
        slots = (
            {"concurrency_limit": None}
            if studio.runner is not None
            else {"concurrency_limit": 1, "concurrency_id": GENERATION}
        )
        for name, handler, validator in (
            ("generate", studio.api_generate, studio.check_api),
            ("extend", studio.api_extend, studio.check_extend),
        ):
            endpoint = gr.api(handler, api_name=name, **slots)
            # gr.api has no validator argument; the event has the same field as a click's.
            demo.fns[endpoint["id"]].validator = validator
        gr.api(studio.gallery.history, api_name="history", queue=False)
        if studio.runner is not None:  # jobs run in the runner's worker, not in a Gradio slot
            # /submit takes /generate's parameters: its validator checks the key, every field
            # and the job limits before the call is queued.
            submit_api = gr.api(studio.job_api.submit, api_name="submit", concurrency_limit=None)
            demo.fns[submit_api["id"]].validator = studio.check_submit_api
            for handler, name in (
                (studio.job_api.job, "job"),
                (studio.job_api.cancel, "cancel"),
                (studio.job_api.jobs, "jobs"),
            ):
                gr.api(handler, api_name=name, queue=False)
    return demo


GENERATION_EVENT = {
    "concurrency_limit": 1,
    "concurrency_id": GENERATION,
    "scroll_to_output": True,
    "api_visibility": "private",
}
LIGHT = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}


def wire_jobs(
    studio: Studio,
    controls: list,
    batch: list,
    extend_inputs: list,
    owner: gr.BrowserState,
    cancel: gr.Button,
    generate: gr.Button,
    extend: gr.Button,
    result: ResultPanel,
    queue: QueuePanel,
    gallery_outputs: GalleryOutputs,
    page_loaded,
) -> None:
    """Generate and Extend queue jobs and return at once; each page follows its person's
    jobs from the moment it loads (a reload reattaches), and never owns them."""
    jobs = studio.page_jobs
    assert jobs is not None
    # Own concurrency group without a limit: queueing takes milliseconds, and a running
    # video never holds it (the runner's worker makes videos, not a Gradio slot).
    queueing = {"concurrency_limit": None, "concurrency_id": "queueing", **LIGHT, "queue": True}
    generate.click(
        jobs.submit_page, [*controls, *batch, owner], None, validator=jobs.check_submit, **queueing
    )
    generate.click(None, None, None, js=ASK_PERMISSION_JS)
    extend.click(
        jobs.submit_page_extension,
        extend_inputs,
        None,
        validator=studio.check_extend_page,
        **queueing,
    )
    cancel.click(jobs.cancel_running, owner, None, **LIGHT)
    picked = [queue.choice, owner]
    queue.cancel.click(jobs.cancel_picked, picked, None, **LIGHT)
    queue.up.click(jobs.move(-1), picked, None, api_name="move_up", **LIGHT)
    queue.down.click(jobs.move(+1), picked, None, api_name="move_down", **LIGHT)
    page_loaded.then(
        jobs.follower(result, queue, gallery_outputs),
        owner,
        [
            *(getattr(result, field.name) for field in dataclasses.fields(result)),
            queue.table,
            queue.choice,
            queue.ended,
            gallery_outputs.view,
            gallery_outputs.names,
        ],
        # Followers wait on the runner, not on a slot: as many as there are open pages.
        concurrency_limit=None,
        concurrency_id="follow",
        show_progress="hidden",
        api_visibility="private",
    )
    queue.ended.change(None, queue.ended, None, js=NOTIFY_JS)


def wire_direct_runs(
    studio: Studio,
    controls: list,
    extend_inputs: list,
    owner: gr.BrowserState,
    job: gr.State,
    cancel: gr.Button,
    generate: gr.Button,
    extend: gr.Button,
    result: ResultPanel,
    gallery_outputs: GalleryOutputs,
) -> None:
    """Without a job runner (ZeroGPU): the page's event runs the generation itself, in
    the one generation slot, and Cancel (or a closed page) stops it."""
    run_outputs = [getattr(result, field.name) for field in dataclasses.fields(result)]
    generation = {**GENERATION_EVENT, "show_progress_on": [result.run_status]}
    run = generate.click(
        studio.generate_page,
        [*controls, owner, job],
        run_outputs,
        validator=studio.check_page,
        **generation,
    )
    extension = extend.click(
        studio.extend_page,
        extend_inputs,
        run_outputs,
        validator=studio.check_extend_page,
        **generation,
    )
    gallery_io = (gallery_outputs.view, gallery_outputs.names)
    for started in (run, extension):
        started.then(studio.after_run, None, [result.preview, result.video], **LIGHT).then(
            studio.gallery.refresh_gallery, owner, list(gallery_io), **LIGHT
        )
    cancel.click(
        studio.cancel_page,
        job,
        [result.preview, result.run_status, result.video],
        cancels=[run, extension],
        **LIGHT,
    )


def reuse_last_seed(last: int | None) -> int:
    if last is None:
        raise gr.Error("No video made in this session yet: there is no last seed.")
    return last
