"""GPU indexing benchmark: `pixseek index` end to end against the hardware JPEG-decode limit.

On one GPU machine, in one run: generate photo-like 12 MP (4000x3000) and 640x480 JPEGs on local
disk, then measure for each set (c first, while this process holds no GPU memory or decoders)
  (a) decode-only limit: nvImageCodec on the hardware JPEG engines (batch 128, bytes in memory),
      and torchvision nvjpeg for comparison;
  (b) the naive loop of bench/index_cpu.py (PIL → CLIPProcessor → model, one image at a time; the
      model on the GPU in fp32) on a subset;
  (c) `pixseek index` into embedded Chroma, in a subprocess: images/s into the embedding cache
      and images/s searchable in Chroma, GPU memory peak (nvidia-smi), and recall@10 of the
      collection against exact search.
plus the default-settings Chroma write rate for the same number of vectors. Run from the
repository root on a GPU machine:

    HF_HUB_OFFLINE=1 python bench/index_gpu.py --big 2000 --small 20000
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from chroma_ingest import ingest, recall_at_10
from index_cpu import ensure_model, make_image

from pixseek.config import StoreSettings
from pixseek.store import Store

SIZES = {"12mp": (4000, 3000), "640x480": (640, 480)}


@functools.lru_cache(maxsize=8)
def _base(number: int, width: int, height: int) -> np.ndarray:
    """One of 8 photo-like frames per size, with sensor-like grain (cached per process)."""
    rng = np.random.default_rng(number)
    frame = make_image(number).resize((width, height), Image.Resampling.BILINEAR)
    grain = rng.normal(0, 3, (height, width, 3)).astype(np.float32)
    return np.clip(np.asarray(frame, np.float32) + grain, 0, 255).astype(np.uint8)


def _make(job: tuple[Path, int, int, int]) -> None:
    path, width, height, seed = job
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    shift = (int(rng.integers(height)), int(rng.integers(width)))
    pixels = np.roll(_base(seed % 8, width, height), shift, (0, 1))
    y, x = int(rng.integers(height - height // 8)), int(rng.integers(width - width // 8))
    pixels[y : y + height // 8, x : x + width // 8] = rng.integers(0, 256, 3)
    Image.fromarray(pixels).save(path.with_suffix(".tmp"), "JPEG", quality=90)
    path.with_suffix(".tmp").replace(path)


def generate(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """Photo-like JPEGs, each distinct (shifted, patched, fresh grain)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"img_{i:06d}.jpg", *size, i) for i in range(count)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_make, jobs, chunksize=8)
    return [job[0] for job in jobs]


def decode_only(paths: list[Path]) -> dict[str, float]:
    """Images/s of decode alone, bytes already in memory, batch 128."""
    blobs = [path.read_bytes() for path in paths]
    rates: dict[str, float] = {}
    try:
        from nvidia import nvimgcodec

        hardware = nvimgcodec.Decoder(
            backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.HW_GPU_ONLY)]
        )
        rates["nvimgcodec hardware"] = _rate(lambda batch: hardware.decode(batch), blobs)
    except (ImportError, RuntimeError) as error:
        print(f"nvimgcodec: {error}")
    try:
        from torchvision.io import decode_jpeg

        tensors = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
        nvjpeg = _rate(lambda batch: decode_jpeg(batch, device="cuda"), tensors)
        rates["torchvision nvjpeg"] = nvjpeg
    except (ImportError, RuntimeError) as error:
        print(f"nvjpeg: {error}")
    return rates


def _rate(decode, items: list) -> float:
    decode(items[:128])
    torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, len(items), 128):
        decode(items[start : start + 128])
    torch.cuda.synchronize()
    return len(items) / (time.perf_counter() - started)


