"""The CUDA paths in one short script, for a session that is lent a GPU for a few minutes.

    .venv/bin/python bench/gpu_check.py [--out gpu_check.json]    # exits 1 when a check fails
    .venv/bin/python bench/gpu_check.py --cpu                       # the same checks on CPU (tests this script)

On a lent GPU machine (nvidia-h200): its image's python3 has torch, transformers, onnxruntime,
tokenizers, pandas, pyarrow and yaml, but not the bundled MiniLM package, and the model's fp32 weights
(91 MB) exceed what a call carries (64 MiB). So, here first:
    echo /.gpucheck/ >> .git/info/exclude
    .venv/bin/python bench/gpu_check.py --export-half .gpucheck/model   # fp16 weights, ~46 MB
then one device call, carrying `.gpucheck`:
    PERSONA__ENCODER__MODEL=$PWD/.gpucheck/model PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out $OUT/gpu_check.json
The fp32 side of the parity check then runs the fp16-stored weights in fp32, so the check measures
what fp16 computation costs, not the rounding of the stored weights.

Checks, on every distinct real GA merchandise title (807; `--titles N` samples fewer):
1. fp16 encoding on CUDA: the model really runs in fp16, its vectors are float32 unit vectors with
   minimum cosine >= 0.999 against torch fp32 on the CPU, and its throughput vs fp32 on the same GPU.
2. onnxruntime: the providers the installed build offers; where CUDAExecutionProvider is offered, a
   session asked for it must get it, and its vectors must match torch on the CPU (min cosine >= 0.999).
3. Refinement (when `ml/refine.py` exists): a two-epoch two-tower training on the GA events on the GPU,
   whose parameters live on CUDA, whose losses are finite and whose second epoch loss is below the first.
Without CUDA (and without --cpu) it prints "no CUDA" and a JSON summary and exits 0: there is nothing
to check, and a CPU-only machine is the normal case. The summary is printed as JSON on the last lines.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MIN_COSINE = 0.999
BATCH = 64


def _rate(fn, texts: list[str], sync, repeats: int) -> float:
    """Texts/s over `repeats` passes after one warm-up pass (GPU passes are short, so several are timed)."""
    fn(texts[:BATCH])
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(texts)
    sync()
    return len(texts) * repeats / (time.perf_counter() - start)


class Checks:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, name: str, ok: bool, **detail) -> bool:
        self.rows.append({"check": name, "ok": bool(ok), **detail})
        print(f"[{'ok' if ok else 'FAIL'}] {name} {json.dumps(detail, default=str)}", flush=True)
        return ok

    def guard(self, name: str, fn) -> None:
        """Run one check group; an exception is a failed check carrying its message, not a crash."""
        try:
            fn()
        except Exception as exc:  # the summary must still be printed
            self.add(name, False, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc(limit=3)[-1500:])


def check_encoder(checks: Checks, device: str, texts: list[str], model: str, max_length: int, repeats: int,
                  shared: dict) -> None:
    import torch

    from ml.embeddings import TextEncoder

    cpu = TextEncoder(model, device="cpu", batch_size=BATCH, max_length=max_length)
    reference = cpu.encode(texts, progress=False)
    shared["reference"] = reference
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fp32 = TextEncoder(model, device=device, batch_size=BATCH, max_length=max_length, fp16=False)
    v32 = fp32.encode(texts, progress=False)
    checks.add(f"torch {device} fp32 matches torch cpu fp32", float(np.min(np.sum(v32 * reference, 1))) >= 0.9999,
               min_cosine=round(float(np.min(np.sum(v32 * reference, 1))), 7))
    rate32 = _rate(lambda t: fp32.encode(t, progress=False), texts, sync, repeats)
    if device != "cuda":
        shared["item_encoder"] = fp32
        checks.add("encoder throughput", True, device=device, fp32_texts_per_s=round(rate32, 1),
                   note="fp16 applies to CUDA only; not checked on CPU")
        return
    fp16 = TextEncoder(model, device="cuda", batch_size=BATCH, max_length=max_length, fp16=True)
    shared["item_encoder"] = fp16
    v16 = fp16.encode(texts, progress=False)
    cos = float(np.min(np.sum(v16 * reference, 1)))
    norms = np.linalg.norm(v16, axis=1)
    checks.add("fp16 weights on CUDA", fp16.fp16 and fp16.model.dtype == torch.float16,
               dtype=str(fp16.model.dtype))
    checks.add("fp16 vectors are float32 unit vectors", v16.dtype == np.float32 and bool(np.allclose(norms, 1, atol=1e-4)),
               dtype=str(v16.dtype), max_norm_error=float(np.max(np.abs(norms - 1))))
    checks.add(f"fp16 parity vs torch cpu fp32 (min cosine >= {MIN_COSINE})", cos >= MIN_COSINE,
               min_cosine=round(cos, 7), texts=len(texts))
    rate16 = _rate(lambda t: fp16.encode(t, progress=False), texts, sync, repeats)
    checks.add("encoder throughput", True, device=torch.cuda.get_device_name(0), fp32_texts_per_s=round(rate32, 1),
               fp16_texts_per_s=round(rate16, 1), fp16_over_fp32=round(rate16 / rate32, 2), passes=repeats)


def check_onnxruntime(checks: Checks, device: str, texts: list[str], model: str, max_length: int,
                      encoder_dir: Path, shared: dict) -> None:
    import onnxruntime as ort

    from ml.onnx_encoder import OnnxTextEncoder, ensure_encoder

    available = ort.get_available_providers()
    wanted = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if wanted not in available:
        checks.add("onnxruntime providers", True, available=available, version=ort.__version__,
                   note=f"{wanted} not offered by this onnxruntime build (install onnxruntime-gpu to use it)")
        return
    folder = ensure_encoder(encoder_dir, model, max_length)
    enc = OnnxTextEncoder(folder, providers=[wanted], threads=1)
    checks.add(f"onnxruntime session gets {wanted}", enc.providers[0] == wanted, available=available,
               obtained=enc.providers, version=ort.__version__)
    vecs = enc.encode(texts, batch_size=BATCH)
    cos = float(np.min(np.sum(vecs * shared["reference"], 1)))
    checks.add(f"onnx {device} parity vs torch cpu fp32 (min cosine >= {MIN_COSINE})", cos >= MIN_COSINE,
               min_cosine=round(cos, 7))


def check_refine(checks: Checks, device: str, epochs: int, shared: dict) -> None:
    if importlib.util.find_spec("ml.refine") is None:
        checks.add("refinement training", True, note="ml/refine.py does not exist: skipped")
        return
    import pandas as pd
    import torch

    from data_contracts.adapters import ga_merch
    from ml import refine
    from ml.embeddings import item_text

    loaded = ga_merch.load(ROOT / "data/ga_merch_store/product_events_2016-08_2016-10.parquet")
    events, items = loaded.events.to_pandas(), loaded.items.to_pandas()
    texts = [item_text(t, c, b) for t, c, b in zip(items["title"], items["category_path"], items["brand"])]
    item_vectors = shared["item_encoder"].encode(texts, progress=False)
    as_of = pd.to_datetime(events["ts"]).max() - pd.Timedelta(days=14)
    cfg = refine.RefineConfig(item_tower="text", epochs=epochs, device=device)
    start = time.perf_counter()
    refined = refine.train(events, items["item_id"].astype(str).tolist(), item_vectors, as_of, ["cart", "purchase"],
                           cfg, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    on_device = {p.device.type for p in refined.model.parameters()}
    losses = [float(x) for x in refined.losses]
    checks.add(f"refinement parameters on {device}", on_device == {device}, devices=sorted(on_device))
    checks.add("refinement losses finite and falling", len(losses) == epochs and all(map(math.isfinite, losses))
               and losses[-1] < losses[0], losses=[round(x, 4) for x in losses], examples=refined.n_examples,
               seconds=round(seconds, 1))


def export_half(folder: Path) -> int:
    """The configured encoder as a Hugging Face folder with fp16 weights: small enough to carry."""
    import shutil

    import torch
    from transformers import AutoModel

    from ml.embeddings import resolve_model_path
    from ml.onnx_encoder import TOKENIZER_FILES
    from persona.config import load_settings

    src = Path(resolve_model_path(load_settings()["encoder"]["model"]))
    model = AutoModel.from_pretrained(str(src), local_files_only=True).to(torch.float16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, folder / name)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    print(json.dumps({"exported": str(folder), "from": str(src), "bytes": size}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run the checks on CPU (to test this script without a GPU)")
    ap.add_argument("--titles", type=int, default=0, help="use a seeded sample of this many titles (0: all)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the titles per precision")
    ap.add_argument("--epochs", type=int, default=2, help="refinement epochs (>= 2, so the loss can fall)")
    ap.add_argument("--encoder-dir", default=None, help="ONNX export cache (default: <models_dir>/encoders)")
    ap.add_argument("--out", default=None, help="also write the JSON summary to this file")
    ap.add_argument("--export-half", metavar="DIR", default=None,
                    help="write the configured encoder with fp16 weights to DIR (to carry to a GPU machine) and stop")
    args = ap.parse_args(argv)
    if args.export_half:
        return export_half(Path(args.export_half))
    if args.epochs < 2:
        ap.error("--epochs must be >= 2: the check compares the last epoch's loss with the first's")

    import torch

    summary = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
               "platform": platform.platform()}
    if not torch.cuda.is_available() and not args.cpu:
        print("no CUDA: nothing to check (torch sees no GPU); run with --cpu to exercise the checks on CPU")
        summary.update(ok=True, checked=False, reason="no CUDA")
        return _finish(summary, args.out, 0)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    if device == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(0)

    from bench.embeddings import real_titles, sample
    from persona.config import load_settings

    settings = load_settings()
    enc = settings["encoder"]
    model, max_length = enc["model"], int(enc["max_length"])
    encoder_dir = Path(args.encoder_dir) if args.encoder_dir else settings.models_dir / "encoders"
    texts = real_titles()
    if args.titles > 0:
        texts = sample(texts, args.titles)
    checks, shared = Checks(), {}
    checks.guard("encoder", lambda: check_encoder(checks, device, texts, model, max_length, args.repeats, shared))
    if "reference" in shared:
        checks.guard("onnxruntime", lambda: check_onnxruntime(checks, device, texts, model, max_length,
                                                              encoder_dir, shared))
    if "item_encoder" in shared:
        checks.guard("refinement", lambda: check_refine(checks, device, args.epochs, shared))
    ok = bool(checks.rows) and all(r["ok"] for r in checks.rows)
    summary.update(ok=ok, checked=True, device=device, titles=len(texts), checks=checks.rows)
    return _finish(summary, args.out, 0 if ok else 1)


def _finish(summary: dict, out: str | None, code: int) -> int:
    text = json.dumps(summary, indent=2, default=str)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
