"""The Pinokio scripts: valid JavaScript (node --check), the menu links scripts that exist,
every command they run is the launcher helper with flags it knows, and start.js's wait
matches the line the helper prints once the page answers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher.main import COMMANDS, READY, parse
from ui.config import parse_config

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("pinokio.js", "install.js", "start.js", "update.js", "reset.js")
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")


def node(code: str) -> str:
    done = subprocess.run(
        [NODE, "-e", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_node
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_valid_javascript(script):
    done = subprocess.run([NODE, "--check", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def shell_messages() -> list[str]:
    """Every command a script runs (shell.run's message), read by node itself."""
    code = (
        "const out = [];"
        f"for (const f of {json.dumps(list(SCRIPTS[1:]))}) {{"
        "  for (const step of require('./' + f).run) {"
        "    if (step.method === 'shell.run') out.push(...[].concat(step.params.message));"
        "  }"
        "}"
        "console.log(JSON.stringify(out));"
    )
    return json.loads(node(code))


@needs_node
def test_commands_are_the_helpers_with_flags_it_and_the_app_know():
    messages = shell_messages()
    assert len(messages) == 3  # install, start, update
    for message in messages:
        words = message.split()
        assert words[:3] == ["python", "-m", "launcher"], message
        command, _options, app_args = parse(words[3:])
        assert words[3] == command and command in COMMANDS, message
        parse_config(app_args)  # what is left goes to app.py: it must accept it
        assert app_args == [], message  # and nothing is left today


@needs_node
def test_start_waits_for_the_ready_line_and_keeps_its_url():
    event = node("console.log(require('./start.js').run[0].params.on[0].event)").strip()
    assert event.startswith("/") and event.endswith("/")
    line = READY.format(url="http://127.0.0.1:7860/")
    found = node(f"console.log(new RegExp({json.dumps(event[1:-1])}).exec({json.dumps(line)})[1])")
    assert found.strip() == "http://127.0.0.1:7860/"
    assert "input.event[1]" in (REPO / "start.js").read_text()


@needs_node
@pytest.mark.parametrize(
    ("installed", "running", "default"),
    [
        (False, [], "install.js"),
        (True, [], "start.js"),
        (True, ["install.js"], "install.js"),
        (True, ["start.js"], "http://127.0.0.1:7860/"),
    ],
)
def test_menu_links_scripts_that_exist(installed, running, default):
    code = (
        "const info = {"
        f"  exists: (p) => p === '.venv' && {json.dumps(installed)},"
        f"  running: (s) => {json.dumps(running)}.includes(s),"
        "  local: (s) => ({url: 'http://127.0.0.1:7860/'}),"
        "};"
        "require('./pinokio.js').menu({}, info).then((m) => console.log(JSON.stringify(m)));"
    )
    menu = json.loads(node(code))
    assert [item["href"] for item in menu if item.get("default")] == [default]
    for item in menu:
        if not item["href"].startswith("http"):
            assert (REPO / item["href"]).is_file(), item
    assert (REPO / re.search(r'icon: "([^"]+)"', (REPO / "pinokio.js").read_text())[1]).is_file()


def test_reset_removes_only_the_environment():
    text = (REPO / "reset.js").read_text()
    assert re.findall(r'path: "([^"]+)"', text) == [".venv"]
