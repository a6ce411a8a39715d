"""The ONNX text encoder reproduces the torch encoder, is exported once per encoder, and ships with each version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml import registry
from ml.onnx_encoder import ONNX_FILE, OnnxTextEncoder, ensure_encoder

ROOT = Path(__file__).resolve().parent.parent
GA_FILE = ROOT / "data/ga_merch_store/product_events_2016-08_2016-10.parquet"
TEXTS = ["Google Men's 100% Cotton Short Sleeve Hero Tee Black | Apparel > Men's > Men's-T-Shirts | Google",
         "", "mug", "water bottle " * 40, "Drinkware", "YouTube Twill Cap", "ñandú café — émoji 🙂"]


@pytest.fixture(scope="module")
def encoder_dir(pipeline_run):
    """The export the pipeline cached for its encoder (made by ranker_model's write step)."""
    settings, _ = pipeline_run
    enc = settings["encoder"]
    folder = ensure_encoder(settings.models_dir / "encoders", enc["model"], int(enc["max_length"]))
    return settings, folder


@pytest.mark.slow
def test_onnx_encoder_matches_the_torch_encoder(encoder_dir):
    from ml.embeddings import TextEncoder

    settings, folder = encoder_dir
    enc = settings["encoder"]
    onnx = OnnxTextEncoder(folder).encode(TEXTS)
    torch_vecs = TextEncoder(enc["model"], device="cpu", max_length=enc["max_length"]).encode(TEXTS)
    assert onnx.dtype == np.float32 and onnx.shape == torch_vecs.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    assert float(np.max(np.abs(onnx - torch_vecs))) < 1e-4
    # dynamic batch and sequence axes: one text at a time gives the same vectors as a padded batch
    one_by_one = np.vstack([OnnxTextEncoder(folder).encode([t]) for t in TEXTS[:3]])
    np.testing.assert_allclose(one_by_one, onnx[:3], atol=1e-5)
    assert OnnxTextEncoder(folder).encode([]).shape == (0, 384)


def real_ga_titles() -> list[str]:
    """Every distinct raw GA product name (446) plus every distinct item text the pipeline embeds (363)."""
    import pandas as pd

    from data_contracts.adapters import ga_merch
    from ml.embeddings import item_text

    names = pd.read_parquet(GA_FILE, columns=["product_name"])["product_name"].dropna().str.strip()
    items = ga_merch.load(GA_FILE).items.to_pandas()
    texts = [item_text(t, c, b) for t, c, b in zip(items["title"], items["category_path"], items["brand"])]
    return sorted((set(names) | set(texts)) - {""})


@pytest.mark.slow
def test_onnx_encoder_parity_on_every_real_ga_title(encoder_dir):
    """The acceptance bar of issue #5: minimum cosine >= 0.999 over at least 500 real titles."""
    from ml.embeddings import TextEncoder

    settings, folder = encoder_dir
    enc = settings["encoder"]
    titles = real_ga_titles()
    assert len(titles) == 807
    onnx = OnnxTextEncoder(folder, threads=2).encode(titles, batch_size=64)
    torch_vecs = TextEncoder(enc["model"], device="cpu", batch_size=64, max_length=enc["max_length"]).encode(titles)
    cosine = np.sum(onnx * torch_vecs, axis=1)
    assert float(cosine.min()) >= 0.999, titles[int(np.argmin(cosine))]
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_the_export_is_cached_and_shipped_with_every_version(encoder_dir):
    settings, folder = encoder_dir
    stamp = (folder / ONNX_FILE).stat().st_mtime_ns
    again = ensure_encoder(settings.models_dir / "encoders", settings["encoder"]["model"],
                           int(settings["encoder"]["max_length"]))
    assert again == folder and (folder / ONNX_FILE).stat().st_mtime_ns == stamp  # not exported again
    shipped = registry.champion_dir(settings.models_dir) / "encoder"
    for name in (ONNX_FILE, "tokenizer.json", "encoder.json", "vocab.txt"):
        assert (shipped / name).read_bytes() == (folder / name).read_bytes()
    meta = json.loads((shipped / "encoder.json").read_text())
    assert meta["model"] == "all-MiniLM-L6-v2" and meta["dim"] == 384


@pytest.mark.slow
def test_the_encoder_loads_without_torch_or_transformers(encoder_dir):
    _, folder = encoder_dir
    code = (f"import sys; from ml.onnx_encoder import OnnxTextEncoder; v = OnnxTextEncoder({str(folder)!r})"
            ".encode(['mug']); assert v.shape == (1, 384); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_a_folder_without_an_export_is_refused_with_its_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        OnnxTextEncoder(tmp_path)
