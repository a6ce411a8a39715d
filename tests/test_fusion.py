"""Fusion inputs: hashed structured codes, image vectors (column or a tiny random HF vision model), learned projection."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from ml.embeddings import ModelNotFoundError
from ml.fusion import (ImageEncoder, ImageTableError, fused_tower, image_inputs, image_matrix_from_column,
                       image_vectors_from_files, read_image_table, structured_codes)

BUCKETS = 4096


def _hand_bucket(field: str, value: str) -> int:
    return 1 + int(hashlib.md5(f"{field}\x1f{value}".encode()).hexdigest()[:12], 16) % (BUCKETS - 1)


ITEMS = pd.DataFrame({
    "item_id": ["tee", "dress", "junk", "mug"],
    "category_path": ["Home/Apparel/Men's/T-Shirts", "Apparel/Women's", "(not set)", "Drinkware"],
    "brand": ["Google", "google", None, "YouTube"],
    "price": [10.0, 100.0, np.nan, 20.0],
})


def test_structured_codes_hash_category_prefixes_brand_and_price_band():
    codes = structured_codes(ITEMS, n_buckets=BUCKETS, n_price_bands=2)
    tee, dress, junk, mug = codes
    # the site root "Home" is dropped, so both apparel items share level 1 and differ at level 2
    assert tee[0] == dress[0] == _hand_bucket("cat1", "Apparel")
    assert tee[1] == _hand_bucket("cat2", "Apparel/Men's")
    assert dress[1] == _hand_bucket("cat2", "Apparel/Women's")
    assert tee[2] == _hand_bucket("cat3", "Apparel/Men's/T-Shirts") and dress[2] == 0
    assert tee[3] == dress[3] == _hand_bucket("brand", "google")  # brand case does not split an item group
    # prices 10, 20, 100 -> median edge 20: 10 is band 0, 20 and 100 band 1; no price is "missing", not band 0
    assert tee[4] == _hand_bucket("price_band", "0")
    assert mug[4] == dress[4] == _hand_bucket("price_band", "1")
    assert junk.tolist() == [0, 0, 0, 0, 0]


def test_image_column_keeps_vectors_and_zero_fills_missing():
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "img": [[1.0, 0.0], None, [0.0, 2.0]]})
    m, has = image_matrix_from_column(items, "img")
    assert m.tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]
    assert has.tolist() == [True, False, True]


def test_ragged_image_column_names_the_row_and_item():
    items = pd.DataFrame({"item_id": ["a", "b"], "img": [[1.0, 0.0], [1.0, 2.0, 3.0]]})
    with pytest.raises(ValueError, match=r"row 1 \(item_id='b'\).*length 3, expected 2"):
        image_matrix_from_column(items, "img")


def test_fused_tower_starts_at_the_text_vectors_and_every_input_gets_gradient():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(4, 8)).astype(np.float32)
    image = rng.normal(size=(4, 3)).astype(np.float32)
    codes = structured_codes(ITEMS, n_buckets=BUCKETS)
    tower = fused_tower(text, codes, image, n_buckets=BUCKETS, field_dim=4)
    assert tower.in_dim == 8 + 5 * 4 + 3
    out = tower()
    assert out.shape == (4, 8)
    assert torch.allclose(out, torch.as_tensor(text))  # identity init: fusion starts from the unrefined vectors

    opt = torch.optim.SGD(tower.parameters(), lr=0.1)
    target = torch.as_tensor(rng.normal(size=(4, 8)).astype(np.float32))
    for _ in range(2):
        opt.zero_grad()
        ((tower() - target) ** 2).sum().backward()
        opt.step()
    w = tower.proj.weight.grad
    assert w[:, 8:28].abs().sum() > 0      # structured-field columns of the projection
    assert w[:, 28:].abs().sum() > 0       # image columns
    # after the projection left zero, the gradient reaches the field embeddings of present codes ...
    tee_cat1 = int(codes[0, 0])
    assert tower.fields[0].weight.grad[tee_cat1].abs().sum() > 0
    # ... and never the 'missing' row
    assert tower.fields[0].weight.grad[0].abs().sum() == 0
    assert not torch.allclose(tower(), torch.as_tensor(text))


def _tiny_vision_model(folder):
    """A randomly initialised ViT (hidden size 24) with its image processor, saved like a downloaded model."""
    from transformers import ViTConfig, ViTModel

    try:
        from transformers import ViTImageProcessorPil as Processor  # no torchvision needed
    except ImportError:
        from transformers import ViTImageProcessor as Processor
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32)
    ViTModel(cfg).save_pretrained(folder)
    Processor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_tiny_vision_model_turns_image_files_into_unit_vectors(tmp_path):
    from PIL import Image

    model = _tiny_vision_model(tmp_path / "vit")
    for name, colour in (("red.png", (255, 0, 0)), ("blue.png", (0, 0, 255))):
        Image.new("RGB", (40, 30), colour).save(tmp_path / name)
    items = pd.DataFrame({"item_id": ["r", "none", "b", "r2"], "img": ["red.png", None, "blue.png", "red.png"]})
    enc = ImageEncoder(model, device="cpu")
    vecs, has = image_vectors_from_files(items, "img", enc, base_dir=tmp_path)
    assert enc.dim == 24 and vecs.shape == (4, 24)
    assert has.tolist() == [True, False, True, True]
    assert np.allclose(np.linalg.norm(vecs[has], axis=1), 1.0, atol=1e-5)
    assert vecs[1].tolist() == [0.0] * 24
    assert np.allclose(vecs[0], vecs[3], atol=1e-6)       # same picture, same vector
    assert not np.allclose(vecs[0], vecs[2], atol=1e-3)   # different pictures differ
    tower = fused_tower(np.eye(4, dtype=np.float32), image=vecs)
    assert tower().shape == (4, 4) and tower.in_dim == 4 + 24


def test_missing_image_file_names_the_item_and_the_path(tmp_path):
    enc = ImageEncoder(_tiny_vision_model(tmp_path / "vit"), device="cpu")
    items = pd.DataFrame({"item_id": ["sku-9"], "img": ["nowhere.png"]})
    with pytest.raises(FileNotFoundError, match=r"item 'sku-9'.*nowhere\.png"):
        image_vectors_from_files(items, "img", enc, base_dir=tmp_path)


def test_unreadable_image_file_names_the_item(tmp_path):
    enc = ImageEncoder(_tiny_vision_model(tmp_path / "vit"), device="cpu")
    (tmp_path / "broken.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"item 'x'.*cannot read .*broken\.png"):
        enc.encode([tmp_path / "broken.png"], ["x"])


def test_missing_vision_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no model folder with a config.json"):
        ImageEncoder(tmp_path / "no-such-model", device="cpu")


def test_image_table_csv_vectors_align_to_the_catalog_and_ignore_unknown_items(tmp_path):
    path = tmp_path / "images.csv"
    path.write_text("item_id,image_vector\nb,\"[0, 1, 0]\"\nzz,\"[1, 1, 1]\"\na,\"[1, 0, 0]\"\n")
    image, has = image_inputs(read_image_table(path), ["a", "b", "c"])
    assert has.tolist() == [True, True, False]
    assert image.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("text, match", [
    ("item_id,image_vector\na,\"[1, 0]\"\na,\"[0, 1]\"\n", r"images\.csv row 3: item_id 'a' appears twice"),
    ("sku,image_vector\na,\"[1, 0]\"\n", r"images\.csv: no column 'item_id'"),
    ("item_id,image_vector\na,\"[1, 0\"\n", r"images\.csv row 2 column 'image_vector': not a JSON list"),
    ("item_id,picture\na,x.png\n", r"neither 'image_vector' .* nor 'image_path'"),
    ("item_id,image_path\na,x.png\n", r"fusion\.image_model is not set"),
])
def test_a_bad_image_table_is_a_clear_error_naming_file_row_and_column(tmp_path, text, match):
    path = tmp_path / "images.csv"
    path.write_text(text)
    with pytest.raises(ImageTableError, match=match):
        image_inputs(read_image_table(path), ["a"], source=f"fusion.images {path}")


@pytest.mark.slow
def test_refined_profiles_asset_encodes_the_configured_image_files_into_the_item_tower(pipeline_run, tmp_path):
    """fusion.images + fusion.image_model on a copy of the end-to-end warehouse: the asset encodes the image files
    with the (tiny, random) vision model and trains the fused tower with them."""
    import shutil

    from dagster import materialize
    from PIL import Image

    from orchestration.assets.refinement import refined_profiles
    from orchestration.resources import PersonaConfig, Warehouse
    from persona.config import load_settings
    from persona.warehouse import read_df
    from tests.conftest import write_config

    settings, result = pipeline_run
    assert result.success
    folder = tmp_path / "run"
    (folder / "warehouse").mkdir(parents=True)
    shutil.copy(settings.warehouse_path, folder / "warehouse" / settings.warehouse_path.name)
    items = read_df(settings.warehouse_path, "select item_id from item_embeddings order by item_id")["item_id"]
    pictured = items.iloc[::5].tolist()
    (folder / "img").mkdir()
    for n, item in enumerate(pictured):
        Image.new("RGB", (32, 32), (n * 37 % 256, n * 91 % 256, 128)).save(folder / "img" / f"{n}.png")
    pd.DataFrame({"item_id": pictured, "image_path": [f"img/{n}.png" for n in range(len(pictured))]}).to_csv(
        folder / "images.csv", index=False)
    config = write_config(folder, settings.source_path, fusion__images=str(folder / "images.csv"),
                          fusion__image_model=str(_tiny_vision_model(tmp_path / "vit")))
    res = materialize([refined_profiles], resources={"persona": PersonaConfig(config_file=str(config)),
                                                     "warehouse": Warehouse()})
    assert res.success
    meta = res.asset_materializations_for_node("refined_profiles")[0].metadata
    assert meta["items_with_image"].value == len(pictured) > 0
    with_images = load_settings(config).warehouse_path
    sql = "select item_id, vector from refined_item_vectors where snapshot = 'serving' order by item_id"
    a, b = read_df(with_images, sql), read_df(settings.warehouse_path, sql)
    assert a["item_id"].tolist() == b["item_id"].tolist() == items.tolist()
    moved = np.linalg.norm(np.stack(a["vector"]) - np.stack(b["vector"]), axis=1)
    assert moved.max() > 1e-3  # the image inputs changed what the tower learned
