"""The page: components, where they sit, and which Studio handler each event calls."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gradio as gr

from ui.api_params import validated
from ui.controls import make_control
from ui.first_start import draft_button_sets, first_start_panel
from ui.page_jobs import (
    ASK_PERMISSION_JS,
    KEEP_OPEN,
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
    control_names,
    length_choices,
    size_choices,
)
from ui.prompt_help import PromptHelpControls
from ui.prompt_help import add_api as add_prompt_help_api
from ui.studio import GENERATION, Studio

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


class PlacedControls(dict):
    """The generation controls as the layout places them, by name (``control_names``): a
    declared parameter's control is made from the declaration (``add``), the composite ones
    (length, size, task) are put in by hand."""

    def add(self, name: str, **placement):
        self[name] = make_control(name, **placement)
        return self[name]

    def inputs(self) -> list:
        """The controls in ``control_names`` order (KeyError for one the layout forgot)."""
        return [self[name] for name in control_names()]


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
        placed = PlacedControls()
        last_seed = gr.State(None)
        gallery_names = gr.State([])
        selected_name = gr.State(None)
        timer = gr.Timer(STATUS_POLL_SECONDS)

        gr.HTML(HEADER, elem_id="studio-header-block", js_on_load=None)
        with gr.Row(elem_id="model-banner-row"):
            banner = gr.Markdown("**Starting …**", elem_id="model-banner")
            retry = gr.Button("Retry loading", visible=False, size="sm", scale=0, min_width=140)
        draft = first_start_panel(studio.config)

        with gr.Row(equal_height=False, elem_id="workspace"):
            with gr.Column(scale=5, min_width=320, elem_id="controls"):
                prompt = placed.add(
                    "prompt",
                    info=None,
                    placeholder="Describe the video: subject, action, setting, camera, light…",
                    lines=3,
                    max_lines=8,
                    autofocus=True,
                    elem_id="prompt",
                )
                prompt_help = PromptHelpControls.build(studio.prompt_help)  # issue 24
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
                if studio.visitor_runs is not None:  # ZeroGPU: the page runs its own jobs
                    gr.Markdown(f"**{KEEP_OPEN}**", elem_id="keep-open")
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
                task = placed["task"] = gr.Radio(
                    list(TASKS),
                    value=TEXT_TO_VIDEO,
                    label="Make a video from",
                    show_label=False,
                    visible=False,  # shown once the model is ready, if it serves images
                    elem_id="task",
                )
                with gr.Group(visible=False, elem_id="image-inputs") as image_inputs:
                    with gr.Row(equal_height=True):
                        first_image = placed.add(
                            "first_image",
                            type="filepath",
                            sources=["upload", "clipboard"],
                            height=200,
                            elem_id="first-image",
                        )
                        last_image = placed.add(
                            "last_image",
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
                    length = placed["length"] = gr.Dropdown(
                        length_choices(None),
                        value=MODEL_DEFAULT,
                        label="Length",
                        min_width=240,
                        elem_id="length",
                    )
                    size = placed["size"] = gr.Dropdown(
                        size_choices(None),
                        value=MODEL_DEFAULT,
                        label="Size",
                        min_width=240,
                        elem_id="size",
                    )
                draft_button_sets(draft, length, size)
                with gr.Row(elem_id="seed-row", equal_height=True):
                    seed = placed.add(
                        "seed",
                        info="-1 picks a new random seed each time",
                        scale=4,
                        elem_id="seed",
                    )
                    random_seed = gr.Button("🎲", scale=0, min_width=52, elem_classes="icon-button")
                    reuse_seed = gr.Button("♻️", scale=0, min_width=52, elem_classes="icon-button")
                with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
                    negative = placed.add(
                        "negative_prompt",
                        info="What to avoid; prefilled with the official one.",
                        lines=3,
                    )
                    # Steps above SLIDER_MAX_STEPS are offered by the API only.
                    steps = placed.add("steps", maximum=SLIDER_MAX_STEPS, elem_id="steps")
                    guidance = placed.add("guidance_scale")
                    with gr.Row():
                        use_template = placed.add("use_template")
                        fast_mode = placed.add("fast_mode")
                        step_cache = placed.add("step_cache", elem_id="step-cache")
                    with gr.Row() as interpolation_row:
                        interpolate = placed.add("interpolate")
                        method = placed.add("interpolation_method", visible=False)
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

        controls = placed.inputs()  # every generation control, in control_names' order
        hint_inputs = [steps, length, size, fast_mode, step_cache, guidance, task]
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
            [
                *(steps.change, length.change, size.change, fast_mode.change, step_cache.change),
                *(guidance.change, task.change),
            ],
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

        click_generate = generate.click
        if prompt_help is not None:  # issue 24: Improve prompt, Undo, rewrite before queueing
            prompt_help.wire(studio.prompt_help, prompt, task, owner)
            click_generate = prompt_help.generate_click(
                studio.prompt_help, generate, prompt, task, owner
            )
        result = ResultPanel(preview, run_status, video, result_info, result_settings, last_seed)
        gallery_outputs = GalleryOutputs(gallery_view, gallery_names)
        extend_inputs = [selected_name, prompt, negative, seed, steps, guidance, length]
        extend_inputs += [use_template, fast_mode, owner]
        if studio.page_jobs is not None and queue_panel is not None:
            wire_jobs(
                studio, controls, [each_line, variations], extend_inputs, owner, cancel,
                generate, extend, result, queue_panel, gallery_outputs, page_loaded,
                click_generate,
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

        # A call is a job the moment it is accepted (recorded: a restart runs it) and waits
        # in the runner's queue, whose workers run one video per device: no Gradio slot. On
        # ZeroGPU the caller's own call runs its job (its GPU quota): one at a time, as the
        # page's runs there.
        slots = (
            {"concurrency_limit": 1, "concurrency_id": GENERATION}
            if studio.visitor_runs is not None
            else {"concurrency_limit": None}
        )
        for name, handler, validator in (
            ("generate", studio.api_generate, studio.check_api),
            ("extend", studio.api_extend, studio.check_extend),
        ):
            gr.api(validated(handler, validator), api_name=name, **slots)
        gr.api(studio.gallery.history, api_name="history", queue=False)
        add_prompt_help_api(studio.prompt_help)
        if studio.runner is not None:  # jobs run in the runner's worker, not in a Gradio slot
            # /submit takes /generate's parameters: its validator checks the key, every field
            # and the job limits before the job is queued. Not on ZeroGPU: a job there runs
            # only in its caller's own event (/generate).
            if studio.visitor_runs is None:
                submit = validated(studio.job_api.submit, studio.check_submit_api)
                gr.api(submit, api_name="submit", concurrency_limit=None)
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
    click_generate=None,  # issue 24: generate.click with the automatic rewrite before it
) -> None:
    """Generate and Extend queue jobs and return at once; each page follows its person's
    jobs from the moment it loads (a reload reattaches), and never owns them."""
    jobs = studio.page_jobs
    assert jobs is not None
    # Own concurrency group without a limit: queueing takes milliseconds, and a running
    # video never holds it (the runner's worker makes videos, not a Gradio slot).
    queueing = {"concurrency_limit": None, "concurrency_id": "queueing", **LIGHT, "queue": True}
    queued = (click_generate or generate.click)(
        jobs.submit_page, [*controls, *batch, owner], None, validator=jobs.check_submit, **queueing
    )
    generate.click(None, None, None, js=ASK_PERMISSION_JS)
    queued_extension = extend.click(
        jobs.submit_page_extension,
        extend_inputs,
        None,
        validator=studio.check_extend_page,
        **queueing,
    )
    if jobs.run_waiting is not None:  # ZeroGPU: the page's own event runs its jobs
        for event in (queued, queued_extension):
            event.success(jobs.run_in_page, owner, None, **GENERATION_EVENT, show_progress="hidden")
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


def reuse_last_seed(last: int | None) -> int:
    if last is None:
        raise gr.Error("No video made in this session yet: there is no last seed.")
    return last
