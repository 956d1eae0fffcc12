"""The shared-hosting building blocks on their own: identities, the origin guard, the
checks a dropped video's settings go through, durable saves, the flags."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from allegro.errors import InvalidRequestError
from allegro.request import MAX_PROMPT_CHARS, GenerationRequest, check_request
from ui.config import parse_config
from ui.identity import (
    MIN_KEY_LENGTH,
    SECRET_FILE,
    Identities,
    IdentityError,
    key_owner,
    owner_tag,
)
from ui.origins import OriginGuard, origin_allowed
from ui.presets import request_from_settings


def test_page_tokens_are_issued_and_verified_by_the_server(tmp_path):
    identities = Identities.load(tmp_path, {})
    token = identities.issue_page_token()
    owner = identities.page_owner(token)
    assert owner.kind == "page" and owner.tag == owner_tag("page", token.split(".")[1])
    assert owner.tag not in token  # the stored tag is not the token
    page_id, mac = token.split(".")[1:]
    for forged in (
        f"p1.{page_id}.{'0' * 64}",
        f"p1.{'0' * 32}.{mac}",
        page_id,
        owner.tag,
        None,
        42,
        token + " ",
    ):
        with pytest.raises(IdentityError, match="not issued by this server"):
            identities.page_owner(forged)
    # Another server (another secret) does not accept it; the same folder after a restart does.
    with pytest.raises(IdentityError):
        Identities(b"another secret of enough length").page_owner(token)
    assert Identities.load(tmp_path, {}).page_owner(token) == owner
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o077 == 0


def test_the_secret_can_come_from_the_environment(tmp_path):
    secret = "s" * MIN_KEY_LENGTH
    token = Identities.load(tmp_path, {"ALLEGRO_SECRET": secret}).issue_page_token()
    assert Identities.load(tmp_path / "elsewhere", {"ALLEGRO_SECRET": secret}).page_owner(token)
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(IdentityError, match="at least 32"):
        Identities.load(tmp_path, {"ALLEGRO_SECRET": "short"})


def test_api_keys_must_be_secrets_and_have_their_own_namespace():
    assert key_owner(None) is None and key_owner("  ") is None
    for weak in ("my-own-key-123", "k" * (MIN_KEY_LENGTH - 1), "k" * 300, "x" * 40 + " y"):
        with pytest.raises(IdentityError, match="32 to 256"):
            key_owner(weak)
    key = "k" * MIN_KEY_LENGTH
    assert key_owner(key).tag == owner_tag("key", key) != owner_tag("page", key)


def test_the_origin_guard_refuses_other_sites():
    assert origin_allowed("http://192.168.1.5:7860", "192.168.1.5:7860", ())
    assert origin_allowed("https://studio.example.org", "studio.example.org", ())
    assert not origin_allowed("http://evil.example", "192.168.1.5:7860", ())
    assert not origin_allowed("null", "127.0.0.1:7860", ())
    assert origin_allowed("https://my.site", "127.0.0.1:7860", ("https://my.site",))

    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    guard = OriginGuard(app, ["https://my.site"])
    for origin, allowed in ((b"http://evil.example", False), (b"https://my.site", True)):
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/gradio_api/queue/join",
            "headers": [(b"host", b"10.0.0.2:7860"), (b"origin", origin)],
        }
        asyncio.run(guard(scope, receive, send))
        assert (reached[-1:] == ["/gradio_api/queue/join"]) is allowed
        reached.clear()
    assert sent[0]["status"] == 403
    assert not [h for h in sent[0]["headers"] if h[0] == b"access-control-allow-origin"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 2**40}, "Seed must be between"),
        ({"seed": -(10**20)}, "Seed must be between"),
        ({"steps": 100000}, "Steps must be between 1 and 500"),
        ({"guidance_scale": -50}, "Guidance scale must be between"),
        ({"prompt": "p" * (MAX_PROMPT_CHARS + 1)}, "4,001 characters long"),
        ({"negative_prompt": "\ud800"}, "not valid text"),
        ({"prompt": 5}, "Please write a prompt"),
        ({"frames": 50}, "Allegro cannot make 50 frames"),
        ({"use_template": "yes"}, "not yes or no"),
        ({"interpolation": "flow"}, "interpolation setting is malformed"),
    ],
)
def test_saved_settings_go_through_the_request_checks(change, message):
    settings = {"prompt": "a cat", "seed": 1, "steps": 2, "guidance_scale": 7.5, **change}
    with pytest.raises(InvalidRequestError, match=message):
        check_request(request_from_settings(settings))


def test_good_saved_settings_make_the_same_request():
    settings = {"prompt": "a cat", "seed": 1, "steps": 2, "interpolation": {"method": "flow"}}
    request = request_from_settings(settings)
    check_request(request)
    assert request == GenerationRequest(
        "a cat", seed=1, steps=2, interpolate=True, interpolation_method="flow"
    )


def test_saves_are_synced_to_disk_before_the_rename(tmp_path, monkeypatch):
    from allegro.video import write_video

    synced: list[int] = []
    real_replace = os.replace
    events: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), events.append("fsync")))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    path = write_video(tmp_path / "v.mp4", frames, 15, {"prompt": "p", "labels": {"owner": "t"}})
    # Each of the three files: its data synced, renamed, then its folder synced.
    assert events == ["fsync", "replace", "fsync"] * 3
    from allegro.video import read_settings

    assert "labels" not in read_settings(path)  # the owner tag stays out of the video


def test_shared_switch_and_proxy_trust_flags():
    local = parse_config([], {})
    assert not local.shared and local.trusted_proxies is None and local.allowed_origins == ()
    proxied = parse_config(
        ["--shared", "--trusted-proxies", "127.0.0.1", "--allowed-origins", "https://a.b/, "],
        {},
    )
    assert proxied.shared and proxied.per_browser_gallery
    assert proxied.trusted_proxies == "127.0.0.1" and proxied.allowed_origins == ("https://a.b",)
    assert parse_config([], {"ALLEGRO_SHARED": "1"}).shared


def test_a_dropped_file_that_is_not_an_mp4_loads_nothing(tmp_path):
    import gradio as gr

    from tests.test_ui_logic import LoadedOn, _config
    from ui.estimates import Hardware
    from ui.studio import Studio

    studio = Studio(_config(output_dir=tmp_path), LoadedOn(Hardware(None)), environ={})
    dropped = tmp_path / "notes.txt"
    dropped.write_text("hello")
    with pytest.raises(gr.Error, match=r"Nothing was loaded: notes\.txt is not an MP4"):
        studio.gallery.load_dropped_video(str(dropped))
    assert not dropped.exists()  # an upload is removed once read


def test_host_names_and_per_address_flags():
    local = parse_config([], {})
    assert local.allowed_hosts == () and local.jobs_per_address == 20
    config = parse_config(
        [
            "--allowed-hosts",
            "Studio.Example.org:443, [::1]:7860,b.example",
            "--jobs-per-address",
            "3",
        ],
        {},
    )
    assert config.allowed_hosts == ("studio.example.org", "::1", "b.example")
    assert config.jobs_per_address == 3
    env = {"ALLEGRO_ALLOWED_HOSTS": "x.example", "ALLEGRO_JOBS_PER_ADDRESS": "4"}
    assert parse_config([], env).allowed_hosts == ("x.example",)
    assert parse_config([], env).jobs_per_address == 4


def test_the_host_guard_and_the_headers_each_kind_of_server_gets():
    from app import guards
    from ui.access import HostGuard, host_name

    assert host_name("Example.org:7860") == "example.org" and host_name("[::1]:80") == "::1"
    hosts, ancestors = guards(parse_config(["--allowed-hosts", "studio.example.org"], {}))
    guard = HostGuard(None, hosts)
    for good in ("localhost:7860", "127.0.0.1:7860", "127.0.0.2", "[::1]:7860", None,
                 "studio.example.org"):  # fmt: skip
        assert guard.accepts(good), good
    for bad in ("attacker.example:7860", "192.168.1.5:7860", "studio.example.org.evil"):
        assert not guard.accepts(bad), bad
    assert ancestors == ()
    # A LAN server is reached by names it cannot know; a Space is framed by its own page.
    assert guards(parse_config(["--host", "0.0.0.0"], {}))[0] is None
    space = parse_config([], {"SPACE_ID": "me/studio"})
    hosts, ancestors = guards(space)
    assert hosts is None and ancestors == ("https://huggingface.co",)
    from ui.access import security_headers

    framed = security_headers(ancestors)
    assert framed["Content-Security-Policy"] == "frame-ancestors 'self' https://huggingface.co"
    assert "X-Frame-Options" not in framed and framed["X-Content-Type-Options"] == "nosniff"


def test_the_per_source_limit_counts_every_owner_of_one_source(tmp_path):
    from allegro.jobs import JobLimits, JobRunner, JobState, JobStore
    from allegro.jobs.job import JobLimitError
    from tests.test_jobs import FakeWorker, request

    source = {"now": "203.0.113.7"}
    store = JobStore(tmp_path / "jobs.sqlite")
    runner = JobRunner(
        store,
        [FakeWorker(tmp_path)],
        JobLimits(per_owner=5, total=10, per_source=2),
        caller_source=lambda: source["now"],
    )
    first = runner.submit(request(), owner="key-a")
    runner.submit(request(), owner="page-b")
    with pytest.raises(JobLimitError, match="limit per address on this server is 2"):
        runner.submit(request(), owner="key-c")
    with pytest.raises(JobLimitError, match="These are 2 videos"):
        runner.check_limits("key-d", 2)
    source["now"] = "198.51.100.9"
    runner.submit(request(), owner="key-c")  # another address
    source["now"] = "203.0.113.7"
    runner.cancel(first.id, "key-a")  # one ended: room again
    assert store.get(first.id).state == JobState.CANCELLED
    runner.submit(request(), owner="key-e")
    source["now"] = None  # outside any request (a restart's queue, the CLI): no such limit
    runner.submit(request(), owner="key-f")
    store.close()


def test_the_source_of_a_caller_is_derived_by_the_server():
    from types import SimpleNamespace

    from ui.access import caller_source, source_of_events

    def request(host, forwarded=None):
        headers = {"x-forwarded-for": forwarded} if forwarded else {}
        return SimpleNamespace(client=SimpleNamespace(host=host), headers=headers)

    # Uvicorn has already put a trusted proxy's forwarded address in client.host.
    assert caller_source(request("10.0.0.9", "1.2.3.4"), False) == "10.0.0.9"
    assert caller_source(request("10.0.0.1", "1.2.3.4, 10.0.0.1"), True) == "1.2.3.4"
    assert caller_source(request("10.0.0.1"), True) == "10.0.0.1"
    assert caller_source(None, True) is None
    space = source_of_events(parse_config([], {"SPACE_ID": "me/studio"}))
    assert space.args == (True,)
    behind_proxy = ["--shared", "--trusted-proxies", "127.0.0.1"]
    assert source_of_events(parse_config(behind_proxy, {})).args == (False,)
    assert source_of_events(parse_config(["--share"], {})).args == (True,)
    assert space() is None  # outside any event
