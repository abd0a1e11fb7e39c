"""Customers: the customers.csv attributes and each customer's latent taste and activity."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .catalogue import Clusters
from .vocab import INDEX_GROUPS, Vocab

CUSTOMER_COLUMNS = ["customer_id", "FN", "Active", "club_member_status", "fashion_news_frequency", "age",
                    "postal_code"]
SLOTS = 3  # clusters per customer


@dataclass
class Customers:
    frame: pd.DataFrame           # customers.csv, sorted by customer_id
    id_bytes: np.ndarray          # (N, 64) uint8, row i = customer i (generation order)
    rank: np.ndarray              # position of customer i in the sorted file
    age: np.ndarray               # latent age (imputed where missing)
    clusters: np.ndarray          # (N, SLOTS) cluster ids
    weights: np.ndarray           # (N, SLOTS) taste weights, rows sum to 1
    fav_colours: np.ndarray       # (N, 2) colour rows
    fav_types: np.ndarray         # (N, 2) product type rows
    price_pref: np.ndarray        # preferred relative price band
    p_online: np.ndarray          # probability a shopping day is online (channel 2)
    activity: np.ndarray          # relative shopping rate
    join_day: np.ndarray          # first day the customer can buy (0 = existing customer)
    end_day: np.ndarray           # last day (exclusive) of activity
    never_buys: np.ndarray        # bool

    @property
    def n(self) -> int:
        return len(self.age)


def hex_ids(seed: int, kind: str, n: int) -> list[str]:
    prefix = f"hm-synth:{seed}:{kind}:".encode()
    return [hashlib.sha256(prefix + str(i).encode()).hexdigest() for i in range(n)]


def _ig_given_age(age: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Primary index group of each customer given age (men a minority, teens Divided, parents kids)."""
    n = len(age)
    p = np.zeros((n, len(INDEX_GROUPS)))
    p[:, INDEX_GROUPS.index("Menswear")] = 0.075
    p[:, INDEX_GROUPS.index("Sport")] = 0.04
    p[:, INDEX_GROUPS.index("Divided")] = np.interp(age, [16, 19, 24, 30, 40, 100], [0.62, 0.55, 0.33, 0.14, 0.04, 0.02])
    p[:, INDEX_GROUPS.index("Baby/Children")] = np.interp(age, [16, 25, 30, 38, 46, 55, 100], [0.0, 0.02, 0.1, 0.12, 0.05, 0.02, 0.01])
    p[:, INDEX_GROUPS.index("Ladieswear")] = 1.0 - p.sum(axis=1)
    u = rng.random(n)[:, None]
    return np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), len(INDEX_GROUPS) - 1)


CHUNK = 200_000


def _pick_cluster(rng: np.random.Generator, cl: Clusters, ig: np.ndarray, age: np.ndarray,
                  exclude: np.ndarray | None = None) -> np.ndarray:
    """Cluster within index group ``ig`` weighted by cluster prior and age fit (chunked: bounded memory)."""
    out = np.empty(len(age), dtype=np.int64)
    for s in range(0, len(age), CHUNK):
        e = min(s + CHUNK, len(age))
        out[s:e] = _pick_cluster_chunk(rng, cl, ig[s:e], age[s:e], None if exclude is None else exclude[s:e])
    return out


def _pick_cluster_chunk(rng: np.random.Generator, cl: Clusters, ig: np.ndarray, age: np.ndarray,
                        exclude: np.ndarray | None) -> np.ndarray:
    k = len(cl.prior)
    dens = np.exp(-0.5 * ((age[:, None] - cl.age_mean[None, :]) / cl.age_sd[None, :]) ** 2) / cl.age_sd[None, :]
    w = cl.prior[None, :] * (dens + 1e-4) * (cl.index_group[None, :] == ig[:, None])
    if exclude is not None:
        w[np.arange(len(age)), exclude] = 0.0
    total = w.sum(axis=1)
    empty = total <= 0
    if empty.any():  # no other cluster in that group: any cluster by age
        w[empty] = cl.prior[None, :] * (dens[empty] + 1e-4)
        if exclude is not None:
            w[np.flatnonzero(empty), exclude[empty]] = 0.0
        total = w.sum(axis=1)
    cum = np.cumsum(w, axis=1) / total[:, None]
    return np.minimum((rng.random(len(age))[:, None] > cum).sum(axis=1), k - 1)


