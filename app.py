"""Allegro Studio: ``python app.py`` serves the page and the API (``--help`` lists the flags).

Only wiring lives here: settings -> model loader + handlers -> page -> server. Gradio is
imported after the flags are parsed and torch only by the background model loader, so
``--help`` is instant and the page answers before the model has loaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

from ui.config import MAX_UPLOAD_MB, AppConfig, parse_config

logger = logging.getLogger("allegro_studio")


def mcp_missing_message() -> str | None:
    """Why --mcp cannot work here, or None if it can."""
    if importlib.util.find_spec("mcp") is None:
        return (
            "--mcp needs Gradio's MCP extras, which are not installed. Install them with "
            "pip install 'gradio[mcp]', or start without --mcp."
        )
    return None


def guards(config: AppConfig) -> tuple[frozenset[str] | None, tuple[str, ...]]:
    """(the host names the server answers to, None: any; the origins that may frame the page).
    A local server checks the Host header (DNS rebinding); a shared one is reached by names
    it cannot know, unless --allowed-hosts lists them."""
    from ui.access import SPACE_EMBEDDER, allowed_host_names

    hosts = None
    if not config.shared or config.allowed_hosts:
        hosts = allowed_host_names(config.host, config.allowed_hosts)
    ancestors = (*((SPACE_EMBEDDER,) if config.space_id else ()), *config.allowed_origins)
    return hosts, ancestors


def launch(config: AppConfig) -> None:
    if config.zero_gpu:
        # Before anything can initialise CUDA: spaces patches torch when imported, and
        # refuses to once CUDA is up (spaces 0.51.3 zero/__init__.py:23-27).
        import spaces  # noqa: F401
    from allegro.video import remove_leftovers
    from ui.access import hide_gradio_errors
    from ui.layout import FAVICON, STYLE, build_blocks, theme
    from ui.model_status import ModelLoader
    from ui.origins import studio_app
    from ui.studio import Studio

    config.output_dir.mkdir(parents=True, exist_ok=True)
    if leftovers := remove_leftovers(config.output_dir):
        logger.info("Removed %d leftovers of interrupted saves", len(leftovers))
    # uvicorn believes X-Forwarded-For only from these addresses (uvicorn/config.py:362-363,
    # 127.0.0.1 by default): nobody's unless the operator names their proxy.
    os.environ["FORWARDED_ALLOW_IPS"] = config.trusted_proxies or ""
    loader = ModelLoader(config)
    if config.zero_gpu:
        # On the main thread and before launch, where ZeroGPU can take the weights: see
        # ModelLoader.load. The page answers only once the model is loaded.
        loader.load()
    studio = Studio(config, loader, os.environ, jobs_db=config.jobs_db_path)
    demo = build_blocks(studio)
    hide_gradio_errors(demo, detailed=not config.shared)
    # No overall limit: only generations are limited, by the job runner's limits in their
    # validators (ui/studio.py, _room_problem), so a full queue never turns away a page load.
    demo.queue(max_size=None, default_concurrency_limit=None)
    demo.launch(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        # No allowed_paths: the output folder is never served as such; handlers hand out
        # copies to each video's owner (ui/studio.py, Studio.publish).
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        enable_monitoring=False,
        _app=studio_app(config.allowed_origins, *guards(config)),
        # The jobs database may sit in the output folder: never serve it (nor its WAL), even
        # if a path there were allowed. Blocked paths win (gradio/blocks.py:3125).
        blocked_paths=[
            *(f"{config.jobs_db_path}{suffix}" for suffix in ("", "-wal", "-shm")),
            str(config.job_inputs_dir),
        ],
        mcp_server=config.mcp,
        theme=theme(),
        css_paths=[STYLE],
        favicon_path=FAVICON,
        footer_links=["api", "gradio"],
        prevent_thread_lock=True,
    )
    if not config.zero_gpu:
        # Loading starts once the page answers: importing torch on the side would slow that.
        loader.start()
    if studio.runner is not None:
        studio.runner.start()  # the queue left by the last run goes on
    logger.info("Serving %s on %s:%s", loader.config.output_dir, config.host, config.port)
    demo.block_thread()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config.mcp and (problem := mcp_missing_message()):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    launch(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
