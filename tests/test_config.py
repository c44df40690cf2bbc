"""Configuration: precedence, provenance, and errors that name the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pixseek.cli import app
from pixseek.config import ConfigError, load_config


def test_layers_apply_in_order_and_sources_are_reported(tmp_path, monkeypatch):
    file = tmp_path / "c.yaml"
    file.write_text("model:\n  batch_size: 8\n  device: cpu\nindexer:\n  workers: 3\n")
    monkeypatch.setenv("PIXSEEK_MODEL__BATCH_SIZE", "64")
    loaded = load_config(file, {"indexer.workers": 5})
    settings = loaded.settings
    assert (settings.model.batch_size, settings.model.device, settings.indexer.workers) == (
        64,
        "cpu",
        5,
    )
    assert loaded.sources["model.batch_size"] == "env PIXSEEK_MODEL__BATCH_SIZE"
    assert loaded.sources["model.device"] == f"file {file}"
    assert loaded.sources["indexer.workers"] == "flag"
    assert loaded.sources["model.dtype"] == "default"


def test_unknown_key_names_it_and_the_allowed_keys(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("store:\n  mdoe: http\n")
    with pytest.raises(ConfigError) as error:
        load_config(file)
    message = str(error.value)
    assert "store.mdoe: unknown setting" in message and "mode" in message and "hnsw" in message


def test_bad_value_names_key_and_allowed_values(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXSEEK_MODEL__DTYPE", "fp8")
    with pytest.raises(ConfigError) as error:
        load_config(_empty(tmp_path))
    assert "model.dtype" in str(error.value) and "'bf16'" in str(error.value)
    assert "PIXSEEK_MODEL__DTYPE" in str(error.value)


def test_unknown_environment_variable_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXSEEK_MODLE__NAME", "x")
    with pytest.raises(ConfigError, match="PIXSEEK_MODLE__NAME"):
        load_config(_empty(tmp_path))


def test_bad_device_is_refused_before_any_work(tmp_path):
    config = _empty(tmp_path)
    result = CliRunner().invoke(app, ["index", str(tmp_path), "--device", "gpu", "-c", str(config)])
    assert result.exit_code == 2
    assert "model.device" in result.output and "cuda:N" in result.output
    assert not (tmp_path / "data").exists()


def test_config_command_prints_every_key_with_its_source(tmp_path):
    result = CliRunner().invoke(app, ["config", "--json", "-c", str(_empty(tmp_path))])
    assert result.exit_code == 0
    assert '"store.hnsw.m"' in result.output and '"source": "default"' in result.output


def test_repository_config_yaml_documents_every_key():
    repo_file = Path(__file__).parents[1] / "config.yaml"
    loaded = load_config(repo_file)
    assert all(source.startswith("file") for source in loaded.sources.values()), [
        key for key, source in loaded.sources.items() if source == "default"
    ]


def _empty(tmp_path: Path) -> Path:
    file = tmp_path / "empty.yaml"
    file.write_text(f"data_dir: {tmp_path / 'data'}\n")
    return file
