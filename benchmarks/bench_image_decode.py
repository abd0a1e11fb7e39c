"""What decoding real-size JPEGs costs the first catalogue snapshot, and what it no longer repeats.

Real H&M images are 1166x1750 JPEGs; hm-synth draws 64x96 ones. This benchmark upscales
``--images`` of a data set's images to the real size with photo-like grain (about 300 KiB each, the
real files' size), then measures:
- the catalogue's probe (``article_images``: does each file decode?): a full-size decode on one
  thread, as it was, against ``catalogue_with_thumbnails`` (the smallest JPEG scale, two threads,
  keeping each image at the encoder's 64 px); the verdicts must be equal; then writing and reading
  back the thumbnails' file;
- with an untrained encoder of the default shape, ``--reused-share`` of the images decoded as
  training does (``decode_images``), then the embedding pass over all of them, taking turns:
  decoding every image; taking the training's decoded ones (``DecodedImages``); taking every image
  from the catalogue's thumbnails. The vectors must be equal. At full scale training decodes 25,000
  images (20,000 training, 5,000 held out) of 104,466.

    python benchmarks/bench_image_decode.py --data-dir /tmp/hm_full --images 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hm_assets.pipeline.features.embeddings.image import (
    DecodedImages,
    ImageSettings,
    create_model,
    decode_images,
    embed_images,
    image_keys,
)
from hm_assets.pipeline.features.embeddings.runtime import set_torch_threads
from hm_assets.pipeline.ingest.ingest import Thumbnails, catalogue_with_thumbnails
from hm_assets.platform.store import write_parquet

REAL_SIZE = (1166, 1750)


def real_size_copies(sources: list[Path], folder: Path, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for source in sources:
        image = Image.open(source).convert("RGB").resize(REAL_SIZE, Image.Resampling.BICUBIC)
        pixels = np.asarray(image, np.float32) + rng.normal(0, 3, (REAL_SIZE[1], REAL_SIZE[0], 1)).astype(np.float32)
        target = folder / "images" / source.name[:3] / source.name  # the data set's own layout
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target, quality=90)
        paths.append(str(target))
    return paths


def full_size_probe(path: Path) -> tuple[bool, int, int]:
    """The catalogue's probe before 2026-12-05 (late): every image decoded at full size."""
    try:
        with Image.open(path) as image:
            image.load()
            return True, int(image.width), int(image.height)
    except Exception:
        return False, 0, 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--reused-share", type=float, default=25_000 / 104_466)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = ImageSettings()
    set_torch_threads(args.threads)
    sources = sorted(Path(args.data_dir, "images").rglob("*.jpg"))[: args.images]
    with tempfile.TemporaryDirectory() as folder:
        paths = real_size_copies(sources, Path(folder))
        mean_kib = np.mean([Path(p).stat().st_size for p in paths]) / 1024
        ids = [int(Path(p).stem) for p in paths]
        started = time.perf_counter()
        before = [full_size_probe(Path(p)) for p in paths]
        probe_before = time.perf_counter() - started
        started = time.perf_counter()
        table, thumbnails = catalogue_with_thumbnails(Path(folder), ids, workers=settings.decode_workers)
        probe_now = time.perf_counter() - started
        assert list(zip(table["readable"], table["width"], table["height"])) == before, "the probes disagree"
        started = time.perf_counter()
        write_parquet(thumbnails.to_table(), Path(folder) / "thumbnails.parquet")
        thumbnails = Thumbnails.read(Path(folder) / "thumbnails.parquet")
        thumbnail_io = time.perf_counter() - started
        thumbnail_kib = (Path(folder) / "thumbnails.parquet").stat().st_size / 1024 / len(thumbnails.paths)
        from_catalogue = DecodedImages.current(thumbnails, image_keys(table))
        size = settings.resolved_img_size()
        model = create_model(settings.model_name, size, settings.resolved_patch_size(), global_pool=settings.global_pool)
        chosen = sorted(np.random.default_rng(0).choice(len(paths), int(len(paths) * args.reused_share), replace=False))
        started = time.perf_counter()
        pixels, ok = decode_images([paths[i] for i in chosen], size, settings.decode_workers)
        training_decode = time.perf_counter() - started
        decoded = DecodedImages.of([paths[i] for i, good in zip(chosen, ok) if good], pixels[ok])
        embed_images(model, paths[:256], size, "cpu", settings.embed_batch_size, settings.decode_workers)  # warm-up
        runs: dict[str, list[float]] = {
            "decoding every image": [], "the training's images taken": [], "every image from the catalogue's thumbnails": []
        }
        base = None
        for _ in range(args.repeats):
            for name, given in zip(runs, (None, decoded, from_catalogue)):
                started = time.perf_counter()
                vectors, _ = embed_images(
                    model, paths, size, "cpu", settings.embed_batch_size, settings.decode_workers, None, "float32", given
                )
                runs[name].append(time.perf_counter() - started)
                base = vectors if base is None else base
                assert np.array_equal(vectors, base), "the vectors differ"
    per_image = training_decode / len(chosen)
    print(f"The catalogue's probe of {len(paths)} images: {1000 * probe_before / len(paths):.2f} ms an image at full size on one "
          f"thread (before), {1000 * probe_now / len(paths):.2f} ms now; at 105,542 images {105_542 * probe_before / len(paths):.0f} s "
          f"against {105_542 * probe_now / len(paths):.0f} s; the thumbnails' file written and read back in "
          f"{1000 * thumbnail_io / len(paths):.3f} ms an image ({thumbnail_kib:.1f} KiB an image on disk)")
    print(f"{len(paths)} images of {REAL_SIZE[0]}x{REAL_SIZE[1]}, {mean_kib:.0f} KiB on average; {len(chosen)} decoded as training does "
          f"in {training_decode:.2f} s ({1000 * per_image:.2f} ms an image, {settings.decode_workers} decode threads)")
    print(f"| embedding pass ({args.repeats} runs each, alternating) | fastest s | median s |\n| --- | ---: | ---: |")
    for name, seconds in runs.items():
        print(f"| {name} | {min(seconds):.2f} | {float(np.median(seconds)):.2f} |")
    print(f"At full scale, 25,000 images not decoded twice: about {25_000 * per_image:.0f} s at this rate.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
