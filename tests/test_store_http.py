"""Store in http mode: index and search through a real `chroma run` server on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cli, write_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path: Path):
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = _free_port()
    command = [chroma, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1)
            break
        except OSError:
            assert server.poll() is None, "chroma run exited"
            time.sleep(0.2)
    yield port
    server.terminate()
    server.wait(timeout=30)


def test_index_and_search_through_a_chroma_server(tmp_path, random_clip, gallery, chroma_server):
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    settings = yaml.safe_load(config.read_text())
    settings["store"] = {"mode": "http", "host": "127.0.0.1", "port": chroma_server}
    config.write_text(yaml.safe_dump(settings))
    cli = Cli(config)
    assert cli.index(gallery)["added"] == 12
    status = cli.json("status")
    assert status["store"]["mode"] == "http" and status["store"]["records"] == 12
    assert not (tmp_path / "data" / "chroma").exists()
    hits = cli.json("search", "a red circle", "-k", "3")
    assert len(hits) == 3 and all(Path(hit["path"]).exists() for hit in hits)
