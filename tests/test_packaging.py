"""The project's packaging agrees with itself: Space front matter, requirements, Dockerfile,
and the CI script running exactly the README's test command."""

from __future__ import annotations

import re

from huggingface_hub.repocard import metadata_load

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"


def pinned(requirements: str, package: str) -> str:
    match = re.search(rf"^{package}==(\S+)$", requirements, re.MULTILINE)
    assert match, f"{package} is not pinned"
    return match.group(1)


def test_space_front_matter():
    meta = metadata_load(README)
    assert meta["sdk"] == "gradio" and (REPO_ROOT / meta["app_file"]).is_file()
    assert "rhymes-ai/Allegro" in meta["models"]
    assert meta["suggested_hardware"]
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    assert meta["sdk_version"] == pinned(requirements, "gradio")


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one():
    text = README.read_text()
    commands = re.findall(r"```bash\n(pip install [^\n]+)\n```", text)
    assert commands[:2] == [
        "pip install -r requirements.txt && python app.py",
        "pip install -r requirements-dev.txt && python -m pytest",
    ]
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci


def test_dockerfile_follows_the_brief():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", dockerfile, re.MULTILINE)
    assert "pip install -r requirements.txt" in dockerfile  # torch==2.13.0: CUDA on Linux
    assert "--uid 1000" in dockerfile and re.search(r"^USER \w+", dockerfile, re.MULTILINE)
    assert re.search(r"^VOLUME .*/data/hf", dockerfile, re.MULTILINE)
    assert "HF_HOME=/data/hf" in dockerfile
    assert re.search(r"^EXPOSE 7860$", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.MULTILINE)
    assert re.search(r'^CMD \["python", "app.py"', dockerfile, re.MULTILINE)
