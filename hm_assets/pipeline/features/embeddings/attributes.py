"""Attribute embeddings: weighted one-hot blocks of an article's categorical attributes.

Vector layout: one block per attribute (colour group, perceived colour value and master, product
type and group, graphical appearance, section, garment group, index group, department, and a
price band when prices are known). A block is one-hot over the values seen in the catalogue,
with entry ``sqrt(weight)``; unknown values ("Unknown", "undefined", code -1, empty) leave the
block at zero. After L2 normalisation the cosine of two articles is
``sum(weight of the blocks where they agree) / sqrt(W_a * W_b)`` (W = total weight of the
blocks an article has), i.e. a weighted share of matching attributes: easy to read, exact, and
a few hundred dimensions on the Kaggle catalogue (~650). Pure numpy: for 105k articles the
content hashes take ~1 s and the encoding ~0.1 s on a 2-core CPU.

Cache key (``content_hash``): the article's own block values (and price band) plus the
*layout* fingerprint (block vocabularies, weights, scheme version). Changing one article's
attributes re-embeds just that article; a category value that appears or disappears anywhere
in the catalogue changes the layout and re-embeds all (cheap, see above).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from hm_assets.pipeline.features.embeddings.cache import stable_hash

SCHEME_VERSION = "attr-v1"

# block name -> (column that identifies the value, default weight)
ATTRIBUTE_BLOCKS: dict[str, tuple[str, float]] = {
    "product_type": ("product_type_no", 3.0),
    "colour_group": ("colour_group_code", 2.0),
    "graphical_appearance": ("graphical_appearance_no", 1.5),
    "department": ("department_no", 1.5),
    "product_group": ("product_group_name", 1.0),
    "section": ("section_no", 1.0),
    "garment_group": ("garment_group_no", 1.0),
    "perceived_colour_master": ("perceived_colour_master_id", 1.0),
    "perceived_colour_value": ("perceived_colour_value_id", 0.5),
    "index_group": ("index_group_no", 0.5),
}
PRICE_BLOCK = "price_band"
DEFAULT_PRICE_WEIGHT = 1.0
UNKNOWN_VALUES = frozenset({"", "-1", "unknown", "undefined", "nan", "none", "<na>"})


def default_weights() -> dict[str, float]:
    weights = {block: weight for block, (_, weight) in ATTRIBUTE_BLOCKS.items()}
    weights[PRICE_BLOCK] = DEFAULT_PRICE_WEIGHT
    return weights


def block_values(articles: pd.DataFrame) -> pd.DataFrame:
    """article_id plus one string column per block, None where the value is unknown."""
    out = pd.DataFrame({"article_id": articles["article_id"].to_numpy(np.int32)})
    for block, (column, _) in ATTRIBUTE_BLOCKS.items():
        values = articles[column].astype("string").str.strip()
        unknown = values.isna() | values.str.lower().isin(UNKNOWN_VALUES)
        out[block] = values.astype(object).where(~unknown.to_numpy(), None)
    return out


def price_bands(prices: pd.Series | None, article_ids: np.ndarray, bands: int) -> pd.Series:
    """Quantile band (0 = cheapest .. bands-1) of each article's median price; None if unknown."""
    result = pd.Series([None] * len(article_ids), index=article_ids, dtype=object)
    if prices is None or prices.empty or bands < 2:
        return result
    known = prices[prices.index.isin(article_ids)].dropna()
    if known.empty:
        return result
    ranks = known.rank(method="average", pct=True).to_numpy()
    band = np.minimum((ranks * bands).astype(int), bands - 1) if len(known) > 1 else np.zeros(len(known), int)
    result.loc[known.index] = [f"p{b}" for b in band]
    return result


def median_prices(transaction_files: list[Path]) -> pd.Series | None:
    """Median price per article over the ingested weekly transaction files (None if there are none)."""
    if not transaction_files:
        return None
    listing = "[" + ", ".join(f"'{f}'" for f in transaction_files) + "]"
    con = duckdb.connect(config={"threads": 2, "memory_limit": "2GB"})
    try:
        frame = con.sql(
            f"SELECT article_id, median(price) AS price FROM read_parquet({listing}) GROUP BY article_id"
        ).df()
    finally:
        con.close()
    return frame.set_index("article_id")["price"]


@dataclass
class AttributeLayout:
    """Where each (block, value) lives in the vector, with its weight."""

    blocks: dict[str, list[str]]  # block -> sorted vocabulary
    weights: dict[str, float]

    @property
    def offsets(self) -> dict[str, int]:
        offsets, position = {}, 0
        for block, vocabulary in self.blocks.items():
            offsets[block] = position
            position += len(vocabulary)
        return offsets

    @property
    def dim(self) -> int:
        return sum(len(v) for v in self.blocks.values())

    @property
    def fingerprint(self) -> str:
        parts = [SCHEME_VERSION]
        for block, vocabulary in self.blocks.items():
            parts.append(f"{block}:{self.weights.get(block, 0.0)!r}:{'|'.join(vocabulary)}")
        return stable_hash(*parts)


def build_layout(values: pd.DataFrame, weights: dict[str, float]) -> AttributeLayout:
    blocks: dict[str, list[str]] = {}
    for block in [*ATTRIBUTE_BLOCKS, PRICE_BLOCK]:
        if block not in values.columns or weights.get(block, 0.0) <= 0:
            continue
        vocabulary = sorted({v for v in values[block].tolist() if v is not None})
        if vocabulary:
            blocks[block] = vocabulary
    return AttributeLayout(blocks=blocks, weights={b: float(weights[b]) for b in blocks})


def attribute_table(
    articles: pd.DataFrame,
    prices: pd.Series | None = None,
    price_band_count: int = 5,
    weights: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, AttributeLayout]:
    """Block values of every article, its ``content_hash``, and the layout they are encoded with."""
    unknown = set(weights or {}) - set(default_weights())
    if unknown:
        raise ValueError(f"unknown attribute block(s) {sorted(unknown)}; blocks are {sorted(default_weights())}")
    weights = {**default_weights(), **(weights or {})}
    values = block_values(articles)
    if prices is not None:
        values[PRICE_BLOCK] = price_bands(prices, values["article_id"].to_numpy(), price_band_count).to_numpy()
    layout = build_layout(values, weights)
    columns = list(layout.blocks)
    salt = layout.fingerprint
    rows = values[columns].to_numpy(dtype=object) if columns else np.empty((len(values), 0), object)
    values["content_hash"] = [stable_hash(salt, *row) for row in rows]
    return values, layout


def encode_attributes(values: pd.DataFrame, layout: AttributeLayout) -> np.ndarray:
    """L2-normalised float32 vectors (n, layout.dim) for the rows of ``values``."""
    n = len(values)
    codes = {
        block: pd.Index(vocabulary, dtype=object).get_indexer(values[block].to_numpy(dtype=object))
        for block, vocabulary in layout.blocks.items()
    }
    # the norm is known without touching the dense matrix: sqrt(sum of the weights of known blocks)
    squared = np.zeros(n, dtype=np.float64)
    for block, code in codes.items():
        squared += layout.weights[block] * (code >= 0)
    inverse_norm = np.divide(1.0, np.sqrt(squared), out=np.zeros(n), where=squared > 0)
    vectors = np.zeros((n, layout.dim), dtype=np.float32)
    for block, offset in layout.offsets.items():
        code = codes[block]
        rows = np.flatnonzero(code >= 0)
        vectors[rows, offset + code[rows]] = np.sqrt(layout.weights[block]) * inverse_norm[rows]
    return vectors
