"""The batched decode path (GPU JPEG decoding on GPU machines) gives the reference embeddings.

On this CPU the same code runs with Pillow as the decoder and torch on the CPU for the geometry;
`bench/parity_gpu.py` repeats the comparison with nvImageCodec/nvjpeg on a GPU.
"""

from __future__ import annotations

import io
import shutil
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pixseek.catalog import Catalog, FileRow, content_hash
from pixseek.config import ModelSettings
from pixseek.embedder import Embedder, image_geometry
from pixseek.imaging import Limits, PreprocessSpec, preprocess, read_jpeg_header
from pixseek.indexer.batched import embed_batched
from pixseek.indexer.decode_processes import gpu_decoder_kinds
from pixseek.indexer.read_processes import ReadProcesses
from pixseek.tensor_preprocess import orient, resize_crop
from tests.conftest import Cli, write_config
from tests.test_parity import CASES, LIMITS, embedder, photo_like, reference  # noqa: F401

CLIP_GEOMETRY = PreprocessSpec(shortest_edge=224, resize_to=None, crop=(224, 224))
NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_GPU)]


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation):
    image = photo_like(60, 40)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    expected = _tensor(ImageOps.exif_transpose(Image.open(buffer)))
    assert torch.equal(orient(_tensor(image), orientation), expected)


@pytest.mark.parametrize("by_matrices", [True, False], ids=["matrices", "interpolation"])
@pytest.mark.parametrize("size", [(4000, 3000), (1600, 1200), (640, 480), (300, 200), (150, 100)])
def test_tensor_geometry_matches_pillow(size, by_matrices):
    """Shortest edge to 224 with Pillow's bicubic filter, then the centre crop, both ways."""
    image = photo_like(*size)
    ours = resize_crop([_tensor(image)], CLIP_GEOMETRY, by_matrices)[0].permute(1, 2, 0).numpy()
    theirs = preprocess(image, CLIP_GEOMETRY)
    difference = np.abs(ours.astype(int) - theirs.astype(int))
    assert ours.shape == theirs.shape == (224, 224, 3)
    assert difference.max() <= 1 and difference.mean() < 0.15, (difference.max(), difference.mean())


@pytest.mark.parametrize(
    "spec",
    [
        PreprocessSpec(shortest_edge=100, resize_to=None, crop=(224, 224)),
        PreprocessSpec(shortest_edge=None, resize_to=(101, 77), crop=(224, 50)),
        PreprocessSpec(shortest_edge=None, resize_to=(256, 256), crop=None),
    ],
    ids=["padded crop", "odd padding", "no crop"],
)
def test_crops_and_pads_like_pillow(spec):
    """Crops larger than the resized image pad with black, on the same side Pillow's path does."""
    image = photo_like(201, 150)
    theirs = preprocess(image, spec).astype(int)
    for by_matrices in (True, False):
        ours = resize_crop([_tensor(image)], spec, by_matrices)[0].permute(1, 2, 0).numpy()
        assert ours.shape == theirs.shape
        assert np.abs(ours.astype(int) - theirs).max() <= 2


def test_mixed_sizes_keep_their_order():
    images = [photo_like(300, 200), photo_like(200, 300), photo_like(300, 200)]
    batch = resize_crop([_tensor(image) for image in images], CLIP_GEOMETRY)
    for position, image in enumerate(images):
        alone = resize_crop([_tensor(image)], CLIP_GEOMETRY)[0]
        assert torch.equal(batch[position], alone)


@pytest.mark.parametrize("device", DEVICES)
def test_interleaved_and_planar_pixels_resize_alike(device):
    """Decoders give RGB interleaved (nvImageCodec, Pillow) or planar (nvjpeg): same result."""
    images = [photo_like(1600, 1200), photo_like(1600, 1200)]
    interleaved = [torch.from_numpy(np.array(im)).to(device).permute(2, 0, 1) for im in images]
    planar = [_tensor(image).to(device) for image in images]
    assert not interleaved[0].is_contiguous() and planar[0].is_contiguous()
    from_interleaved = resize_crop(interleaved, CLIP_GEOMETRY, by_matrices=True).int()
    from_planar = resize_crop(planar, CLIP_GEOMETRY, by_matrices=True).int()
    assert (from_interleaved - from_planar).abs().max() <= 1  # half-precision rounding alone