def stage_rates(paths: list[Path], model_dir: Path) -> dict[str, float]:
    """Images/s of each stage of the batched path alone, in this process (where time goes)."""
    from pixseek.catalog import FileRow
    from pixseek.config import ModelSettings
    from pixseek.embedder import Embedder
    from pixseek.imaging import Limits
    from pixseek.indexer.batched import embed_batched
    from pixseek.indexer.jpeg_decoders import make_decoder
    from pixseek.indexer.reads import READ_THREADS, read_items
    from pixseek.tensor_preprocess import orient, resize_crop

    embedder = Embedder(ModelSettings(name=str(model_dir), device="cuda"))
    limits = Limits(max_bytes=10**9, max_pixels=10**9)
    rows = [
        FileRow(id=p.name, root=str(p.parent), rel_path=p.name, path=str(p), size=0,
                mtime_ns=0, content_hash=p.name, status="pending")
        for p in paths
    ]  # fmt: skip
    rates: dict[str, float] = {}
    started = time.perf_counter()
    items = list(read_items(rows, limits, READ_THREADS, 512))
    rates[f"read + header ({READ_THREADS} threads)"] = len(items) / (time.perf_counter() - started)
    decoder = make_decoder(embedder.device, embedder.spec.target, 16)
    batch = items[: embedder.batch_size]
    timings: dict[str, float] = {"decode": 0.0, "resize": 0.0, "model": 0.0}
    for attempt in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        pixels = decoder.decode([item.data for item in batch])
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        upright = [orient(p, i.header.orientation) for i, p in zip(batch, pixels, strict=True)]
        crops = resize_crop(upright, embedder.spec)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        embedder.encode_uint8(crops)
        t3 = time.perf_counter()
        for key, span in zip(timings, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            timings[key] = span if attempt == 0 else min(timings[key], span)
    for key, span in timings.items():
        rates[f"{key} ({decoder.name}, batch {len(batch)})"] = len(batch) / span
    for name in ("nvimgcodec", "nvjpeg"):
        count = 0

        def take(pairs) -> None:
            nonlocal count
            count += len(pairs)

        started = time.perf_counter()
        embed_batched(rows, [embedder], limits, 0, take, print, print, decoder=name)
        rates[f"embed_batched, {name} (no catalog, no Chroma)"] = count / (
            time.perf_counter() - started
        )
    return rates


def naive(paths: list[Path], model_dir: Path) -> float:
    """The naive loop, model on the GPU in fp32; images/s."""
    import chromadb
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir).eval().cuda()
    processor = CLIPProcessor.from_pretrained(model_dir)
    client = chromadb.EphemeralClient(settings=chromadb.Settings(anonymized_telemetry=False))
    collection = client.create_collection(
        f"naive-{time.time_ns()}", configuration={"hnsw": {"space": "cosine"}},
        embedding_function=None,
    )  # fmt: skip
    started = time.perf_counter()
    for index, path in enumerate(paths):
        inputs = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")
        with torch.no_grad():
            output = model.get_image_features(pixel_values=inputs["pixel_values"].cuda())
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        vector = torch.nn.functional.normalize(features.float(), dim=-1)[0].cpu()
        collection.add(ids=[str(index)], embeddings=[vector.tolist()], metadatas=[{"p": str(path)}])
    return len(paths) / (time.perf_counter() - started)


class GpuMemory:
    """Peak GPU memory in use (MiB) while a block runs, sampled with nvidia-smi."""

    def __enter__(self) -> GpuMemory:
        self.peak = 0
        self._proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
             "-lms", "200"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.peak = max(self.peak, int(line.strip()))

    def __exit__(self, *_exc: object) -> None:
        self._proc.terminate()
        self._thread.join(timeout=2)


