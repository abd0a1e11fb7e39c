"""Image embeddings: a timm vision transformer's pooled features of each article image.

Two ways to get the encoder (``ImageSettings.checkpoint_path`` decides):

* **checkpoint** — a local weights file (e.g. real ImageNet ViT weights) is loaded with
  ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=0)``;
  input size and patch size default to the model's own (224 / 16 for ``vit_tiny_patch16_224``).
* **trained on catalogue** — no weights are available offline, so the same timm architecture is
  trained from scratch on the catalogue's own images to predict the article's product type,
  colour group and graphical appearance (one linear head each on the pooled features), for at
  most ``max_epochs`` epochs and ``max_train_steps`` batches on at most ``max_train_images``
  images. Defaults: 64x64 input, patch 16 (a 4x4 grid, 16 tokens) and average pooling — colour,
  pattern and silhouette are visible at 64 px, and on one CPU core this trains at ~120 images/s
  where patch 8 (64 tokens) manages ~37, and embeds ~300 images/s where 224/16 manages ~19
  (benchmarks/RESULTS.md); with a GPU, ``patch_size=8`` or ``img_size=96`` are affordable.
  Accuracy per head is measured on a held-out split of images (never trained on) and reported
  next to the majority-class baseline. Training is seeded (torch, numpy, the split, the batch
  order) and bounded in steps, so the encoder does not depend on the machine's speed or load. An
  optional time budget (``max_train_seconds``, off by default) is checked between epochs
  (predicted from the last one), and only an epoch longer than the whole budget is cut; with it,
  a slower or busier machine trains a different encoder.
  The backbone's weights are saved (a timm-loadable state dict) under
  ``HM_HOME/assets/image_embeddings/encoder-<spec>.pt`` with a JSON manifest (written last) and
  the list of images it was trained on; they are reused while the catalogue's images are
  unchanged, or changed by no more than ``retrain_above_changed_fraction`` (default 25%).

Embedding = the pooled (penultimate) features, float32, not normalised (the cosine index
normalises). Images are decoded with Pillow (JPEG draft mode: big images decode at a reduced
scale), padded to a white square, batched, and run on ``cuda`` when torch sees a GPU. Where the
catalogue's thumbnails (``article_images``' probe, ``ingest.Thumbnails``) hold an image's current
file version at the encoder's input size, training and embedding take it from there instead.
An article whose image is missing or does not decode gets no vector; it is counted, never fatal.
``precision`` (default ``auto``: bfloat16 where the CPU computes in it natively, ``runtime.pick_precision``)
runs the encoder's training steps and the embedding forward pass under bfloat16 autocast: ~2x the
images per second embedding (measured at full size: 535 against 255), 1,500 training steps in
12% less time at the same held-out accuracy (benchmarks/RESULTS.md). The precision is part of
the trained encoder's key (float32's key is the one it had before) and of the vectors' model identity.

Cache key: ``hash(model identity, image file size, mtime_ns)`` where the model identity is the
architecture, input/patch size, preprocessing version and the sha1 of the weights file
(checkpoint or trained encoder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hm_assets.pipeline.features.embeddings.cache import CacheOutcome, embed_with_cache, stable_hash
from hm_assets.pipeline.features.embeddings.runtime import pick_device, pick_precision, set_torch_threads
from hm_assets.pipeline.ingest.ingest import THUMBNAIL_SIZE, Thumbnails, image_key, load_image
from hm_assets.platform.object_store import ObjectStore
from hm_assets.platform.progress import Progress
from hm_assets.platform.store import atomic_path

LABEL_COLUMNS = ("product_type_name", "colour_group_name", "graphical_appearance_name")
PREPROCESS_VERSION = "rgb-pad-white-v1"
TRAINED_DEFAULT_IMG_SIZE = THUMBNAIL_SIZE  # the catalogue keeps every image at this size
TRAINED_DEFAULT_PATCH_SIZE = 16
HOLDOUT_CAP = 5000
SOURCE_CHECKPOINT = "checkpoint"
SOURCE_TRAINED = "trained on catalogue"

log = logging.getLogger("hm_assets.pipeline.features.embeddings.image")


@dataclass
class ImageSettings:
    """Everything that decides how images are embedded (mirrors the asset's config)."""

    model_name: str = "vit_tiny_patch16_224"
    checkpoint_path: str = ""
    img_size: int = 0  # 0: the model's own size with a checkpoint, 64 when training
    patch_size: int = 0  # 0: the model's own with a checkpoint, 16 when training a ViT
    global_pool: str = "avg"  # pooling of the trained encoder; a checkpoint keeps its model's own
    # 1,500 steps of 32: five epochs of a 12,000-image catalogue's 9,600 training images, 2.4 of
    # the full catalogue's 20,000 (about 5.5 minutes on 2 CPU cores)
    max_train_steps: int = 1500
    max_train_seconds: float = 0.0  # 0: no time budget
    max_epochs: int = 5
    max_train_images: int = 20000
    holdout_fraction: float = 0.2
    batch_size: int = 32  # training batch (small catalogues need the steps)
    embed_batch_size: int = 128  # images per forward pass when embedding
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    min_class_count: int = 2
    retrain: bool = False
    retrain_above_changed_fraction: float = 0.25
    seed: int = 0
    device: str = ""  # "" = cuda if available, else cpu
    decode_workers: int = 2
    torch_threads: int = 0  # 0 = half the CPU cores (see runtime.set_torch_threads)
    precision: str = "auto"  # of training and embedding (bfloat16: under autocast); see runtime.pick_precision

    @property
    def trains(self) -> bool:
        return not self.checkpoint_path

    def resolved_img_size(self) -> int:
        return self.img_size or (TRAINED_DEFAULT_IMG_SIZE if self.trains else 0)

    def resolved_patch_size(self) -> int:
        if self.patch_size:
            return self.patch_size
        return TRAINED_DEFAULT_PATCH_SIZE if self.trains and "patch" in self.model_name else 0

    def training_key(self, precision: str = "float32") -> str:
        """Identifies a trained encoder: what it is and how it was trained (not the data); ``precision``
        is the resolved one (``runtime.pick_precision``)."""
        return stable_hash(
            self.model_name, self.resolved_img_size(), self.resolved_patch_size(), self.global_pool, PREPROCESS_VERSION,
            LABEL_COLUMNS,
            self.max_train_seconds, self.max_epochs, self.max_train_images, self.holdout_fraction, self.batch_size,
            *([f"steps={self.max_train_steps}"] if self.max_train_steps else []),
            self.learning_rate, self.weight_decay, self.min_class_count, self.seed,
            *([f"precision={precision}"] if precision != "float32" else []), length=12,
        )


# ----------------------------------------------------------------------------- model


def create_model(
    model_name: str, img_size: int = 0, patch_size: int = 0, checkpoint: str | None = None, global_pool: str = ""
):
    """A timm model with ``num_classes=0`` (forward returns pooled features).

    ``img_size``/``patch_size`` (0 = the model's own) are passed to architectures that take
    them (vision transformers); other architectures are created without them.
    """
    import timm

    kwargs: dict = {"num_classes": 0}
    if checkpoint:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(checkpoint)))
    if global_pool:
        kwargs["global_pool"] = global_pool
    shape = {k: v for k, v in (("img_size", img_size), ("patch_size", patch_size)) if v}
    try:
        model = timm.create_model(model_name, **kwargs, **shape)
    except TypeError:
        if not shape:
            raise
        log.warning("%s does not take %s; created with its own input geometry", model_name, sorted(shape))
        model = timm.create_model(model_name, **kwargs)
    return model.eval()


