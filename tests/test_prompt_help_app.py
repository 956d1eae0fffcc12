"""Prompt help in the running app (issue 24): /improve_prompt and /write_shots against a
real OpenAI-style chat server, outside the video queue; off when asked or when shared."""

from __future__ import annotations

import pytest

from tests.chat_server import ChatServer
from tests.studio_server import start_studio


@pytest.fixture(scope="module")
def chat_server():
    server = ChatServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def studio(tiny_model, tmp_path_factory, chat_server):
    workdir = tmp_path_factory.mktemp("prompt-help-app")
    server = start_studio(
        tiny_model,
        workdir / "outputs",
        workdir / "app.log",
        "--prompt-model",
        chat_server.url + "#m",
        "--prompt-timeout",
        "2",
    )
    yield server
    server.stop()


def error_of(call) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        call()
    return str(caught.value)


def test_the_api_rewrites_prompts_and_writes_shots_without_queueing_anything(studio, chat_server):
    client = studio.client()
    chat_server.reply("A tabby cat stretches on a sunlit porch.")
    assert client.predict("a cat", api_name="/improve_prompt") == (
        "A tabby cat stretches on a sunlit porch."
    )
    chat_server.reply('{"shots": [{"prompt": "A ship.", "start": "cut"}, {"prompt": "Rain."}]}')
    assert client.predict("A ship in the rain.", api_name="/write_shots") == {
        "shots": [{"prompt": "A ship.", "start": "cut"}, {"prompt": "Rain.", "start": "continue"}]
    }
    chat_server.answers.append((500, {"error": "overloaded"}))
    assert "answered HTTP 500" in error_of(lambda: client.predict("a", api_name="/improve_prompt"))
    chat_server.answers.append("hang")
    assert "did not answer within 2 s" in error_of(
        lambda: client.predict("a", api_name="/improve_prompt")
    )
    chat_server.reply("not json")
    chat_server.reply("{still not json")
    message = error_of(lambda: client.predict("a story", api_name="/write_shots"))
    assert "asked twice" in message and "No shots were changed" in message
    assert (
        "write a few words"
        in error_of(lambda: client.predict("  ", api_name="/improve_prompt")).lower()
    )
    assert client.predict(api_name="/jobs") == []  # nothing was queued
    assert not list(studio.output_dir.glob("*.mp4"))


def test_a_video_from_an_api_rewrite_records_both_prompts(studio, chat_server):
    client = studio.client()
    chat_server.reply("A red kite dances over golden dunes.")
    caption = client.predict("a kite", api_name="/improve_prompt")
    _video, settings = client.predict(prompt=caption, steps=2, api_name="/generate")
    assert settings["prompt"] == "A red kite dances over golden dunes."
    assert settings["original_prompt"] == "a kite"
    _video, settings = client.predict(prompt="a kite, my own", steps=2, api_name="/generate")
    assert settings["original_prompt"] is None


def test_prompt_model_none_has_no_prompt_help(tiny_model, tmp_path):
    server = start_studio(
        tiny_model, tmp_path / "outputs", tmp_path / "app.log", "--prompt-model", "none"
    )
    try:
        names = server.client().view_api(print_info=False, return_format="dict")
        assert "/improve_prompt" not in names["named_endpoints"]
        assert "/write_shots" not in names["named_endpoints"]
        assert "/generate" in names["named_endpoints"]
    finally:
        server.stop()


def test_prompt_help_is_off_on_a_shared_server_unless_named():
    from ui.config import parse_config

    shared = parse_config(["--shared"], environ={})
    assert shared.prompt_model_source == "none"
    named = parse_config(["--shared", "--prompt-model", "http://127.0.0.1:1/v1"], environ={})
    assert named.prompt_model_source == "http://127.0.0.1:1/v1"
    local = parse_config([], environ={})
    assert local.prompt_model_source == "Qwen/Qwen2.5-1.5B-Instruct"
    from_env = parse_config([], environ={"ALLEGRO_PROMPT_MODEL": "none"})
    assert from_env.prompt_model_source == "none"
    assert parse_config([], environ={"ALLEGRO_PROMPT_TIMEOUT": "9"}).prompt_timeout == 9.0


def _help(chat_server, *flags, environ=None):
    from ui.config import parse_config
    from ui.identity import Owner
    from ui.prompt_help import PromptHelp

    config = parse_config(["--prompt-model", chat_server.url + "#m", *flags], environ={})
    owners = {"alice-token": Owner("alice", "page"), "bob-token": Owner("bob", "page")}
    return PromptHelp(
        config,
        page_owner=owners.__getitem__,
        api_owner=lambda request: owners.get(request),
        environ=environ or {},
    )


def test_a_shared_server_limits_each_person(chat_server):
    import gradio as gr

    help = _help(chat_server, "--shared", "--prompt-help-per-hour", "1")
    chat_server.reply("One.")
    assert help.api_improve_prompt("a", request="alice-token") == "One."
    with pytest.raises(gr.Error, match="1 times in the last hour"):
        help.api_improve_prompt("a", request="alice-token")
    chat_server.reply("Two.")
    assert help.api_improve_prompt("a", request="bob-token") == "Two."  # bob has his own
    # Not shared: no per-person limit.
    local = _help(chat_server, "--prompt-help-per-hour", "1")
    assert local.limits is None


def test_a_rewrite_used_unchanged_keeps_the_persons_prompt(chat_server):
    from allegro.request import GenerationRequest
    from ui.identity import Owner

    help = _help(chat_server, environ={"ALLEGRO_PROMPT_API_KEY": "sk-1"})
    chat_server.reply("A grey cat sleeps.")
    improved, rewrite, _undo = help.improve_page("a cat", None, "Text to video", "alice-token")
    assert improved == "A grey cat sleeps."
    assert chat_server.requests[-1]["headers"]["Authorization"] == "Bearer sk-1"
    # Improving the rewrite again keeps the first original, for Undo and the settings.
    chat_server.reply("A grey cat sleeps on a rug.")
    again, rewrite, _undo = help.improve_page(improved, rewrite, "Text to video", "alice-token")
    assert rewrite.original == "a cat"
    alice, bob = Owner("alice", "page"), Owner("bob", "page")
    assert help.with_original(alice, GenerationRequest(again)).original_prompt == "a cat"
    assert help.with_original(bob, GenerationRequest(again)).original_prompt is None
    edited = GenerationRequest(again + " Snow falls.")
    assert help.with_original(alice, edited).original_prompt is None
    assert help.undo(rewrite)[0] == "a cat"
    chat_server.reply("A dog runs.")
    assert help.api_improve_prompt("a dog", request="bob-token") == "A dog runs."
    assert help.with_original(bob, GenerationRequest("A dog runs.")).original_prompt == "a dog"
    assert help.with_original(alice, GenerationRequest("A dog runs.")).original_prompt is None
