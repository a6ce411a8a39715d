"""The sentence encoder as one ONNX file, so the request path encodes queries without torch.

`export_text_encoder` (needs torch, run offline once per encoder) writes `encoder.onnx` — token
embeddings, mean pooling over the attention mask and L2 normalisation all inside the graph, with
dynamic batch and sequence axes — plus the tokenizer files beside it. `ensure_encoder` caches that
export per encoder name under `models/encoders/<name>/`, so a pipeline run pays the ~30 s export
only when the encoder changes. `OnnxTextEncoder` loads such a folder with onnxruntime and the
`tokenizers` library only (no torch, no transformers) and reproduces `ml.embeddings.TextEncoder`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger("persona.onnx_encoder")

ONNX_FILE = "encoder.onnx"
META_FILE = "encoder.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "encoder"


def export_text_encoder(model: str, folder: str | Path, max_length: int = 64, opset: int = 17) -> Path:
    """Export `model` (an `encoder.model` spec) to `folder`/encoder.onnx; written via a temp folder + rename."""
    import torch
    from transformers import AutoModel

    from ml.embeddings import model_display_name, resolve_model_path

    src = Path(resolve_model_path(model))
    if not (src / "tokenizer.json").exists():
        raise FileNotFoundError(f"{src} has no tokenizer.json (a fast tokenizer is needed to encode without transformers)")
    folder = Path(folder)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # float32 whatever the stored dtype (a model saved in fp16 loads as fp16): the graph is fp32.
        base = AutoModel.from_pretrained(str(src), local_files_only=True).float().eval()

        class Pooled(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                hidden = self.m(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        dummy = torch.ones((2, 8), dtype=torch.long)
        axes = {n: {0: "batch", 1: "sequence"} for n in INPUTS}
        axes["embedding"] = {0: "batch"}
        with torch.inference_mode():
            torch.onnx.export(Pooled(base), (dummy, dummy, torch.zeros_like(dummy)), str(tmp / ONNX_FILE),
                              input_names=list(INPUTS), output_names=["embedding"], dynamic_axes=axes,
                              opset_version=opset, dynamo=False)
        for f in TOKENIZER_FILES:
            if (src / f).exists():
                shutil.copy2(src / f, tmp / f)
        meta = {"model": model_display_name(model), "spec": model, "dim": int(base.config.hidden_size),
                "max_length": int(max_length), "opset": opset}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def ensure_encoder(cache_dir: str | Path, model: str, max_length: int = 64) -> Path:
    """The cached export for `model` (exported now only when missing or made with another max_length)."""
    from ml.embeddings import model_display_name

    folder = Path(cache_dir) / _safe_name(model_display_name(model))
    meta = folder / META_FILE
    if (folder / ONNX_FILE).exists() and meta.exists() and json.loads(meta.read_text()).get("max_length") == max_length:
        return folder
    log.info("exporting text encoder %s to %s", model, folder)
    return export_text_encoder(model, folder, max_length)


def link_or_copy(src_folder: str | Path, dst_folder: str | Path) -> Path:
    """Put the encoder files into a model version: hard links (no 90 MB copy) where the filesystem allows."""
    src_folder, dst_folder = Path(src_folder), Path(dst_folder)
    dst_folder.mkdir(parents=True, exist_ok=True)
    for f in src_folder.iterdir():
        if f.is_file():
            try:
                os.link(f, dst_folder / f.name)
            except OSError:
                shutil.copy2(f, dst_folder / f.name)
    return dst_folder


class OnnxTextEncoder:
    """Texts -> (n, dim) float32 unit vectors with onnxruntime + `tokenizers` (no torch)."""

    def __init__(self, folder: str | Path, providers: list[str] | None = None, threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if not (self.folder / ONNX_FILE).exists() or not meta_path.exists():
            raise FileNotFoundError(f"{self.folder}: no exported text encoder ({ONNX_FILE}, {META_FILE})")
        self.meta = json.loads(meta_path.read_text())
        self.model_name = self.meta["model"]
        self.dim = int(self.meta["dim"])
        self.max_length = int(self.meta["max_length"])
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        available = ort.get_available_providers()
        self.session = ort.InferenceSession(str(self.folder / ONNX_FILE), sess_options=opts,
                                            providers=[p for p in wanted if p in available] or ["CPUExecutionProvider"])
        self.providers = self.session.get_providers()
        self._inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Row i is texts[i]'s unit vector; batches are sorted by length so little is padded."""
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            enc = self.tokenizer.encode_batch([texts[i] for i in idx])
            width = max(len(e.ids) for e in enc)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for r, e in enumerate(enc):
                n = len(e.ids)
                ids[r, :n] = e.ids
                mask[r, :n] = e.attention_mask
                types[r, :n] = e.type_ids
            feed = {k: v for k, v in (("input_ids", ids), ("attention_mask", mask), ("token_type_ids", types))
                    if k in self._inputs}
            out[idx] = self.session.run(None, feed)[0]
        return out
