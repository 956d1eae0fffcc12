"""Shared fixtures: one tiny Allegro checkpoint per test session, built with the CLI's
``make-tiny`` and loaded through ``AllegroPipeline.from_pretrained`` like real weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# Tests never touch the network: the hub client is told so, and sockets to anything but
# this machine fail loudly (see no_network).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from allegro.cli import main

    directory = tmp_path_factory.mktemp("tiny-allegro")
    assert main(["make-tiny", str(directory)]) == 0
    return directory


@pytest.fixture(scope="session")
def tiny_ti2v_model(tmp_path_factory) -> Path:
    """A tiny Allegro-TI2V checkpoint laid out as the hub's (make-tiny --ti2v)."""
    from allegro.cli import main

    directory = tmp_path_factory.mktemp("tiny-allegro-ti2v")
    assert main(["make-tiny", "--ti2v", str(directory)]) == 0
    return directory


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to connect outside loopback raises, so a hidden download fails the test."""
    real_connect = socket.socket.connect

    def guarded_connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"test tried to reach the network: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
