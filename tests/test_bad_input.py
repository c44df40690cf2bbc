"""A corpus of broken and odd files: bad ones are listed with a reason, odd valid ones indexed."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import Cli, write_config
from tests.tinyclip import draw_shape

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n%%EOF\n"


def _jpeg_bytes(size: tuple[int, int] = (200, 150)) -> bytes:
    buffer = io.BytesIO()
    draw_shape("red", "circle", 200).resize(size).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_bad(root: Path) -> dict[str, str]:
    """Broken files, each with a word its failure reason must contain."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "zero.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(_jpeg_bytes()[:900])
    (root / "text.jpg").write_text("this is not an image\n")
    (root / "random.jpg").write_bytes(random.Random(1).randbytes(5000))
    (root / "eps.jpg").write_bytes(EPS)
    Image.new("1", (10_000, 10_000)).save(root / "bomb.png")
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    return {
        "zero.jpg": "empty",
        "truncated.jpg": "truncated",
        "text.jpg": "allowed format",
        "random.jpg": "allowed format",
        "eps.jpg": "allowed format",
        "bomb.png": "decompression bomb",
        "loop.jpg": "symlink loop",
        "dangling.jpg": "broken symlink",
    }


def make_odd(root: Path) -> list[str]:
    """Unusual but valid images, all of which must be indexed."""
    root.mkdir(parents=True, exist_ok=True)
    base = draw_shape("blue", "square", 120)
    Image.new("RGB", (1, 1), (10, 200, 30)).save(root / "one-pixel.png")
    Image.new("RGB", (30_000, 10), (200, 10, 10)).save(root / "wide.jpg")
    frames = [draw_shape(c, "circle", 64) for c in ("red", "green", "blue")]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    base.convert("CMYK").save(root / "cmyk.jpg")
    grey16 = (np.asarray(base.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(root / "sixteen-bit.png")
    base.save(root / "name with spaces.jpg")
    base.save(root / "ünïcødé 写真.jpg")
    base.save(root / "new\nline.jpg")
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000
    base.save(root / "huge-exif.jpg", exif=exif)
    base.save(root / "png-inside.jpg", format="PNG")
    base.convert("P", palette=Image.ADAPTIVE).save(root / "palette.png", transparency=0)
    base.convert("LA").save(root / "grey-alpha.png")
    base.save(root / "image.webp")
    base.save(root / "image.heic", format="HEIF")
    return [path.name for path in root.iterdir()]


def test_bad_and_odd_corpus(cli, tmp_path):
    root = tmp_path / "corpus"
    bad = make_bad(root / "bad")
    odd = make_odd(root / "odd")
    assert len(bad) + len(odd) >= 20
    report = cli.index(root)
    assert report["added"] == len(odd)
    assert report["failed"] == len(bad)
    status = cli.json("status")
    assert status["indexed"] == len(odd)
    reasons = {Path(failure["path"]).name: failure["reason"] for failure in status["failures"]}
    assert set(reasons) == set(bad)
    for name, word in bad.items():
        assert word in reasons[name], (name, reasons[name])
    text_status = cli.run("status")
    assert "truncated.jpg" in text_status and "decompression bomb" in text_status


def test_truncated_file_is_retried_once_complete(cli, tmp_path):
    root = tmp_path / "copying"
    root.mkdir()
    whole = _jpeg_bytes()
    (root / "arriving.jpg").write_bytes(whole[: len(whole) // 2])
    draw_shape("red", "square", 64).save(root / "other.jpg")
    first = cli.index(root)
    assert (first["added"], first["failed"]) == (1, 1)
    (root / "arriving.jpg").write_bytes(whole)
    second = cli.index(root)
    assert (second["added"], second["failed"]) == (1, 0)
    assert cli.json("status")["failures"] == []


def test_unreadable_file_is_reported(random_clip):
    base = Path(tempfile.mkdtemp(prefix="pixseek-perm-"))
    try:
        _index_with_an_unreadable_file(base, random_clip)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _index_with_an_unreadable_file(base: Path, random_clip: Path) -> None:
    root = base / "private"
    root.mkdir()
    draw_shape("red", "square", 64).save(root / "open.jpg")
    model = shutil.copytree(random_clip, base / "model")
    config = write_config(base / "c.yaml", model, base / "data")
    command = [sys.executable, "-m", "pixseek.cli"]
    if os.geteuid() == 0:  # root reads everything: run as nobody to meet a real EACCES
        subprocess.run(["chmod", "-R", "a+rwX", str(base)], check=True)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = os.environ | {"PIXSEEK_CONFIG": str(config), "HOME": str(base)}

    def pixseek(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(command + list(args), env=env, capture_output=True, text=True)

    first = pixseek("index", str(root))
    if first.returncode != 0 and os.geteuid() == 0:
        pytest.skip(f"pixseek cannot run as nobody on this machine: {first.stderr[-300:]}")
    assert first.returncode == 0, first.stderr
    draw_shape("blue", "square", 64).save(root / "secret.jpg")
    (root / "secret.jpg").chmod(0)
    assert pixseek("index", str(root)).returncode == 0
    status = json.loads(pixseek("status", "--json").stdout)
    assert status["failures"] == [{"path": str(root / "secret.jpg"), "reason": "permission denied"}]
    assert status["indexed"] == 1


def test_a_data_dir_that_cannot_be_used_is_named(tmp_path, random_clip):
    (tmp_path / "pics").mkdir()
    draw_shape("red", "circle", 32).save(tmp_path / "pics" / "a.jpg")
    (tmp_path / "a-file").write_text("not a folder")
    for data_dir, says in (
        (tmp_path / "a-file", "a file is there, not a directory"),
        (tmp_path / "a-file" / "data", "Not a directory"),
    ):
        cli = Cli(write_config(tmp_path / "c.yaml", random_clip, data_dir))
        output = cli.run("index", str(tmp_path / "pics"), expect=1)
        assert f"cannot use data_dir {data_dir}: {says}" in output


def test_a_damaged_store_or_catalog_is_named_with_the_way_back(cli, gallery):
    assert cli.index(gallery)["added"] == 12
    data = Path(yaml.safe_load(cli.config.read_text())["data_dir"])
    chroma = data / "chroma"
    (chroma / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    output = cli.run("status", expect=1)
    assert f"cannot open the Chroma store at {chroma}" in output and "pixseek repair" in output
    chroma.rename(data / "chroma.damaged")
    # a new process, as the user's next command (chromadb keeps one client per path in a process)
    repair = [sys.executable, "-m", "pixseek.cli", "repair", "--json", "--config", str(cli.config)]
    repaired = subprocess.run(repair, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(repaired.stdout)["restored"] == 12  # from the catalog's cache

    (data / "catalog.sqlite3").write_bytes(b"not a database" * 100)
    output = cli.run("status", expect=1)
    assert f"cannot read the catalog {data / 'catalog.sqlite3'}" in output