def build_customers(rng: np.random.Generator, vocab: Vocab, cl: Clusters, n: int, seed: int, n_days: int,
                    day_weight: np.ndarray, existing_share: float, never_share: float, activity_sigma: float = 1.0,
                    churn_share: float = 0.25, fav_type_flatten: float = 0.5) -> Customers:
    cv = vocab.customers
    # ---- attributes
    pmf = np.array(cv["age_pmf"], float)
    age = cv["age_min"] + rng.choice(len(pmf), size=n, p=pmf / pmf.sum())
    age_missing = rng.random(n) < cv["age_missing_share"]
    news_keys = list(cv["fashion_news_frequency"])
    news_p = np.array([cv["fashion_news_frequency"][k] for k in news_keys])
    news = np.array(news_keys, dtype=object)[rng.choice(len(news_keys), size=n, p=news_p / news_p.sum())]
    fn = np.where(news == "Regularly", rng.random(n) < cv["fn_given_regularly"], rng.random(n) < cv["fn_given_other"])
    active = np.where(fn, rng.random(n) < cv["active_given_fn"], rng.random(n) < cv["active_given_not_fn"])
    club_keys = list(cv["club_member_status"])
    club_p = np.array([cv["club_member_status"][k] for k in club_keys])
    club = np.array(club_keys, dtype=object)[rng.choice(len(club_keys), size=n, p=club_p / club_p.sum())]
    # postal codes: one huge placeholder code, then a long tail of small areas
    n_codes = max(10, n // 3)
    code_w = 1.0 / np.arange(1, n_codes + 1) ** 0.35
    code_idx = rng.choice(n_codes, size=n, p=code_w / code_w.sum()) + 1
    code_idx[rng.random(n) < cv["postal_top_share"]] = 0
    used = np.unique(code_idx)
    postal_hex = np.array(hex_ids(seed, "postal", int(used.max()) + 1), dtype=object)
    postal = postal_hex[code_idx]

    ids = hex_ids(seed, "customer", n)
    id_arr = np.array(ids, dtype="S64")
    order = np.argsort(id_arr, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    frame = pd.DataFrame({
        "customer_id": np.array(ids, dtype=object),
        "FN": np.where(fn, "1.0", ""),
        "Active": np.where(active, "1.0", ""),
        "club_member_status": club,
        "fashion_news_frequency": news,
        "age": np.where(age_missing, "", age.astype(str)),
        "postal_code": postal,
    }).iloc[order].reset_index(drop=True)[CUSTOMER_COLUMNS]
    id_bytes = np.frombuffer(id_arr.tobytes(), dtype=np.uint8).reshape(n, 64)

    # ---- latent taste: a primary cluster chosen by age, 1-2 secondary clusters
    lat_age = age.astype(float)
    ig1 = _ig_given_age(lat_age, rng)
    c1 = _pick_cluster(rng, cl, ig1, lat_age)
    # secondary: same index group mostly; parents sometimes kids; some sport; some menswear (partners)
    u = rng.random(n)
    ig2 = ig1.copy()
    parent = (lat_age >= 28) & (lat_age <= 48) & (ig1 != INDEX_GROUPS.index("Menswear"))
    ig2[parent & (u < 0.30)] = INDEX_GROUPS.index("Baby/Children")
    ig2[(u >= 0.30) & (u < 0.40)] = INDEX_GROUPS.index("Sport")
    young = lat_age < 30
    ig2[young & (u >= 0.40) & (u < 0.65)] = INDEX_GROUPS.index("Divided")
    ig2[~young & (u >= 0.40) & (u < 0.50)] = INDEX_GROUPS.index("Ladieswear")
    ig2[(u >= 0.65) & (u < 0.70)] = INDEX_GROUPS.index("Menswear")
    c2 = _pick_cluster(rng, cl, ig2, lat_age, exclude=c1)
    c3 = _pick_cluster(rng, cl, ig1, lat_age, exclude=c1)
    clusters = np.stack([c1, c2, c3], axis=1)
    w1 = rng.uniform(0.6, 0.9, n)
    w2 = (1 - w1) * rng.uniform(0.45, 0.85, n)
    weights = np.stack([w1, w2, 1 - w1 - w2], axis=1)

    # favourite colours: from the primary cluster's palette
    fav = np.empty((n, 2), dtype=np.int64)
    pal_cum = np.cumsum(cl.palette, axis=1)
    for s in range(0, n, CHUNK):
        e = min(s + CHUNK, n)
        cum = pal_cum[c1[s:e]]
        fav[s:e] = np.stack([(rng.random(e - s)[:, None] > cum).sum(axis=1) for _ in range(2)], axis=1)
    fav = np.minimum(fav, cl.palette.shape[1] - 1)
    # favourite product types: from the primary cluster's assortment
    # (flattened: customers of one cluster differ in the types they love)
    type_p = cl.type_demand ** fav_type_flatten
    # only types the cluster really offers (several products), so there is something to buy
    type_p = np.where(cl.type_mix >= np.maximum(3.0, 0.01 * cl.type_mix.sum(axis=1, keepdims=True)), type_p, 0.0)
    type_p = np.where(type_p.sum(axis=1, keepdims=True) > 0, type_p, cl.type_demand)
    type_p /= np.maximum(type_p.sum(axis=1, keepdims=True), 1e-12)
    type_cum = np.cumsum(type_p, axis=1)
    fav_types = np.empty((n, 2), dtype=np.int64)
    for s in range(0, n, CHUNK):
        e = min(s + CHUNK, n)
        cum = type_cum[c1[s:e]]
        fav_types[s:e] = np.stack([(rng.random(e - s)[:, None] > cum).sum(axis=1) for _ in range(2)], axis=1)
    fav_types = np.minimum(fav_types, type_p.shape[1] - 1)
    price_pref = rng.normal(0.0, 0.28, n) + np.interp(lat_age, [16, 25, 40, 60, 100], [-0.12, -0.05, 0.06, 0.1, 0.05])

    # channel: most customers shop mostly online (2) or mostly in store (1)
    kind = rng.choice(3, size=n, p=[0.6, 0.27, 0.13])
    p_online = np.select([kind == 0, kind == 1], [rng.beta(9.0, 1.0, n), rng.beta(1.0, 8.0, n)], rng.beta(2.0, 2.0, n))

    # activity: heavy tailed; club members and news readers buy more; young adults buy more
    activity = rng.lognormal(0.0, activity_sigma, n)
    activity *= np.where(club == "PRE-CREATE", 0.45, 1.0) * np.where(club == "LEFT CLUB", 0.3, 1.0)
    activity *= np.where(fn, 1.35, 1.0)
    activity *= np.interp(lat_age, [16, 22, 30, 45, 60, 100], [0.7, 1.15, 1.1, 0.95, 0.85, 0.6])

    # join and churn: a share existed before the period, the rest join over time (more in busy weeks)
    existing = rng.random(n) < existing_share
    join = np.zeros(n, dtype=np.int64)
    n_new = int((~existing).sum())
    jw = day_weight / day_weight.sum()
    join[~existing] = rng.choice(n_days, size=n_new, p=jw)
    churn = rng.random(n) < churn_share
    life = rng.exponential(0.8 * n_days, n).astype(np.int64) + 14
    end = np.where(churn, np.minimum(join + life, n_days), n_days)
    never = rng.random(n) < never_share
    return Customers(frame=frame, id_bytes=id_bytes, rank=rank, age=lat_age, clusters=clusters, weights=weights,
                     fav_colours=fav, fav_types=fav_types, price_pref=price_pref, p_online=p_online, activity=activity,
                     join_day=join, end_day=end, never_buys=never)
