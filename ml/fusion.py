"""Multimodal item input: text embedding ⊕ structured features ⊕ optional image vector, fused by a learned projection.

Why fuse: two items with near-identical titles ("Google Men's Tee Black" / "... White") sit on top of
each other in text space, while behaviour often separates them by category, brand or price. The
structured fields enter as hashed codes (stable across runs and machines, no vocabulary to store)
looked up in small learned embedding tables; an image vector, where a shop has one, is appended as is.

The projection is initialised as [identity | 0 | 0], so before training the fused vector *is* the
text embedding: refinement (`ml.refine`) starts from the unrefined retrieval and learns from
behaviour how much category, brand, price and image should move it.

torch and transformers are imported inside the functions and classes that need them, so
`structured_codes` stays importable (and fast) where no model is trained.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml import tags as T
from ml.embeddings import ModelNotFoundError, is_missing

STRUCT_FIELDS = ("category_l1", "category_l2", "category_l3", "brand", "price_band")
DEFAULT_BUCKETS = 4096
DEFAULT_PRICE_BANDS = 5


def _bucket(field: str, value: str, n_buckets: int) -> int:
    """1 + md5(field|value) mod (n_buckets - 1); 0 is reserved for 'missing'."""
    digest = hashlib.md5(f"{field}\x1f{value}".encode("utf-8")).hexdigest()[:12]
    return 1 + int(digest, 16) % (n_buckets - 1)


def price_band_edges(prices: Any, n_bands: int = DEFAULT_PRICE_BANDS) -> np.ndarray:
    """Inner quantile edges of the catalog's positive prices (n_bands - 1 values; empty when no price)."""
    p = pd.to_numeric(pd.Series(prices, dtype="object"), errors="coerce").to_numpy(dtype=np.float64)
    p = p[np.isfinite(p) & (p > 0)]
    if len(p) == 0:
        return np.zeros(0)
    return np.quantile(p, np.linspace(0, 1, n_bands + 1)[1:-1])


