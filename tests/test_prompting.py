"""Prompt help (issue 24): the local backend with a tiny random Qwen2 chat model, and the
endpoint backend against a real HTTP server that speaks the OpenAI chat API."""

from __future__ import annotations

import json
import threading
import time

import pytest

from allegro.errors import Cancelled, InvalidRequestError
from allegro.events import CancelToken
from allegro.prompting import instructions
from allegro.prompting.choose import make_helper
from allegro.prompting.endpoint import EndpointHelper
from allegro.prompting.helper import (
    PromptHelpError,
    PromptTimeoutError,
    ShotFormatError,
    clean_caption,
    parse_shots,
)
from allegro.prompting.local import LocalHelper
from tests.chat_server import ChatServer
from tests.prompt_model import make_tiny_prompt_model


@pytest.fixture(scope="module")
def tiny_prompt_model(tmp_path_factory):
    return make_tiny_prompt_model(tmp_path_factory.mktemp("tiny-prompt-model"))


@pytest.fixture
def local(tiny_prompt_model):
    helper = make_helper(str(tiny_prompt_model), timeout=120)
    assert isinstance(helper, LocalHelper)
    return helper


def spy_generate(helper: LocalHelper, before_each_token=None):
    """Load the model, then record what generate() is given (and call the real one)."""
    loaded = helper.load(lambda event: None)
    calls = []
    real = loaded.model.generate

    def generate(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    loaded.model.generate = generate
    if before_each_token is not None:
        loaded.model.register_forward_pre_hook(lambda module, args: before_each_token())
    return loaded, calls


# ---- the local path ---------------------------------------------------------------------


def test_local_model_rewrites_through_the_chat_template_on_the_cpu(local, monkeypatch):
    monkeypatch.setattr(instructions, "IMPROVE_MAX_TOKENS", 24)
    loaded, calls = spy_generate(local)
    caption = local.improve("a cat on a roof")
    assert loaded.device == "cpu" and "no GPU" in local.describe()
    assert next(loaded.model.parameters()).device.type == "cpu"
    assert caption.strip()
    (call,) = calls
    assert call["max_new_tokens"] == 24 and call["do_sample"] is False
    fed = loaded.tokenizer.decode(call["input_ids"][0])
    # The chat template was applied: system, the examples, the person's words, then the
    # assistant's turn opened for the answer.
    assert fed.startswith("<|im_start|>system\nYou rewrite short video ideas")
    assert instructions.IMPROVE_EXAMPLES[0][1] in fed
    assert fed.endswith("<|im_start|>user\na cat on a roof<|im_end|>\n<|im_start|>assistant\n")
    # At most 24 new tokens (one character each in this byte-level vocabulary).
    assert len(caption) <= 24


def test_local_image_to_video_is_told_it_continues_from_an_image(local, monkeypatch):
    monkeypatch.setattr(instructions, "IMPROVE_MAX_TOKENS", 4)
    loaded, calls = spy_generate(local)
    local.improve("she turns around", image_to_video=True)
    fed = loaded.tokenizer.decode(calls[0]["input_ids"][0])
    assert "CONTINUES FROM AN IMAGE" in fed and "describe the MOTION" in fed
    assert instructions.IMPROVE_EXAMPLES[0][1] not in fed


def test_local_generation_stops_at_once_when_cancelled(local, monkeypatch):
    monkeypatch.setattr(instructions, "IMPROVE_MAX_TOKENS", 2000)
    cancel = CancelToken()
    steps = []

    def count():
        steps.append(1)
        if len(steps) == 3:
            cancel.cancel()

    spy_generate(local, before_each_token=count)
    with pytest.raises(Cancelled, match="the prompt was left as it was"):
        local.improve("a cat", cancel=cancel)
    # Checked between tokens: one more forward at most, not the 2,000 asked for.
    assert len(steps) <= 4


def test_local_generation_past_its_time_is_a_clear_message(local, monkeypatch):
    monkeypatch.setattr(instructions, "IMPROVE_MAX_TOKENS", 100_000)
    spy_generate(local)  # loaded: the time limit counts generation only
    local.timeout = 0.5
    started = time.monotonic()
    with pytest.raises(PromptTimeoutError, match=r"did not answer within 0 s.*--prompt-timeout"):
        local.improve("a cat")
    assert time.monotonic() - started < 10


def test_a_missing_local_model_is_a_message_about_the_prompt_model(tmp_path):
    from allegro.errors import ModelUnavailableError

    helper = make_helper(str(tmp_path / "nowhere"), timeout=5)
    with pytest.raises(ModelUnavailableError, match=r"does not exist.*--prompt-model none"):
        helper.improve("a cat")


def test_a_hub_model_reports_its_download_like_the_video_model(no_network, monkeypatch):
    """Offline here: the download is tried (and shown) through the video model's fetch,
    then refused with a message about the prompt model, not the 25 GB video model."""
    from allegro.errors import ModelUnavailableError
    from allegro.events import Stage

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    events = []
    helper = make_helper("Qwen/Qwen2.5-1.5B-Instruct", timeout=5)
    with pytest.raises(ModelUnavailableError) as caught:
        helper.improve("a cat", on_progress=events.append)
    message = str(caught.value)
    assert "hf download Qwen/Qwen2.5-1.5B-Instruct" in message and "25 GB" not in message
    assert events and events[0].stage == Stage.DOWNLOADING
    assert "Qwen/Qwen2.5-1.5B-Instruct" in events[0].message


def test_the_local_model_goes_to_the_cpu_when_the_gpu_is_busy(monkeypatch):
    import torch

    from allegro.prompting.local import choose_device, gpu_headroom_bytes

    weights = 3 * 1024**3  # Qwen2.5-1.5B in bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device(weights) == ("cpu", "no GPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (weights, 80 * 1024**3))
    device, reason = choose_device(weights)
    assert device == "cpu" and "busy (3.0 GB free)" in reason
    assert 16 * 1024**3 < gpu_headroom_bytes() < 20 * 1024**3
    free = weights + gpu_headroom_bytes()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (free, 80 * 1024**3))
    assert choose_device(weights) == ("cuda", "GPU")


