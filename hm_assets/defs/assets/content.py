"""Content assets: per-article image, text and attribute embeddings, and hnswlib indexes over them.

Embeddings are unpartitioned and incremental: each file is also the cache of the next run (an
article whose content hash is unchanged keeps its vector; see ``hm_assets/pipeline/features/embeddings/cache.py``).
Register ``content_assets`` in the Definitions.
"""

# No `from __future__ import annotations`: Dagster reads each asset's config class from its annotation.

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from hm_assets.pipeline.features.embeddings.attributes import attribute_table, default_weights, encode_attributes, median_prices
from hm_assets.pipeline.features.embeddings.cache import embed_with_cache, read_embeddings, write_embeddings
from hm_assets.pipeline.features.embeddings.image import LABEL_COLUMNS, ImageSettings, run_image_embeddings
from hm_assets.pipeline.features.embeddings.index import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M, save_index
from hm_assets.pipeline.features.embeddings.runtime import pick_device, pick_precision, set_torch_threads
from hm_assets.pipeline.features.embeddings.text import (
    article_texts,
    encode_texts,
    load_text_model,
    model_identity,
    resolve_model_path,
    text_hashes,
)
from hm_assets.defs.resources import HMStore
from hm_assets.platform.metadata import markdown_table, stopwatch
from hm_assets.platform.progress import Progress

GROUP = "content"


def cache_metadata(embedded: int, reused: int, rows: int, dim: int, seconds: float, path) -> dict:
    return {
        "dagster/row_count": rows,
        "embedded_now": embedded,
        "reused_from_cache": reused,
        "dim": dim,
        "seconds": seconds,
        "path": str(path),
    }


def previous_file(store: HMStore, asset: str):
    return store.optional(asset)


# ----------------------------------------------------------------------------- image


class ImageEmbeddingConfig(dg.Config):
    model_name: str = Field("vit_tiny_patch16_224", description="timm architecture")
    checkpoint_path: str = Field(
        "", description="Local weights file for the architecture; empty = train it on the catalogue images"
    )
    img_size: int = Field(0, description="Input size in pixels; 0 = the model's own with a checkpoint, 64 when training")
    patch_size: int = Field(0, description="ViT patch size; 0 = the model's own with a checkpoint, 16 when training")
    global_pool: str = Field("avg", description="Pooling of the trained encoder ('avg' or 'token'); a checkpoint keeps its own")
    max_train_steps: int = Field(
        1500, description="Training steps (batches) at most (trained path); bounds the time without depending on the machine"
    )
    max_train_seconds: float = Field(
        0.0, description="Training time budget (trained path); 0 = none (a budget makes the encoder depend on the machine's speed)"
    )
    max_epochs: int = Field(5, description="Training epochs at most (trained path)")
    max_train_images: int = Field(20000, description="Training images at most (a seeded random sample)")
    holdout_fraction: float = Field(0.2, description="Share of images held out to measure attribute accuracy")
    batch_size: int = Field(32, description="Training batch size")
    embed_batch_size: int = Field(128, description="Images per forward pass when embedding")
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    min_class_count: int = Field(2, description="Classes rarer than this in training are ignored by the heads")
    retrain: bool = Field(False, description="Train a new encoder even if a saved one fits")
    retrain_above_changed_fraction: float = Field(
        0.25, description="Retrain when more than this share of images is new or changed since the encoder was trained"
    )
    seed: int = 0
    device: str = Field("", description="torch device; empty = cuda when available, else cpu")
    decode_workers: int = 2
    torch_threads: int = Field(0, description="torch CPU threads; 0 = half the cores (both embedding steps may run at once)")
    precision: str = Field(
        "auto",
        description="Of the encoder's training and embedding: 'float32', 'bfloat16' (autocast), or 'auto': bfloat16 "
        "on a CPU with native bfloat16 arithmetic (AVX512-BF16/AMX: embedding 2x, training 1.1x faster), else float32",
    )


