"""Product images: small portrait JPEGs drawn with numpy, encoded with Pillow.

The silhouette follows the product type (trousers have two legs, a dress is A-shaped, tops have
sleeves, ...), the colour the article's colour group, the pattern its graphical appearance
(stripes, dots, check, prints, denim twill, melange, ...). A little per-article jitter and noise
keeps images of one product similar but not identical, so image similarity means something.
Each image depends only on (seed, article index) and the article's attributes: byte-identical
across runs and independent of how the work is split between processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 64, 96
BACKGROUND = 242.0


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return (y + 0.5) / h, (x + 0.5) / w


def _band(x, y, x0, y0, x1, y1, half):
    """Points within ``half`` of the segment (x0,y0)-(x1,y1) (aspect-corrected: y counts 1.5x)."""
    px, py = x - x0, (y - y0) * 1.5
    dx, dy = x1 - x0, (y1 - y0) * 1.5
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0, 1)
    return (px - t * dx) ** 2 + (py - t * dy) ** 2 <= half * half


def _trap(x, y, y0, y1, w0, w1, cx=0.5):
    t = np.clip((y - y0) / max(y1 - y0, 1e-6), 0, 1)
    half = (w0 + (w1 - w0) * t) / 2
    return (y >= y0) & (y <= y1) & (np.abs(x - cx) <= half)


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1


def _torso(x, y, y0, y1, w0, w1):
    neck = _ellipse(x, y, 0.5, y0, 0.08, 0.05)
    return _trap(x, y, y0, y1, w0, w1) & ~neck


def _legs(x, y, y0, y1, width, gap_from, taper=0.0, gap=0.035):
    waist = _trap(x, y, y0, gap_from, 2 * width + 2 * gap, 2 * width + 2 * gap + 0.02)
    left = _trap(x, y, gap_from, y1, width, width - taper, cx=0.5 - width / 2 - gap)
    right = _trap(x, y, gap_from, y1, width, width - taper, cx=0.5 + width / 2 + gap)
    return waist | left | right


def silhouette_mask(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if kind == "top_short":
        m = _torso(x, y, 0.2, 0.78, 0.46, 0.42)
        m |= _band(x, y, 0.3, 0.25, 0.14, 0.4, 0.075) | _band(x, y, 0.7, 0.25, 0.86, 0.4, 0.075)
        return m
    if kind in ("top_long", "jacket", "coat"):
        bottom = {"top_long": 0.8, "jacket": 0.78, "coat": 0.95}[kind]
        m = _torso(x, y, 0.17, bottom, 0.46, 0.48 if kind != "coat" else 0.56)
        m |= _band(x, y, 0.3, 0.22, 0.13, 0.74, 0.07) | _band(x, y, 0.7, 0.22, 0.87, 0.74, 0.07)
        if kind != "top_long":
            m &= ~((np.abs(x - 0.5) < 0.012) & (y > 0.22))
        return m
    if kind == "vest":
        m = _torso(x, y, 0.26, 0.8, 0.4, 0.42)
        m |= _band(x, y, 0.36, 0.12, 0.36, 0.28, 0.025) | _band(x, y, 0.64, 0.12, 0.64, 0.28, 0.025)
        return m
    if kind == "trousers":
        return _legs(x, y, 0.06, 0.96, 0.2, 0.32, taper=0.03)
    if kind == "leggings":
        return _legs(x, y, 0.06, 0.96, 0.16, 0.3, taper=0.06)
    if kind == "shorts":
        return _legs(x, y, 0.25, 0.64, 0.2, 0.4, taper=-0.03, gap=0.05)
    if kind == "skirt":
        return _trap(x, y, 0.18, 0.72, 0.4, 0.66)
    if kind == "dress":
        m = _trap(x, y, 0.14, 0.42, 0.34, 0.3) | _trap(x, y, 0.42, 0.93, 0.3, 0.74)
        m |= _band(x, y, 0.37, 0.06, 0.37, 0.16, 0.022) | _band(x, y, 0.63, 0.06, 0.63, 0.16, 0.022)
        return m
    if kind == "jumpsuit":
        return _torso(x, y, 0.1, 0.45, 0.4, 0.4) | _legs(x, y, 0.45, 0.95, 0.19, 0.55)
    if kind == "set":
        top = _torso(x, y, 0.05, 0.44, 0.42, 0.4) | _band(x, y, 0.3, 0.08, 0.14, 0.36, 0.06) | _band(x, y, 0.7, 0.08, 0.86, 0.36, 0.06)
        return top | _legs(x, y, 0.5, 0.97, 0.17, 0.6)
    if kind == "swimsuit":
        m = _trap(x, y, 0.22, 0.66, 0.36, 0.32) & ~_ellipse(x, y, 0.5, 0.22, 0.07, 0.05)
        m |= _band(x, y, 0.38, 0.1, 0.38, 0.24, 0.022) | _band(x, y, 0.62, 0.1, 0.62, 0.24, 0.022)
        m &= ~(_ellipse(x, y, 0.3, 0.7, 0.13, 0.09) | _ellipse(x, y, 0.7, 0.7, 0.13, 0.09))
        return m
    if kind == "briefs":
        m = _trap(x, y, 0.36, 0.62, 0.62, 0.12)
        return m & ~(_ellipse(x, y, 0.22, 0.64, 0.16, 0.18) | _ellipse(x, y, 0.78, 0.64, 0.16, 0.18))
    if kind == "bra":
        m = _ellipse(x, y, 0.35, 0.44, 0.15, 0.08) | _ellipse(x, y, 0.65, 0.44, 0.15, 0.08)
        m |= (np.abs(y - 0.5) < 0.018) & (np.abs(x - 0.5) < 0.42)
        m |= _band(x, y, 0.33, 0.22, 0.33, 0.38, 0.02) | _band(x, y, 0.67, 0.22, 0.67, 0.38, 0.02)
        return m
    if kind == "bikini":
        up = _ellipse(x, y, 0.36, 0.3, 0.14, 0.07) | _ellipse(x, y, 0.64, 0.3, 0.14, 0.07)
        up |= (np.abs(y - 0.35) < 0.015) & (np.abs(x - 0.5) < 0.4)
        low = _trap(x, y, 0.56, 0.76, 0.56, 0.12)
        return up | low
    if kind == "socks":
        m = np.zeros_like(x, dtype=bool)
        for cx in (0.34, 0.66):
            m |= _trap(x, y, 0.15, 0.72, 0.16, 0.16, cx=cx)
            m |= _ellipse(x, y, cx + 0.06, 0.75, 0.13, 0.07)
        return m
    if kind == "shoe":
        m = _ellipse(x, y, 0.5, 0.66, 0.42, 0.12) & (y < 0.74)
        m |= (y >= 0.72) & (y <= 0.78) & (np.abs(x - 0.5) < 0.44)
        return m
    if kind == "boot":
        m = _trap(x, y, 0.2, 0.7, 0.26, 0.28, cx=0.4)
        m |= _ellipse(x, y, 0.55, 0.72, 0.36, 0.08)
        m |= (y >= 0.74) & (y <= 0.8) & (x > 0.2) & (x < 0.92)
        return m
    if kind == "bag":
        body = (y > 0.38) & (y < 0.82) & (np.abs(x - 0.5) < 0.36)
        r = np.sqrt(((x - 0.5) / 0.22) ** 2 + ((y - 0.38) / 0.16) ** 2)
        handle = (np.abs(r - 1) < 0.12) & (y < 0.38)
        return body | handle
    if kind == "hat":
        dome = _ellipse(x, y, 0.5, 0.56, 0.3, 0.24) & (y < 0.56)
        brim = _ellipse(x, y, 0.5, 0.57, 0.46, 0.05)
        return dome | brim
    if kind == "scarf":
        return _band(x, y, 0.25, 0.08, 0.75, 0.92, 0.13)
    if kind == "belt":
        strap = (np.abs(y - 0.5) < 0.04) & (np.abs(x - 0.5) < 0.46)
        buckle = (np.abs(y - 0.5) < 0.07) & (np.abs(x - 0.3) < 0.06)
        return strap | buckle
    if kind == "gloves":
        m = np.zeros_like(x, dtype=bool)
        for cx in (0.3, 0.7):
            m |= _ellipse(x, y, cx, 0.5, 0.15, 0.14)
            m |= _trap(x, y, 0.58, 0.78, 0.16, 0.16, cx=cx)
            for f in (-0.09, -0.03, 0.03, 0.09):
                m |= _band(x, y, cx + f, 0.36, cx + f * 1.3, 0.26, 0.025)
        return m
    if kind == "jewel":
        r = np.sqrt(((x - 0.5) / 0.3) ** 2 + ((y - 0.5) / 0.2) ** 2)
        return (np.abs(r - 1) < 0.12) | _ellipse(x, y, 0.5, 0.7, 0.06, 0.04)
    if kind == "glasses":
        m = np.zeros_like(x, dtype=bool)
        for cx in (0.3, 0.7):
            m |= _ellipse(x, y, cx, 0.5, 0.17, 0.08)
        m |= _band(x, y, 0.44, 0.48, 0.56, 0.48, 0.015)
        return m
    return _ellipse(x, y, 0.5, 0.5, 0.34, 0.28)


def pattern_alpha(kind: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Share of the secondary colour per pixel (0 = primary)."""
    if kind == "stripe":
        period = rng.uniform(0.05, 0.12)
        coord = y if rng.random() < 0.8 else x
        return (((coord / period) + rng.random()) % 1.0 < rng.uniform(0.3, 0.55)).astype(np.float32)
    if kind == "dot":
        p = rng.uniform(0.08, 0.14)
        gx = ((x / p) + rng.random()) % 1.0 - 0.5
        gy = ((y / p * 0.67) + rng.random()) % 1.0 - 0.5
        return (gx * gx + gy * gy < rng.uniform(0.04, 0.09)).astype(np.float32)
    if kind == "check":
        p = rng.uniform(0.08, 0.16)
        a = ((x / p) % 1.0 < 0.5).astype(np.float32)
        b = ((y / p * 0.67) % 1.0 < 0.5).astype(np.float32)
        return 0.5 * (a + b)
    if kind == "print":
        f = rng.uniform(6, 14, 3)
        ph = rng.uniform(0, 6.3, 3)
        v = np.sin(f[0] * x * 6.28 + ph[0]) * np.sin(f[1] * y * 4.2 + ph[1]) + 0.6 * np.sin(f[2] * (x + y) * 5 + ph[2])
        return (v > 0.35).astype(np.float32)
    if kind == "melange":
        return rng.random(x.shape).astype(np.float32) * 0.45
    if kind == "denim":
        twill = ((x * 40 + y * 60) % 1.0 < 0.5).astype(np.float32) * 0.25
        return twill + rng.random(x.shape).astype(np.float32) * 0.15
    if kind == "placement":
        cy = rng.uniform(0.35, 0.5)
        if rng.random() < 0.5:
            return _ellipse(x, y, 0.5, cy, 0.14, 0.09).astype(np.float32)
        return ((np.abs(x - 0.5) < 0.13) & (np.abs(y - cy) < 0.08)).astype(np.float32)
    if kind == "block":
        return ((y > rng.uniform(0.4, 0.6)) if rng.random() < 0.6 else (x > 0.5)).astype(np.float32)
    if kind == "lace":
        p = 0.045
        return ((((x / p) % 1.0 < 0.3) | (((y / p * 0.67) % 1.0) < 0.3))).astype(np.float32) * 0.6
    if kind == "structure":
        p = rng.uniform(0.08, 0.14)
        return ((np.abs(((x + y * 0.67) / p) % 1.0 - 0.5) + np.abs(((x - y * 0.67) / p) % 1.0 - 0.5)) < 0.35).astype(np.float32) * 0.7
    if kind == "glitter":
        return (rng.random(x.shape) < 0.08).astype(np.float32)
    return np.zeros_like(x, dtype=np.float32)


