"""The library's shared resources: one model, however many threads ask for it at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pixseek.config import load_config
from pixseek.library import Library
from tests.conftest import write_config


def test_the_model_loads_once_when_threads_ask_together(tmp_path, random_clip):
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    library = Library(load_config(config).settings)
    try:
        with ThreadPoolExecutor(4) as pool:  # an index run's loader thread and web queries
            models = list(pool.map(lambda _: library.embedder, range(4)))
        assert all(model is models[0] for model in models)
        assert library.embedders[0] is models[0]
    finally:
        library.close()