@dg.asset(group_name=GROUP, kinds={"pytorch", "parquet"}, deps=["article_images", "articles"])
def image_embeddings(
    context: dg.AssetExecutionContext, config: ImageEmbeddingConfig, store: HMStore
) -> dg.MaterializeResult:
    """A timm ViT's pooled features of each readable article image (checkpoint, or trained on the catalogue)."""
    target = store.asset_path("image_embeddings")
    with stopwatch() as watch:
        catalogue = pd.read_parquet(store.require("article_images"))
        articles = pd.read_parquet(store.require("articles"), columns=["article_id", *LABEL_COLUMNS])
        settings = ImageSettings(**config.model_dump())
        run = run_image_embeddings(
            catalogue,
            articles,
            settings,
            weights_dir=store.fetch(store.asset_dir("image_embeddings")),
            previous=previous_file(store, "image_embeddings"),
            logger=context.log,
            objects=store.objects,
            thumbnails=store.optional("article_thumbnails"),
        )
        rows = write_embeddings(run.outcome.embeddings, target, store.objects)
    outcome = run.outcome
    metadata = cache_metadata(
        outcome.embedded, outcome.reused, rows, outcome.embeddings.dim, watch.seconds, store.relative(target)
    )
    metadata.update(
        {
            "source": run.source,
            "model_identity": run.model_identity,
            "missing_or_unreadable": run.missing_or_unreadable,
            "decode_failures_now": int(outcome.failed_ids.size),
            "device": run.info["device"],
            "precision": run.info["precision"],
            "torch_threads": run.info["torch_threads"],
        }
    )
    if "encoder" in run.info:
        metadata["encoder"] = run.info["encoder"]
        metadata["encoder_path"] = store.relative(run.info["encoder_path"])
    if "images_already_decoded" in run.info:
        metadata["images_already_decoded"] = run.info["images_already_decoded"]
        metadata["images_already_decoded_by"] = run.info["images_already_decoded_by"]
    training = run.info.get("training")
    if training:
        metadata["train_epochs"] = training["epochs"]
        metadata["train_seconds"] = training["seconds"]
        metadata["train_seconds_per_epoch"] = training["seconds_per_epoch"]
        metadata["train_stopped_by"] = training["stopped_by"]
        metadata["train_images"] = training["train_images"]
        metadata["holdout_images"] = training["holdout_images"]
        for head, accuracy in training["accuracy"].items():
            metadata[f"holdout_accuracy/{head}"] = accuracy
        if training["accuracy"]:
            table = pd.DataFrame(
                {
                    "head": list(training["accuracy"]),
                    "classes": [training["classes"].get(h, 0) for h in training["accuracy"]],
                    "holdout_accuracy": list(training["accuracy"].values()),
                    "majority_baseline": [training["baseline_accuracy"].get(h) for h in training["accuracy"]],
                }
            )
            metadata["holdout_accuracy"] = markdown_table(table)
    return dg.MaterializeResult(metadata=metadata)


# ----------------------------------------------------------------------------- text


class TextEmbeddingConfig(dg.Config):
    model_path: str = Field("", description="Local sentence-transformers folder; empty = the bundled all-MiniLM-L6-v2")
    batch_size: int = 128
    max_seq_length: int = Field(0, description="Tokens per text; 0 = the model's default")
    device: str = Field("", description="torch device; empty = cuda when available, else cpu")
    torch_threads: int = Field(0, description="torch CPU threads; 0 = half the cores (both embedding steps may run at once)")
    precision: str = Field(
        "auto",
        description="'float32', 'bfloat16', or 'auto': bfloat16 on a CPU with native bfloat16 arithmetic "
        "(AVX512-BF16/AMX: 1.7x faster), else float32. Vectors of one precision are not reused for another.",
    )


@dg.asset(group_name=GROUP, kinds={"pytorch", "parquet"}, deps=["articles"])
def text_embeddings(
    context: dg.AssetExecutionContext, config: TextEmbeddingConfig, store: HMStore
) -> dg.MaterializeResult:
    """Normalised all-MiniLM-L6-v2 vectors of each article's name, type, colour, appearance and description."""
    threads = set_torch_threads(config.torch_threads)
    target = store.asset_path("text_embeddings")
    with stopwatch() as watch:
        articles = pd.read_parquet(store.require("articles"))
        path = resolve_model_path(config.model_path)
        identity = model_identity(path)
        texts = article_texts(articles)
        device = pick_device(config.device)
        precision = pick_precision(config.precision, device)
        wanted = pd.DataFrame(
            {
                "article_id": articles["article_id"].to_numpy(np.int32),
                "content_hash": text_hashes(texts, identity, config.max_seq_length, precision).to_numpy(),
                "text": texts.to_numpy(),
            }
        )

        def embed(todo: pd.DataFrame):
            model = load_text_model(path, device, config.max_seq_length, precision)
            progress = Progress("text embeddings", len(todo), context.log.info, unit="texts")
            vectors = encode_texts(model, todo["text"].tolist(), config.batch_size, progress)
            progress.finish()
            return vectors, np.ones(len(todo), dtype=bool)

        outcome = embed_with_cache(wanted, previous_file(store, "text_embeddings"), embed)
        outcome.embeddings.metadata = {"model_identity": identity, "model_path": str(path)}
        rows = write_embeddings(outcome.embeddings, target, store.objects)
    metadata = cache_metadata(
        outcome.embedded, outcome.reused, rows, outcome.embeddings.dim, watch.seconds, store.relative(target)
    )
    metadata.update(
        {"model_path": str(path), "model_identity": identity, "device": device, "precision": precision, "torch_threads": threads}
    )
    metadata["example_text"] = texts.iloc[0] if len(texts) else ""
    return dg.MaterializeResult(metadata=metadata)


