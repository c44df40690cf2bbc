"""Helpers for tests that talk to a real `pixseek serve` over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request


def get_json(url: str) -> dict:
    """GET `url` and decode its JSON answer."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def searchable(status: dict, count: int) -> bool:
    """`count` images in the catalog, and Chroma caught up with it (it follows within moments)."""
    return status["indexed"] == count == status["store"]["records"]
