"""The gallery on the page (list, select, reuse, delete, a dropped MP4) and the /history
endpoint: each person sees and touches only their own videos (``gallery_owner``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from allegro.errors import AllegroError
from allegro.params import param
from allegro.request import check_request
from ui import gallery
from ui.formatting import entry_markdown
from ui.presets import control_names, controls_from_settings, request_from_settings
from ui.services import Services, user_error


class GalleryPage:
    def __init__(self, studio: Services) -> None:
        self.studio = studio

    def on_page_load(self, owner_id: Any):
        """A new page: keep this browser's token if this server issued it, else issue one
        (a made-up or copied id gets a new, empty gallery), and list its videos."""
        token = owner_id if self.studio.identities.is_page_token(owner_id) else None
        token = token or self.studio.identities.issue_page_token()
        return (token, *self.refresh_gallery(token))

    def _page_gallery(self, owner_id: Any) -> str | None:
        """gallery_owner for a page's token (gr.Error if the token is not ours)."""
        try:
            return self.studio.gallery_owner(self.studio.page_owner(owner_id))
        except AllegroError as error:
            raise user_error(error) from None

    def _entries(self, owner_id: Any) -> list[gallery.GalleryEntry]:
        return gallery.list_entries(self.studio.output_dir, self._page_gallery(owner_id))

    def _find(self, name: Any, owner: str | None) -> gallery.GalleryEntry:
        try:
            return gallery.find_entry(self.studio.output_dir, name, owner)
        except AllegroError as error:
            raise user_error(error) from None

    def refresh_gallery(self, owner_id: str):
        """(gallery items, names in display order)."""
        entries = self._entries(owner_id)
        items = [(self.studio.publish(entry.thumbnail), entry.caption) for entry in entries]
        return items, [entry.name for entry in entries]

    def select_entry(self, names: list[str], owner_id: str, event: gr.SelectData):
        """(selected name, video, summary, settings, input images, actions row)."""
        owner = self._page_gallery(owner_id)
        try:
            name = names[event.index]
        except (IndexError, TypeError):
            raise gr.Error("Pick a video again.", print_exception=False) from None
        entry = self._find(name, owner)
        inputs = [
            (self.studio.publish(path), param(key).label)
            for key, path in entry.input_images.items()
        ]
        return (
            entry.name,
            self.studio.publish(entry.video),
            entry_markdown(entry.settings, entry.video.name),
            entry.settings,
            gr.update(value=inputs, visible=bool(inputs)),
            gr.update(visible=True),
        )

    def reuse_entry(self, name: str | None, owner_id: str):
        """The selected video's settings and input images into the controls."""
        owner = self._page_gallery(owner_id)
        if not name:
            raise gr.Error("Pick a video in the gallery first.", print_exception=False)
        entry = self._find(name, owner)
        return self._controls_from(
            entry.settings, f"Settings of {entry.name} loaded.", entry.input_images
        )

    def delete_entry(self, name: str | None, owner_id: str):
        """(gallery items, names, selected name, video, summary, settings, actions row)."""
        owner = self._page_gallery(owner_id)
        if not name:
            raise gr.Error("Pick a video in the gallery first.", print_exception=False)
        entry = self._find(name, owner)
        self.studio.unpublish(
            [entry.video, *([entry.poster] if entry.poster else []), *entry.input_images.values()]
        )
        try:  # the served copies are gone; now the files themselves
            gallery.delete_entry(self.studio.output_dir, entry.name, owner)
        except AllegroError as error:
            raise user_error(error) from None
        return (*self.refresh_gallery(owner_id), None, None, "", None, gr.update(visible=False))

    def load_dropped_video(self, path: str | None, owner_id: Any = None):
        """A dropped MP4 -> its settings in the controls, and its input images when they are
        in the caller's gallery. The settings are checked field by field like a request; any
        problem is a message and nothing is loaded."""
        if not path:
            return tuple(gr.skip() for _ in control_names())
        from allegro.video import read_settings

        upload = Path(path)
        try:
            if upload.suffix.lower() != ".mp4":
                raise AllegroError(f"{upload.name} is not an MP4 video.")
            settings = read_settings(upload)
            request = request_from_settings(settings)
            if request.interpolate:
                self.studio.check_interpolation(request.interpolation_method)
            check_request(request)
            owner = (
                self.studio.gallery_owner(self.studio.page_owner(owner_id)) if owner_id else None
            )
            try:
                images = gallery.images_named(self.studio.output_dir, settings, owner)
            except gallery.GalleryError as error:
                gr.Warning(f"{error} Add the input images again.")
                images = {}
        except AllegroError as error:
            raise gr.Error(f"Nothing was loaded: {error}", print_exception=False) from None
        finally:
            upload.unlink(missing_ok=True)  # only its settings were wanted; nobody may fetch it
        return self._controls_from(settings, "Settings loaded from the video.", images)

    def _controls_from(self, settings: Mapping[str, Any], message: str, images: Mapping[str, Path]):
        """The controls' values, by name, in the order of ``control_names`` (the event's
        outputs): the saved settings, and the input images as copies served to this caller."""
        loaded = controls_from_settings(settings, self.studio.loader.status().native)
        for note in loaded.notes:
            gr.Warning(note)
        gr.Info(message)
        values = {name: getattr(loaded.values, name) for name in control_names()}
        for key in gallery.INPUT_IMAGES:  # the images the settings name, where they are
            path = images.get(key)
            values[key] = self.studio.publish(path) if path else None
        return tuple(values[name] for name in control_names())

    def history(self, request: gr.Request = None) -> list[dict]:
        """Past generations visible to the caller, newest first (on a shared server: those
        made with the same X-Allegro-Key). Each links to a copy made for this answer."""
        try:
            owner = self.studio.gallery_owner(self.studio.api_owner(request))
            return [
                gallery.history_record(
                    entry,
                    self.studio.published_url(entry.video),
                    self.studio.published_url(entry.poster) if entry.poster else None,
                    {
                        key: self.studio.published_url(path)
                        for key, path in entry.input_images.items()
                    },
                )
                for entry in gallery.list_entries(self.studio.output_dir, owner)
            ]
        except Exception as error:
            raise user_error(error) from None
