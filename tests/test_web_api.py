"""The JSON API over a real uvicorn server on 127.0.0.1, with a library indexed by the CLI."""

from __future__ import annotations

import io
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from pixseek.catalog import record_id
from pixseek.config import load_config
from pixseek.library import Library
from pixseek.web.app import create_app
from tests.conftest import Cli, write_config
from tests.tinyclip import classes, draw_shape

PER_CLASS = 3
BROKEN = "broken.jpg"
MAX_UPLOAD = 300_000
TOKEN = "s3cret-token"


def build_library(base: Path, model: Path) -> tuple[Path, Path]:
    """Index a shapes gallery plus one corrupt JPEG; returns (config file, gallery root)."""
    root = base / "gallery"
    root.mkdir()
    rng = random.Random(2024)
    for colour, shape in classes():
        for number in range(PER_CLASS):
            draw_shape(colour, shape, 128, rng).save(
                root / f"{colour}_{shape}_{number}.jpg", quality=88
            )
    (root / BROKEN).write_bytes(b"this is not a jpeg at all\n" * 20)
    config = write_config(base / "config.yaml", model, base / "data")
    report = Cli(config).index(root)
    assert report["added"] == PER_CLASS * len(classes()), report
    return config, root


@contextmanager
def serve(app) -> Iterator[str]:
    """Run `app` with uvicorn on a free port of 127.0.0.1 in a thread; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def serve_library(config: Path, thumbnails: Path, **flags: object) -> Iterator[str]:
    """Open the library of `config` as a reader and serve it; yields the base URL."""
    library = Library(load_config(config, flags).settings)
    try:
        with serve(create_app(library, thumbnail_dir=thumbnails)) as url:
            yield url
    finally:
        library.close()


def label(name: str) -> str:
    return "_".join(Path(name).stem.split("_")[:2])


def png_bytes(colour: str, shape: str, size: int = 160, seed: int = 5) -> bytes:
    buffer = io.BytesIO()
    draw_shape(colour, shape, size, random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, trained_clip) -> tuple[Library, Path, Path]:
    base = tmp_path_factory.mktemp("web")
    config, root = build_library(base, trained_clip)
    library = Library(load_config(config).settings)
    yield library, root, base
    library.close()


@pytest.fixture(scope="module")
def server(indexed) -> Iterator[tuple[httpx.Client, Path, Path]]:
    library, root, base = indexed
    app = create_app(library, thumbnail_dir=base / "thumbs", max_upload_bytes=MAX_UPLOAD)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, root, base / "thumbs"


@pytest.fixture(scope="module")
def locked(indexed) -> Iterator[str]:
    library, _, base = indexed
    app = create_app(library, token=TOKEN, thumbnail_dir=base / "thumbs2")
    with serve(app) as url:
        yield url


def rid(root: Path, name: str) -> str:
    return record_id(str(root), name)


def test_health_and_openapi(server):
    client, _, _ = server
    assert client.get("/api/health").json() == {"status": "ok"}
    schema = client.get("/openapi.json").json()
    assert "/api/search" in schema["paths"]
    assert schema["paths"]["/api/search"]["get"]["summary"]


def test_text_search_puts_the_right_class_on_top(server):
    client, _, _ = server
    response = client.get("/api/search", params={"q": "a red circle", "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["k"] == 3 and body["offset"] == 0 and len(body["results"]) == 3
    assert [label(hit["name"]) for hit in body["results"]] == ["red_circle"] * 3
    first = body["results"][0]
    assert set(first) == {"id", "path", "score", "name", "width", "height", "date"}
    assert (first["width"], first["height"]) == (128, 128)
    page2 = client.get("/api/search", params={"q": "a red circle", "k": 3, "offset": 3}).json()
    assert {h["id"] for h in page2["results"]}.isdisjoint(h["id"] for h in body["results"])


def test_image_upload_search(server):
    client, _, _ = server
    files = {"file": ("query.png", png_bytes("blue", "square"), "image/png")}
    response = client.post("/api/search/image", params={"k": 3}, files=files)
    assert response.status_code == 200, response.text
    assert sum(label(hit["name"]) == "blue_square" for hit in response.json()["results"]) >= 2


def test_similar_and_metadata(server):
    client, root, _ = server
    target = rid(root, "green_triangle_0.jpg")
    hits = client.get(f"/api/images/{target}/similar", params={"k": 2}).json()["results"]
    assert target not in {hit["id"] for hit in hits}
    assert all(label(hit["name"]) == "green_triangle" for hit in hits)
    info = client.get(f"/api/images/{target}").json()
    assert info["id"] == target and info["name"] == "green_triangle_0.jpg"
    assert info["path"] == str(root / "green_triangle_0.jpg")
    assert (info["width"], info["height"], info["format"]) == (128, 128, "JPEG")
    assert info["size"] == (root / "green_triangle_0.jpg").stat().st_size


def test_thumbnail_is_webp_and_cached(server):
    client, root, thumbs = server
    target = rid(root, "red_square_1.jpg")
    first = client.get(f"/api/images/{target}/thumbnail", params={"size": 64})
    assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
    assert first.content[:4] == b"RIFF" and first.content[8:12] == b"WEBP"
    assert b"Exif" not in first.content
    cached = list(thumbs.glob("*-64.webp"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.content
    again = client.get(f"/api/images/{target}/thumbnail", params={"size": 64})
    assert again.content == first.content
    assert client.get(f"/api/images/{target}/thumbnail").status_code == 200  # default 256
    for size in (0, 8, 5000, "x"):
        bad = client.get(f"/api/images/{target}/thumbnail", params={"size": size})
        assert bad.status_code == 422


def test_file_by_id(server):
    client, root, _ = server
    target = rid(root, "yellow_circle_2.jpg")
    response = client.get(f"/api/images/{target}/file")
    assert response.status_code == 200
    assert response.content == (root / "yellow_circle_2.jpg").read_bytes()
    assert response.headers["content-type"] == "image/jpeg"


def test_status_lists_the_broken_file(server):
    client, root, _ = server
    status = client.get("/api/status").json()
    assert status["indexed"] == PER_CLASS * len(classes())
    assert status["failed"] == 1 and status["watch"] is None
    assert status["store"]["records"] == status["indexed"]
    [failure] = status["failures"]
    assert failure["path"] == str(root / BROKEN)
    assert "not an image" in failure["reason"]


def test_client_errors_are_4xx_never_5xx(server):
    client, root, _ = server
    broken = rid(root, BROKEN)
    checks = [
        (client.get("/api/images/nope"), 404),
        (client.get("/api/images/nope/similar"), 404),
        (client.get("/api/images/nope/thumbnail"), 404),
        (client.get("/api/images/nope/file"), 404),
        (client.get(f"/api/images/{broken}"), 404),  # known but not indexed
        (client.get(f"/api/images/{broken}/file"), 404),
        (client.get("/api/search", params={"q": "x", "k": 0}), 422),
        (client.get("/api/search", params={"q": "x", "k": 10000}), 422),
        (client.get("/api/search", params={"q": "x", "offset": -1}), 422),
        (client.get("/api/search", params={"q": "x", "k": "many"}), 422),
        (client.get("/api/search", params={"q": "   "}), 400),
        (client.get("/api/search"), 400),
        (client.get("/api/search", params={"q": "x", "folder": "~no-such-user-here"}), 400),
        (client.get("/nope"), 404),
        (client.get("/images/nope"), 404),
        (client.get("/similar/nope"), 404),
        (client.get("/", params={"q": "x", "k": 0}), 422),
    ]
    for response, expected in checks:
        assert response.status_code == expected, (response.request.url, response.text)
    not_image = client.post(
        "/api/search/image", files={"file": ("notes.png", b"hello, not an image", "image/png")}
    )
    assert not_image.status_code == 400 and "not an image" in not_image.json()["detail"]
    empty = client.post("/api/search/image", files={"file": ("e.png", b"", "image/png")})
    assert empty.status_code == 400
    missing = client.post("/api/search/image", data={"other": "x"})
    assert missing.status_code == 422
    page = client.post("/search/image", files={"file": ("x.jpg", b"nope", "image/jpeg")})
    assert page.status_code == 400 and "text/html" in page.headers["content-type"]


def test_uploads_over_the_cap_get_413(server):
    client, _, _ = server
    big = b"\0" * (MAX_UPLOAD + 50_000)
    declared = client.post("/api/search/image", files={"file": ("big.png", big, "image/png")})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b"--xx\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 10_000

    chunked = client.post(
        "/api/search/image",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=xx"},
    )
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert chunked.status_code == 413
    assert client.get("/api/health").status_code == 200  # the server is still fine


def test_traversal_never_reads_outside_the_index(server):
    client, _, _ = server
    secret = Path(__file__).resolve().parents[1] / "pixseek" / "config.py"
    for raw in (
        "/api/images/..%2F..%2Fetc%2Fpasswd/file",
        "/api/images/%2Fetc%2Fpasswd/file",
        "/api/images/..%2F..%2Fpixseek%2Fconfig.py/file",
        "/api/images/%2e%2e/file",
        "/static/../pixseek/config.py",
        "/static/%2e%2e/%2e%2e/pixseek/config.py",
        "/static/..%2F..%2Fpixseek%2Fconfig.py",
        "/static/%2Fetc%2Fpasswd",
    ):
        response = client.send(client.build_request("GET", httpx.URL(client.base_url.join(raw))))
        assert response.status_code < 500, raw
        assert "root:" not in response.text and "class Settings" not in response.text, raw
        assert response.content != secret.read_bytes(), raw
        assert response.status_code in (404, 400, 422) or raw.startswith("/static/.."), raw


def test_token_required_when_set(locked):
    with httpx.Client(base_url=locked, timeout=30) as client:
        assert client.get("/api/health").status_code == 200
        for path in (
            "/api/search?q=a+red+circle",
            "/api/status",
            "/api/images/x/thumbnail",
            "/api/images/x/file",
            "/openapi.json",
        ):
            assert client.get(path).status_code == 401, path
        docs = client.get("/docs")
        assert docs.status_code == 303 and docs.headers["location"].startswith("/login")
        page = client.get("/status")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert client.get("/login").status_code == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/status", headers=bearer).status_code == 200
        assert (
            client.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        wrong = client.post("/login", data={"token": "wrong", "next": "/status"})
        assert wrong.status_code == 401 and "pixseek_session" not in client.cookies
        login = client.post("/login", data={"token": TOKEN, "next": "/status"})
        assert login.status_code == 303 and login.headers["location"] == "/status"
        assert TOKEN not in client.cookies["pixseek_session"]
        assert client.get("/api/status").status_code == 200
        assert client.get("/status").status_code == 200
        evil = client.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert evil.headers["location"] == "/"


def test_foreign_origin_post_is_refused(server, locked):
    client, _, _ = server
    files = {"file": ("query.png", png_bytes("red", "circle"), "image/png")}
    foreign = client.post(
        "/api/search/image", files=files, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    same = client.post(
        "/api/search/image", files=files, headers={"Origin": str(client.base_url).rstrip("/")}
    )
    assert same.status_code == 200
    with httpx.Client(base_url=locked, timeout=30) as other:
        forged = other.post(
            "/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"}
        )
        assert forged.status_code == 403 and "pixseek_session" not in other.cookies


def test_pages_render_and_escape(server):
    client, root, _ = server
    page = client.get("/", params={"q": "<script>alert(1)</script>"})
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "/api/images/" in page.text and "similar" in page.text
    assert client.get("/", params={"q": "a red circle", "k": 2}).text.count('rel="next"') == 1
    assert "content-security-policy" in page.headers
    detail = client.get(f"/images/{rid(root, 'blue_circle_0.jpg')}")
    assert detail.status_code == 200 and "blue_circle_0.jpg" in detail.text
    assert "not an image" in client.get("/status").text


def test_upload_form_works_without_javascript(server):
    client, _, _ = server
    files = {"file": ("query.png", png_bytes("yellow", "square"), "image/png")}
    page = client.post("/search/image", files=files)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Images like query.png" in page.text and "yellow_square_" in page.text