# ---- the endpoint path ------------------------------------------------------------------


@pytest.fixture
def chat_server():
    server = ChatServer()
    yield server
    server.close()


def test_endpoint_rewrites_a_prompt(chat_server):
    chat_server.reply('Here is the caption: "A ginger cat naps on a sunny roof."')
    helper = make_helper(chat_server.url + "#qwen2.5:1.5b", timeout=10, api_key="sk-test")
    assert isinstance(helper, EndpointHelper)
    assert helper.improve("a cat") == "A ginger cat naps on a sunny roof."
    (request,) = chat_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "qwen2.5:1.5b" and body["stream"] is False
    assert body["max_tokens"] == instructions.IMPROVE_MAX_TOKENS
    assert body["messages"][0] == {"role": "system", "content": instructions.IMPROVE_SYSTEM}
    assert body["messages"][-1] == {"role": "user", "content": "a cat"}


def test_endpoint_without_a_model_name_uses_the_first_it_lists(chat_server):
    chat_server.reply("A dog runs.")
    helper = make_helper(chat_server.url, timeout=10)
    assert helper.improve("a dog") == "A dog runs."
    listing, chat = chat_server.requests
    assert listing["path"] == "/v1/models" and "Authorization" not in listing["headers"]
    assert chat["body"]["model"] == "listed-model"


def test_endpoint_slow_answer_past_the_timeout(chat_server):
    chat_server.answers.append("hang")
    helper = make_helper(chat_server.url + "#m", timeout=1)
    started = time.monotonic()
    with pytest.raises(PromptTimeoutError, match="did not answer within 1 s"):
        helper.improve("a cat")
    assert time.monotonic() - started < 5


def test_endpoint_cancel_while_waiting(chat_server):
    chat_server.answers.append("hang")
    helper = make_helper(chat_server.url + "#m", timeout=30)
    cancel = CancelToken()
    threading.Timer(0.2, cancel.cancel).start()
    with pytest.raises(Cancelled, match="left as it was"):
        helper.improve("a cat", cancel=cancel)