def test_header_gives_upright_size_and_leaves_cmyk_to_the_workers(tmp_path):
    cases = {name: CASES[name](photo_like(), tmp_path)[0] for name in CASES}
    rotated = read_jpeg_header(cases["exif-rotated jpeg"].read_bytes(), LIMITS)
    assert (rotated.width, rotated.height, rotated.orientation) == (360, 480, 6)
    assert read_jpeg_header(cases["cmyk jpeg"].read_bytes(), LIMITS) is None
    assert read_jpeg_header(cases["png with alpha"].read_bytes(), LIMITS) is None
    small = Limits(max_bytes=LIMITS.max_bytes, max_pixels=1000)
    assert read_jpeg_header(cases["jpeg"].read_bytes(), small) is None  # the workers say why


def _row(path: Path) -> FileRow:
    stat = path.stat()
    return FileRow(
        id=path.name, root=str(path.parent), rel_path=path.name, path=str(path),
        size=stat.st_size, mtime_ns=stat.st_mtime_ns, content_hash=path.name, status="pending",
    )  # fmt: skip


@pytest.mark.parametrize("read_by", ["threads", "processes", "processes that also decode"])
def test_batched_embeddings_match_the_reference(
    tmp_path,
    reference,  # noqa: F811
    embedder,  # noqa: F811
    read_by,
):
    made = {name: CASES[name](photo_like(), tmp_path) for name in CASES}
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(made["jpeg"][0].read_bytes()[:2000] + b"\x00" * 50)
    rows = [_row(path) for path, _ in made.values()] + [_row(broken)]
    embedded, leftovers, steps = {}, [], set()
    decoders = [("cpu", "pillow")] if read_by.endswith("decode") else []

    def timed(step: str) -> nullcontext:
        steps.add(step)
        return nullcontext()

    with ExitStack() as stack:
        readers = None
        if read_by != "threads":
            readers = stack.enter_context(ReadProcesses(2, LIMITS, decoders=decoders))
        embed_batched(
            rows, [embedder], LIMITS, workers=2,
            on_embedded=lambda done: embedded.update({row.path: v for row, _, v in done}),
            on_leftover=lambda row: leftovers.append(Path(row.path).name),
            on_refused=lambda row, error: pytest.fail(f"{row.path}: {error}"),
            readers=readers, timed=timed,
        )  # fmt: skip
    assert ("decode" in steps) == (not decoders), steps  # decoded here, or by a decode process
    jpegs = ["jpeg", "progressive jpeg", "grayscale jpeg", "exif-rotated jpeg"]
    assert sorted(Path(path).name for path in embedded) == sorted(made[n][0].name for n in jpegs)
    assert "cmyk.jpg" in leftovers and "alpha.png" in leftovers
    for name in jpegs:
        path, expected_image = made[name]
        theirs = reference[0]([expected_image])[0]
        assert float(embedded[str(path)] @ theirs) >= 0.999, name


@pytest.mark.parametrize("device", DEVICES)
def test_several_lanes_share_the_work(tmp_path, random_clip, device):
    """One lane per GPU (here two on one device, each lane with its own threads and, on a GPU,
    its own CUDA streams): every file is embedded once, as by one lane."""
    dtype = "fp32" if device == "cpu" else "fp16"
    model = Embedder(ModelSettings(name=str(random_clip), device=device, dtype=dtype))
    rows = []
    for number in range(3 * model.batch_size + 5):  # batches go to the lanes in turn
        path = tmp_path / f"{number:03}.jpg"
        photo_like(64 + number, 48).save(path, quality=90)
        rows.append(_row(path))

    def run(lanes: int) -> dict[str, list[np.ndarray]]:
        embedded: dict[str, list[np.ndarray]] = {}

        def take(done: list) -> None:
            for row, _, vector in done:
                embedded.setdefault(row.path, []).append(vector)

        embed_batched(
            rows, [model] * lanes, LIMITS, workers=2, on_embedded=take,
            on_leftover=lambda row: pytest.fail(f"{row.path} left over"),
            on_refused=lambda row, error: pytest.fail(f"{row.path}: {error}"),
        )  # fmt: skip
        return embedded

    alone, shared = run(1), run(2)
    assert sorted(shared) == sorted(row.path for row in rows)
    assert all(len(vectors) == 1 for vectors in shared.values())
    for path, (vector,) in shared.items():
        np.testing.assert_allclose(vector, alone[path][0], atol=1e-5 if dtype == "fp32" else 2e-3)


