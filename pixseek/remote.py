"""Read commands against a running `pixseek serve` (`--server URL`), which owns the data dir.

The embedded store has one writer; while it serves, the CLI asks it over HTTP instead of
opening Chroma a second time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from pixseek.config import TOKEN_ENV


class RemoteError(RuntimeError):
    """The server refused the request (`status` set) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _client(server: str, token: str | None) -> httpx.Client:
    token = token or os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=60)


def _json(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise RemoteError(
            f"{response.request.url.path}: {response.status_code} {detail}", response.status_code
        )
    return response.json()


def request(server: str, token: str | None, method: str, path: str, **options: Any) -> Any:
    """One API call; connection problems and 4xx/5xx become RemoteError."""
    try:
        with _client(server, token) as client:
            return _json(client.request(method, path, **options))
    except httpx.HTTPError as error:
        raise RemoteError(f"cannot reach {server}: {error}") from None


def search(server: str, token: str | None, text: str, page: dict[str, Any]) -> list[dict]:
    """Text search on the server; `page` holds k, offset and min_score."""
    params = {"q": text, **{key: value for key, value in page.items() if value is not None}}
    return request(server, token, "GET", "/api/search", params=params)["results"]


def similar(server: str, token: str | None, target: str, page: dict[str, Any]) -> list[dict]:
    """Similar images to an image file here (uploaded, indexed or not) or a server record id."""
    params = {key: value for key, value in page.items() if value is not None}
    if os.path.isfile(target):
        files = {"file": (Path(target).name, Path(target).read_bytes())}
        found = request(server, token, "POST", "/api/search/image", params=params, files=files)
        return found["results"]
    try:
        path = f"/api/images/{quote(target, safe='')}/similar"
        return request(server, token, "GET", path, params=params)["results"]
    except RemoteError as error:
        if error.status != 404:
            raise
        raise RemoteError(
            f"{target!r} is neither an image file here nor a record id on {server}", 404
        ) from None


def status(server: str, token: str | None) -> dict[str, Any]:
    """The server's status object."""
    return request(server, token, "GET", "/api/status")
