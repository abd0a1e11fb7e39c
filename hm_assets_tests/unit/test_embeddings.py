"""Content embeddings on a tiny planted catalogue: neighbours, caching, bad images, checkpoints, Dagster."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from hm_assets.pipeline.features.embeddings.attributes import attribute_table, encode_attributes
from hm_assets.pipeline.features.embeddings.cache import embed_with_cache, read_embeddings, write_embeddings
from hm_assets.pipeline.ingest.data_contract import image_path
from hm_assets.pipeline.features.embeddings.image import (
    SOURCE_CHECKPOINT,
    SOURCE_TRAINED,
    ImageSettings,
    create_model,
    normalisation,
    run_image_embeddings,
    to_tensor,
)
from hm_assets.pipeline.features.embeddings.index import load_index, save_index
from hm_assets.pipeline.features.embeddings.runtime import pick_precision
from hm_assets.pipeline.features.embeddings.text import article_texts, encode_texts, load_text_model, model_identity, resolve_model_path, text_hashes
from hm_assets.platform.store import write_parquet
from hm_assets.pipeline.ingest.ingest import THUMBNAIL_SIZE, Thumbnails, catalogue_images, catalogue_with_thumbnails, load_image, probe_image

torch.set_num_threads(1)  # one thread: the machine is shared, and 2 threads under contention are far slower

# ----------------------------------------------------------------------------- a planted catalogue
# 4 product types x 2 appearances = 8 products, each in 4 colours (its colour variants) = 32 articles.

COLOURS = {  # name: (rgb, colour_group_code, perceived value id/name, perceived master id/name)
    "Green": ((30, 160, 60), 9, 2, "Medium", 19, "Green"),
    "Yellow": ((230, 200, 30), 10, 3, "Light", 8, "Yellow"),
    "Red": ((200, 30, 30), 42, 2, "Medium", 18, "Red"),
    "Blue": ((30, 60, 200), 71, 4, "Dark", 2, "Blue"),
}
TYPES = {  # name: (product_type_no, product group, department_no, department, garment_group_no, section_no, box)
    "Trousers": (272, "Garment Lower body", 1722, "Trousers", 1009, 15, (6, 6, 58, 90)),
    "Dress": (265, "Garment Full body", 1313, "Dresses", 1013, 18, (4, 10, 60, 86)),
    "Sweater": (252, "Garment Upper body", 1626, "Knitwear", 1003, 15, (2, 14, 62, 82)),
    "Shorts": (274, "Garment Lower body", 1747, "Shorts", 1025, 53, (8, 4, 56, 92)),
}
APPEARANCES = {"Solid": 1010016, "Stripe": 1010017}
NAMES = {
    ("Trousers", "Solid"): "Tilda slacks", ("Trousers", "Stripe"): "Pinstripe slacks",
    ("Dress", "Solid"): "Mia sundress", ("Dress", "Stripe"): "Sailor sundress",
    ("Sweater", "Solid"): "Cosy knit jumper", ("Sweater", "Stripe"): "Breton knit jumper",
    ("Shorts", "Solid"): "Denim cutoff shorts", ("Shorts", "Stripe"): "Linen beach shorts",
}
DESCRIPTIONS = {
    "Trousers": "Long trousers in woven fabric with a high waist, zip fly and straight legs.",
    "Dress": "Short sleeveless dress in airy cotton with a flared skirt and narrow shoulder straps.",
    "Sweater": "Long-sleeved jumper in a soft knit with dropped shoulders and ribbing at the cuffs.",
    "Shorts": "Short shorts in cotton with an elasticated waist and side pockets.",
}


def planted_articles() -> pd.DataFrame:
    rows, code = [], 100000
    for kind, (type_no, group, dept, dept_name, garment, section, _) in TYPES.items():
        for appearance, appearance_no in APPEARANCES.items():
            code += 1
            for c, (colour, (_, colour_code, pcv, pcv_name, pcm, pcm_name)) in enumerate(COLOURS.items()):
                rows.append(
                    dict(
                        article_id=code * 1000 + c + 1, product_code=code, prod_name=NAMES[(kind, appearance)],
                        product_type_no=type_no, product_type_name=kind, product_group_name=group,
                        graphical_appearance_no=appearance_no, graphical_appearance_name=appearance,
                        colour_group_code=colour_code, colour_group_name=colour, perceived_colour_value_id=pcv,
                        perceived_colour_value_name=pcv_name, perceived_colour_master_id=pcm,
                        perceived_colour_master_name=pcm_name, department_no=dept, department_name=dept_name,
                        index_code="A", index_name="Ladieswear", index_group_no=1, index_group_name="Ladieswear",
                        section_no=section, section_name=f"Womens {dept_name}", garment_group_no=garment,
                        garment_group_name=dept_name, detail_desc=DESCRIPTIONS[kind],
                    )
                )
    return pd.DataFrame(rows)


def draw_article(article, rng: np.random.Generator) -> Image.Image:
    """A 64x96 'photo': the garment's box in its colour (stripes for Stripe), jittered, with noise."""
    image = Image.new("RGB", (64, 96), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    rgb = COLOURS[article.colour_group_name][0]
    dx, dy = rng.integers(-3, 4, 2)
    x0, y0, x1, y1 = TYPES[article.product_type_name][-1]
    box = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
    draw.rectangle(box, fill=rgb)
    if article.graphical_appearance_name == "Stripe":
        for y in range(box[1], box[3], 8):
            draw.rectangle((box[0], y, box[2], y + 3), fill=(20, 20, 20))
    pixels = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, (96, 64, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_images(articles: pd.DataFrame, data_dir: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for article in articles.itertuples(index=False):
        path = image_path(data_dir, article.article_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_article(article, rng).save(path, quality=90)


@pytest.fixture
def planted(tmp_path: Path):
    articles = planted_articles()
    data_dir = tmp_path / "data"
    write_images(articles, data_dir)
    return articles, data_dir


def top_neighbours(article_ids: np.ndarray, vectors: np.ndarray, k: int, where: Path) -> pd.DataFrame:
    save_index(article_ids, vectors, where / "test_index.parquet", threads=1)
    return load_index(where / "test_index.parquet").neighbours(article_ids, k, threads=1)


def share_same(neighbours: pd.DataFrame, articles: pd.DataFrame, columns: list[str]) -> float:
    key = articles.set_index("article_id")[columns].astype(str).agg("|".join, axis=1)
    return float((key.loc[neighbours["seed_article_id"]].to_numpy() == key.loc[neighbours["article_id"]].to_numpy()).mean())


# float32: the same arithmetic on every machine ("auto" is bfloat16 only where the CPU has it natively;
# the bfloat16 paths have tests of their own that force it)
TINY_IMAGE = dict(img_size=32, patch_size=8, max_epochs=3, batch_size=16, decode_workers=1, torch_threads=1, precision="float32")

# ----------------------------------------------------------------------------- attributes


def test_attribute_neighbours_share_type_and_cosine_is_weighted_share(tmp_path):
    articles = planted_articles()
    values, layout = attribute_table(articles)
    vectors = encode_attributes(values, layout)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    neighbours = top_neighbours(values["article_id"].to_numpy(), vectors, 3, tmp_path)
    assert len(neighbours) == 3 * len(articles)
    assert share_same(neighbours, articles, ["product_type_name"]) == 1.0
    # cosine = weighted share of agreeing blocks: two colour variants differ in colour group, value, master
    a, b = 0, 1
    assert articles.loc[a, "product_code"] == articles.loc[b, "product_code"]
    w = layout.weights
    expected = 1 - (w["colour_group"] + w["perceived_colour_master"] + w["perceived_colour_value"]) / sum(w.values())
    assert float(vectors[a] @ vectors[b]) == pytest.approx(expected, abs=1e-5)


def test_attribute_cache_reembeds_only_the_changed_article(tmp_path):
    articles = planted_articles()
    prices = pd.Series(np.linspace(5, 50, len(articles)), index=articles["article_id"])
    target = tmp_path / "attribute_embeddings.parquet"

    def run(frame):
        values, layout = attribute_table(frame, prices, 4)
        outcome = embed_with_cache(values, target if target.exists() else None,
                                   lambda todo: (encode_attributes(todo, layout), np.ones(len(todo), bool)))
        write_embeddings(outcome.embeddings, target)
        return outcome

    first = run(articles)
    assert (first.embedded, first.reused) == (32, 0)
    again = run(articles)
    assert (again.embedded, again.reused) == (0, 32)
    changed = articles.copy()
    changed.loc[5, ["colour_group_code", "colour_group_name"]] = [42, "Red"]  # another existing colour
    after = run(changed)
    assert (after.embedded, after.reused) == (1, 31)
    stored = read_embeddings(target)
    row = int(np.flatnonzero(stored.article_ids == articles.loc[5, "article_id"])[0])
    assert not np.allclose(stored.vectors[row], first.embeddings.vectors[5])
    # unknown values leave their block empty rather than matching each other
    unknown = articles.copy()
    unknown.loc[[0, 1], "product_group_name"] = "Unknown"
    values, _ = attribute_table(unknown)
    assert values.loc[0, "product_group"] is None


# ----------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def text_model():
    return load_text_model(resolve_model_path(), "cpu")


def test_text_neighbours_are_colour_variants_and_cache_is_incremental(tmp_path, text_model):
    articles = planted_articles()
    texts = article_texts(articles)
    assert texts[0] == "Tilda slacks. Trousers. Green. Solid. Long trousers in woven fabric with a high waist, zip fly and straight legs"
    identity = model_identity(resolve_model_path())
    target = tmp_path / "text_embeddings.parquet"

    def run(frame):
        texts = article_texts(frame)
        wanted = pd.DataFrame({"article_id": frame["article_id"], "content_hash": text_hashes(texts, identity, 0), "text": texts})
        outcome = embed_with_cache(wanted, target if target.exists() else None,
                                   lambda todo: (encode_texts(text_model, todo["text"].tolist()), np.ones(len(todo), bool)))
        write_embeddings(outcome.embeddings, target)
        return outcome

    first = run(articles)
    assert (first.embedded, first.reused, first.embeddings.dim) == (32, 0, 384)
    assert np.allclose(np.linalg.norm(first.embeddings.vectors, axis=1), 1.0, atol=1e-4)
    neighbours = top_neighbours(first.embeddings.article_ids, first.embeddings.vectors, 3, tmp_path)
    assert share_same(neighbours, articles, ["product_code"]) == 1.0  # the 3 colour variants of each article

    changed = articles.copy()
    changed.loc[7, "detail_desc"] = "Wide trousers in linen with pleats."
    after = run(changed)
    assert (after.embedded, after.reused) == (1, 31)


def test_bfloat16_text_vectors_keep_their_neighbours_and_their_own_cache_key(text_model):
    """bfloat16 (the default where the CPU computes in it natively) gives unit vectors whose nearest
    neighbours are float32's, and vectors of one precision are never reused for the other."""
    articles = planted_articles()
    texts = article_texts(articles)
    exact = encode_texts(text_model, texts.tolist())
    fast = encode_texts(load_text_model(resolve_model_path(), "cpu", precision="bfloat16"), texts.tolist())
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert float((exact * fast).sum(axis=1).min()) > 0.99
    nearest = [np.argsort(-(v @ v.T - 2 * np.eye(len(v))), axis=1)[:, :2] for v in (exact, fast)]
    assert np.mean([set(a) == set(b) for a, b in zip(*nearest)]) >= 0.9
    identity = model_identity(resolve_model_path())
    assert not set(text_hashes(texts, identity, 0, "bfloat16")) & set(text_hashes(texts, identity, 0, "float32"))


def test_precision_choice(monkeypatch):
    from hm_assets.pipeline.features.embeddings import runtime

    assert pick_precision("float32", "cpu") == "float32"
    assert pick_precision("bfloat16", "cpu") == "bfloat16"
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(runtime, "native_bfloat16", lambda native=native: native)
        assert pick_precision("auto", "cpu") == expected
        assert pick_precision("auto", "cuda") == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        pick_precision("int8", "cpu")


# ----------------------------------------------------------------------------- images


def test_image_trained_path_clusters_colour_and_reuses_encoder_and_vectors(tmp_path, planted):
    articles, data_dir = planted
    catalogue = catalogue_images(data_dir, articles["article_id"].tolist())
    settings = ImageSettings(**TINY_IMAGE)
    weights_dir, target = tmp_path / "weights", tmp_path / "image_embeddings.parquet"

    run = run_image_embeddings(catalogue, articles, settings, weights_dir, None)
    assert run.source == SOURCE_TRAINED and run.info["encoder"].startswith("trained now")
    training = run.info["training"]
    assert training["epochs"] == 3 and training["stopped_by"] == "max_epochs"
    assert set(training["accuracy"]) == {"product_type_name", "colour_group_name", "graphical_appearance_name"}
    assert training["holdout_images"] == 6 and training["train_images"] == 26
    embeddings = run.outcome.embeddings
    assert len(embeddings) == 32 and embeddings.dim == 192 and run.missing_or_unreadable == 0
    neighbours = top_neighbours(embeddings.article_ids, embeddings.vectors, 3, tmp_path)
    assert share_same(neighbours, articles, ["colour_group_name"]) >= 0.85
    assert share_same(neighbours, articles, ["colour_group_name", "graphical_appearance_name"]) >= 0.6
    # the images training decoded are embedded without decoding them again, to the same vectors
    assert (run.info["images_already_decoded"], run.info["images_already_decoded_by"]) == (32, "the encoder's training")
    fresh = run_image_embeddings(catalogue, articles, settings, weights_dir, None)
    assert fresh.info["encoder"] == "reused" and "images_already_decoded" not in fresh.info
    assert np.array_equal(fresh.outcome.embeddings.vectors, embeddings.vectors)
    write_embeddings(embeddings, target)

    # unchanged catalogue: the saved encoder and every vector are reused
    again = run_image_embeddings(catalogue, articles, settings, weights_dir, target)
    assert again.info["encoder"] == "reused" and (again.outcome.embedded, again.outcome.reused) == (0, 32)
    assert np.array_equal(again.outcome.embeddings.vectors, embeddings.vectors)

    # seeded: training again from scratch gives the same encoder and vectors
    retrained = run_image_embeddings(catalogue, articles, ImageSettings(**TINY_IMAGE, retrain=True), weights_dir, None)
    assert retrained.info["encoder"].startswith("trained now (retrain requested)")
    assert np.allclose(retrained.outcome.embeddings.vectors, embeddings.vectors, atol=1e-5)

    # one image redrawn: the encoder is kept (1/32 changed), only that article is embedded again
    changed_id = int(articles.loc[3, "article_id"])
    draw_article(articles.iloc[3], np.random.default_rng(7)).save(image_path(data_dir, changed_id))
    os.utime(image_path(data_dir, changed_id), ns=(1, 10**18))
    after = run_image_embeddings(catalogue, articles, settings, weights_dir, target)
    assert after.info["encoder"].startswith("reused (3.1%")
    assert (after.outcome.embedded, after.outcome.reused) == (1, 31)



def test_image_training_is_bounded_in_steps_not_by_the_clock(tmp_path, planted):
    articles, data_dir = planted
    catalogue = catalogue_images(data_dir, articles["article_id"].tolist())
    # 26 training images in batches of 16: 2 steps an epoch; 3 steps end mid-way through the second
    bounded = run_image_embeddings(catalogue, articles, ImageSettings(**TINY_IMAGE, max_train_steps=3), tmp_path / "a", None)
    training = bounded.info["training"]
    assert (training["steps"], training["epochs"], training["stopped_by"]) == (3, 1.5, "max_train_steps")
    assert ImageSettings().max_train_seconds == 0  # by default no time budget: the same encoder on any machine
    # a step bound beyond the epochs changes nothing but the encoder's key
    loose = run_image_embeddings(catalogue, articles, ImageSettings(**TINY_IMAGE, max_train_steps=1000), tmp_path / "b", None)
    assert (loose.info["training"]["steps"], loose.info["training"]["stopped_by"]) == (6, "max_epochs")
    assert ImageSettings(**TINY_IMAGE, max_train_steps=3).training_key() != ImageSettings(**TINY_IMAGE).training_key()


def test_a_bfloat16_encoder_trains_under_its_own_key_and_still_clusters_colour(tmp_path, planted):
    articles, data_dir = planted
    catalogue = catalogue_images(data_dir, articles["article_id"].tolist())
    settings = ImageSettings(**{**TINY_IMAGE, "precision": "bfloat16"})
    assert settings.training_key("bfloat16") != settings.training_key("float32") == settings.training_key()
    run = run_image_embeddings(catalogue, articles, settings, tmp_path / "w", None)
    manifests = list((tmp_path / "w").glob("encoder-*.json"))
    assert [m.name for m in manifests] == [f"encoder-{settings.training_key('bfloat16')}.json"]
    assert json.loads(manifests[0].read_text())["precision"] == "bfloat16"
    embeddings = run.outcome.embeddings
    neighbours = top_neighbours(embeddings.article_ids, embeddings.vectors, 3, tmp_path)
    assert share_same(neighbours, articles, ["colour_group_name"]) >= 0.85


def test_the_image_probe_decodes_every_byte_and_reports_the_full_size(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (1750, 1166, 3), dtype=np.uint8))
    whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    photo.save(whole, quality=90)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # the header intact, half the scans gone
    readable, width, height, pixels = probe_image(whole)  # decoded at 1/8 scale, the size is the file's own
    assert (readable, width, height) == (True, 1166, 1750) and np.array_equal(pixels, load_image(whole, THUMBNAIL_SIZE))
    assert probe_image(cut) == (False, 0, 0, None)


def test_the_catalogues_thumbnails_are_the_encoders_pixels_kept_per_file_version_and_embedded_as_decoded(tmp_path, planted):
    articles, data_dir = planted
    ids = articles["article_id"].tolist()
    catalogue, thumbnails = catalogue_with_thumbnails(data_dir, ids)
    assert thumbnails.size == THUMBNAIL_SIZE == 64 and len(thumbnails.paths) == 32
    for path, pixels in zip(thumbnails.paths, thumbnails.pixels):
        assert np.array_equal(pixels, load_image(path, 64))
    stored = Thumbnails.from_table(thumbnails.to_table())
    assert (stored.paths, stored.keys) == (thumbnails.paths, thumbnails.keys) and np.array_equal(stored.pixels, thumbnails.pixels)

    # an unchanged file version keeps its verdict and thumbnail without being decoded: garbage of the
    # same length under the old modification time is not noticed; a new version is decoded
    kept, redrawn = image_path(data_dir, ids[2]), image_path(data_dir, ids[5])
    stat = kept.stat()
    kept.write_bytes(b"\xff" * stat.st_size)
    os.utime(kept, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    draw_article(articles.iloc[5], np.random.default_rng(9)).save(redrawn, quality=90)
    os.utime(redrawn, ns=(1, 10**18))
    again_table, again = catalogue_with_thumbnails(data_dir, ids, catalogue, previous_thumbnails=stored)
    pd.testing.assert_frame_equal(again_table.drop(columns=["size_bytes", "mtime_ns"]), catalogue.drop(columns=["size_bytes", "mtime_ns"]))
    position = {path: i for i, path in enumerate(again.paths)}
    assert np.array_equal(again.pixels[position[str(kept)]], thumbnails.pixels[position[str(kept)]])
    assert np.array_equal(again.pixels[position[str(redrawn)]], load_image(redrawn, 64))
    assert not np.array_equal(again.pixels[position[str(redrawn)]], thumbnails.pixels[position[str(redrawn)]])
    assert again.keys[position[str(redrawn)]] != thumbnails.keys[position[str(redrawn)]]

    # the encoder at the thumbnails' size trains and embeds from them, to the vectors of decoding the files
    write_images(articles, data_dir)
    catalogue, thumbnails = catalogue_with_thumbnails(data_dir, ids)
    settings = ImageSettings(**{**TINY_IMAGE, "img_size": 64, "max_epochs": 1})
    thumbnails_file, stale_file = tmp_path / "thumbnails.parquet", tmp_path / "stale.parquet"
    write_parquet(thumbnails.to_table(), thumbnails_file)
    taken = run_image_embeddings(catalogue, articles, settings, tmp_path / "a", None, thumbnails=thumbnails_file)
    assert (taken.info["images_already_decoded"], taken.info["images_already_decoded_by"]) == (32, "the catalogue's thumbnails")
    decoding = run_image_embeddings(catalogue, articles, settings, tmp_path / "b", None)
    assert decoding.info["images_already_decoded_by"] == "the encoder's training"
    assert np.array_equal(taken.outcome.embeddings.vectors, decoding.outcome.embeddings.vectors)
    # a thumbnail of an older file version is not taken
    stale = Thumbnails(thumbnails.size, thumbnails.paths, ["0:0"] + thumbnails.keys[1:], thumbnails.pixels)
    write_parquet(stale.to_table(), stale_file)
    partly = run_image_embeddings(catalogue, articles, settings, tmp_path / "a", None, thumbnails=stale_file)
    assert partly.info["images_already_decoded"] == 31
    assert np.array_equal(partly.outcome.embeddings.vectors, taken.outcome.embeddings.vectors)


def test_corrupt_and_missing_images_are_counted_not_fatal(tmp_path, planted):
    articles, data_dir = planted
    missing_id, corrupt_id = int(articles.loc[0, "article_id"]), int(articles.loc[1, "article_id"])
    image_path(data_dir, missing_id).unlink()
    catalogue = catalogue_images(data_dir, articles["article_id"].tolist())
    assert catalogue.set_index("article_id").loc[corrupt_id, "readable"]
    image_path(data_dir, corrupt_id).write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG any more")  # after the probe
    run = run_image_embeddings(catalogue, articles, ImageSettings(**{**TINY_IMAGE, "max_epochs": 1}), tmp_path / "w", None)
    assert run.missing_or_unreadable == 2 and set(run.unreadable_ids) == {missing_id, corrupt_id}
    assert run.outcome.failed_ids.tolist() == [corrupt_id]
    assert len(run.outcome.embeddings) == 30 and corrupt_id not in run.outcome.embeddings.article_ids


def test_configured_checkpoint_is_loaded(tmp_path, planted):
    articles, data_dir = planted
    torch.manual_seed(123)
    reference = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8)
    checkpoint = tmp_path / "vit_tiny_random.pth"
    torch.save(reference.state_dict(), checkpoint)
    catalogue = catalogue_images(data_dir, articles["article_id"].tolist()[:8])
    settings = ImageSettings(**{**TINY_IMAGE, "checkpoint_path": str(checkpoint), "seed": 999, "precision": "float32"})
    run = run_image_embeddings(catalogue, articles, settings, tmp_path / "w", None)
    assert run.source == SOURCE_CHECKPOINT and "training" not in run.info and not (tmp_path / "w").exists()
    batch = np.stack([load_image(p, 32) for p in catalogue["path"]])
    mean, std = normalisation(reference)
    with torch.inference_mode():
        expected = reference.eval()(to_tensor(batch, mean, std, "cpu")).numpy()
    assert np.allclose(run.outcome.embeddings.vectors, expected, atol=1e-5)

    # bfloat16 (the default where the CPU computes in it natively): close to float32, and its own cache key
    fast = run_image_embeddings(catalogue, articles, dataclasses.replace(settings, precision="bfloat16"), tmp_path / "w", None)
    vectors = fast.outcome.embeddings.vectors
    cosine = (vectors * expected).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(vectors, expected)
    assert fast.model_identity == run.model_identity + "|bfloat16"


# ----------------------------------------------------------------------------- the Dagster assets


def test_materialize_content_assets(tmp_path, planted):
    import dagster as dg

    from hm_assets.defs.assets.content import ImageEmbeddingConfig, content_assets
    from hm_assets.defs.assets.ingest import article_images, articles as articles_asset
    from hm_assets.defs.resources import HMDataset, HMStore

    articles, data_dir = planted
    kaggle = articles.assign(article_id=articles["article_id"].map("{:010d}".format))
    kaggle.to_csv(data_dir / "articles.csv", index=False)
    resources = {"store": HMStore(home=str(tmp_path / "home")), "dataset": HMDataset(data_dir=str(data_dir))}
    run_config = dg.RunConfig(ops={"image_embeddings": ImageEmbeddingConfig(**TINY_IMAGE)})
    everything = [articles_asset, article_images, *content_assets]

    result = dg.materialize(everything, resources=resources, run_config=run_config)
    assert result.success
    meta = {
        event.asset_key.to_user_string(): event.event_specific_data.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    for name in ("image_embeddings", "text_embeddings", "attribute_embeddings"):
        assert meta[name]["embedded_now"].value == 32 and meta[name]["reused_from_cache"].value == 0
    for name in ("image_index", "text_index", "attribute_index"):
        assert meta[name]["vectors_indexed"].value == 32
    assert [meta[name]["ef_construction"].value for name in ("image_index", "text_index", "attribute_index")] == [100, 200, 100]
    assert meta["image_embeddings"]["source"].value == SOURCE_TRAINED
    assert "holdout_accuracy/colour_group_name" in meta["image_embeddings"]
    assert meta["attribute_embeddings"]["price_band"].value == "off"  # off by default: no leakage into backtests

    again = dg.materialize(everything, resources=resources, run_config=run_config,
                           selection=["image_embeddings", "text_embeddings", "attribute_embeddings"])
    assert again.success
    for event in again.get_asset_materialization_events():
        metadata = event.event_specific_data.materialization.metadata
        assert metadata["embedded_now"].value == 0 and metadata["reused_from_cache"].value == 32