def test_a_faster_lane_takes_more_batches(tmp_path, embedder):  # noqa: F811
    """Batches go to the next lane with room, not strictly in turn: a lane whose GPU decodes
    faster (here, whose model answers at once) is not held to the pace of a slow one."""

    class Timed:
        def __init__(self, delay: float) -> None:
            self.device, self.spec, self.batch_size = embedder.device, embedder.spec, 4
            self.delay, self.images = delay, 0

        def encode_uint8(self, batch: torch.Tensor) -> np.ndarray:
            time.sleep(self.delay)
            self.images += len(batch)
            return embedder.encode_uint8(batch)

    rows = []
    for number in range(4 * 16):
        path = tmp_path / f"{number:02}.jpg"
        photo_like(64 + number, 48).save(path, quality=90)
        rows.append(_row(path))
    fast, slow = Timed(0.0), Timed(0.25)
    embed_batched(
        rows, [fast, slow], LIMITS, workers=2, on_embedded=lambda done: None,
        on_leftover=lambda row: pytest.fail(f"{row.path} left over"),
        on_refused=lambda row, error: pytest.fail(f"{row.path}: {error}"),
    )  # fmt: skip
    assert fast.images + slow.images == len(rows)
    assert fast.images >= 2 * slow.images, (fast.images, slow.images)


def test_index_with_batched_decode(tmp_path, random_clip):
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("jpeg", "exif-rotated jpeg", "cmyk jpeg", "png with alpha", "progressive jpeg"):
        CASES[name](photo_like(), root)
    (root / "broken.jpg").write_bytes((root / "plain.jpg").read_bytes()[:3000])
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", decode="batched")
    cli = Cli(config)
    report = cli.index(root)
    assert (report["added"], report["failed"], report["embedded"]) == (5, 1, 5)
    loading = {"load_model", "warm_model", "warm_decoders"}
    embedding = {"read_wait", "decode", "resize", "model", "commit", "last_batches_wait"}
    assert loading | embedding <= report["steps"].keys(), report["steps"]
    assert "model" not in report["phases"], "the lanes start while the model loads"
    failures = cli.json("status")["failures"]
    assert [Path(f["path"]).name for f in failures] == ["broken.jpg"]
    assert "truncated" in failures[0]["reason"]
    rotated = next(row for row in cli.json("similar", str(root / "rotated.jpg"), "-k", "5"))
    assert rotated["path"] != str(root / "rotated.jpg")
    again = cli.index(root)
    assert (again["embedded"], again["unchanged"]) == (0, 5)


@pytest.mark.parametrize("device", DEVICES)
def test_decode_processes_embed_as_the_lanes_do(tmp_path, random_clip, device):
    """Decode processes (on a GPU: one per GPU decoder, crops shared through CUDA IPC) give
    every file the vector an in-process lane gives it, each file once."""
    dtype = "fp32" if device == "cpu" else "fp16"
    model = Embedder(ModelSettings(name=str(random_clip), device=device, dtype=dtype))
    rows = []
    for number in range(5 * model.batch_size + 3):
        path = tmp_path / f"{number:03}.jpg"
        photo_like(64 + number, 48 + number % 7).save(path, quality=90)
        rows.append(_row(path))
    kinds = ["pillow"] if device == "cpu" else gpu_decoder_kinds("auto")
    place = "cpu" if device == "cpu" else "cuda:0"

    def run(decoders: list[tuple[str, str]]) -> dict[str, list[np.ndarray]]:
        embedded: dict[str, list[np.ndarray]] = {}

        def take(done: list) -> None:
            for row, _, vector in done:
                embedded.setdefault(row.path, []).append(vector)

        with ReadProcesses(2, LIMITS, decoders=decoders) as readers:
            embed_batched(
                rows, [model], LIMITS, workers=2, on_embedded=take,
                on_leftover=lambda row: pytest.fail(f"{row.path} left over"),
                on_refused=lambda row, error: pytest.fail(f"{row.path}: {error}"),
                readers=readers,
            )  # fmt: skip
        return embedded

    in_lanes, in_processes = run([]), run([(place, kind) for kind in kinds])
    assert sorted(in_processes) == sorted(row.path for row in rows)
    assert all(len(vectors) == 1 for vectors in in_processes.values())
    for path, (vector,) in in_processes.items():
        if device == "cpu":  # the same decoder both ways
            np.testing.assert_allclose(vector, in_lanes[path][0], atol=1e-5)
        else:  # nvImageCodec and nvjpeg round some pixels apart by a level
            assert float(vector @ in_lanes[path][0]) >= 0.999, path


