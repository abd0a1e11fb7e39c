"""Content-embedding throughput on this machine: images (timm ViT), texts (MiniLM), attributes, hnswlib.

    python benchmarks/bench_embeddings.py --items 256 --threads 2 [--out table.md]

Measures, on synthetic items drawn in memory (no data set needed, nothing downloaded):
- image decode + preprocess (64x96 JPEGs -> square tensors), images/s;
- image forward pass only (pre-decoded batches, inference mode), images/s, for the trained-path
  default (vit_tiny_patch16_224 at 64 px, patch 16), 64 px patch 8, and the checkpoint default
  (224 px, patch 16);
- training (forward + backward + AdamW step, 3 heads) seconds per epoch over ``--items`` images,
  at 64 px with patch 16 (the default) and patch 8;
- text embedding (all-MiniLM-L6-v2 from the installed package), texts/s;
- attribute vectors for 105k articles and an hnswlib build over ``--items`` x 10 text-sized vectors.
Prints a Markdown table (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host import machine  # noqa: E402


def synthetic_jpegs(n: int, seed: int = 0) -> list[bytes]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = Image.new("RGB", (64, 96), (250, 250, 250))
        draw = ImageDraw.Draw(image)
        x0, y0 = rng.integers(2, 16, 2)
        x1, y1 = 64 - rng.integers(2, 16), 96 - rng.integers(2, 16)
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        if rng.random() < 0.5:
            for y in range(y0, y1, 8):
                draw.rectangle((x0, y, x1, y + 3), fill=(20, 20, 20))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_images(n: int, batch: int, rows: list) -> None:
    import torch

    from hm_assets.pipeline.features.embeddings.image import ImageSettings, create_model, load_image, normalisation, to_tensor, train_on_catalogue

    jpegs = synthetic_jpegs(n)
    seconds = timed(lambda: [load_image(io.BytesIO(b), 64) for b in jpegs])
    rows.append(("image decode + pad to 64 px (Pillow, 1 thread)", n, seconds, f"{n / seconds:.0f} images/s"))
    decoded = np.stack([load_image(io.BytesIO(b), 64) for b in jpegs])

    geometries = (
        ("trained default: 64 px, patch 16", 64, 16),
        ("64 px, patch 8", 64, 8),
        ("checkpoint default: 224 px, patch 16", 224, 0),
    )
    for label, size, patch in geometries:
        torch.manual_seed(0)
        model = create_model("vit_tiny_patch16_224", size, patch).eval()
        mean, std = normalisation(model)
        images = decoded if size == 64 else np.stack([load_image(io.BytesIO(b), size) for b in jpegs])

        def forward():
            with torch.inference_mode():
                for start in range(0, n, batch):
                    model(to_tensor(images[start : start + batch], mean, std, "cpu"))

        forward()  # warm-up
        seconds = timed(forward, repeat=2)
        rows.append((f"image forward, vit_tiny {label}, batch {batch}", n, seconds, f"{n / seconds:.0f} images/s"))

    rng = np.random.default_rng(0)
    labels = pd.DataFrame(
        {
            "product_type_name": rng.choice([f"type{i}" for i in range(12)], n),
            "colour_group_name": rng.choice([f"colour{i}" for i in range(8)], n),
            "graphical_appearance_name": rng.choice(["Solid", "Stripe", "Dot"], n),
        }
    )
    settings = ImageSettings(max_epochs=2, max_train_seconds=1e9, batch_size=batch, holdout_fraction=0.0)
    for patch in (16, 8):
        torch.manual_seed(0)
        model = create_model("vit_tiny_patch16_224", 64, patch, global_pool="avg")
        report = train_on_catalogue(model, decoded, labels, settings, "cpu", (np.arange(n), np.empty(0, np.int64)))
        rows.append(
            (f"image training epoch (fwd+bwd+AdamW, 3 heads), 64 px patch {patch}, batch {batch}", n,
             report.seconds_per_epoch, f"{n / report.seconds_per_epoch:.0f} images/s")
        )


def bench_texts(n: int, rows: list, articles_csv: Path | None = None, precisions: tuple[str, ...] = ("float32",)) -> None:
    """Texts per second of MiniLM in each of ``precisions``; ``articles_csv`` (e.g. the real sample
    in ../shared/hm_reference/real_sample/articles.csv): the articles' own texts (``article_texts``, the
    first ``n`` of a seeded shuffle), else synthetic ones. With two precisions, how far the second's
    vectors are from the first's: mean cosine, and the share of each text's 10 nearest neighbours kept."""
    from hm_assets.pipeline.features.embeddings.text import article_texts, encode_texts, load_text_model, resolve_model_path

    rng = np.random.default_rng(0)
    if articles_csv is not None:
        texts = article_texts(pd.read_csv(articles_csv, dtype=str)).tolist()
        texts = [texts[i] for i in rng.permutation(len(texts))[:n]]
        source = f"texts of {articles_csv.name}"
    else:
        words = "slim wide high waist cotton linen jersey knit soft ribbed cuffs pockets zip fly buttons collar".split()
        texts = [
            f"Item {i}. {rng.choice(['Trousers', 'Dress', 'Sweater'])}. {rng.choice(['Black', 'Blue', 'Red'])}. Solid. "
            + " ".join(rng.choice(words, 14))
            for i in range(n)
        ]
        source = "synthetic texts"
    vectors = []
    for precision in precisions:
        started = time.perf_counter()
        model = load_text_model(resolve_model_path(), "cpu", precision=precision)
        rows.append((f"text model load (all-MiniLM-L6-v2, offline), {precision}", 1, time.perf_counter() - started, ""))
        encode_texts(model, texts[:32])  # warm-up
        seconds = timed(lambda: vectors.append(encode_texts(model, texts, 128)), repeat=2)
        rows.append((f"text embedding, MiniLM, batch 128, {precision}, {source}", len(texts), seconds, f"{len(texts) / seconds:.0f} texts/s"))
    if len(precisions) > 1:
        first, other = vectors[0], vectors[-1]
        neighbours = [np.argsort(-(v @ v.T - 2 * np.eye(len(v))), axis=1)[:, :10] for v in (first, other)]
        kept = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*neighbours)])
        cosine = float((first * other).sum(axis=1).mean())
        rows.append((f"{precisions[-1]} vs {precisions[0]}: mean cosine {cosine:.4f}, 10 nearest neighbours kept {kept:.3f}", len(texts), 0.0, ""))


def bench_attributes_and_index(n_index: int, rows: list) -> None:
    from hm_assets.pipeline.features.embeddings.attributes import attribute_table, encode_attributes
    from hm_assets.pipeline.features.embeddings.index import build_hnsw

    rng = np.random.default_rng(0)
    n = 105_000
    cardinalities = {"product_type_no": 131, "colour_group_code": 50, "graphical_appearance_no": 30,
                     "department_no": 299, "section_no": 56, "garment_group_no": 21, "perceived_colour_master_id": 20,
                     "perceived_colour_value_id": 8, "index_group_no": 5}
    articles = pd.DataFrame({c: rng.integers(0, k, n) for c, k in cardinalities.items()})
    articles["product_group_name"] = rng.choice([f"group{i}" for i in range(19)], n)
    articles["article_id"] = np.arange(n) + 100_000_000
    prices = pd.Series(rng.random(n), index=articles["article_id"])
    started = time.perf_counter()
    values, layout = attribute_table(articles, prices, 5)
    hashed = time.perf_counter()
    vectors = encode_attributes(values, layout)
    done = time.perf_counter()
    rows.append((f"attribute table + content hashes ({layout.dim} dims)", n, hashed - started, f"{n / (hashed - started):.0f} articles/s"))
    rows.append(("attribute encoding (numpy)", n, done - hashed, f"{n / (done - hashed):.0f} articles/s"))

    dense = rng.normal(size=(n_index, 384)).astype(np.float32)
    seconds = timed(lambda: build_hnsw(dense, threads=-1))
    rows.append(("hnswlib build, 384 dims, M=32, ef_construction=200", n_index, seconds, f"{n_index / seconds:.0f} vectors/s"))
    del vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=256, help="synthetic images and texts")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--articles-csv", type=Path, help="embed these articles' texts (default: synthetic texts)")
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                        help="text model precisions to measure (two: also how far apart their vectors are)")
    parser.add_argument("--only", choices=["images", "texts", "attributes"], help="one part only")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    header = machine()
    rows: list = []
    if args.only in (None, "images"):
        bench_images(args.items, args.batch, rows)
    if args.only in (None, "texts"):
        bench_texts(args.items, rows, args.articles_csv, tuple(args.precisions))
    if args.only in (None, "attributes"):
        bench_attributes_and_index(args.items * 10, rows)
    frame = pd.DataFrame(rows, columns=["what", "items", "seconds", "throughput"])
    frame["seconds"] = frame["seconds"].map(lambda s: f"{s:.2f}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    text = (
        f"Machine: {header}; torch {torch.__version__}, {args.threads} torch thread(s), device {device}; "
        f"{datetime.now():%Y-%m-%d %H:%M}\n\n"
        f"Command: `python benchmarks/bench_embeddings.py {' '.join(sys.argv[1:])}`\n\n"
        + frame.to_markdown(index=False)
        + "\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
