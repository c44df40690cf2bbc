"""CPU indexing benchmark: `pixseek index` against a naive one-image-at-a-time CLIP + Chroma loop.

Both sides index the same generated 1600x1200 JPEGs with the same full-size ViT-B/32 CLIP
(random weights, built locally, no hub). Each side runs in its own subprocess so that wall time
and peak RSS (summed over the process tree, sampled every 0.1 s with psutil) are measured the
same way. Run from the repository root:

    HF_HUB_OFFLINE=1 python bench/index_cpu.py                 # 300 images, model.dtype auto
    HF_HUB_OFFLINE=1 python bench/index_cpu.py --dtype fp32    # pixseek in fp32 as well

The naive loop always runs the model as loaded (fp32). Generated images and the model are kept
in the work dir and reused; the catalog and Chroma directories are fresh on every run. Each
side starts only once the machine has been idle for a few seconds, and a run during which
other processes kept the CPUs busy is reported and run again (--retries).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

WIDTH, HEIGHT = 1600, 1200
JPEG_QUALITY = 90
SAMPLE_INTERVAL_S = 0.1
QUIET_PERCENT, QUIET_SECONDS = 10.0, 3
CONTENTION_CORES = 0.2  # other processes' load above which a run counts as contended
MODEL_MARKER = "bench-model-complete"
DTYPES = ("auto", "fp32", "bf16", "fp16")
WORDS = ("a", "photo", "of", "the", "dog", "cat", "beach", "red", "blue", "car", "tree", "sky")
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


# --------------------------------------------------------------------------- inputs


def image_path(images_dir: Path, index: int) -> Path:
    """Where generated image number `index` lives."""
    return images_dir / f"img_{index:05d}.jpg"


def make_image(seed: int) -> Image.Image:
    """A photo-like RGB image: smooth gradients, soft random shapes, sensor-like noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    xs /= WIDTH
    ys /= HEIGHT
    base = np.empty((HEIGHT, WIDTH, 3), np.float32)
    for channel in range(3):
        start, gx, gy = rng.uniform(30, 200), rng.uniform(-80, 80), rng.uniform(-80, 80)
        freq, phase, amp = rng.uniform(0.5, 3.0), rng.uniform(0, 6.3), rng.uniform(5, 30)
        wave = amp * np.sin(freq * 6.3 * (xs + ys) + phase)
        base[..., channel] = start + gx * xs + gy * ys + wave
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(int(rng.integers(6, 18))):
        x0, y0 = rng.uniform(-200, WIDTH), rng.uniform(-200, HEIGHT)
        w, h = rng.uniform(60, 700), rng.uniform(60, 600)
        fill = (*(int(c) for c in rng.integers(0, 256, 3)), int(rng.integers(90, 256)))
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=fill)
        elif kind == 1:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=fill)
        else:
            points = [(x0 + rng.uniform(0, w), y0 + rng.uniform(0, h)) for _ in range(3)]
            draw.polygon(points, fill=fill)
    overlay = overlay.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 4.0))))
    image = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(3, 8), (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def ensure_images(images_dir: Path, count: int) -> tuple[int, int]:
    """Make images 0..count-1 that are missing, drop extras; return (generated, reused)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    wanted = {image_path(images_dir, i) for i in range(count)}
    for stale in images_dir.glob("img_*.jpg"):
        if stale not in wanted:
            stale.unlink()
    generated = 0
    for index in range(count):
        path = image_path(images_dir, index)
        if path.is_file() and path.stat().st_size > 0:
            continue
        partial = path.with_suffix(".tmp")
        make_image(index).save(partial, "JPEG", quality=JPEG_QUALITY)
        partial.replace(path)
        generated += 1
    return generated, count - generated


def build_tokenizer() -> CLIPTokenizer:
    """A small local CLIP BPE tokenizer: letters plus merges that make each of WORDS one token."""
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {BOS: 0, EOS: 1}
    for token in letters + [letter + "</w>" for letter in letters]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in merges:
                merges.append(pair)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def ensure_model(model_dir: Path) -> bool:
    """Save a random full-size ViT-B/32 CLIP and its processor to `model_dir`; True if built."""
    if (model_dir / MODEL_MARKER).is_file():
        return False
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_tokenizer()
    text = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(0)
    shutil.rmtree(model_dir, ignore_errors=True)
    CLIPModel(CLIPConfig(text_config=text)).save_pretrained(model_dir)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    processor.save_pretrained(model_dir)
    (model_dir / MODEL_MARKER).write_text("ok\n")
    return True


# --------------------------------------------------------------------------- naive loop


def naive_main(images_dir: Path, model_dir: Path, chroma_dir: Path) -> None:
    """The naive loop (run in its own process): print one JSON line with its timings."""
    started = time.perf_counter()
    import chromadb
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = CLIPProcessor.from_pretrained(model_dir)
    shutil.rmtree(chroma_dir, ignore_errors=True)
    client = chromadb.PersistentClient(
        str(chroma_dir), settings=chromadb.Settings(anonymized_telemetry=False)
    )
    collection = client.create_collection(
        "naive", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    paths = sorted(images_dir.glob("img_*.jpg"))
    ready = time.perf_counter()
    for index, path in enumerate(paths):
        img = Image.open(path).convert("RGB")
        inputs = processor(images=img, return_tensors="pt")
        with torch.no_grad():
            output = model.get_image_features(**inputs)
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        features = torch.nn.functional.normalize(features.float(), dim=-1)
        collection.add(
            ids=[str(index)],
            embeddings=[features[0].tolist()],
            metadatas=[{"path": str(path)}],
        )
    done = time.perf_counter()
    result = {
        "images": len(paths),
        "loop_s": done - ready,
        "setup_s": ready - started,
        "dtype": str(model.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "records": collection.count(),
    }
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    """One subprocess run: exit status, wall time, peak RSS (tree and main process), output."""

    returncode: int
    wall_s: float
    peak_tree_mb: float
    peak_main_mb: float
    cpu_s: float
    other_cores: float
    steal_cores: float
    stdout: str
    stderr: str


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], logs: Path) -> Measured:
    """Run `cmd`, timing it and sampling the RSS of it and its children every 0.1 s.

    Also measures the CPU time the run used and, from system-wide CPU counters, how many cores
    other processes on the machine kept busy meanwhile. The run's CPU time is the larger of what
    its reaped descendants report (exact, but descendants orphaned at exit, like a
    multiprocessing forkserver and its workers, are missing) and the sum of the last CPU time
    sampled for every process seen in the tree (includes those, misses up to 0.1 s of each).
    """
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"
    peaks = {"tree": 0, "main": 0}
    cpu_seen: dict[tuple[int, float], float] = {}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        cpu_before, self_before, tree_before = _cpu_counters()
        started = time.perf_counter()
        proc = psutil.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        finished = threading.Event()

        def sample() -> None:
            while not finished.is_set():
                try:
                    main = proc.memory_info().rss
                    children = proc.children(recursive=True)
                except psutil.Error:
                    break
                total = main
                for member in [proc, *children]:
                    with contextlib.suppress(psutil.Error):
                        if member is not proc:
                            total += member.memory_info().rss
                        times = member.cpu_times()
                        cpu_seen[member.pid, member.create_time()] = times.user + times.system
                peaks["main"] = max(peaks["main"], main)
                peaks["tree"] = max(peaks["tree"], total)
                finished.wait(SAMPLE_INTERVAL_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = proc.wait()
        wall = time.perf_counter() - started
        finished.set()
        sampler.join()
        cpu_after, self_after, tree_after = _cpu_counters()
    busy = _busy(cpu_after) - _busy(cpu_before)
    tree = max(tree_after - tree_before, sum(cpu_seen.values()))
    own = self_after - self_before
    return Measured(
        returncode=returncode,
        wall_s=wall,
        peak_tree_mb=peaks["tree"] / 2**20,
        peak_main_mb=peaks["main"] / 2**20,
        cpu_s=tree,
        other_cores=max(0.0, busy - tree - own) / wall,
        steal_cores=(cpu_after.steal - cpu_before.steal) / wall,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def _cpu_counters() -> tuple[Any, float, float]:
    """System CPU times, this process's CPU seconds, and its reaped descendants' CPU seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    tree = resource.getrusage(resource.RUSAGE_CHILDREN)
    return psutil.cpu_times(), own.ru_utime + own.ru_stime, tree.ru_utime + tree.ru_stime


def _busy(times: Any) -> float:
    """Busy CPU seconds on the whole machine (guest time is already inside user time)."""
    return times.user + times.nice + times.system + times.irq + times.softirq


def wait_for_quiet(max_wait_s: float) -> None:
    """Wait until the machine is idle for 3 s in a row (other sessions may share the CPUs)."""
    deadline, quiet, said = time.monotonic() + max_wait_s, 0, False
    while quiet < QUIET_SECONDS:
        busy = psutil.cpu_percent(interval=1.0)
        quiet = quiet + 1 if busy < QUIET_PERCENT else 0
        if time.monotonic() > deadline:
            print(f"warning: still {busy:.0f}% CPU busy after {max_wait_s:.0f} s; going on")
            return
        if busy >= QUIET_PERCENT and not said:
            print(f"waiting for the machine to go idle ({busy:.0f}% CPU busy) ...", flush=True)
            said = True


def base_env() -> dict[str, str]:
    """This environment, offline, without any PIXSEEK_* settings that would skew the run."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIXSEEK_")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def pixseek_dtype(cwd: Path, env: dict[str, str], config: Path) -> str:
    """The dtype pixseek resolves for these settings, using pixseek's own config and rules."""
    code = (
        "import sys\n"
        "from pixseek.config import load_config\n"
        "from pixseek.embedder import resolve_devices, resolve_dtype\n"
        "model = load_config(__import__('pathlib').Path(sys.argv[1])).settings.model\n"
        "device = resolve_devices(model.device)[0]\n"
        "print(model.dtype, device, str(resolve_dtype(model.dtype, device)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"unknown ({done.stderr.strip().splitlines()[-1:]})"
    setting, device, dtype = done.stdout.split()
    return f"{dtype.removeprefix('torch.')} (model.dtype={setting}, device={device})"


def measure(
    label: str,
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    args: argparse.Namespace,
    prepare: Callable[[], object] | None = None,
) -> Measured:
    """Run `cmd` on a quiet machine; rerun (up to --retries times) if other work interfered."""
    for attempt in range(1, args.retries + 2):
        wait_for_quiet(args.max_wait)
        if prepare is not None:
            prepare()
        measured = run_measured(cmd, cwd, env, cwd / "logs" / label)
        contended = measured.other_cores > CONTENTION_CORES
        if measured.returncode != 0 or not contended or attempt > args.retries:
            return measured
        print(
            f"  {label} attempt {attempt}: {measured.wall_s:.1f} s, but other processes kept "
            f"{measured.other_cores:.2f} cores busy; discarded, running again",
            flush=True,
        )
    raise AssertionError("unreachable")


def show_stderr(label: str, text: str) -> None:
    """Print a subprocess's stderr so warnings are visible, not swallowed."""
    text = text.strip()
    if text:
        print(f"--- {label} stderr ---")
        print(text)
        print(f"--- end {label} stderr ---")


def fresh_dir(path: Path) -> Path:
    """An empty directory at `path`."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300, help="number of images (300)")
    parser.add_argument(
        "--workdir", type=Path, default=Path("bench/out/index_cpu"), help="scratch directory"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="pixseek model.dtype (auto)"
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=600.0,
        help="seconds to wait, before each run, for other work on the machine to stop (600)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="reruns of a side when other work used the CPUs during its run (3)",
    )
    parser.add_argument("--naive-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    """Prepare inputs, run both sides, print the table."""
    args = parse_args()
    workdir = args.workdir.expanduser().absolute()
    images_dir, model_dir = workdir / "images", workdir / "model"
    if args.naive_only:
        naive_main(images_dir, model_dir, workdir / "naive-chroma")
        return 0

    os.environ["HF_HUB_OFFLINE"] = "1"
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    generated, reused = ensure_images(images_dir, args.images)
    print(
        f"images: {args.images} x {WIDTH}x{HEIGHT} JPEG q{JPEG_QUALITY} in {images_dir} "
        f"({generated} generated, {reused} reused, {time.perf_counter() - t0:.1f} s)"
    )
    t0 = time.perf_counter()
    built = ensure_model(model_dir)
    state = "built" if built else "reused"
    print(f"model: random ViT-B/32 CLIP in {model_dir} ({state}, {time.perf_counter() - t0:.1f} s)")
    print(f"cpu cores: {os.cpu_count()}")

    env = base_env()
    naive_cmd = [
        sys.executable,
        str(Path(__file__).absolute()),
        "--naive-only",
        "--workdir",
        str(workdir),
        "--images",
        str(args.images),
    ]
    print("running naive loop ...", flush=True)
    naive = measure("naive", naive_cmd, workdir, env, args)
    show_stderr("naive", naive.stderr)
    if naive.returncode != 0:
        print(f"naive loop failed with exit status {naive.returncode}")
        return 1
    naive_result = json.loads(naive.stdout.strip().splitlines()[-1])
    if naive_result["records"] != args.images:
        print(f"warning: the naive collection holds {naive_result['records']} records")

    data_dir = workdir / "pixseek-data"
    config = workdir / "pixseek-config.yaml"
    config.write_text(f"data_dir: {json.dumps(str(data_dir))}\n")
    pixseek_env = env | {"PIXSEEK_MODEL__DTYPE": args.dtype}
    executable = Path(sys.executable).with_name("pixseek")
    pixseek_cmd = [
        str(executable if executable.exists() else shutil.which("pixseek") or "pixseek"),
        "index",
        str(images_dir),
        "--model",
        str(model_dir),
        "--data-dir",
        str(data_dir),
        "--config",
        str(config),
        "--json",
    ]
    print(f"running: PIXSEEK_MODEL__DTYPE={args.dtype} {' '.join(pixseek_cmd)}", flush=True)
    pix = measure("pixseek", pixseek_cmd, workdir, pixseek_env, args, lambda: fresh_dir(data_dir))
    show_stderr("pixseek", pix.stderr)
    if pix.returncode != 0:
        print(f"pixseek failed with exit status {pix.returncode}; stdout:\n{pix.stdout}")
        return 1
    report = json.loads(pix.stdout)
    if report.get("embedded") != args.images or report.get("failed"):
        print(f"warning: pixseek report is not {args.images} embedded / 0 failed: {report}")
    if report.get("notes"):
        print(f"pixseek notes: {report['notes']}")

    n = naive_result["images"]
    naive_rate = n / naive_result["loop_s"]
    pix_wall_rate = args.images / pix.wall_s
    pix_internal_rate = float(report["images_per_s"])
    rows = [
        ("naive loop (loop only)", n, naive_result["loop_s"], naive_rate, naive),
        ("naive (whole process)", n, naive.wall_s, n / naive.wall_s, naive),
        ("pixseek (whole command)", args.images, pix.wall_s, pix_wall_rate, pix),
        ("pixseek (its elapsed)", report["decoded"], report["elapsed"], pix_internal_rate, pix),
    ]
    print()
    header = f"{'method':<26}{'images':>7}{'seconds':>10}{'images/s':>10}"
    print(header + f"{'peak RSS MB':>13}{'main proc MB':>14}")
    for name, count, seconds, rate, measured in rows:
        print(
            f"{name:<26}{count:>7}{seconds:>10.2f}{rate:>10.2f}"
            f"{measured.peak_tree_mb:>13.0f}{measured.peak_main_mb:>14.0f}"
        )
    print()
    print("peak RSS MB = RSS summed over the process and all its children (pages they share are")
    print("counted in each), sampled every 0.1 s; main proc MB = the top process alone.")
    for label, measured in (("naive", naive), ("pixseek", pix)):
        print(
            f"{label}: {measured.cpu_s:.1f} CPU s in {measured.wall_s:.1f} s "
            f"({measured.cpu_s / measured.wall_s:.2f} of {os.cpu_count()} cores); "
            f"other processes kept {measured.other_cores:.2f} cores busy meanwhile, "
            f"steal {measured.steal_cores:.2f}"
        )
        if measured.other_cores > CONTENTION_CORES:
            print(f"warning: the {label} run shared the CPUs with other work; its figures are low")
    print(
        f"naive: dtype {naive_result['dtype']}, torch threads {naive_result['torch_threads']}, "
        f"setup (imports, model, Chroma) {naive_result['setup_s']:.2f} s before the loop"
    )
    outside = pix.wall_s - float(report["elapsed"])
    print(f"pixseek outside its own elapsed (start, imports, model load, exit): {outside:.2f} s")
    ratio_wall, ratio_own = pix_wall_rate / naive_rate, pix_internal_rate / naive_rate
    print(f"ratio pixseek/naive images/s, pixseek whole command: {ratio_wall:.2f}x")
    print(f"ratio pixseek/naive images/s, pixseek own elapsed:   {ratio_own:.2f}x")

    import torch  # late: the parent's imports must not overlap the measured runs

    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"torch.ops.mkldnn._is_mkldnn_bf16_supported(): {native_bf16}")
    print(f"pixseek model dtype: {pixseek_dtype(workdir, pixseek_env, config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