def test_index_with_decode_processes(tmp_path, random_clip):
    """`pixseek index` with read processes that bring a decode process (Pillow here; on a GPU,
    nvImageCodec and nvjpeg): the files are decoded there, from the arena the read processes
    filled, and search finds them as the in-process lanes would have indexed them."""
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("jpeg", "exif-rotated jpeg", "cmyk jpeg", "progressive jpeg"):
        CASES[name](photo_like(), root)
    (root / "broken.jpg").write_bytes((root / "plain.jpg").read_bytes()[:3000])
    settings = {"decode": "batched", "readers": "processes", "decode_processes": "on"}
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", **settings)
    cli = Cli(config)
    report = cli.index(root)
    assert (report["added"], report["failed"], report["embedded"]) == (4, 1, 4)
    assert {"decoded_wait", "model", "warm_libraries"} <= report["steps"].keys(), report["steps"]
    assert not {"decode", "warm_decoders"} & report["steps"].keys(), "decoded in this process"
    in_lanes = Cli(write_config(tmp_path / "t.yaml", random_clip, tmp_path / "t", decode="batched"))
    in_lanes.index(root)
    query = str(root / "rotated.jpg")
    ours, theirs = (c.json("similar", query, "-k", "4") for c in (cli, in_lanes))
    assert [r["path"] for r in ours] == [r["path"] for r in theirs]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], atol=1e-4)


def test_a_decode_process_that_died_loses_no_file(tmp_path, embedder, caplog):  # noqa: F811
    """Its batches come back as leftovers for the CPU decode workers, with a warning."""
    rows = []
    for number in range(40):
        path = tmp_path / f"{number:02}.jpg"
        photo_like(64 + number, 48).save(path, quality=90)
        rows.append(_row(path))
    embedded, leftovers = [], []
    with ReadProcesses(1, LIMITS, decoders=[("cpu", "pillow")]) as readers:
        readers.decoding[0].process.kill()
        readers.decoding[0].process.wait()
        embed_batched(
            rows, [embedder], LIMITS, workers=2,
            on_embedded=lambda done: embedded.extend(row.path for row, _, _ in done),
            on_leftover=lambda row: leftovers.append(row.path),
            on_refused=lambda row, error: pytest.fail(f"{row.path}: {error}"),
            readers=readers,
        )  # fmt: skip
    assert sorted(embedded + leftovers) == sorted(row.path for row in rows)
    assert "the decode process on cpu stopped" in caplog.text


def test_lanes_that_start_before_the_model_loads_resize_as_the_model_will(
    random_clip,
    embedder,  # noqa: F811
):
    """Lanes take the geometry from the image processor's config alone: it must be the one the
    loaded model uses."""
    assert image_geometry(str(random_clip)) == embedder.spec


@pytest.mark.parametrize("decode_processes", ["off", "on"])
def test_a_model_that_cannot_load_stops_a_batched_run_with_the_reason(
    tmp_path, random_clip, decode_processes
):
    """The lanes start on the model's config before its weights load (in this process, or in
    decode processes); weights that are missing still end the run with the loading error, and
    nothing is recorded as indexed."""
    model = shutil.copytree(random_clip, tmp_path / "model")
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    root = tmp_path / "photos"
    root.mkdir()
    CASES["jpeg"](photo_like(), root)
    settings = {"decode": "batched", "readers": "processes", "decode_processes": decode_processes}
    config = write_config(tmp_path / "c.yaml", model, tmp_path / "data", **settings)
    cli = Cli(config)
    output = cli.run("index", str(root), expect=1)
    assert "cannot load model" in output and str(model) in output
    assert cli.json("status")["indexed"] == 0


def test_batched_runs_hash_new_files_as_they_read_them_and_keep_using_the_cache(
    tmp_path, random_clip
):
    """New files are hashed from the bytes the batched path reads (in read processes, not in the
    plan): the hashes are the catalog's, re-added content comes from the cache, and moves are
    still found."""
    root = tmp_path / "photos"
    root.mkdir()
    for number in range(4):
        photo_like(320 + 16 * number, 240).save(root / f"p{number}.jpg", quality=90)
    (root / "p4.png").write_bytes(_png(photo_like(200, 150)))
    config = write_config(
        tmp_path / "c.yaml", random_clip, tmp_path / "data", decode="batched", readers="processes"
    )
    cli = Cli(config)
    first = cli.index(root)
    assert (first["added"], first["embedded"]) == (5, 5)
    catalog = Catalog(tmp_path / "data" / "catalog.sqlite3")
    rows = catalog.rows_under(str(root), None)
    assert {rel: row.content_hash for rel, row in rows.items()} == {
        rel: content_hash(root / rel) for rel in rows
    }

    kept = root.parent / "kept.jpg"
    (root / "p0.jpg").rename(kept)
    assert cli.index(root)["deleted"] == 1
    kept.rename(root / "back.jpg")
    again = cli.index(root)
    assert (again["added"], again["embedded"]) == (1, 0)  # its vector came from the cache

    (root / "p1.jpg").rename(root / "moved.jpg")
    moved = cli.index(root)
    assert (moved["moved"], moved["embedded"], moved["added"]) == (1, 0, 0)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