# ----------------------------------------------------------------------------- attributes


class AttributeEmbeddingConfig(dg.Config):
    weights: dict[str, float] = Field(
        default_factory=default_weights, description="Weight of each attribute block (0 drops a block)"
    )
    price_bands: int = Field(
        0,
        description="Quantile bands of the median price (from every ingested weekly transaction file); 0 = no price "
        "block. Off by default: the embeddings are not partitioned, so prices from weeks after a backtest's cut-off "
        "would leak into it; turn on only for live-week use.",
    )


@dg.asset(group_name=GROUP, kinds={"numpy", "parquet"}, deps=["articles"])
def attribute_embeddings(
    context: dg.AssetExecutionContext, config: AttributeEmbeddingConfig, store: HMStore
) -> dg.MaterializeResult:
    """Weighted one-hot vectors of each article's categorical attributes and price band, L2-normalised."""
    target = store.asset_path("attribute_embeddings")
    with stopwatch() as watch:
        articles = pd.read_parquet(store.require("articles"))
        weeks = store.partitions("transactions") if config.price_bands > 0 else []
        weekly = [store.require("transactions", week) for week in weeks]
        prices = median_prices(weekly) if weekly else None
        if config.price_bands > 0 and prices is None:
            context.log.warning("no ingested transactions under HM_HOME: attribute vectors have no price band")
        values, layout = attribute_table(articles, prices, config.price_bands, config.weights)
        outcome = embed_with_cache(
            values,
            previous_file(store, "attribute_embeddings"),
            lambda todo: (encode_attributes(todo, layout), np.ones(len(todo), dtype=bool)),
            dim=layout.dim,
        )
        outcome.embeddings.metadata = {"layout": layout.fingerprint}
        rows = write_embeddings(outcome.embeddings, target, store.objects)
    metadata = cache_metadata(
        outcome.embedded, outcome.reused, rows, outcome.embeddings.dim, watch.seconds, store.relative(target)
    )
    metadata["price_band"] = (
        f"{config.price_bands} quantile bands of the median price over {len(weekly)} weekly transaction files"
        if prices is not None
        else "skipped (no ingested transactions)" if config.price_bands > 0 else "off"
    )
    metadata["layout_fingerprint"] = layout.fingerprint
    metadata["blocks"] = markdown_table(
        pd.DataFrame(
            {
                "block": list(layout.blocks),
                "values": [len(v) for v in layout.blocks.values()],
                "weight": [layout.weights[b] for b in layout.blocks],
            }
        ),
        floatfmt=".2f",
    )
    return dg.MaterializeResult(metadata=metadata)


# ----------------------------------------------------------------------------- indexes


class IndexConfig(dg.Config):
    m: int = Field(DEFAULT_M, description="hnswlib M: links per node")
    ef_construction: int = Field(0, description="hnswlib ef_construction; 0 = the index's own default (below)")
    ef: int = Field(DEFAULT_EF, description="Search beam width stored with the index (raised to k at query time)")
    seed: int = 0
    threads: int = Field(1, description="Build threads: 1 = a reproducible graph (the default); -1 = all cores, faster but not reproducible")


def build_index_asset(name: str, source: str, ef_construction: int = DEFAULT_EF_CONSTRUCTION) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name=GROUP,
        kinds={"hnswlib", "parquet"},
        deps=[source],
        description=f"hnswlib cosine index over `{source}` (graph file + article_id order in {name}.parquet).",
    )
    def _index(config: IndexConfig, store: HMStore) -> dg.MaterializeResult:
        embeddings = read_embeddings(store.require(source))
        construction = config.ef_construction or ef_construction
        build = save_index(
            embeddings.article_ids,
            embeddings.vectors,
            store.asset_path(name),
            m=config.m,
            ef_construction=construction,
            ef=config.ef,
            seed=config.seed,
            threads=config.threads,
            objects=store.objects,
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": build.vectors_indexed,
                "vectors_indexed": build.vectors_indexed,
                "skipped_zero_vectors": build.skipped_zero_vectors,
                "dim": build.dim,
                "build_seconds": build.seconds,
                "M": config.m,
                "ef_construction": construction,
                "ef": config.ef,
                "index_file": dg.MetadataValue.path(store.relative(build.index_file)),
            }
        )

    return _index


# The full catalogue's image and attribute graphs find the exact 30 nearest at recall 0.9995 or more
# with ef_construction 100 as with 200, in half the build; the text graph's recall drops from 0.993
# to 0.981 at 100, so it keeps 200 (benchmarks/RESULTS.md).
image_index = build_index_asset("image_index", "image_embeddings", ef_construction=100)
text_index = build_index_asset("text_index", "text_embeddings")
attribute_index = build_index_asset("attribute_index", "attribute_embeddings", ef_construction=100)

content_assets = [image_embeddings, text_embeddings, attribute_embeddings, image_index, text_index, attribute_index]
