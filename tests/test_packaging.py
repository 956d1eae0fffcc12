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
    assert re.search(r"^FROM nvidia/cuda:\S+-(base|runtime)-", dockerfile, re.MULTILINE)
    assert "pip install -r requirements.txt" in dockerfile  # torch==2.13.0: CUDA on Linux
    assert "--uid 1000" in dockerfile and re.search(r"^USER \w+", dockerfile, re.MULTILINE)
    assert re.search(r"^VOLUME .*/data/hf", dockerfile, re.MULTILINE)
    assert "HF_HOME=/data/hf" in dockerfile
    assert re.search(r"^EXPOSE 7860$", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.MULTILINE)
    assert re.search(r'^CMD \["python", "app.py"', dockerfile, re.MULTILINE)


def test_the_image_the_readme_and_the_error_agree_on_torchs_cuda():
    """PyPI's torch==2.13.0 needs CUDA 13.0 (driver 580+): an older base image would start
    on hosts whose driver cannot run it, and then silently serve the CPU preview model."""
    from allegro.loading import MIN_NVIDIA_DRIVER, TORCH_CUDA

    assert pinned((REPO_ROOT / "requirements.txt").read_text(), "torch") == "2.13.0"
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM nvidia/cuda:(\d+\.\d+)\.\d+-", dockerfile, re.MULTILINE)
    assert base and base.group(1) == TORCH_CUDA
    docker_section = README.read_text().split("### Docker", 1)[1].split("\n### ", 1)[0]
    assert f"CUDA {TORCH_CUDA}" in docker_section
    assert f"driver {MIN_NVIDIA_DRIVER}" in docker_section


def test_the_image_can_build_tritons_launcher_for_compile():
    """--compile: Triton compiles its launcher with the system C compiler and the Python
    headers (triton/runtime/build.py), which a CUDA base image does not have."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    install = re.search(r"apt-get install ([^&]+)&&", dockerfile.replace("\\\n", " "))
    packages = install.group(1).split()
    assert {"gcc", "libc6-dev", "python3-dev"} <= set(packages)