def secondary_colour(primary: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "glitter":
        return np.array([235, 225, 190], dtype=np.float32)
    if kind in ("melange", "denim"):
        return np.clip(primary * 0.55 + 90 * (primary.mean() < 80), 0, 255)
    if kind == "lace":
        return np.clip(primary * 0.6 + 0.4 * BACKGROUND, 0, 255)
    lum = primary.mean()
    if rng.random() < 0.6:
        return np.array([245, 245, 245], dtype=np.float32) if lum < 140 else np.array([25, 30, 45], dtype=np.float32)
    return rng.uniform(20, 235, 3).astype(np.float32)


def render(silhouette: str, pattern: str, rgb: np.ndarray, seed: int, index: int,
           width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    rng = np.random.default_rng([seed, 7919, index])
    y, x = _grid(height, width)
    sx = rng.uniform(0.92, 1.08)
    dy = rng.uniform(-0.025, 0.025)
    xs = (x - 0.5) / sx + 0.5
    ys = y - dy
    mask = silhouette_mask(silhouette, xs, ys).astype(np.float32)
    alpha = pattern_alpha(pattern, xs, ys, rng)
    second = secondary_colour(rgb, pattern, rng)
    garment = rgb[None, None, :] * (1 - alpha[..., None]) + second[None, None, :] * alpha[..., None]
    shade = (1.04 - 0.1 * np.abs(xs - 0.5) - 0.06 * ys).astype(np.float32)
    garment = garment * shade[..., None]
    bg = np.full((height, width, 3), BACKGROUND, dtype=np.float32)
    img = bg * (1 - mask[..., None]) + garment * mask[..., None]
    img += rng.normal(0.0, 4.0, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def image_path(root: Path, article_id: str) -> Path:
    return root / article_id[:3] / f"{article_id}.jpg"


def write_images(root: str | os.PathLike, jobs: list[tuple[int, str, str, str, tuple[float, float, float]]],
                 seed: int, width: int = WIDTH, height: int = HEIGHT, quality: int = 85,
                 parent_pid: int | None = None) -> int:
    """jobs: (article index, article_id, silhouette, pattern, rgb). Returns the number written.

    ``parent_pid``: when run in a helper process, stop as soon as that process is gone (a killed
    generator must not leave a helper writing into its abandoned temporary folder)."""
    root = Path(root)
    made: set[str] = set()
    for n, (index, article_id, sil, pat, rgb) in enumerate(jobs):
        if parent_pid is not None and n % 200 == 0 and os.getppid() != parent_pid:
            return n
        folder = article_id[:3]
        if folder not in made:
            (root / folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        arr = render(sil, pat, np.asarray(rgb, dtype=np.float32), seed, index, width, height)
        Image.fromarray(arr, "RGB").save(root / folder / f"{article_id}.jpg", format="JPEG", quality=quality,
                                         optimize=False)
    return len(jobs)