def model_input_size(model, img_size: int) -> int:
    if img_size:
        return img_size
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    return int(size[-1])


def normalisation(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- decoding


def _try_load(path: str, size: int) -> np.ndarray | None:
    try:
        return load_image(path, size)
    except Exception:  # corrupt/truncated/missing: no vector for this article, never a crash
        return None


@dataclass(frozen=True)
class DecodedImages:
    """Images already decoded at ``size`` (the encoder's training and held-out images): the row of
    each path in ``pixels``. The embedding pass takes them from here instead of decoding them again."""

    size: int
    rows: dict[str, int]
    pixels: np.ndarray

    @classmethod
    def of(cls, paths: list[str], pixels: np.ndarray) -> "DecodedImages":
        return cls(int(pixels.shape[1]) if pixels.ndim == 4 else 0, {p: i for i, p in enumerate(paths)}, pixels)

    @classmethod
    def current(cls, thumbnails: Thumbnails, keys: pd.DataFrame) -> "DecodedImages":
        """The ``thumbnails`` of the file versions ``keys`` (path, image_key) lists now."""
        rows = thumbnails.rows()
        found = [(path, rows[(path, key)]) for path, key in zip(keys["path"].tolist(), keys["image_key"].tolist()) if (path, key) in rows]
        return cls(thumbnails.size, {path: row for path, row in found}, thumbnails.pixels)


def decode_images(
    paths: list[str], size: int, workers: int = 2, decoded: DecodedImages | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``paths`` (threads; Pillow releases the GIL), taking those ``decoded`` holds at this
    size from it. Returns (n, size, size, 3) uint8 and ok mask."""
    known = decoded.rows if decoded is not None and decoded.size == size else {}

    def load(path: str) -> np.ndarray | None:
        row = known.get(path)
        return decoded.pixels[row] if row is not None else _try_load(path, size)

    if workers > 1 and len(paths) > 8 and not all(p in known for p in paths):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            decoded_rows = list(pool.map(load, paths))
    else:
        decoded_rows = [load(p) for p in paths]
    ok = np.array([d is not None for d in decoded_rows], dtype=bool)
    batch = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    for i, d in enumerate(decoded_rows):
        if d is not None:
            batch[i] = d
    return batch, ok


def to_tensor(batch: np.ndarray, mean, std, device: str):
    import torch

    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def autocast(device: str, precision: str):
    """bfloat16 autocast on ``device`` for ``precision`` ``bfloat16``, else nothing."""
    import contextlib

    import torch

    if precision != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def embed_images(
    model,
    paths: list[str],
    size: int,
    device: str,
    batch_size: int = 64,
    workers: int = 2,
    progress: Progress | None = None,
    precision: str = "float32",
    decoded: DecodedImages | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of each image, (n, dim) float32, and which images decoded; ``precision``
    ``bfloat16``: the forward pass under bfloat16 autocast; ``decoded``: images not to decode again."""
    import torch

    model = model.to(device).eval()
    mean, std = normalisation(model)
    dim = int(model.num_features)
    vectors = np.zeros((len(paths), dim), dtype=np.float32)
    ok_all = np.zeros(len(paths), dtype=bool)
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, len(paths), batch_size):
            batch, ok = decode_images(paths[start : start + batch_size], size, workers, decoded)
            ok_all[start : start + len(ok)] = ok
            if ok.any():
                features = model(to_tensor(batch[ok], mean, std, device))
                vectors[start + np.flatnonzero(ok)] = features.float().cpu().numpy()
            if progress is not None:
                progress.advance(len(ok))
    return vectors, ok_all


# ----------------------------------------------------------------------------- training


@dataclass
class TrainReport:
    epochs: float = 0.0
    steps: int = 0
    seconds: float = 0.0
    seconds_per_epoch: float = 0.0
    stopped_by: str = ""
    train_images: int = 0
    holdout_images: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    baseline_accuracy: dict[str, float] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)


