"""Store in http mode: index and search through a real `chroma run` server on 127.0.0.1."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import yaml

from pixseek.config import load_config
from pixseek.library import Library
from pixseek.web.app import create_app
from tests.chroma_server import free_port, running_chroma
from tests.conftest import Cli, write_config
from tests.test_web_api import serve


def http_config(path: Path, model: Path, data_dir: Path, port: int) -> Path:
    """A test config whose store is the Chroma server on `port`."""
    config = write_config(path, model, data_dir)
    settings = yaml.safe_load(config.read_text())
    settings["store"] = {"mode": "http", "host": "127.0.0.1", "port": port}
    config.write_text(yaml.safe_dump(settings))
    return config


def test_index_and_search_through_a_chroma_server(tmp_path, random_clip, gallery, chroma_server):
    cli = Cli(http_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", chroma_server))
    assert cli.index(gallery)["added"] == 12
    status = cli.json("status")
    assert status["store"]["mode"] == "http" and status["store"]["records"] == 12
    assert not (tmp_path / "data" / "chroma").exists()
    hits = cli.json("search", "a red circle", "-k", "3")
    assert len(hits) == 3 and all(Path(hit["path"]).exists() for hit in hits)


def test_a_chroma_server_that_is_not_there_is_named(tmp_path, random_clip, gallery):
    port = free_port()
    cli = Cli(http_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", port))
    for command in (["status"], ["index", str(gallery)], ["search", "a red circle"]):
        output = cli.run(*command, expect=1)
        assert f"cannot reach the Chroma server at http://127.0.0.1:{port}" in output, command
        assert "chroma run" in output


def test_a_lost_chroma_server_gets_503_with_the_reason(tmp_path, random_clip, gallery):
    with ExitStack() as chroma:
        port = chroma.enter_context(running_chroma(tmp_path / "server"))
        config = http_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", port)
        assert Cli(config).index(gallery)["added"] == 12
        library = Library(load_config(config).settings)
        try:
            with serve(create_app(library, thumbnail_dir=tmp_path / "thumbs")) as url:
                query = {"url": f"{url}/api/search", "params": {"q": "a red circle"}, "timeout": 30}
                assert httpx.get(**query).status_code == 200
                chroma.close()  # the Chroma server stops; the web app goes on
                answer = httpx.get(**query)
        finally:
            library.close()
    assert answer.status_code == 503
    assert "lost the Chroma server" in answer.json()["detail"]
