"""The duplicates API and page over a real uvicorn server, with a library of planted copies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests import dedup_gallery as planted
from tests.conftest import Cli, write_config
from tests.test_web_api import serve_library


@pytest.fixture
def site(tmp_path: Path, trained_clip: Path) -> Iterator[tuple[str, Path, Path]]:
    """A served library with planted duplicates; yields (base URL, root, quarantine folder)."""
    root = planted.build(tmp_path / "photos")
    config = write_config(tmp_path / "config.yaml", trained_clip, tmp_path / "data")
    quarantine = tmp_path / "quarantine"
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump(data | {"dedup": {"quarantine_dir": str(quarantine)}}))
    Cli(config).index(root)
    with serve_library(config, tmp_path / "thumbs") as url:
        yield url, root, quarantine


@pytest.fixture
def client(site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site[0], timeout=60) as http:
        yield http


def rel(root: Path, group: dict) -> set[str]:
    return {Path(m["path"]).relative_to(root).as_posix() for m in group["members"]}


def test_groups_are_listed_per_tier_and_paginated(client, site):
    _, root, _ = site
    exact = client.get("/api/duplicates", params={"tier": "exact"}).json()
    assert exact["total"] == 1 and rel(root, exact["groups"][0]) == planted.EXACT
    keeper = next(m for m in exact["groups"][0]["members"] if m["keeper"])
    assert keeper["id"] == exact["groups"][0]["keeper"] and keeper["path"].endswith("scene0.png")
    first = client.get("/api/duplicates", params={"tier": "near", "limit": 1}).json()
    second = client.get("/api/duplicates", params={"tier": "near", "limit": 1, "offset": 1}).json()
    assert first["total"] == second["total"] == 2 and first["threshold"] == 6
    assert first["groups"][0]["id"] != second["groups"][0]["id"]
    assert planted.NEAR in [rel(root, first["groups"][0]), rel(root, second["groups"][0])]
    semantic = client.get("/api/duplicates", params={"tier": "semantic", "threshold": 0.9}).json()
    assert any(rel(root, g) >= planted.SEMANTIC for g in semantic["groups"])
    schema = client.get("/openapi.json").json()["paths"]
    assert {"/api/duplicates", "/api/duplicates/decisions", "/api/duplicates/undo"} <= set(schema)


def test_keep_and_dismiss_stick(client):
    exact = client.get("/api/duplicates", params={"tier": "exact"}).json()["groups"]
    body = {"tier": "exact", "action": "keep", "groups": [exact[0]["id"]]}
    assert client.post("/api/duplicates/decisions", json=body).json()["groups"] == 1
    assert client.get("/api/duplicates", params={"tier": "exact"}).json()["total"] == 0
    near = client.get("/api/duplicates", params={"tier": "near"}).json()["groups"]
    body = {"tier": "near", "action": "dismiss", "groups": [g["id"] for g in near]}
    assert client.post("/api/duplicates/decisions", json=body).json()["groups"] == 2
    assert client.get("/api/duplicates", params={"tier": "near"}).json()["total"] == 0
    stored = client.get("/api/duplicates/decisions").json()
    assert [d["decision"] for d in stored] == ["keep_all", "not_duplicates", "not_duplicates"]
    forgotten = client.post(f"/api/duplicates/decisions/{stored[0]['id']}/forget")
    assert forgotten.json()["tier"] == "exact"
    assert client.get("/api/duplicates", params={"tier": "exact"}).json()["total"] == 1
    assert client.post(f"/api/duplicates/decisions/{stored[0]['id']}/forget").status_code == 404


def test_quarantine_and_undo_through_the_api(client, site):
    _, root, quarantine = site
    small = root / "scenes/scene1-small.jpg"
    original = small.read_bytes()
    near = client.get("/api/duplicates", params={"tier": "near"}).json()["groups"]
    group = next(g for g in near if rel(root, g) == planted.NEAR)
    body = {"tier": "near", "action": "quarantine", "groups": [group["id"]]}
    result = client.post("/api/duplicates/decisions", json=body).json()
    assert result["moved"] == 1 and not small.exists()
    assert (quarantine / small.relative_to(small.anchor)).read_bytes() == original
    assert client.get("/api/duplicates", params={"tier": "near"}).json()["total"] == 1
    [manifest] = client.get("/api/duplicates/manifests").json()
    assert manifest == {"name": result["manifest"], "files": 1}
    undone = client.post("/api/duplicates/undo", json={"manifest": result["manifest"]}).json()
    assert undone == {"restored": [str(small)], "skipped": []}
    assert small.read_bytes() == original
    assert client.get("/api/duplicates", params={"tier": "near"}).json()["total"] == 2


def test_bad_requests_are_4xx_and_change_nothing(client, site):
    _, root, _ = site
    before = sorted(p.name for p in root.rglob("*"))
    listing = "/api/duplicates"
    decide = "/api/duplicates/decisions"
    checks = [
        (client.get(listing, params={"tier": "fuzzy"}), 422),
        (client.get(listing, params={"tier": "near", "threshold": 2.5}), 400),
        (client.get(listing, params={"tier": "exact", "threshold": 3}), 400),
        (client.get(listing, params={"tier": "semantic", "threshold": 5}), 400),
        (client.get(listing, params={"tier": "semantic", "threshold": 0.01}), 400),
        (client.get(listing, params={"tier": "near", "threshold": 40}), 400),
        (client.get(listing, params={"tier": "near", "threshold": 65}), 422),
        (client.get(listing, params={"limit": 0}), 422),
        (client.get(listing, params={"offset": -1}), 422),
        (client.post(decide, json={"tier": "near", "action": "keep", "groups": ["nope"]}), 404),
        (client.post(decide, json={"tier": "near", "action": "delete", "groups": ["x"]}), 422),
        (client.post(decide, json={"tier": "near", "action": "keep", "groups": []}), 422),
        (
            client.post(decide, content=b"not json", headers={"content-type": "application/json"}),
            422,
        ),
        (client.post(decide), 422),
        (client.post("/api/duplicates/undo", json={"manifest": "../../etc/passwd"}), 404),
        (client.post("/api/duplicates/undo", json={"manifest": ""}), 422),
        (client.post("/duplicates/decide", data={"tier": "near", "target": "burn:x"}), 400),
        (client.post("/duplicates/decide", data={"tier": "near", "target": "keep:selected"}), 400),
    ]
    for response, status in checks:
        assert response.status_code == status, (response.request.url, response.text)
        if response.request.url.path.startswith("/api/"):
            assert response.json()["detail"]
        else:
            assert "unknown action" in response.text or "select at least one" in response.text
    exact = client.get(listing, params={"tier": "exact"}).json()["groups"][0]["id"]
    foreign = client.post(
        decide,
        json={"tier": "exact", "action": "quarantine", "groups": [exact]},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    assert sorted(p.name for p in root.rglob("*")) == before