def pixseek_index(
    folder: Path,
    model_dir: Path,
    work: Path,
    hnsw: dict,
    decoder: str = "auto",
    profile: Path | None = None,
    readers: str = "auto",
    metadata: str = "full",
    decode_processes: str = "auto",
) -> dict:
    """`pixseek index` in a subprocess with a fresh data dir; its JSON report plus GPU memory.

    With `profile`, py-spy samples the thread holding the GIL into that file (collapsed stacks).
    """
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.json"
    settings = {
        "data_dir": str(data),
        "model": {"name": str(model_dir), "device": "cuda"},
        "store": {"hnsw": hnsw, "metadata": metadata},
        "indexer": {
            "gpu_decoder": decoder,
            "readers": readers,
            "decode_processes": decode_processes,
        },
    }
    config.write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "pixseek.cli", "index", str(folder), "--json"]
    cmd += ["--config", str(config)]
    if profile:
        cmd = ["py-spy", "record", "--gil", "--threads", "--format", "raw", "--rate", "250",
               "--output", str(profile), "--", *cmd]  # fmt: skip
    with GpuMemory() as memory:
        started = time.perf_counter()
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, cwd=work, timeout=300
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    report, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{") :])
    report |= {"wall_s": wall, "gpu_peak_mib": memory.peak}
    store = Store(StoreSettings(hnsw=hnsw), data / "chroma", _collection(model_dir))
    report["records"] = store.count()
    return report


def _collection(model_dir: Path) -> str:
    from pixseek.embedder import collection_name

    return collection_name(str(model_dir))


def main() -> int:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big", type=int, default=2000)
    parser.add_argument("--small", type=int, default=20000)
    parser.add_argument("--naive", type=int, default=200, help="images per set for the naive loop")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pixseek-bench"))
    parser.add_argument("--hnsw", type=json.loads, default={}, help="store.hnsw settings (JSON)")
    parser.add_argument("--decoder", default="auto", help="indexer.gpu_decoder for pixseek index")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the index runs (GIL holder) into workdir"
    )
    parser.add_argument(
        "--quick", action="store_true", help="only generate and run `pixseek index` (no stages)"
    )
    parser.add_argument(
        "--readers",
        default="auto",
        help="indexer.readers; with --quick a comma-separated list runs `pixseek index` per value",
    )
    parser.add_argument(
        "--decode-processes",
        default="auto",
        help="indexer.decode_processes; with --quick a comma-separated list, run with each",
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --quick: rounds of runs")
    parser.add_argument(
        "--metadata",
        default="full",
        help="store.metadata; with --quick a comma-separated list, run with each readers value",
    )
    args = parser.parse_args()
    work = args.workdir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # worker processes must import the installed pixseek, not a source tree here
    model_dir = work / "model"
    ensure_model(model_dir)
    rows = []
    for name, count in (("12mp", args.big), ("640x480", args.small)):
        started = time.perf_counter()
        paths = generate(work / name, count, SIZES[name])
        print(f"{name}: {count} JPEGs ready in {time.perf_counter() - started:.0f} s", flush=True)
        profile = work / f"profile-{name}.txt" if args.profile else None
        if args.quick:
            for _round, readers, metadata, decoding in itertools.product(
                range(args.rounds), args.readers.split(","), args.metadata.split(","),
                args.decode_processes.split(","),
            ):  # fmt: skip
                # a data dir per run: chromadb keeps one client per path in this process
                report = pixseek_index(
                    work / name, model_dir, work / f"run-{name}-{readers}-{metadata}-{decoding}",
                    args.hnsw, args.decoder, profile, readers, metadata, decoding,
                )  # fmt: skip
                print(
                    f"{name}, readers {readers}, metadata {metadata}, decode processes "
                    f"{decoding}: cache "
                    f"{report['decoded'] / report['cached_s']:,.0f}/s, searchable "
                    f"{report['decoded'] / report['elapsed']:,.0f}/s, process "
                    f"{report['wall_s']:.1f} s, phases {report['phases']}, "
                    f"steps {report['steps']}, "
                    f"GPU peak {report['gpu_peak_mib']} MiB",
                    flush=True,
                )
            continue
        # first, while this process holds no GPU memory or decoders of its own
        report = pixseek_index(
            work / name, model_dir, work / f"run-{name}", args.hnsw, args.decoder, profile,
            args.readers, args.metadata, args.decode_processes,
        )  # fmt: skip
        limits = decode_only(paths)
        stages = stage_rates(paths, model_dir)
        for stage, rate in stages.items():
            print(f"  {name} stage {stage}: {rate:,.0f}/s", flush=True)
        naive_rate = naive(paths[: args.naive], model_dir)
        cached = report["decoded"] / report["cached_s"]
        searchable = report["decoded"] / report["elapsed"]
        store = Store(StoreSettings(), work / f"chroma-default-{name}", "default")
        default_chroma = ingest(store, _unit_vectors(count))
        tuned = Store(StoreSettings(hnsw=args.hnsw), work / f"run-{name}/data/chroma",
                      _collection(model_dir))  # fmt: skip
        stored = tuned.collection.get(include=["embeddings"])
        vectors = np.asarray(stored["embeddings"], dtype=np.float32)
        recall, _ = recall_at_10(_Relabelled(tuned, stored["ids"]), vectors, 300)
        hardware = limits.get("nvimgcodec hardware") or max(limits.values(), default=float("nan"))
        row = {
            "set": name, "images": count, "decode_only": limits, "stages": stages,
            "naive_per_s": naive_rate,
            "cached_per_s": cached, "searchable_per_s": searchable, "wall_s": report["wall_s"],
            "default_chroma_per_s": default_chroma, "recall_at_10": recall,
            "gpu_peak_mib": report["gpu_peak_mib"], "records": report["records"],
            "report": report,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
        print(
            f"{name}: decode-only {hardware:,.0f}/s | cache {cached:,.0f}/s "
            f"({cached / hardware:.0%} of decode-only, {cached / naive_rate:.1f}x naive "
            f"{naive_rate:.1f}/s) | searchable {searchable:,.0f}/s "
            f"({searchable / default_chroma:.2f}x default Chroma {default_chroma:,.0f}/s) | "
            f"recall@10 {recall:.3f} | GPU peak {report['gpu_peak_mib']} MiB",
            flush=True,
        )
        print(
            f"{name}: seconds by phase {report['phases']}, meanwhile {report['steps']}; "
            f"the process took {report['wall_s']:.1f} s with interpreter start and imports",
            flush=True,
        )
    (work / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0


def _unit_vectors(count: int) -> np.ndarray:
    data = np.random.default_rng(0).normal(size=(count, 512)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


class _Relabelled:
    """The pixseek collection seen with ids r0..rN in the order of `ids` (for recall)."""

    def __init__(self, store: Store, ids: list[str]) -> None:
        self.store = store
        self.position = {record: index for index, record in enumerate(ids)}

    def query(self, vector: np.ndarray, k: int):
        hits = self.store.query(vector, k)
        for hit in hits:
            hit.id = f"r{self.position[hit.id]}"
        return hits


if __name__ == "__main__":
    sys.exit(main())