def test_endpoint_error_status_is_reported(chat_server):
    chat_server.answers.append((500, {"error": "model crashed"}))
    helper = make_helper(chat_server.url + "#m", timeout=10)
    with pytest.raises(PromptHelpError, match=r"answered HTTP 500: .*model crashed.*Nothing"):
        helper.improve("a cat")


def test_endpoint_unreachable_is_reported(chat_server):
    url = chat_server.url
    chat_server.close()
    with pytest.raises(PromptHelpError, match="cannot be reached"):
        make_helper(url + "#m", timeout=5).improve("a cat")


def test_story_becomes_shots_in_the_storyboard_format(chat_server):
    shots = {
        "shots": [
            {"prompt": "A ship at dawn.", "start": "continue"},  # first: made a cut
            {"prompt": "It  sails into\nthe storm.", "start": "continue"},
            {"prompt": "A harbour at night."},  # no start after the first: continue
            {"prompt": "A lighthouse.", "start": "cut"},
        ]
    }
    chat_server.reply("```json\n" + json.dumps(shots) + "\n```")
    helper = make_helper(chat_server.url + "#m", timeout=10)
    assert helper.write_shots("A ship sails from dawn into a storm.") == {
        "shots": [
            {"prompt": "A ship at dawn.", "start": "cut"},
            {"prompt": "It sails into the storm.", "start": "continue"},
            {"prompt": "A harbour at night.", "start": "continue"},
            {"prompt": "A lighthouse.", "start": "cut"},
        ]
    }
    assert chat_server.requests[0]["body"]["max_tokens"] == instructions.SHOTS_MAX_TOKENS


def test_malformed_story_answer_is_retried_once_then_used(chat_server):
    chat_server.reply('{"shots": [{"prompt": "A ship", "start": "fade"}]}')
    chat_server.reply('{"shots": [{"prompt": "A ship", "start": "cut"}]}')
    helper = make_helper(chat_server.url + "#m", timeout=10)
    assert helper.write_shots("a ship") == {"shots": [{"prompt": "A ship", "start": "cut"}]}
    retry = chat_server.requests[1]["body"]["messages"]
    assert "not valid: shot 1 starts with 'fade'" in retry[-1]["content"]


def test_malformed_story_answer_twice_is_reported_and_nothing_is_used(chat_server):
    chat_server.reply("Sure! Shot 1: a ship. Shot 2: a storm.")
    chat_server.reply('{"shots": [{"prompt": "A ship", "start": "cut"}, {"start": "cut"}]}')
    helper = make_helper(chat_server.url + "#m", timeout=10)
    with pytest.raises(PromptHelpError, match=r"asked twice.*shot 2 has no prompt.*No shots"):
        helper.write_shots("a ship in a storm")
    assert len(chat_server.requests) == 2  # retried once, not more


# ---- checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("no json here", "no JSON object"),
        ("{'shots': []}", "does not parse"),
        ('{"shots": []}', 'no non-empty "shots"'),
        ('{"scenes": [{"prompt": "a"}]}', 'no non-empty "shots"'),
        ('{"shots": ["a ship"]}', "shot 1 has no prompt"),
        (json.dumps({"shots": [{"prompt": "a"}] * 21}), "21 shots, more than 20"),
        (json.dumps({"shots": [{"prompt": "x" * 4001}]}), "over 4000 characters"),
    ],
)
def test_shot_lists_are_checked(answer, problem):
    with pytest.raises(ShotFormatError, match=problem):
        parse_shots(answer)


def test_captions_are_one_paragraph_within_the_word_limit():
    long = " ".join(f"Word{i} goes on." for i in range(100))
    caption = clean_caption("Sure, here is the prompt:\n\n" + long)
    assert caption.startswith("Word0") and "\n" not in caption
    assert len(caption.split()) <= instructions.MAX_WORDS and caption.endswith(".")


