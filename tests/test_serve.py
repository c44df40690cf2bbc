"""`pixseek serve` as a user runs it: one process indexes, watches and answers HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.chroma_server import free_port
from tests.conftest import write_config
from tests.live_server import get_json, searchable
from tests.tinyclip import draw_shape


def test_serve_indexes_watches_and_answers(tmp_path, random_clip, gallery):
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    env = os.environ | {"PIXSEEK_CONFIG": str(config), "PIXSEEK_WATCH__SETTLE_S": "0.3"}
    port, unplugged = free_port(), str(tmp_path / "unplugged-disk")
    command = [sys.executable, "-m", "pixseek.cli", "serve", str(gallery), unplugged]
    command += ["--port", str(port)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if searchable(get_json(f"{base}/api/status"), 12):
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        assert len(get_json(f"{base}/api/search?q=a+red+circle&k=5")["results"]) == 5

        shutil.copy(gallery / "red-square.jpg", gallery / "copied.jpg")
        (gallery / "broken.jpg").write_bytes(b"not a picture\n" * 50)

        while not searchable(status := get_json(f"{base}/api/status"), 13) or not status["failed"]:
            assert time.monotonic() < deadline + 30, "the copy was not picked up"
            time.sleep(0.2)
        watch = status["watch"]
        assert watch["roots"] == [
            {"root": str(gallery), "state": "watching"},
            {"root": unplugged, "state": "missing"},
        ]
        assert watch["observer"] == "native" and watch["running"] and watch["last_reconcile"]
        assert watch["images_per_s"] > 0 and set(watch["queue"]) == {"pending_paths", "decode"}
        assert watch["embedded"] == 12, "the copy reuses its original's embedding"
        assert status["failures"][0]["path"] == str(gallery / "broken.jpg")
        assert "not an image" in status["failures"][0]["reason"]
        assert status["model"] == str(random_clip) and status["store"]["records"] == 13
        with urllib.request.urlopen(f"{base}/status", timeout=5) as response:
            page = response.read().decode()
        assert f'<td class="path">{gallery}</td><td>watching</td>' in page
        assert "not an image" in page and '<dd id="embedded">12</dd>' in page

        second = subprocess.run(
            [sys.executable, "-m", "pixseek.cli", "index", str(gallery)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert second.returncode == 1 and f"pid {server.pid}" in second.stderr

        def cli(*args: str) -> object:
            command = [sys.executable, "-m", "pixseek.cli", *args, "--server", base, "--json"]
            run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr
            return json.loads(run.stdout)

        hits = cli("search", "a red circle", "-k", "4")
        api = get_json(f"{base}/api/search?q=a+red+circle&k=4")["results"]
        assert [hit["id"] for hit in hits] == [hit["id"] for hit in api]
        assert set(hits[0]) == {"id", "path", "score", "date"}
        assert cli("status")["indexed"] == 13
        by_id = cli("similar", hits[0]["id"], "-k", "3")
        assert len(by_id) == 3 and hits[0]["id"] not in {hit["id"] for hit in by_id}
        in_sub = cli("search", "a red circle + a blue square", "-k", "20", "--folder", "sub")
        assert in_sub and all("/sub/" in hit["path"] for hit in in_sub)
        by_file = cli("similar", str(gallery / "red-square.jpg"), "-k", "3")
        assert by_file[0]["path"] in {str(gallery / "red-square.jpg"), str(gallery / "copied.jpg")}
        outside = tmp_path / "not-indexed.png"
        draw_shape("green", "circle", 64).save(outside)
        uploaded = cli("similar", str(outside), "-k", "2")
        assert len(uploaded) == 2 and all(hit["path"].startswith(str(gallery)) for hit in uploaded)
        missing = [sys.executable, "-m", "pixseek.cli", "similar", "nowhere.jpg", "--server", base]
        run = subprocess.run(missing, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and "neither an image file here nor a record id" in run.stderr
    finally:
        server.send_signal(signal.SIGINT)
        _, printed = server.communicate(timeout=60)
    assert f"warning: {unplugged}: root is missing" in printed


def test_server_option_reports_an_unreachable_server(tmp_path, random_clip):
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "pixseek.cli", "search", "x", "--server", url]
    run = subprocess.run(
        command, env=os.environ | {"PIXSEEK_CONFIG": str(config)}, capture_output=True, text=True
    )
    assert run.returncode == 1 and "cannot reach" in run.stderr


def test_serve_refuses_a_public_address_without_a_token(tmp_path, random_clip):
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    (tmp_path / "pics").mkdir()
    draw_shape("red", "circle", 32).save(tmp_path / "pics" / "a.jpg")
    env = os.environ | {"PIXSEEK_CONFIG": str(config)}
    env.pop("PIXSEEK_WEB_TOKEN", None)
    run = subprocess.run(
        [sys.executable, "-m", "pixseek.cli", "serve", str(tmp_path / "pics"), "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "without a token" in run.stderr
    assert not (tmp_path / "data").exists()


def test_serve_with_a_model_that_cannot_load_says_why_and_serves_nothing(tmp_path, random_clip):
    """Not a server that answers every search with an error while its indexer has died."""
    model = shutil.copytree(random_clip, tmp_path / "model")
    for name in ("processor_config.json", "preprocessor_config.json"):  # no image processor
        (model / name).unlink(missing_ok=True)
    config = write_config(tmp_path / "c.yaml", model, tmp_path / "data")
    (tmp_path / "pics").mkdir()
    draw_shape("red", "circle", 32).save(tmp_path / "pics" / "a.jpg")
    port = free_port()
    run = subprocess.run(
        [sys.executable, "-m", "pixseek.cli", "serve", str(tmp_path / "pics"), "--port", str(port)],
        env=os.environ | {"PIXSEEK_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert f"cannot load model {str(model)!r}" in run.stderr and "Traceback" not in run.stderr
    assert "serving" not in run.stderr


def test_serve_on_a_port_in_use_says_so_before_it_indexes(tmp_path, random_clip):
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    (tmp_path / "pics").mkdir()
    draw_shape("red", "circle", 32).save(tmp_path / "pics" / "a.jpg")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pixseek.cli",
                "serve",
                str(tmp_path / "pics"),
                "--port",
                str(port),
            ],
            env=os.environ | {"PIXSEEK_CONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 1, run.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr and "in use" in run.stderr
    assert not (tmp_path / "data").exists()  # nothing was indexed
