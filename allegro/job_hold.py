"""The job queue waits for the model: no job starts before the model is ready, and while it
has failed to load no new job is accepted (a caller would otherwise wait for ever, its job
``queued`` with nothing to run it).

- Loading (or downloading): new jobs are accepted; queued ones say "waiting for the model to
  load" with the loading's progress.
- Failed: new jobs are refused at once with the failure's reason, as the page's banner
  shows it, and how to retry; queued ones stay queued, say "waiting for the model:
  <reason>", and run once a retry has loaded it.
"""

from __future__ import annotations

from allegro.errors import ModelUnavailableError
from allegro.jobs.runner import Hold, JobRunner
from allegro.models import ModelManager, ModelState, Phase

FAILED = "The model could not be loaded."  # the page's banner (ui/model_status.py) says so
RETRY_HINT = (
    "Fix the cause, then press 'Retry loading' on the page (or restart the server) and "
    "submit again."
)


def loading_progress(state: ModelState) -> str:
    """What loading is doing now (the page's message), with the share of its stage done
    when it counts one (a download's bytes)."""
    progress = state.progress
    message = (progress.message if progress is not None else None) or state.message
    if progress is not None and progress.total:
        return f"{message} ({progress.step / progress.total:.0%})"
    return message


def model_hold(state: ModelState) -> Hold | None:
    """Why jobs cannot start with the model in ``state`` (None: they can)."""
    if state.phase == Phase.READY:
        return None
    if state.phase == Phase.FAILED:
        return Hold(
            f"waiting for the model: {state.error}",
            ModelUnavailableError(f"{FAILED} {state.error} {RETRY_HINT}"),
        )
    return Hold(f"waiting for the model to load: {loading_progress(state)}")


def hold_jobs_for_model(runner: JobRunner, manager: ModelManager) -> None:
    """``runner`` starts jobs only once ``manager``'s model is ready, and refuses new ones
    while it has failed to load."""
    runner.hold_while(lambda: model_hold(manager.state()))
    manager.on_change(runner.wake)