def structured_codes(items: pd.DataFrame, n_buckets: int = DEFAULT_BUCKETS,
                     n_price_bands: int = DEFAULT_PRICE_BANDS) -> np.ndarray:
    """(n_items, 5) int64 codes in [0, n_buckets): category levels 1-3, brand, price band; 0 = missing.

    Category level k is the path prefix of k levels (so 'Apparel/Men' and 'Bags/Men' differ), after
    the same junk/root cleaning as tags. Price bands are catalog quantiles; a missing or non-positive
    price is 'missing', not the cheapest band.
    """
    if n_buckets < 2:
        raise ValueError(f"n_buckets must be >= 2, got {n_buckets}")
    n = len(items)
    cols = items.columns
    cats = items["category_path"] if "category_path" in cols else pd.Series([None] * n)
    brands = items["brand"] if "brand" in cols else pd.Series([None] * n)
    prices = items["price"] if "price" in cols else pd.Series([np.nan] * n)
    out = np.zeros((n, len(STRUCT_FIELDS)), dtype=np.int64)
    for row, path in enumerate(cats):
        full = T.category_key(path, depth=3)
        if full is None:
            continue
        levels = full.split("/")
        for k in range(1, 4):
            if len(levels) >= k:
                out[row, k - 1] = _bucket(f"cat{k}", "/".join(levels[:k]), n_buckets)
    for row, brand in enumerate(brands):
        b = T.clean_brand(brand)
        if b is not None:
            out[row, 3] = _bucket("brand", b.lower(), n_buckets)
    edges = price_band_edges(prices, n_price_bands)
    p = pd.to_numeric(pd.Series(list(prices), dtype="object"), errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(p) & (p > 0)
    if len(edges):
        bands = np.searchsorted(edges, p[ok], side="right")
        out[ok, 4] = [_bucket("price_band", str(int(b)), n_buckets) for b in bands]
    return out


def image_matrix_from_column(items: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """((n, d) float32, (n,) bool has_image) from a column of precomputed vectors; a null cell is a zero row.

    All non-null vectors must have one length; a ragged column fails naming the first bad row.
    """
    if column not in items.columns:
        raise KeyError(f"items have no column {column!r} (image vectors); columns: {list(items.columns)}")
    values = list(items[column])
    dim = None
    for row, v in enumerate(values):
        if v is None or (np.ndim(v) == 0 and is_missing(v)):
            continue
        arr = np.asarray(v, dtype=np.float32).reshape(-1)
        if dim is None:
            dim = arr.shape[0]
        elif arr.shape[0] != dim:
            raise ValueError(f"items.{column} row {row} (item_id={items['item_id'].iloc[row]!r}): vector length "
                             f"{arr.shape[0]}, expected {dim} like the rows before it")
    if dim is None:
        raise ValueError(f"items.{column} has no vector in any row")
    out = np.zeros((len(values), dim), dtype=np.float32)
    has = np.zeros(len(values), dtype=bool)
    for row, v in enumerate(values):
        if v is None or (np.ndim(v) == 0 and is_missing(v)):
            continue
        out[row] = np.asarray(v, dtype=np.float32).reshape(-1)
        has[row] = True
    return out, has


class ImageEncoder:
    """A local Hugging Face vision model (AutoModel + AutoImageProcessor), offline, L2-normalised pooled output.

    Pooling: the model's `pooler_output` when it has one (ViT, ResNet, ...), else the mean of
    `last_hidden_state` over tokens (or spatial positions).
    """

    def __init__(self, model_path: str | Path, device: str = "auto", batch_size: int = 16):
        import torch
        from transformers import AutoImageProcessor, AutoModel

        path = Path(model_path).expanduser()
        if not path.is_dir() or not (path / "config.json").exists():
            raise ModelNotFoundError(f"fusion.image_model {str(model_path)!r}: no model folder with a config.json "
                                     f"at {path.resolve()} (offline: give a local folder saved with save_pretrained)")
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"fusion.image_model {str(model_path)!r}: cannot load a vision model and "
                                     f"image processor from {path.resolve()}: {exc}") from exc
        if device in (None, "", "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.batch_size = int(batch_size)
        self.path = path

    def _pool(self, out) -> "Any":
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.reshape(pooled.shape[0], -1)
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # (B, C, H, W) from convolutional models
            return hidden.mean(dim=(2, 3))
        return hidden.mean(dim=1)

    def encode(self, paths: list[str | Path], item_ids: list[Any] | None = None) -> np.ndarray:
        """(n, dim) float32 unit vectors for image files; a missing or unreadable file fails naming item and path."""
        import torch
        from PIL import Image

        item_ids = list(item_ids) if item_ids is not None else list(range(len(paths)))
        files = [Path(p) for p in paths]
        for item, f in zip(item_ids, files):
            if not f.is_file():
                raise FileNotFoundError(f"image for item {item!r}: no such file {f}")
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(files), self.batch_size):
                images = []
                for item, f in zip(item_ids[start:start + self.batch_size], files[start:start + self.batch_size]):
                    try:
                        with Image.open(f) as im:
                            images.append(im.convert("RGB"))
                    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ...
                        raise ValueError(f"image for item {item!r}: cannot read {f}: {exc}") from exc
                batch = self.processor(images=images, return_tensors="pt").to(self.device)
                pooled = self._pool(self.model(**batch)).float()
                chunks.append(torch.nn.functional.normalize(pooled, dim=1).cpu().numpy())
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack(chunks).astype(np.float32)

    @property
    def dim(self) -> int:
        cfg = self.model.config
        sizes = getattr(cfg, "hidden_sizes", None)
        return int(sizes[-1]) if sizes else int(cfg.hidden_size)


def image_vectors_from_files(items: pd.DataFrame, column: str, encoder: ImageEncoder,
                             base_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((n, dim), has_image) from a column of image file paths (relative to base_dir); a null path is a zero row."""
    if column not in items.columns:
        raise KeyError(f"items have no column {column!r} (image file paths); columns: {list(items.columns)}")
    base = Path(base_dir) if base_dir is not None else None
    has = np.array([not is_missing(p) and str(p).strip() != "" for p in items[column]], dtype=bool)
    paths = [(base / str(p) if base is not None else Path(str(p))) for p in items.loc[has, column]]
    out = np.zeros((len(items), encoder.dim), dtype=np.float32)
    if has.any():
        out[has] = encoder.encode(paths, items.loc[has, "item_id"].tolist())
    return out, has


class ImageTableError(ValueError):
    """The image table (`fusion.images`) is unusable; the message names the file, row and column."""


def read_image_table(path: str | Path) -> pd.DataFrame:
    """The shop's image table: Parquet or CSV, one row per item_id (in a CSV a vector cell is a JSON list)."""
    import json

    p = Path(path)
    is_csv = p.suffix.lower() not in (".parquet", ".pq")
    if not p.is_file():
        raise ImageTableError(f"fusion.images: no such file {p}")
    try:
        table = pd.read_csv(p, dtype={"item_id": str}) if is_csv else pd.read_parquet(p)
    except Exception as exc:  # pyarrow and the CSV parser raise many kinds
        raise ImageTableError(f"fusion.images {p}: cannot read it as {'CSV' if is_csv else 'Parquet'}: {exc}") from exc
    if "item_id" not in table.columns:
        raise ImageTableError(f"fusion.images {p}: no column 'item_id'; columns: {list(table.columns)}")
    line = (lambda row: row + 2) if is_csv else (lambda row: row)  # a CSV row number is its line (header = 1)
    ids = table["item_id"].astype("string").str.strip()
    empty = (ids.isna() | (ids == "")).to_numpy(dtype=bool)
    if empty.any():
        raise ImageTableError(f"fusion.images {p} row {line(int(np.flatnonzero(empty)[0]))}: empty item_id")
    dup = ids.duplicated(keep="first").to_numpy(dtype=bool)
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise ImageTableError(f"fusion.images {p} row {line(row)}: item_id {ids.iloc[row]!r} appears twice "
                              f"(one image per item)")
    table = table.assign(item_id=ids.astype(str).to_numpy())
    if is_csv:
        for col in table.columns.drop("item_id"):
            first = table[col].dropna().head(1).tolist()
            if not (first and isinstance(first[0], str) and first[0].lstrip().startswith("[")):
                continue
            parsed = []
            for row, cell in enumerate(table[col]):
                try:
                    parsed.append(json.loads(cell) if isinstance(cell, str) else None)
                except json.JSONDecodeError as exc:
                    raise ImageTableError(f"fusion.images {p} row {line(row)} column {col!r}: not a JSON list of "
                                          f"numbers: {exc}") from exc
            table[col] = parsed
    return table


def image_inputs(table: pd.DataFrame, item_ids: list[str], vector_column: str = "image_vector",
                 path_column: str = "image_path", encoder_factory=None, base_dir: str | Path | None = None,
                 source: str = "fusion.images") -> tuple[np.ndarray, np.ndarray]:
    """((len(item_ids), d) float32, has_image) aligned to the embedded items; items without a row get a zero row.

    Precomputed vectors (`vector_column`) win over image files (`path_column`, encoded by the model that
    `encoder_factory()` loads, paths relative to `base_dir`). Rows for items not in the catalog are ignored.
    """
    aligned = table.set_index("item_id").reindex([str(i) for i in item_ids]).reset_index()
    if vector_column in table.columns:
        try:
            return image_matrix_from_column(aligned, vector_column)
        except ValueError as exc:
            raise ImageTableError(f"{source}: {exc}") from exc
    if path_column in table.columns:
        if encoder_factory is None:
            raise ImageTableError(f"{source}: column {path_column!r} holds image files but fusion.image_model is not "
                                  f"set (a local Hugging Face vision model folder)")
        return image_vectors_from_files(aligned, path_column, encoder_factory(), base_dir=base_dir)
    raise ImageTableError(f"{source}: neither {vector_column!r} (precomputed vectors) nor {path_column!r} (image "
                          f"files) is a column; columns: {list(table.columns)}")


def fused_tower(text: np.ndarray, codes: np.ndarray | None = None, image: np.ndarray | None = None,
                n_buckets: int = DEFAULT_BUCKETS, field_dim: int = 16):
    """The trainable fusion module (imports torch only when called)."""
    import torch
    from torch import nn

    class FusedItemTower(nn.Module):
        """All items' vectors at once: Linear([text | field embeddings | image]), initialised to return `text`.

        Inputs are fixed buffers (the whole catalog), so one forward gives every item's vector and
        gradients reach the projection and the field embeddings through both towers of `ml.refine`.
        """

        def __init__(self):
            super().__init__()
            t = torch.as_tensor(np.asarray(text, dtype=np.float32))
            if t.ndim != 2:
                raise ValueError(f"text vectors must be (n_items, dim), got shape {tuple(t.shape)}")
            n, d_text = t.shape
            self.register_buffer("text", t)
            parts = d_text
            self.n_fields = 0
            if codes is not None:
                c = torch.as_tensor(np.asarray(codes, dtype=np.int64))
                if c.shape[0] != n:
                    raise ValueError(f"structured codes have {c.shape[0]} rows for {n} items")
                if int(c.max()) >= n_buckets or int(c.min()) < 0:
                    raise ValueError(f"structured codes must lie in [0, {n_buckets}); got {int(c.min())}..{int(c.max())}")
                self.register_buffer("codes", c)
                self.n_fields = c.shape[1]
                self.fields = nn.ModuleList(nn.Embedding(n_buckets, field_dim, padding_idx=0)
                                            for _ in range(self.n_fields))
                for emb in self.fields:
                    nn.init.normal_(emb.weight, std=0.1)
                    with torch.no_grad():
                        emb.weight[0].zero_()
                parts += self.n_fields * field_dim
            self.d_image = 0
            if image is not None:
                im = torch.as_tensor(np.asarray(image, dtype=np.float32))
                if im.ndim != 2 or im.shape[0] != n:
                    raise ValueError(f"image vectors must be ({n}, d), got shape {tuple(im.shape)}")
                self.register_buffer("image", im)
                self.d_image = im.shape[1]
                parts += self.d_image
            self.out_dim = d_text
            self.in_dim = parts
            self.proj = nn.Linear(parts, d_text)
            with torch.no_grad():
                self.proj.weight.zero_()
                self.proj.weight[:, :d_text] = torch.eye(d_text)
                self.proj.bias.zero_()

        def inputs(self):
            pieces = [self.text]
            if self.n_fields:
                pieces += [emb(self.codes[:, k]) for k, emb in enumerate(self.fields)]
            if self.d_image:
                pieces.append(self.image)
            return torch.cat(pieces, dim=1)

        def forward(self):
            return self.proj(self.inputs())

    return FusedItemTower()