@pytest.mark.parametrize("bad", ["", "   ", None, "x" * 4001])
def test_bad_prompts_are_refused_before_any_model_call(bad, chat_server):
    helper = make_helper(chat_server.url + "#m", timeout=10)
    with pytest.raises(InvalidRequestError):
        helper.improve(bad)
    with pytest.raises(InvalidRequestError):
        helper.write_shots(bad if bad != "x" * 4001 else "x" * 9000)
    assert chat_server.requests == []


@pytest.mark.parametrize("off", ["none", "off", "", None])
def test_none_switches_prompt_help_off(off):
    assert make_helper(off) is None


# ---- per-person limits (shared servers) --------------------------------------------------


def test_one_answer_at_a_time_per_person_and_an_hourly_allowance():
    from allegro.prompting.limits import PersonLimits

    now = [1000.0]
    limits = PersonLimits(per_hour=2, clock=lambda: now[0])
    with limits.take("alice"):
        with pytest.raises(PromptHelpError, match="still being rewritten"), limits.take("alice"):
            pass
        with limits.take("bob"):  # another person is not held up
            pass
    with limits.take("alice"):
        pass
    now[0] += 600
    too_many = r"2 times in the last hour.*about 50 min"
    with pytest.raises(PromptHelpError, match=too_many), limits.take("alice"):
        pass
    now[0] += 3000  # the first try is now an hour old
    with limits.take("alice"):
        pass


# ---- the command line -------------------------------------------------------------------


def test_cli_improve_prompt_prints_the_caption(chat_server, capsys):
    from allegro.cli import main

    chat_server.reply("A cat  leaps\nonto a fence.")
    args = ["improve-prompt", "a cat", "--image-to-video", "--prompt-model", chat_server.url + "#m"]
    assert main(args) == 0
    assert capsys.readouterr().out == "A cat leaps onto a fence.\n"
    system = chat_server.requests[0]["body"]["messages"][0]["content"]
    assert system == instructions.IMAGE_TO_VIDEO_SYSTEM


def test_cli_write_shots_saves_the_storyboard_or_nothing(chat_server, tmp_path, capsys):
    from allegro.cli import main

    story = tmp_path / "story.txt"
    story.write_text("A ship sails into a storm.", encoding="utf-8")
    out = tmp_path / "board.json"
    model = ["--prompt-model", chat_server.url + "#m"]
    chat_server.reply('{"shots": [{"prompt": "A ship.", "start": "cut"}]}')
    assert main(["write-shots", str(story), "--out", str(out), *model]) == 0
    assert json.loads(out.read_text()) == {"shots": [{"prompt": "A ship.", "start": "cut"}]}
    out.unlink()
    chat_server.reply("not json")
    chat_server.reply("still not json")
    assert main(["write-shots", str(story), "--out", str(out), *model]) == 2
    assert "asked twice" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [story]
    assert main(["write-shots", str(tmp_path / "missing.txt"), *model]) == 2
    assert "Cannot read the story" in capsys.readouterr().err


# ---- the original prompt beside a rewrite -------------------------------------------------


def test_the_original_prompt_travels_with_the_request_and_the_settings():
    from allegro.jobs.job import request_from_json, request_to_json
    from allegro.request import GenerationRequest, check_request
    from allegro.settings import VideoSettings

    request = GenerationRequest("A grey cat sleeps on a rug.", original_prompt="a cat")
    assert request_from_json(request_to_json(request)).original_prompt == "a cat"
    record = VideoSettings.from_dict({"prompt": request.prompt, "original_prompt": "a cat"})
    assert record.to_dict()["original_prompt"] == "a cat"
    assert record.to_request().original_prompt == "a cat"
    assert VideoSettings.from_dict({"prompt": "x"}).original_prompt is None
    with pytest.raises(InvalidRequestError, match="original prompt must be text"):
        check_request(GenerationRequest("a", original_prompt=7))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="original prompt is 4,001 characters"):
        check_request(GenerationRequest("a", original_prompt="x" * 4001))
