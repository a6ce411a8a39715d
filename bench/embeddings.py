"""Encoder benchmark: texts/s of the torch encoder and its ONNX export on the same real titles, same run.

    make bench-embeddings            # or: .venv/bin/python bench/embeddings.py [--texts 400] [--rounds 2]

- Texts: a seeded sample of the distinct real GA merchandise titles (raw product names and the item
  texts the pipeline embeds), so lengths are the ones production sees.
- Each configuration is warmed up on one batch, then timed encoding all the texts (batch 64, length
  sorted, as in the pipeline). Configurations are interleaved round by round and the best round is
  kept, so a burst of load from other processes hurts one round, not one configuration.
- CPU: torch fp32 and onnxruntime, each with 1 thread and with every core. The ratio is ONNX / torch at
  the same thread count; the min cosine compares the two encoders' vectors text by text.
- CUDA (when present): torch fp32 and fp16 on the GPU, and onnxruntime's CUDA provider when installed;
  min cosine of each against torch fp32 on the CPU.
Writes bench/results/embeddings.json and bench/results/embeddings.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
GA_FILE = ROOT / "data/ga_merch_store/product_events_2016-08_2016-10.parquet"
BATCH = 64


def real_titles(path: Path = GA_FILE) -> list[str]:
    """Distinct raw GA product names plus the distinct item texts the pipeline embeds, sorted."""
    import pandas as pd

    from data_contracts.adapters import ga_merch
    from ml.embeddings import item_text

    names = pd.read_parquet(path, columns=["product_name"])["product_name"].dropna().str.strip()
    items = ga_merch.load(path).items.to_pandas()
    texts = [item_text(t, c, b) for t, c, b in zip(items["title"], items["category_path"], items["brand"])]
    return sorted((set(names) | set(texts)) - {""})


def sample(texts: list[str], n: int, seed: int = 0) -> list[str]:
    if n >= len(texts):
        return list(texts)
    rng = np.random.default_rng(seed)
    return [texts[i] for i in sorted(rng.choice(len(texts), size=n, replace=False))]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


class Runner:
    """One named configuration: `encode(texts)` plus what it needs set before each call (thread counts)."""

    def __init__(self, name: str, encode, threads: int | None = None, device: str = "cpu", sync=None):
        self.name, self.encode_fn, self.threads, self.device, self.sync = name, encode, threads, device, sync
        self.best: float = 0.0
        self.rounds: list[float] = []
        self.vectors: np.ndarray | None = None

    def run(self, texts: list[str], timed: bool) -> None:
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        start = time.perf_counter()
        vecs = self.encode_fn(texts)
        if self.sync:
            self.sync()
        elapsed = time.perf_counter() - start
        if timed:
            rate = len(texts) / elapsed
            self.rounds.append(round(rate, 1))
            self.best = max(self.best, rate)
            self.vectors = vecs


def build_runners(folder: Path, model: str, max_length: int, cores: int) -> tuple[list[Runner], dict]:
    import onnxruntime as ort
    import torch

    from ml.embeddings import TextEncoder
    from ml.onnx_encoder import OnnxTextEncoder

    cpu = TextEncoder(model, device="cpu", batch_size=BATCH, max_length=max_length)
    thread_counts = sorted({1, cores})
    runners = []
    for n in thread_counts:
        runners.append(Runner(f"torch cpu fp32, threads={n}", lambda t: cpu.encode(t, progress=False), threads=n))
        onnx = OnnxTextEncoder(folder, providers=["CPUExecutionProvider"], threads=n)
        runners.append(Runner(f"onnx cpu, threads={n}", lambda t, o=onnx: o.encode(t, batch_size=BATCH)))
    info = {"onnx_providers_available": ort.get_available_providers(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        for fp16 in (False, True):
            gpu = TextEncoder(model, device="cuda", batch_size=BATCH, max_length=max_length, fp16=fp16)
            runners.append(Runner(f"torch cuda {'fp16' if fp16 else 'fp32'}",
                                  lambda t, g=gpu: g.encode(t, progress=False), device="cuda",
                                  sync=torch.cuda.synchronize))
        if "CUDAExecutionProvider" in ort.get_available_providers():
            onnx_gpu = OnnxTextEncoder(folder, providers=["CUDAExecutionProvider"], threads=1)
            info["onnx_cuda_providers"] = onnx_gpu.providers
            runners.append(Runner("onnx cuda", lambda t: onnx_gpu.encode(t, batch_size=BATCH), device="cuda"))
    return runners, info


def ratio_rows(runners: list[Runner]) -> list[dict]:
    """ONNX / torch on CPU at each thread count, from the same run."""
    by_name = {r.name: r for r in runners}
    rows = []
    for r in runners:
        if r.name.startswith("onnx cpu"):
            base = by_name[r.name.replace("onnx cpu", "torch cpu fp32")]
            rows.append({"threads": int(r.name.split("threads=")[1]), "onnx_texts_per_s": round(r.best, 1),
                         "torch_texts_per_s": round(base.best, 1), "onnx_over_torch": round(r.best / base.best, 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=400, help="how many distinct real titles to time (default 400)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timed rounds; the best is kept")
    ap.add_argument("--encoder-dir", default=None,
                    help="where the ONNX export is cached (default: <models_dir>/encoders from persona.yaml)")
    ap.add_argument("--note", default="", help="a line about the machine's state, written into the .md")
    ap.add_argument("--out", default=str(RESULTS), help="folder for embeddings.json / embeddings.md")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    from ml.onnx_encoder import ensure_encoder
    from persona.config import load_settings

    settings = load_settings()
    enc = settings["encoder"]
    cache = Path(args.encoder_dir) if args.encoder_dir else settings.models_dir / "encoders"
    folder = ensure_encoder(cache, enc["model"], int(enc["max_length"]))
    all_titles = real_titles()
    texts = sample(all_titles, args.texts)
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    runners, info = build_runners(folder, enc["model"], int(enc["max_length"]), cores)

    for r in runners:
        r.run(texts[:BATCH], timed=False)  # warm-up: lazy init, allocator, kernel choice
    for _ in range(args.rounds):
        for r in runners:
            r.run(texts, timed=True)
            print(f"{r.name:32s} {r.rounds[-1]:8.1f} texts/s", flush=True)
    load_after = os.getloadavg()

    reference = next(r for r in runners if r.name.startswith("torch cpu fp32")).vectors
    results = [{"config": r.name, "device": r.device, "best_texts_per_s": round(r.best, 1), "rounds": r.rounds,
                "min_cosine_vs_torch_cpu_fp32": round(min_cosine(r.vectors, reference), 7)} for r in runners]
    ratios = ratio_rows(runners)
    onnx_min = min(x["min_cosine_vs_torch_cpu_fp32"] for x in results if x["config"].startswith("onnx cpu"))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": cores, "load_avg_1m_before": round(load_before[0], 2),
                    "load_avg_1m_after": round(load_after[0], 2)},
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "commit": commit, "model": enc["model"], "max_length": int(enc["max_length"]), "batch_size": BATCH,
        "texts": len(texts), "distinct_real_titles": len(all_titles), "rounds": args.rounds,
        "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        "results": results, "onnx_over_torch_cpu": ratios, "onnx_min_cosine": onnx_min, **info,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embeddings.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "embeddings.md").write_text(markdown(report, args.note))
    print(json.dumps({"onnx_over_torch_cpu": ratios, "onnx_min_cosine": onnx_min}, indent=2))
    return 0


def markdown(r: dict, note: str) -> str:
    m = r["machine"]
    lines = [
        "# Encoder benchmark: torch vs ONNX (texts/s)",
        "",
        f"{r['date']} · commit `{r['commit']}` · {m['platform']} · {m['cpu_count']} CPU(s) · "
        f"torch {r['versions']['torch']} · onnxruntime {r['versions']['onnxruntime']} · "
        f"CUDA: {r.get('gpu', 'none')}",
        "",
        f"Model `{r['model']}` (max_length {r['max_length']}, batch {r['batch_size']}, length-sorted batches). "
        f"{r['texts']} distinct real GA merchandise titles (sampled from {r['distinct_real_titles']}; "
        f"{r['mean_chars']} characters on average). Warm-up on one batch, then {r['rounds']} interleaved timed "
        f"rounds; the best round per configuration is reported. Command: `make bench-embeddings`.",
        "",
        f"1-minute load average: {m['load_avg_1m_before']} before, {m['load_avg_1m_after']} after.",
    ]
    if note:
        lines += ["", f"**Machine state:** {note}"]
    lines += ["", "| configuration | texts/s (best) | all rounds | min cosine vs torch CPU fp32 |", "|---|---:|---|---:|"]
    for x in r["results"]:
        lines.append(f"| {x['config']} | {x['best_texts_per_s']} | {', '.join(map(str, x['rounds']))} | "
                     f"{x['min_cosine_vs_torch_cpu_fp32']:.7f} |")
    lines += ["", "ONNX / torch on CPU (same texts, same run):", "", "| threads | ONNX texts/s | torch texts/s | ONNX / torch |",
              "|---|---:|---:|---:|"]
    for x in r["onnx_over_torch_cpu"]:
        lines.append(f"| {x['threads']} | {x['onnx_texts_per_s']} | {x['torch_texts_per_s']} | {x['onnx_over_torch']} |")
    lines += ["", f"Minimum cosine between the ONNX and torch encoders over these texts: {r['onnx_min_cosine']:.7f} "
              "(the parity test `tests/test_onnx_encoder.py` asserts ≥ 0.999 over all "
              f"{r['distinct_real_titles']} titles)."]
    if not r.get("cuda"):
        lines += ["", "No CUDA device on this machine: the fp16 GPU path is not measured here "
                  "(`bench/gpu_check.py` checks it when a GPU is available)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
