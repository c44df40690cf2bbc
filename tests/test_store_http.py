"""Store in http mode: index and search through a real `chroma run` server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import Cli, write_config


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
