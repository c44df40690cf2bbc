"""Scale-out on a Chroma server: one indexer and web-only front ends sharing one index."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from tests.chroma_server import free_port
from tests.conftest import Cli
from tests.live_server import get_json, searchable
from tests.test_store_http import http_config

PIXSEEK = [sys.executable, "-m", "pixseek.cli"]


def _wait(check, what: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        assert process.poll() is None, f"{what}: the process exited"
        assert time.monotonic() < deadline, f"{what}: timed out"
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def test_an_indexer_and_a_web_only_server_share_a_chroma_server(
    tmp_path, random_clip, gallery, chroma_server
):
    config = http_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", chroma_server)
    env = os.environ | {"PIXSEEK_CONFIG": str(config), "PIXSEEK_WATCH__SETTLE_S": "0.3"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = {"watch": tmp_path / "watch.log", "serve": tmp_path / "serve.log"}
    spawn = lambda *args: subprocess.Popen(  # noqa: E731
        [*PIXSEEK, *args], env=env, stderr=logs[args[0]].open("w"), text=True
    )
    indexer = spawn("watch", str(gallery))
    web = spawn("serve", "--no-index", "--port", str(port))
    try:
        _wait(lambda: searchable(get_json(f"{base}/api/status"), 12), "first index", web)
        status = get_json(f"{base}/api/status")
        assert status["store"]["mode"] == "http" and status["store"]["records"] == 12
        assert status["watch"] is None  # this process does not watch
        assert len(get_json(f"{base}/api/search?q=a+red+circle&k=5")["results"]) == 5

        shutil.copy(gallery / "red-square.jpg", gallery / "copied.jpg")

        def found_through_the_web() -> bool:
            hits = get_json(f"{base}/api/search?q=a+red+square&k=20")["results"]
            return str(gallery / "copied.jpg") in {hit["path"] for hit in hits}

        _wait(found_through_the_web, "the indexer's new file searchable through the web", web)
        assert get_json(f"{base}/api/status")["store"]["records"] == 13

        second = subprocess.run(
            [*PIXSEEK, "index", str(gallery)], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1 and f"pid {indexer.pid}" in second.stderr
        assert "serve --no-index" in second.stderr
    finally:
        _stop(web), _stop(indexer)
        output = {name: log.read_text() for name, log in logs.items()}
        print(output)  # shown when the test fails
    assert all("Traceback" not in text for text in output.values()), output


def test_one_catalog_writes_a_collection(tmp_path, random_clip, gallery, chroma_server):
    first = Cli(http_config(tmp_path / "a.yaml", random_clip, tmp_path / "a", chroma_server))
    second = Cli(http_config(tmp_path / "b.yaml", random_clip, tmp_path / "b", chroma_server))
    assert first.index(gallery)["added"] == 12
    refused = second.run("index", str(gallery), expect=1)
    assert "written from another catalog" in refused and str(tmp_path / "a") in refused
    assert "repair --take-over" in refused
    assert first.json("status")["store"]["records"] == 12  # nothing was written or removed
    assert second.json("status")["store"]["records"] == 12  # readers are not refused

    assert second.json("repair", "--take-over")["removed"] == 12
    assert second.index(gallery)["added"] == 12
    assert "written from another catalog" in first.run("index", str(gallery), expect=1)


def test_a_web_only_server_takes_no_folders(cli, tmp_path):
    refused = cli.run("serve", "--no-index", str(tmp_path), expect=2)
    assert "--no-index" in refused and not (tmp_path / "data").exists()


def test_a_web_only_server_on_an_embedded_store_waits_for_no_indexer(cli, gallery):
    from pixseek.config import load_config
    from pixseek.library import Library

    holder = Library(load_config(cli.config).settings, writer=True)
    try:
        refused = cli.run("serve", "--no-index", expect=1)
        assert f"pid {os.getpid()}" in refused
    finally:
        holder.close()


def test_a_server_whose_collection_is_taken_over_stops_with_the_reason(
    tmp_path, random_clip, gallery, chroma_server
):
    """`serve` indexes into a Chroma server; another catalog takes the collection over. The
    server's next run ends it with that reason, rather than leave it serving an index its
    watcher no longer writes."""
    config = http_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", chroma_server)
    env = os.environ | {"PIXSEEK_CONFIG": str(config), "PIXSEEK_WATCH__SETTLE_S": "0.3"}
    port = free_port()
    server = subprocess.Popen(
        [*PIXSEEK, "serve", str(gallery), "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: searchable(get_json(f"{base}/api/status"), 12), "first index", server)
        other = http_config(tmp_path / "o.yaml", random_clip, tmp_path / "other", chroma_server)
        Cli(other).run("repair", "--take-over")
        shutil.copy(gallery / "red-square.jpg", gallery / "copied.jpg")
        _, printed = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            _stop(server)
    assert server.returncode == 1, printed
    assert "written from another catalog" in printed and "Traceback" not in printed
