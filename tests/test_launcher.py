"""The one-click launcher's helper (launcher/): the torch decision from fake nvidia-smi
outputs, the plain-words machine report, and the shape of run.bat (no cmd here)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from allegro import costs
from launcher import machine
from launcher.main import (
    COMMANDS,
    PYTHONS,
    Log,
    app_url,
    install,
    parse,
    read_stamp,
    with_index_override,
)
from launcher.torch_choice import (
    LauncherError,
    choose_torch,
    cuda_failure_message,
    parse_nvidia_smi,
)

REPO = Path(__file__).resolve().parent.parent

# nvidia-smi's header as drivers of each series print it (the lines the parser reads).
HEADER = """Sun Dec  6 21:40:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}             Driver Version: {driver}     CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  {name}        Off |   00000000:01:00.0  On |                  N/A |
+-----------------------------------------------------------------------------------------+
"""
DRIVERS = {  # series -> (Linux driver, Windows driver, CUDA in the header)
    535: ("535.247.01", "538.78", "12.2"),
    570: ("570.172.08", "572.83", "12.8"),
    580: ("580.95.05", "581.57", "13.0"),
}
PYTORCH = "https://download.pytorch.org/whl"


def fake_smi(series: int, system: str, name: str = "NVIDIA GeForce RTX 3060", mib: int = 12288):
    linux, windows, cuda = DRIVERS[series]
    driver = linux if system == "Linux" else windows
    header = HEADER.format(driver=driver, cuda=cuda, name=name)
    return parse_nvidia_smi(header, f"{name}, {mib}, {mib - 400}\n")


@pytest.mark.parametrize(
    ("system", "series", "index", "version"),
    [
        ("Linux", 580, None, "2.13.0"),  # PyPI's Linux wheel is the CUDA 13.0 build
        ("Linux", 570, f"{PYTORCH}/cu126", "2.13.0+cu126"),
        ("Linux", 535, f"{PYTORCH}/cu126", "2.13.0+cu126"),
        ("Windows", 580, f"{PYTORCH}/cu130", "2.13.0+cu130"),  # PyPI's has no CUDA
        ("Windows", 570, f"{PYTORCH}/cu126", "2.13.0+cu126"),
        ("Windows", 535, f"{PYTORCH}/cu126", "2.13.0+cu126"),
    ],
)
def test_each_driver_gets_the_newest_cuda_build_it_runs(system, series, index, version):
    gpu = fake_smi(series, system)
    choice = choose_torch(system, "AMD64" if system == "Windows" else "x86_64", gpu)
    assert choice.index_url == index
    assert choice.local_version == version
    assert choice.expect_cuda
    expected = ["torch==2.13.0"] + (["--index-url", index] if index else [])
    assert choice.pip_args() == expected
    assert gpu.driver in choice.reason


def test_the_header_is_parsed():
    gpu = fake_smi(570, "Linux", "NVIDIA GeForce RTX 4090", 24564)
    assert (gpu.driver, gpu.driver_major, gpu.cuda) == ("570.172.08", 570, (12, 8))
    assert (gpu.gpu_name, gpu.memory_total_mib, gpu.memory_free_mib) == (
        "NVIDIA GeForce RTX 4090",
        24564,
        24164,
    )


@pytest.mark.parametrize("system", ["Linux", "Windows"])
def test_no_gpu_gets_the_cpu_build_and_says_the_preview_model_will_run(system):
    choice = choose_torch(system, "x86_64", None)
    assert choice.pip_args() == ["torch==2.13.0", "--index-url", f"{PYTORCH}/cpu"]
    assert not choice.expect_cuda
    assert "preview model" in choice.reason


def test_macos_gets_pypis_torch():
    choice = choose_torch("Darwin", "arm64", None)
    assert choice.pip_args() == ["torch==2.13.0"]
    assert "preview model" in choice.reason


@pytest.mark.parametrize(("system", "driver"), [("Linux", "470.256.02"), ("Windows", "474.44")])
def test_a_driver_too_old_for_any_build_is_refused_with_what_to_do(system, driver):
    gpu = parse_nvidia_smi(HEADER.format(driver=driver, cuda="11.4", name="Tesla T4"))
    with pytest.raises(LauncherError) as refusal:
        choose_torch(system, "x86_64", gpu)
    text = str(refusal.value)
    assert f"Your NVIDIA driver {driver} (CUDA 11.4) is too old for PyTorch 2.13.0" in text
    assert "needs driver 525 or newer" in text
    assert "Update the driver from https://www.nvidia.com/Download/index.aspx" in text


def with_capability(series: int, system: str, name: str, capability: str):
    linux, windows, cuda = DRIVERS[series]
    driver = linux if system == "Linux" else windows
    header = HEADER.format(driver=driver, cuda=cuda, name=name)
    return parse_nvidia_smi(header, f"{name}, 24576, 24000, {capability}\n")


def test_a_pre_turing_gpu_gets_the_12_6_build_even_with_a_new_driver():
    gpu = with_capability(580, "Linux", "NVIDIA GeForce GTX 1080 Ti", "6.1")
    assert gpu.compute_capability == 6.1
    choice = choose_torch("Linux", "x86_64", gpu)
    assert choice.pip_args() == ["torch==2.13.0", "--index-url", f"{PYTORCH}/cu126"]


@pytest.mark.parametrize("system", ["Linux", "Windows"])
def test_a_blackwell_gpu_on_a_12_x_driver_is_told_to_update_to_580(system):
    gpu = with_capability(570, system, "NVIDIA GeForce RTX 5090", "12.0")
    with pytest.raises(LauncherError) as refusal:
        choose_torch(system, "x86_64", gpu)
    assert str(refusal.value).startswith(
        "Your NVIDIA GeForce RTX 5090 needs PyTorch's CUDA 13.0 build, and that needs NVIDIA "
        f"driver 580 or newer; yours is {gpu.driver}. Update the driver"
    )
    newer = with_capability(580, system, "NVIDIA GeForce RTX 5090", "12.0")
    assert choose_torch(system, "x86_64", newer).build == "cu130"


def test_a_gpu_no_build_supports_is_refused():
    gpu = with_capability(535, "Linux", "Tesla K80", "3.7")
    with pytest.raises(
        LauncherError, match=r"Tesla K80 \(compute capability 3.7\) is not supported"
    ):
        choose_torch("Linux", "x86_64", gpu)


def test_an_old_nvidia_smi_without_the_cuda_header_is_judged_by_the_driver():
    gpu = parse_nvidia_smi("| NVIDIA-SMI 550.54   Driver Version: 550.54.14 |")
    assert gpu.cuda is None
    assert choose_torch("Linux", "x86_64", gpu).local_version == "2.13.0+cu126"


def test_cuda_failure_says_why_and_what_to_do():
    gpu = fake_smi(535, "Linux")
    choice = choose_torch("Linux", "x86_64", gpu)
    text = cuda_failure_message(choice, gpu, "torch.cuda.is_available() is False")
    assert "torch 2.13.0+cu126 was installed for your NVIDIA GPU but cannot use it" in text
    assert "driver 535.247.01" in text and "update the driver" in text


def write_fake_smi(folder: Path, header: str | None, code: int = 0) -> None:
    """An ``nvidia-smi`` on PATH that prints the header, or the query's CSV when asked."""
    script = folder / "nvidia-smi"
    body = "#!/bin/sh\n"
    if header is not None:
        body += (
            'case "$1" in --query-gpu=*) echo "NVIDIA GeForce RTX 3060, 12288, 11800, 8.6";; '
            f"*) cat <<'END'\n{header}\nEND\n;; esac\n"
        )
    body += f"exit {code}\n"
    script.write_text(body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for nvidia-smi")
def test_probe_reads_the_real_command(tmp_path, monkeypatch):
    write_fake_smi(tmp_path, HEADER.format(driver="570.172.08", cuda="12.8", name="RTX 3060"))
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpu = machine.probe_nvidia()
    assert (gpu.driver, gpu.cuda, gpu.memory_free_mib) == ("570.172.08", (12, 8), 11800)
    assert gpu.compute_capability == 8.6


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for nvidia-smi")
def test_a_failing_nvidia_smi_is_a_broken_driver_not_a_cpu_install(tmp_path, monkeypatch):
    write_fake_smi(tmp_path, None, code=9)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(LauncherError, match="nvidia-smi cannot talk to the GPU"):
        machine.probe_nvidia()


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for nvidia-smi")
def test_a_driver_without_compute_cap_still_gives_name_and_memory(tmp_path, monkeypatch):
    write_fake_smi(tmp_path, "")  # found on PATH; the runner below answers for it
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    asked = []

    def old_smi(command: list[str]) -> str | None:
        asked.append(command[1:2])
        if len(command) == 1:
            return HEADER.format(driver="515.65.01", cuda="11.7", name="RTX 3060")
        return None if "compute_cap" in command[1] else "NVIDIA GeForce RTX 3060, 12288, 12000"

    gpu = machine.probe_nvidia(old_smi)
    assert len(asked) == 3  # the header, the query with compute_cap, the one without
    assert (gpu.gpu_name, gpu.memory_free_mib, gpu.compute_capability) == (
        "NVIDIA GeForce RTX 3060",
        12000,
        None,
    )


def test_no_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert machine.probe_nvidia() is None


def minutes_from_cost_model(gpu_name: str, free_mib: int, size) -> tuple[str, float]:
    mode = costs.choose_offload(free_mib * 2**20, "bf16", *size).mode
    seconds = costs.estimate_seconds(*size, costs.gpu_class_for(gpu_name), offload=mode)
    return mode, seconds.total_seconds / 60


def test_report_gives_minutes_and_offload_from_the_cost_model():
    gpu = fake_smi(580, "Linux", "NVIDIA GeForce RTX 3060", 12288)
    report = machine.machine_report(gpu, 32 * 10**9, 10**12, 10**12, weights_present=False)
    assert report.problem is None
    first = report.lines[0]
    assert first.startswith("NVIDIA GeForce RTX 3060 12 GB: about ")
    for size, label in (
        (costs.OFFICIAL_SIZES[0], "per 720p video"),
        (costs.OFFICIAL_SIZES[2], "allegro-40x360p"),
    ):
        mode, minutes = minutes_from_cost_model(gpu.gpu_name, gpu.memory_free_mib, size)
        assert label in first
        assert f"'{mode}' offload" in first or (mode == "none" and "without offload" in first)
        shown = f"{minutes / 60:.1f} hours" if minutes >= 90 else f"{minutes:.0f} minutes"
        assert shown in first
    assert any("RAM" in line for line in report.lines)
    assert any("downloads the Allegro weights, about 25 GB" in line for line in report.lines)


def test_report_on_an_h100_needs_no_offload():
    gpu = fake_smi(580, "Linux", "NVIDIA H100 80GB HBM3", 81559)
    report = machine.machine_report(gpu, 10**12, 10**12, 10**12, weights_present=True)
    assert "without offload" in report.lines[0]
    assert "The Allegro weights are already downloaded." in report.lines


def test_report_without_gpu_says_preview_model():
    report = machine.machine_report(None, 8 * 10**9, 10**11, 10**9, weights_present=False)
    assert "preview model" in report.lines[0]
    assert report.problem is None  # no weights to download


def test_too_little_disk_stops_before_the_download():
    gpu = fake_smi(580, "Linux")
    report = machine.machine_report(gpu, 10**11, 10**12, 20 * 10**9, weights_present=False)
    assert "Not enough free disk space for the Allegro weights" in report.problem
    assert "20 GB free" in report.problem
    small_env = machine.machine_report(gpu, 10**11, 3 * 10**9, 10**12, weights_present=True)
    assert "Not enough free disk space for the Python environment" in small_env.problem


def test_index_override_for_mirrors_and_local_wheels():
    choice = choose_torch("Linux", "x86_64", None)
    assert with_index_override(choice, {}) is choice
    pypi = with_index_override(choice, {"ALLEGRO_TORCH_INDEX": "pypi"})
    assert pypi.pip_args() == ["torch==2.13.0"] and pypi.key != choice.key
    mirror = with_index_override(choice, {"ALLEGRO_TORCH_INDEX": "https://mirror/whl/cpu"})
    assert mirror.pip_args()[-1] == "https://mirror/whl/cpu"


def test_arguments_split_between_launcher_and_app():
    assert parse(["update", "--no-browser", "--port", "7861"])[0] == "update"
    command, options, app_args = parse(["--port", "7861", "--venv", "env", "--host=0.0.0.0"])
    assert (command, options.venv, app_args) == ("run", "env", ["--port", "7861", "--host=0.0.0.0"])
    assert app_url(app_args, {}) == "http://127.0.0.1:7861/"
    assert app_url([], {"GRADIO_SERVER_PORT": "9000"}) == "http://127.0.0.1:9000/"


def test_the_launcher_imports_nothing_heavy():
    """It runs before anything is installed: only the standard library and allegro.costs."""
    code = (
        "import sys, launcher.main; "
        "bad = {'torch', 'gradio', 'numpy', 'diffusers'} & set(sys.modules); "
        "print(' '.join(sorted(bad)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def bat_lines() -> list[str]:
    raw = (REPO / "run.bat").read_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b""), "run.bat needs CRLF"
    return [line for line in raw.decode("ascii").split("\r\n") if line.strip()]


def test_run_bat_pins_each_lines_command():
    """No cmd.exe here: each line's command is pinned, so a change is a reviewed change."""
    lines = bat_lines()
    commands = [line.split()[0].lower() for line in lines]
    assert commands == [
        "@echo",
        "rem",
        "rem",
        "setlocal",
        "cd",  # to the folder of run.bat, whatever the double click's working folder
        "set",  # CHECK: the supported Pythons, as launcher.main.PYTHONS
        "set",
        "if",  # the environment made last time
        "for",  # the py launcher's 3.13 .. 3.10
        "if",  # python on PATH
        "if",  # uv: a private Python
        "if",  # none: say so (with the log's path), log it and stop
        "echo",
        "if",
        ">>",
        "pause",
        "exit",
        ")",
        "%py%",  # hand over: python -m launcher with run.bat's arguments
        "set",
        "if",
        "exit",
    ]
    text = "\n".join(lines)
    assert lines[4] == 'cd /d "%~dp0"'
    low, high = PYTHONS
    assert f"not {low} <= sys.version_info[:2] <= {high}" in lines[5]
    versions = re.search(r"in \(([^)]*)\)", lines[8]).group(1).split()
    assert versions == [f"3.{minor}" for minor in range(high[1], low[1] - 1, -1)]
    assert lines[18] == "%PY% -m launcher %*"
    assert "(full log: %CD%\\logs\\launcher.log^)" in lines[12]  # ^: a ) inside a block
    assert text.count("(") == text.count(")")
    assert "uv python install 3.12" in lines[10] and "uv python find 3.12" in lines[10]


def test_run_sh_hands_over_to_the_launcher():
    text = (REPO / "run.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert os.access(REPO / "run.sh", os.X_OK)
    assert 'exec "$PY" -m launcher "$@"' in text
    low, high = PYTHONS
    assert f"not {low} <= sys.version_info[:2] <= {high}" in text
    assert set(COMMANDS) >= {"run", "install", "update", "check"}


def test_readme_opens_with_the_launchers_and_says_run_bat_is_untested():
    text = (REPO / "README.md").read_text()
    first = re.search(r"^## (.+)$", text, re.MULTILINE).group(1)
    assert first == "Run it without programming"
    section = text.split("## Run it without programming", 1)[1].split("\n## ", 1)[0]
    assert "run.bat" in section and "./run.sh" in section and "untested on Windows" in section
    assert "logs/launcher.log" in section


def fake_venv(root: Path, record: Path, torch_version: str, cuda_ok: bool) -> Path:
    """A venv whose python records pip's arguments, reports ``torch_version`` as
    installed, and passes or fails the launcher's CUDA check."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-m" ]; then echo "$*" >> "{record}"; echo "Successfully installed x"; '
        "exit 0; fi\n"
        'case "$2" in *importlib.metadata*) '
        + (f"echo {torch_version}; exit 0;;" if torch_version else "exit 1;;")
        + " esac\n"
        + ("echo 'CUDA works: RTX'; exit 0\n" if cuda_ok else "echo 'no CUDA' >&2; exit 1\n")
    )
    python.chmod(0o755)
    return venv


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for the venv's python")
def test_install_installs_what_the_stamp_lacks_and_checks_cuda(tmp_path, monkeypatch):
    record = tmp_path / "pip.txt"
    log = Log(tmp_path / "launcher.log")
    gpu = fake_smi(535, "Linux")
    cu126 = choose_torch("Linux", "x86_64", gpu)
    venv = fake_venv(tmp_path, record, "", cuda_ok=True)
    assert install(venv, cu126, gpu, log)
    calls = record.read_text().splitlines()
    assert calls[0] == f"-m pip install torch==2.13.0 --index-url {PYTORCH}/cu126"
    assert calls[1].startswith("-m pip install -r ") and calls[1].endswith("requirements.txt")
    assert set(read_stamp(venv)) == {"torch", "requirements", "cuda"}
    # Nothing changed: nothing installed.
    assert not install(venv, cu126, gpu, log)
    assert len(record.read_text().splitlines()) == 2
    # The driver was updated to 580: the wrong torch build goes, the right one comes.
    (venv / "bin" / "python").unlink()
    fake_venv(tmp_path, record, "2.13.0+cu126", cuda_ok=True)
    gpu580 = fake_smi(580, "Linux")
    assert install(venv, choose_torch("Linux", "x86_64", gpu580), gpu580, log)
    assert record.read_text().splitlines()[2:] == [
        "-m pip uninstall -y torch",
        "-m pip install torch==2.13.0",
    ]
    log.close()


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for the venv's python")
def test_a_cuda_build_that_sees_no_gpu_stops_with_the_reason(tmp_path):
    log = Log(tmp_path / "launcher.log")
    gpu = fake_smi(570, "Windows")
    choice = choose_torch("Windows", "AMD64", gpu)
    venv = fake_venv(tmp_path, tmp_path / "pip.txt", "", cuda_ok=False)
    with pytest.raises(LauncherError) as failure:
        install(venv, choice, gpu, log)
    assert str(failure.value) == cuda_failure_message(choice, gpu, "no CUDA")
    assert "cuda" not in read_stamp(venv)  # checked again next time
    log.close()


def tool_folder(folder: Path, tools: dict[str, str]) -> Path:
    """A PATH of its own: the coreutils run.sh uses, plus the given fake tools."""
    folder.mkdir()
    for name in ("dirname", "mkdir", "date"):
        (folder / name).symlink_to(shutil.which(name))
    for name, body in tools.items():
        (folder / name).write_text("#!/bin/sh\n" + body)
        (folder / name).chmod(0o755)
    return folder


@pytest.mark.skipif(os.name == "nt", reason="run.sh is for Linux and macOS")
def test_run_sh_without_a_supported_python_installs_one_with_uv(tmp_path):
    shutil.copy(REPO / "run.sh", tmp_path / "run.sh")
    record = tmp_path / "calls.txt"
    private = tmp_path / "private-python"
    private.write_text(f'#!/bin/sh\necho "private $*" >> "{record}"\n')
    private.chmod(0o755)
    path = tool_folder(
        tmp_path / "bin",
        {
            "python3": f'case "$*" in *"-m pip install"*) echo "pip $*" >> "{record}";; '
            "*) exit 1;; esac\n",  # Python 3.9, say: the version check fails
            "uv": f'echo "uv $*" >> "{record}"\n[ "$2" = find ] && echo "{private}"\nexit 0\n',
        },
    )
    done = subprocess.run(
        [shutil.which("bash"), str(tmp_path / "run.sh"), "check"],
        env={"PATH": str(path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert record.read_text().splitlines() == [
        "uv python install 3.12",
        "uv python find 3.12",
        "private -m launcher check",
    ]
    assert "Installing a private Python 3.12 with uv" in done.stdout


@pytest.mark.skipif(os.name == "nt", reason="run.sh is for Linux and macOS")
def test_run_sh_without_python_or_uv_says_what_to_install(tmp_path):
    shutil.copy(REPO / "run.sh", tmp_path / "run.sh")
    path = tool_folder(tmp_path / "bin", {})
    done = subprocess.run(
        [shutil.which("bash"), str(tmp_path / "run.sh")],
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("Allegro Studio could not start: it needs Python 3.10 to 3.13")
    assert f"(full log: {tmp_path}/logs/launcher.log)" in last
    assert last in (tmp_path / "logs" / "launcher.log").read_text()