def encode_labels(labels: pd.DataFrame, train_rows: np.ndarray, min_count: int) -> dict[str, np.ndarray]:
    """Per head: class index per row (-100 = ignored: unknown, or too rare in the training rows)."""
    encoded: dict[str, np.ndarray] = {}
    for column in labels.columns:
        values = labels[column].fillna("").astype(str).to_numpy()
        counts = pd.Series(values[train_rows]).value_counts()
        keep = sorted(v for v, n in counts.items() if n >= min_count and v.lower() not in {"", "unknown"})
        if len(keep) < 2:
            continue
        mapping = {v: i for i, v in enumerate(keep)}
        encoded[column] = np.array([mapping.get(v, -100) for v in values], dtype=np.int64)
    return encoded


def split_rows(n: int, holdout_fraction: float, max_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    holdout_n = min(int(round(n * holdout_fraction)), HOLDOUT_CAP) if n >= 10 else 0
    return np.sort(order[holdout_n : holdout_n + max_train]), np.sort(order[:holdout_n])


def train_on_catalogue(
    model,
    images: np.ndarray,
    labels: pd.DataFrame,
    settings: ImageSettings,
    device: str,
    split: tuple[np.ndarray, np.ndarray] | None = None,
    log: Callable[[str], None] | None = None,
    precision: str = "float32",
) -> TrainReport:
    """Train ``model``'s backbone in place with one linear head per label column; returns a report.

    ``images``: (n, s, s, 3) uint8 of decodable images, ``labels`` their label columns (same
    order), ``split``: (train rows, held-out rows), by default ``split_rows`` of the settings.
    Training stops after ``max_train_steps`` batches or ``max_epochs`` epochs; with a time budget,
    whole epochs are run while it allows (predicted from the previous epoch) and a single epoch
    longer than the budget is cut mid-way (``stopped_by`` says which).
    """
    import torch
    from torch import nn

    torch.manual_seed(settings.seed)
    if split is None:
        split = split_rows(len(images), settings.holdout_fraction, settings.max_train_images, settings.seed)
    train_rows, holdout_rows = split
    targets = encode_labels(labels.reset_index(drop=True), train_rows, settings.min_class_count)
    report = TrainReport(train_images=len(train_rows), holdout_images=len(holdout_rows))
    report.classes = {head: int(t.max() + 1) for head, t in targets.items()}
    if not targets or len(train_rows) == 0:
        report.stopped_by = "nothing to learn (fewer than 2 classes per head)"
        return report
    dim = int(model.num_features)
    heads = nn.ModuleDict({head.replace(".", "_"): nn.Linear(dim, n) for head, n in report.classes.items()}).to(device)
    model.to(device).train()
    mean, std = normalisation(model)
    params = list(model.parameters()) + list(heads.parameters())
    optimiser = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    target_tensors = {h: torch.from_numpy(t) for h, t in targets.items()}
    generator = torch.Generator().manual_seed(settings.seed)
    batch_size = max(1, settings.batch_size)
    steps_per_epoch = max(1, -(-len(train_rows) // batch_size))

    total_steps = settings.max_epochs * steps_per_epoch
    if settings.max_train_steps:
        total_steps = min(total_steps, settings.max_train_steps)
    budget = settings.max_train_seconds or float("inf")
    progress = Progress("image encoder training", total_steps, log, "steps")
    started = time.perf_counter()
    last_epoch_seconds = 0.0
    report.stopped_by = "max_epochs"
    for epoch in range(settings.max_epochs):
        elapsed = time.perf_counter() - started
        if epoch and elapsed + last_epoch_seconds > budget:
            report.stopped_by = "max_train_seconds (before the next epoch)"
            break
        epoch_started = time.perf_counter()
        order = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
        cut = False
        for step, start in enumerate(range(0, len(order), batch_size)):
            rows = order[start : start + batch_size]
            x = to_tensor(images[rows], mean, std, device)
            flip = torch.rand(len(rows), generator=generator) < 0.5
            x[flip.to(device)] = x[flip.to(device)].flip(-1)
            losses = []
            with autocast(device, precision):
                features = model(x)
                for h, target in target_tensors.items():
                    y = target[rows]
                    if (y >= 0).any():  # a batch where a head has no known label contributes nothing
                        losses.append(loss_fn(heads[h.replace(".", "_")](features), y.to(device)))
            optimiser.zero_grad(set_to_none=True)
            if losses:
                torch.stack(losses).sum().backward()
                optimiser.step()
            report.steps += 1
            progress.advance()
            if report.steps >= total_steps:
                report.epochs = epoch + (step + 1) / steps_per_epoch
                report.stopped_by = "max_epochs" if report.steps == settings.max_epochs * steps_per_epoch else "max_train_steps"
                cut = True
                break
            if time.perf_counter() - started > budget:
                report.epochs = epoch + (step + 1) / steps_per_epoch
                report.stopped_by = "max_train_seconds (mid-epoch)"
                cut = True
                break
        last_epoch_seconds = time.perf_counter() - epoch_started
        if cut:
            break
        report.epochs = epoch + 1
    progress.finish()
    report.seconds = round(time.perf_counter() - started, 2)
    report.seconds_per_epoch = round(report.seconds / report.epochs, 2) if report.epochs else 0.0
    report.epochs = round(report.epochs, 3)

    model.eval()
    if len(holdout_rows):
        predictions: dict[str, list[np.ndarray]] = {h: [] for h in targets}
        with torch.inference_mode():
            for start in range(0, len(holdout_rows), batch_size):
                rows = holdout_rows[start : start + batch_size]
                features = model(to_tensor(images[rows], mean, std, device))
                for h in targets:
                    predictions[h].append(heads[h.replace(".", "_")](features).argmax(1).cpu().numpy())
        for h, t in targets.items():
            truth = t[holdout_rows]
            known = truth >= 0
            if not known.any():
                continue
            predicted = np.concatenate(predictions[h])
            report.accuracy[h] = round(float((predicted[known] == truth[known]).mean()), 4)
            majority = np.bincount(t[train_rows][t[train_rows] >= 0]).argmax()
            report.baseline_accuracy[h] = round(float((truth[known] == majority).mean()), 4)
    return report


# ----------------------------------------------------------------------------- the trained encoder on disk


@dataclass
class EncoderFiles:
    weights_dir: Path
    key: str

    @property
    def weights(self) -> Path:
        return self.weights_dir / f"encoder-{self.key}.pt"

    @property
    def manifest(self) -> Path:
        return self.weights_dir / f"encoder-{self.key}.json"

    @property
    def trained_on(self) -> Path:
        return self.weights_dir / f"encoder-{self.key}.trained_on.parquet"

    def read_manifest(self) -> dict | None:
        """The manifest if it and the weights it names are intact (the manifest is written last)."""
        try:
            manifest = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return None
        if not self.weights.exists() or file_sha1(self.weights) != manifest.get("weights_sha1"):
            return None
        return manifest


def image_keys(catalogue: pd.DataFrame) -> pd.DataFrame:
    """The catalogue's readable images with a fresh (size, mtime) key; unreadable/missing ones dropped."""
    readable = catalogue[catalogue["readable"].astype(bool)]
    records = []
    for article_id, path in zip(readable["article_id"].tolist(), readable["path"].tolist()):
        try:
            stat = os.stat(path)
        except OSError:
            continue
        records.append((article_id, path, image_key(stat.st_size, stat.st_mtime_ns)))
    return pd.DataFrame.from_records(records, columns=["article_id", "path", "image_key"]).astype({"article_id": "int32"})


def changed_fraction(current: pd.DataFrame, trained_on_path: Path) -> float:
    """Share of the current images (id + key) the encoder was not trained on."""
    if not len(current):
        return 0.0
    if not trained_on_path.exists():
        return 1.0
    seen = pd.read_parquet(trained_on_path)
    known = current.merge(seen, on=["article_id", "image_key"], how="left", indicator=True)["_merge"] == "both"
    return float(1.0 - known.mean())


def train_and_save(
    keys: pd.DataFrame,
    articles: pd.DataFrame,
    settings: ImageSettings,
    files: EncoderFiles,
    device: str,
    log: Callable[[str], None] | None = None,
    objects: ObjectStore | None = None,
    precision: str = "float32",
    decoded: DecodedImages | None = None,
) -> tuple[object, dict, DecodedImages]:
    """Train a fresh encoder on the decodable catalogue images (taken from ``decoded`` where it holds
    them); save weights + manifest (uploaded to ``objects`` when that shares them); return (model,
    manifest, the images it trained and evaluated on)."""
    import torch

    size = settings.resolved_img_size()
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    model = create_model(settings.model_name, size, settings.resolved_patch_size(), global_pool=settings.global_pool)
    train_rows, holdout_rows = split_rows(len(keys), settings.holdout_fraction, settings.max_train_images, settings.seed)
    role = np.full(len(keys), -1)
    role[train_rows], role[holdout_rows] = 0, 1
    used = np.flatnonzero(role >= 0)  # only the images training or evaluation needs are decoded
    subset = keys.iloc[used].reset_index(drop=True)
    images, ok = decode_images(subset["path"].tolist(), size, settings.decode_workers, decoded)
    subset, images, role = subset[ok].reset_index(drop=True), images[ok], role[used][ok]
    labels = subset[["article_id"]].merge(articles[["article_id", *LABEL_COLUMNS]], on="article_id", how="left")
    split = (np.flatnonzero(role == 0), np.flatnonzero(role == 1))
    report = train_on_catalogue(model, images, labels[list(LABEL_COLUMNS)], settings, device, split, log, precision)
    model = model.cpu().eval()

    files.weights_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(files.weights, objects) as temporary:
        torch.save(model.state_dict(), temporary)
    with atomic_path(files.trained_on, objects) as temporary:
        pq.write_table(pa.Table.from_pandas(keys[["article_id", "image_key"]], preserve_index=False), temporary)
    manifest = {
        "weights_sha1": file_sha1(files.weights),
        "model_name": settings.model_name,
        "img_size": size,
        "patch_size": settings.resolved_patch_size(),
        "settings": asdict(settings),
        "precision": precision,
        "report": asdict(report),
        "catalogue_images": int(len(keys)),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with atomic_path(files.manifest, objects) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return model, manifest, DecodedImages.of(subset["path"].tolist(), images)


def load_trained(settings: ImageSettings, files: EncoderFiles):
    import torch

    model = create_model(
        settings.model_name, settings.resolved_img_size(), settings.resolved_patch_size(), global_pool=settings.global_pool
    )
    model.load_state_dict(torch.load(files.weights, map_location="cpu", weights_only=True))
    return model.eval()


# ----------------------------------------------------------------------------- the whole step


@dataclass
class ImageEmbeddingRun:
    outcome: CacheOutcome
    source: str
    model_identity: str
    missing_or_unreadable: int
    unreadable_ids: list[int]
    info: dict


def run_image_embeddings(
    catalogue: pd.DataFrame,
    articles: pd.DataFrame,
    settings: ImageSettings,
    weights_dir: Path,
    previous: Path | None = None,
    logger: logging.Logger | None = None,
    objects: ObjectStore | None = None,
    thumbnails: Path | None = None,
) -> ImageEmbeddingRun:
    """Embed every readable catalogue image, reusing cached vectors; train the encoder if needed.

    ``catalogue``: the ``article_images`` table; ``articles``: the ``articles`` table (labels);
    ``weights_dir``: where trained encoders live; ``previous``: the last embeddings file (cache);
    ``objects``: the store's object store, where a newly trained encoder is uploaded;
    ``thumbnails``: the catalogue's decoded images (``Thumbnails``' file), read only when something
    is to be trained or embedded, and taken instead of decoding the files again where they are of
    the current file and at the encoder's size.
    """
    import torch

    logger = logger or log
    threads = set_torch_threads(settings.torch_threads)
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    device = pick_device(settings.device)
    precision = pick_precision(settings.precision, device)
    keys = image_keys(catalogue)
    info: dict = {"device": device, "torch_threads": threads, "precision": precision}
    model = None
    decoded: DecodedImages | None = None
    decoded_by = ""

    def already_decoded() -> DecodedImages | None:
        nonlocal decoded, decoded_by
        if decoded is None and thumbnails is not None:
            decoded, decoded_by = DecodedImages.current(Thumbnails.read(thumbnails), keys), "the catalogue's thumbnails"
        return decoded

    if settings.checkpoint_path:
        checkpoint = Path(settings.checkpoint_path).expanduser()
        if not checkpoint.is_file():
            raise FileNotFoundError(f"image checkpoint not found: {checkpoint}")
        source = SOURCE_CHECKPOINT
        weights_sha = file_sha1(checkpoint)
        info["checkpoint_path"] = str(checkpoint)
        model_factory = lambda: create_model(  # noqa: E731
            settings.model_name, settings.img_size, settings.patch_size, checkpoint=str(checkpoint)
        )
    else:
        source = SOURCE_TRAINED
        files = EncoderFiles(Path(weights_dir), settings.training_key(precision))
        manifest = None if settings.retrain else files.read_manifest()
        fraction = changed_fraction(keys, files.trained_on) if manifest else 1.0
        if manifest is not None and fraction <= settings.retrain_above_changed_fraction:
            info["encoder"] = "reused" if fraction == 0 else f"reused ({fraction:.1%} of images new or changed since training)"
        elif len(keys):
            reason = "retrain requested" if settings.retrain else (
                "no saved encoder" if manifest is None else f"{fraction:.1%} of images new or changed"
            )
            logger.info(f"training {settings.model_name} on the catalogue images: {reason}")
            model, manifest, trained_on = train_and_save(
                keys, articles, settings, files, device, logger.info, objects, precision, already_decoded()
            )
            if decoded is None:
                decoded, decoded_by = trained_on, "the encoder's training"
            info["encoder"] = f"trained now ({reason})"
        else:
            manifest = {"weights_sha1": "none", "report": asdict(TrainReport(stopped_by="no readable images"))}
            info["encoder"] = "none (no readable images)"
        weights_sha = manifest["weights_sha1"]
        info["encoder_path"] = str(files.weights)
        info["training"] = manifest["report"]
        model_factory = lambda: load_trained(settings, files)  # noqa: E731

    identity = (
        f"{settings.model_name}|img={settings.resolved_img_size()}|patch={settings.resolved_patch_size()}"
        f"|{PREPROCESS_VERSION}|{source}:{weights_sha[:16]}"
        # float32 adds nothing: vectors embedded before the precision was a setting stay reusable
        + ("" if precision == "float32" else f"|{precision}")
    )
    wanted = keys.assign(content_hash=[stable_hash(identity, k) for k in keys["image_key"].tolist()])

    def embed(todo: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        nonlocal model
        if model is None:
            model = model_factory()
        size = model_input_size(model, settings.resolved_img_size())
        progress = Progress("image embeddings", len(todo), logger.info, unit="images")
        paths = todo["path"].tolist()
        if already_decoded() is not None:
            info["images_already_decoded"] = sum(p in decoded.rows for p in paths) if decoded.size == size else 0
            info["images_already_decoded_by"] = decoded_by
        embedded = embed_images(
            model, paths, size, device, settings.embed_batch_size, settings.decode_workers, progress, precision, decoded
        )
        progress.finish()
        return embedded

    outcome = embed_with_cache(wanted, previous, embed)
    listed_unreadable = catalogue.loc[~catalogue["article_id"].isin(keys["article_id"]), "article_id"]
    unreadable = sorted({*listed_unreadable.astype(int).tolist(), *outcome.failed_ids.astype(int).tolist()})
    if outcome.failed_ids.size:
        logger.warning(
            f"{outcome.failed_ids.size} image(s) listed as readable failed to decode, e.g. "
            f"{outcome.failed_ids[:5].tolist()}; they get no image vector"
        )
    if unreadable:
        logger.warning(f"{len(unreadable)} article(s) have no readable image and no image vector")
    outcome.embeddings.metadata = {"model_identity": identity, "source": source}
    return ImageEmbeddingRun(outcome, source, identity, len(unreadable), unreadable, info)
