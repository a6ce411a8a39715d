"""The bundled MiniLM on real Google Merchandise Store titles, and the content-hash cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ml.embeddings import (ModelNotFoundError, TextEncoder, content_hash, embed_items, embedding_matrix,
                           item_text, resolve_model_path)

GA_FILE = Path(__file__).resolve().parent.parent / "data/ga_merch_store/product_events_2016-08_2016-10.parquet"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder("bundled:all-MiniLM-L6-v2", device="cpu", batch_size=64, max_length=64)


@pytest.fixture(scope="module")
def items():
    from data_contracts.adapters import ga_merch

    return ga_merch.load(GA_FILE).items.to_pandas()


@pytest.fixture(scope="module")
def embedded(items, encoder):
    return embed_items(items, encoder)


def test_bundled_model_resolves_to_package_folder():
    folder = Path(resolve_model_path("bundled:all-MiniLM-L6-v2"))
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def test_unknown_model_fails_fast_naming_the_spec():
    start = time.time()
    with pytest.raises(ModelNotFoundError, match="no-such-org/no-such-model"):
        resolve_model_path("no-such-org/no-such-model")
    with pytest.raises(ModelNotFoundError, match="bundled:other"):
        resolve_model_path("bundled:other")
    assert time.time() - start < 10


def test_similar_titles_are_closer_than_unrelated(encoder):
    white, black, bottle = encoder.encode([
        "Google Men's 100% Cotton Short Sleeve Hero Tee White",
        "Google Men's 100% Cotton Short Sleeve Hero Tee Black",
        "Google 22 oz Water Bottle",
    ])
    assert float(white @ black) > float(white @ bottle) + 0.2
    assert float(white @ black) > 0.8


@pytest.fixture(scope="module")
def titles(items) -> list[str]:
    return items["title"].dropna().tolist()[::4]  # ~95 real titles of every kind


def test_real_titles_unit_norm_dim_384(encoder, titles):
    vecs = encoder.encode(titles)
    assert encoder.dim == 384 and encoder.model_name == "all-MiniLM-L6-v2"
    assert vecs.shape == (len(titles), 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_batch_order_preserved(encoder, titles):
    base = encoder.encode(titles)
    perm = np.random.default_rng(3).permutation(len(titles))
    shuffled = encoder.encode([titles[i] for i in perm])
    np.testing.assert_allclose(shuffled, base[perm], atol=1e-4)
    # Batch boundaries must not matter either.
    encoder.batch_size = 7
    try:
        small = encoder.encode(titles[:30])
    finally:
        encoder.batch_size = 64
    np.testing.assert_allclose(small, base[:30], atol=1e-4)


def test_item_text_and_hash():
    assert item_text("Google Men's Hero Tee White", "Apparel/Men's/Men's-T-Shirts", "Google") == \
        "Google Men's Hero Tee White | Apparel > Men's > Men's-T-Shirts | Google"
    assert item_text("Dog Frisbee", None, float("nan")) == "Dog Frisbee"
    assert item_text(None, "Office", None) == "Office"
    assert content_hash("x", "model-a") != content_hash("x", "model-b")
    assert content_hash("x", "model-a") == content_hash("x", "model-a")


def test_embed_items_cache(items, encoder, embedded):
    first, stats = embedded
    n_texts = first["text"].nunique()
    assert stats == {"encoded": n_texts, "reused": 0}
    assert len(first) == len(items) and first["item_id"].is_unique
    assert set(first.columns) >= {"item_id", "text", "content_hash", "model", "dim", "embedding"}
    ids, matrix = embedding_matrix(first)
    assert ids == items["item_id"].tolist() and matrix.shape == (len(items), 384)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)

    again, stats = embed_items(items, encoder, cache=first)
    assert stats == {"encoded": 0, "reused": len(items)}
    np.testing.assert_array_equal(embedding_matrix(again)[1], matrix)

    changed = items.copy()
    row = changed.index[changed["item_id"] == "GGOE-0104"][0]
    changed.loc[row, "title"] = "Google Men's Hero Tee Bright Orange Limited Edition"
    third, stats = embed_items(changed, encoder, cache=again)
    assert stats == {"encoded": 1, "reused": len(items) - 1}
    new = third.set_index("item_id").loc["GGOE-0104"]
    old = first.set_index("item_id").loc["GGOE-0104"]
    assert new["content_hash"] != old["content_hash"]
    assert 0.5 < float(np.dot(new["embedding"], old["embedding"])) < 0.9999

    # A cache from another model is never reused.
    foreign = first.assign(model="another-model")
    _, stats = embed_items(items.head(5), encoder, cache=foreign)
    assert stats["reused"] == 0 and stats["encoded"] == 5


def test_fp16_is_used_only_on_cuda(encoder):
    import torch

    assert encoder.fp16 is False and encoder.model.dtype == torch.float32  # asked for (default) but on CPU
    assert "fp32" in repr(encoder)


def test_half_precision_weights_still_give_float32_unit_vectors_matching_fp32(encoder, titles):
    """The CUDA fp16 path minus the GPU: half weights, float32 pooling; parity with the fp32 encoder."""
    half = TextEncoder("bundled:all-MiniLM-L6-v2", device="cpu", batch_size=64, max_length=64)
    half.model.half()
    vecs = half.encode(titles[:40])
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vecs * encoder.encode(titles[:40]), axis=1)
    assert float(cosine.min()) >= 0.999


def test_progress_bar_shown_only_when_texts_take_more_than_one_batch(encoder, items, titles, capsys):
    encoder.encode(titles[:64])  # exactly one batch of 64
    assert "encode (all-MiniLM-L6-v2" not in capsys.readouterr().err
    encoder.encode(titles[:65])
    err = capsys.readouterr().err
    assert "encode (all-MiniLM-L6-v2, cpu)" in err and "65/65" in err
    encoder.encode(titles[:65], progress=False)
    assert capsys.readouterr().err == ""

    # The item_embeddings asset path: embed_items passes the default through to encode.
    encoder.batch_size = 4
    try:
        _, stats = embed_items(items.head(10), encoder)
    finally:
        encoder.batch_size = 64
    assert stats["encoded"] > 4 and f"{stats['encoded']}/{stats['encoded']}" in capsys.readouterr().err


def test_bad_batch_size_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="encoder.batch_size"):
        TextEncoder("bundled:all-MiniLM-L6-v2", device="cpu", batch_size=0)


def test_gpu_check_on_a_machine_without_cuda_says_so_and_exits_0():
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "bench/gpu_check.py")], cwd=root, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("no CUDA")
    summary = json.loads(out.stdout[out.stdout.index("{"):])
    assert summary["cuda"] is False and summary["checked"] is False and summary["ok"] is True


def test_gpu_check_exits_1_and_names_the_failed_check(monkeypatch, capsys, tmp_path):
    """A check that raises is reported as failed (with its message) instead of crashing the script."""
    import json

    from bench import gpu_check

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gpu_check, "check_encoder", broken)
    code = gpu_check.main(["--cpu", "--titles", "8", "--out", str(tmp_path / "summary.json")])
    assert code == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] is False and summary["titles"] == 8
    assert [(c["check"], c["ok"]) for c in summary["checks"]] == [("encoder", False)]
    assert "RuntimeError: CUDA error: out of memory" in summary["checks"][0]["error"]
    assert "[FAIL] encoder" in capsys.readouterr().out


@pytest.mark.slow
def test_rematerializing_item_embeddings_on_an_unchanged_catalog_encodes_zero_texts(pipeline_run, tmp_path):
    """The Dagster asset, not just the function: a second materialization on the same items reuses every vector."""
    import shutil

    from dagster import materialize

    from orchestration.assets.profiles import item_embeddings
    from orchestration.resources import PersonaConfig, Warehouse
    from persona.config import load_settings
    from persona.warehouse import read_df
    from tests.conftest import write_config

    settings, result = pipeline_run
    first = result.asset_materializations_for_node("item_embeddings")[0].metadata
    assert first["encoded"].value > 0 and first["reused"].value == 0  # the first run, on an empty warehouse
    (tmp_path / "warehouse").mkdir()
    shutil.copy(settings.warehouse_path, tmp_path / "warehouse" / settings.warehouse_path.name)
    config = write_config(tmp_path, settings.source_path)
    res = materialize([item_embeddings], resources={"persona": PersonaConfig(config_file=str(config)),
                                                    "warehouse": Warehouse()})
    meta = res.asset_materializations_for_node("item_embeddings")[0].metadata
    assert meta["encoded"].value == 0 and meta["reused"].value == first["dagster/row_count"].value
    sql = "select item_id, embedding from item_embeddings order by item_id"
    a, b = read_df(load_settings(config).warehouse_path, sql), read_df(settings.warehouse_path, sql)
    assert a["item_id"].tolist() == b["item_id"].tolist()
    assert np.array_equal(np.stack(a["embedding"]), np.stack(b["embedding"]))
