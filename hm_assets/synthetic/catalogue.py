"""The article catalogue: style clusters, products, colour variants, life cycles, outfits, prices, text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .timeline import Timeline
from .vocab import (BASIC_PROB_BY_TYPE, DENIM_OK, INDEX_GROUPS, PATTERN_BY_APPEARANCE, SEASON_BY_TYPE, Vocab,
                    silhouette_of)

ARTICLE_COLUMNS = [
    "article_id", "product_code", "prod_name", "product_type_no", "product_type_name", "product_group_name",
    "graphical_appearance_no", "graphical_appearance_name", "colour_group_code", "colour_group_name",
    "perceived_colour_value_id", "perceived_colour_value_name", "perceived_colour_master_id",
    "perceived_colour_master_name", "department_no", "department_name", "index_code", "index_name",
    "index_group_no", "index_group_name", "section_no", "section_name", "garment_group_no", "garment_group_name",
    "detail_desc",
]

# Price points (in 1/59000 units, the real file's scale): H&M-style "x99" prices.
PRICE_POINTS = np.array(sorted({*range(49, 300, 50), *range(99, 1000, 100), *range(149, 1000, 100),
                                *range(1199, 3000, 100), 2499, *range(2999, 10000, 500), 2249, 1349,
                                *range(9999, 30000, 2500)}), dtype=np.int64)

# Share of index-group clusters per index group (at least one each).
CLUSTER_SHARE = {"Ladieswear": 0.40, "Divided": 0.20, "Menswear": 0.14, "Baby/Children": 0.16, "Sport": 0.10}
# Age profile of the clusters of each index group: (low mean, high mean, sd).
CLUSTER_AGE = {"Ladieswear": (22, 62, 9.0), "Divided": (17, 28, 5.0), "Menswear": (20, 60, 12.0),
               "Baby/Children": (29, 42, 6.0), "Sport": (20, 48, 10.0)}
# Relative price level by index group (kids cheaper).
IG_PRICE = {"Ladieswear": 1.08, "Divided": 0.85, "Menswear": 1.1, "Baby/Children": 0.72, "Sport": 1.0}


@dataclass
class Clusters:
    index_group: np.ndarray      # (K,) index into INDEX_GROUPS
    age_mean: np.ndarray         # (K,)
    age_sd: np.ndarray           # (K,)
    prior: np.ndarray            # (K,) customer popularity prior
    palette: np.ndarray          # (K, C) colour probabilities
    price_mult: np.ndarray       # (K,)
    type_mix: np.ndarray | None = None  # (K, n_types) products per type
    type_demand: np.ndarray | None = None  # (K, n_types) expected demand per type


@dataclass
class Catalogue:
    articles: pd.DataFrame        # the articles.csv frame, in article_id order
    clusters: Clusters
    # per article latent arrays (aligned with ``articles``)
    product: np.ndarray           # product index
    cluster: np.ndarray
    type_idx: np.ndarray          # row in vocab.product_types
    colour_idx: np.ndarray        # row in vocab.colours
    pattern: np.ndarray           # pattern name per article (object)
    silhouette: np.ndarray        # silhouette name per article (object)
    launch_week: np.ndarray
    rise: np.ndarray
    half_life: np.ndarray
    end_week: np.ndarray
    markdown_week: np.ndarray
    popularity: np.ndarray        # latent popularity (before calibration multipliers)
    basic: np.ndarray             # bool
    outfit: np.ndarray            # outfit id or -1
    price_k: np.ndarray           # regular price, 1/59000 units
    markdown_k: np.ndarray        # marked-down price
    rel_price: np.ndarray         # log price relative to the type's typical price
    has_image: np.ndarray         # bool
    # CSR structures
    product_start: np.ndarray     # first article of each product
    product_count: np.ndarray     # variants per product
    partner_ptr: np.ndarray       # outfit partners: partner_idx[partner_ptr[a]:partner_ptr[a+1]]
    partner_idx: np.ndarray

    @property
    def n(self) -> int:
        return len(self.articles)


def ipf(m: np.ndarray, row_tot: np.ndarray, col_tot: np.ndarray, iterations: int = 60) -> np.ndarray:
    """Iterative proportional fitting of a positive matrix to row and column totals."""
    m = np.asarray(m, dtype=float).copy() + 1e-12
    for _ in range(iterations):
        m *= (col_tot / np.maximum(m.sum(axis=0), 1e-300))[None, :]
        m *= (row_tot / np.maximum(m.sum(axis=1), 1e-300))[:, None]
    return m


def snap_price(x: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(PRICE_POINTS, x)
    pos = np.clip(pos, 1, len(PRICE_POINTS) - 1)
    lo, hi = PRICE_POINTS[pos - 1], PRICE_POINTS[pos]
    return np.where(np.abs(x - lo) <= np.abs(hi - x), lo, hi)


def _allocate(total: int, weights: np.ndarray, minimum: int = 0) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    n = np.maximum(minimum, np.floor(w * total).astype(int))
    rest = total - n.sum()
    if rest > 0:
        frac = w * total - np.floor(w * total)
        n[np.argsort(-frac, kind="stable")[:rest]] += 1
    elif rest < 0:
        for i in np.argsort(-n, kind="stable"):
            take = min(-rest, n[i] - minimum)
            n[i] -= take
            rest += take
            if rest == 0:
                break
    return n


def make_clusters(rng: np.random.Generator, k: int, vocab: Vocab) -> Clusters:
    ig_counts = _allocate(k, np.array([CLUSTER_SHARE[g] for g in INDEX_GROUPS]), minimum=1)
    ig = np.repeat(np.arange(len(INDEX_GROUPS)), ig_counts)
    age_mean = np.empty(k)
    age_sd = np.empty(k)
    for g, name in enumerate(INDEX_GROUPS):
        lo, hi, sd = CLUSTER_AGE[name]
        idx = np.flatnonzero(ig == g)
        # spread the cluster ages over the group's range, in random order
        age_mean[idx] = rng.permutation(np.linspace(lo, hi, len(idx)) if len(idx) > 1 else np.array([(lo + hi) / 2]))
        age_sd[idx] = sd * rng.uniform(0.8, 1.2, len(idx))
    prior = rng.lognormal(0.0, 0.3, k)
    cat = vocab.colours["cat_share"].to_numpy(float)
    # each cluster: the global colour mix, perturbed, plus 3 signature colours
    logits = np.log(cat + 1e-5)[None, :] + rng.normal(0.0, 1.2, (k, len(cat)))
    for i in range(k):
        sig = rng.choice(len(cat), size=3, replace=False, p=cat / cat.sum())
        logits[i, sig] += np.log(6.0)
    palette = np.exp(logits - logits.max(axis=1, keepdims=True))
    palette /= palette.sum(axis=1, keepdims=True)
    price_mult = rng.lognormal(0.0, 0.22, k)
    return Clusters(ig, age_mean, age_sd, prior, palette, price_mult)


def _variant_counts(rng: np.random.Generator, n_products: int, n_articles: int) -> np.ndarray:
    mean_extra = max(n_articles / n_products - 1.0, 0.0)
    lam = rng.gamma(0.7, mean_extra / 0.7, n_products) if mean_extra > 0 else np.zeros(n_products)
    v = 1 + np.minimum(rng.poisson(lam), 40)
    diff = n_articles - int(v.sum())
    while diff != 0:
        if diff > 0:
            add = np.bincount(rng.integers(0, n_products, diff), minlength=n_products)
            v = np.minimum(v + add, 45)
        else:
            cand = np.flatnonzero(v > 1)
            take = rng.choice(cand, size=min(-diff, len(cand)), replace=False)
            v[take] -= 1
        diff = n_articles - int(v.sum())
    return v


def _season_weight(doy: np.ndarray, peak: float, amp: float, lead_days: float = 0.0) -> np.ndarray:
    return np.exp(amp * np.cos(2 * np.pi * (doy + lead_days - peak) / 365.25))


def build_catalogue(rng: np.random.Generator, vocab: Vocab, timeline: Timeline, n_articles: int, n_clusters: int,
                    image_missing_share: float, legacy_weeks: int = 52, popularity_sigma: float = 0.7,
                    half_life_weeks: float = 6.0) -> Catalogue:
    pt = vocab.product_types
    deps = vocab.departments.set_index("department_no")
    dt = vocab.dept_types.merge(vocab.departments[["department_no", "index_group_name"]], on="department_no")
    type_row = {no: i for i, no in enumerate(pt["product_type_no"])}
    dt["type_idx"] = dt["product_type_no"].map(type_row)
    dt = dt.dropna(subset=["type_idx"]).reset_index(drop=True)
    dt["type_idx"] = dt["type_idx"].astype(int)
    dt["ig"] = dt["index_group_name"].map({g: i for i, g in enumerate(INDEX_GROUPS)})
    n_types = len(pt)
    type_names = pt["product_type_name"].to_numpy()
    group_names = pt["product_group_name"].to_numpy()

    clusters = make_clusters(rng, n_clusters, vocab)
    k = n_clusters

    n_products = max(min(n_articles, 3 * k), int(round(n_articles / 2.23)))
    variants = _variant_counts(rng, n_products, n_articles)

    # ---- products per cluster: index-group catalogue share, then cluster sizes
    ig_share = dt.groupby("ig")["weight"].sum().reindex(range(len(INDEX_GROUPS)), fill_value=0).to_numpy()
    size_w = np.empty(k)
    for g in range(len(INDEX_GROUPS)):
        idx = np.flatnonzero(clusters.index_group == g)
        size_w[idx] = ig_share[g] * rng.dirichlet(np.full(len(idx), 8.0))
    per_cluster = _allocate(n_products, size_w, minimum=min(3, n_products // k))
    p_cluster = rng.permutation(np.repeat(np.arange(k), per_cluster))

    # ---- (department, type) per product from the cluster's taste: each cluster strongly favours
    # some departments and types; IPF keeps the catalogue-wide shares at the real ones
    p_dept = np.empty(n_products, dtype=np.int64)
    p_type = np.empty(n_products, dtype=np.int64)
    type_noise = rng.lognormal(0.0, 1.3, (k, n_types))
    dept_codes = np.unique(dt["department_no"].to_numpy())
    dept_noise = dict(zip(dept_codes, rng.lognormal(0.0, 1.5, (len(dept_codes), k)).tolist()))
    for g in range(len(INDEX_GROUPS)):
        members_k = np.flatnonzero(clusters.index_group == g)
        rows = dt[dt["ig"] == g]
        if len(members_k) == 0 or len(rows) == 0:
            continue
        noise = type_noise[np.ix_(members_k, rows["type_idx"].to_numpy())]
        noise *= np.array([dept_noise[d] for d in rows["department_no"]]).T[members_k]
        row_tot = per_cluster[members_k].astype(float) + 1e-9
        col_tot = rows["weight"].to_numpy() / rows["weight"].sum() * row_tot.sum()
        mix = ipf(noise, row_tot, col_tot)
        for j, c in enumerate(members_k):
            members = np.flatnonzero(p_cluster == c)
            if len(members) == 0:
                continue
            w = mix[j] / mix[j].sum()
            pick = rng.choice(len(rows), size=len(members), p=w)
            p_dept[members] = rows["department_no"].to_numpy()[pick]
            p_type[members] = rows["type_idx"].to_numpy()[pick]
    # the cluster palettes, adjusted so the catalogue's colour mix stays the real one
    cat_col = vocab.colours["cat_share"].to_numpy(float)
    clusters.palette = ipf(clusters.palette, per_cluster.astype(float) + 1e-9, cat_col / cat_col.sum() * per_cluster.sum())
    clusters.palette /= clusters.palette.sum(axis=1, keepdims=True)
    clusters.type_mix = np.zeros((k, n_types))
    np.add.at(clusters.type_mix, (p_cluster, p_type), 1.0)
    ratio = (pt["txn_share"].to_numpy(float) + 1e-6) / (pt["cat_share"].to_numpy(float) + 1e-6)
    clusters.type_demand = clusters.type_mix * np.clip(ratio, 0.05, 20.0)[None, :]

    basic_prob = np.array([BASIC_PROB_BY_TYPE.get(t, 0.0) for t in type_names])
    p_basic = rng.random(n_products) < basic_prob[p_type] * 0.8

    # ---- launch week and life cycle
    n_weeks = timeline.n_weeks
    wdoy = timeline.week_day_of_year()
    p_legacy = np.where(p_basic, 0.85, 0.3)
    legacy = rng.random(n_products) < p_legacy
    # every cluster keeps a couple of evergreen legacy products so it is never empty
    for c in range(k):
        members = np.flatnonzero(p_cluster == c)[:2]
        legacy[members] = True
        p_basic[members] |= rng.random(len(members)) < 0.5
    forced = np.zeros(n_products, dtype=bool)
    for c in range(k):
        forced[np.flatnonzero(p_cluster == c)[:2]] = True
    launch = np.empty(n_products, dtype=np.int64)
    launch[legacy] = -rng.integers(1, legacy_weeks + 1, legacy.sum())
    # new launches: more before the seasons (Feb-Mar, Aug-Sep), seasonal types ahead of their season
    base_launch = 1.0 + 0.8 * (np.exp(-((wdoy - 55) / 28.0) ** 2) + np.exp(-((wdoy - 235) / 28.0) ** 2))
    season_of_type = [SEASON_BY_TYPE.get(t) for t in type_names]
    new = np.flatnonzero(~legacy)
    for t in np.unique(p_type[new]):
        idx = new[p_type[new] == t]
        w = base_launch.copy()
        s = season_of_type[t]
        if s is not None:
            w = w * _season_weight(wdoy, s[0], min(s[1], 1.2), lead_days=50)
        launch[idx] = rng.choice(n_weeks, size=len(idx), p=w / w.sum())
    rise = rng.integers(1, 4, n_products)
    half = rng.lognormal(np.log(half_life_weeks), 0.6, n_products)
    half = np.where(p_basic | forced, rng.uniform(80, 200, n_products), half)
    end = launch + rise + np.ceil(half * rng.uniform(3.5, 6.0, n_products)).astype(np.int64)
    markdown = launch + rise + np.ceil(half * rng.uniform(1.3, 2.8, n_products)).astype(np.int64)
    markdown = np.where(p_basic | forced, 10**6, markdown)

    # ---- popularity and price
    # evergreen products sell steadily at a lower level than a new launch at its peak
    pop = rng.lognormal(0.0, popularity_sigma, n_products) * np.where(p_basic | forced, 0.35, 1.0)
    ig_of_cluster = np.array([INDEX_GROUPS[g] for g in clusters.index_group])
    ig_price = np.array([IG_PRICE[g] for g in ig_of_cluster])
    base_price = pt["price_k"].to_numpy(float)[p_type] * clusters.price_mult[p_cluster] * ig_price[p_cluster]
    base_price *= rng.lognormal(0.0, 0.28, n_products)
    p_price = snap_price(base_price)
    # the type's typical price in this catalogue, to express each product's price band
    type_med = pd.Series(np.log(p_price)).groupby(p_type).median()
    p_rel_price = np.log(p_price) - type_med.reindex(p_type).to_numpy()

    # ---- product codes: ascending with launch (older products have lower codes)
    order = np.argsort(launch + rng.normal(0, 6.0, n_products), kind="stable")
    codes = np.sort(rng.choice(np.arange(108775, 959999), size=n_products, replace=False))
    p_code = np.empty(n_products, dtype=np.int64)
    p_code[order] = codes
    # reorder products by code so that article rows come out in article_id order
    perm = np.argsort(p_code, kind="stable")
    (p_code, p_cluster, p_dept, p_type, p_basic, launch, rise, half, end, markdown, pop, p_price, p_rel_price,
     variants) = (x[perm] for x in (p_code, p_cluster, p_dept, p_type, p_basic, launch, rise, half, end, markdown,
                                   pop, p_price, p_rel_price, variants))

    # ---- variants
    n_art = int(variants.sum())
    a_product = np.repeat(np.arange(n_products), variants)
    product_start = np.concatenate([[0], np.cumsum(variants)[:-1]])
    rank = np.arange(n_art) - product_start[a_product]
    # distinct colours per product: Gumbel top-k over the cluster palette
    n_col = clusters.palette.shape[1]
    # drawing without replacement flattens the mix: adjust the palettes until the catalogue's
    # colour shares match the real ones
    gumbel = rng.gumbel(size=(n_products, n_col))
    tilt = np.zeros(n_col)
    for _ in range(4):
        logp = np.log(clusters.palette[p_cluster] + 1e-12) + tilt[None, :]
        colour_order = np.argsort(-(logp + gumbel), axis=1, kind="stable")
        a_colour = colour_order[a_product, np.minimum(rank, n_col - 1)]
        got = np.bincount(a_colour, minlength=n_col) / len(a_colour)
        tilt += np.clip(np.log((cat_col / cat_col.sum() + 1e-5) / (got + 1e-5)), -1.0, 1.0)
    # variant numbers: 001 mostly first, increasing with gaps
    first = np.where(rng.random(n_products) < 0.85, 1, rng.integers(2, 20, n_products))
    step = np.where(rng.random(n_art) < 0.7, 1, rng.integers(2, 15, n_art))
    step[product_start] = 0
    csum = np.cumsum(step)
    vnum = first[a_product] + csum - csum[product_start][a_product]
    vnum = np.minimum(vnum, 999)
    # guarantee uniqueness after the cap
    vnum = np.where(vnum >= 999, 999 - (variants[a_product] - 1 - rank), vnum)
    article_id = p_code[a_product] * 1000 + vnum

    # ---- appearance: per product from the cluster's mix, a few variants differ
    ga = vocab.appearances
    ga_share = ga["share"].to_numpy(float)
    ga_names = ga["graphical_appearance_name"].to_numpy()
    ga_noise = rng.lognormal(-0.3, 0.8, (k, len(ga)))
    ga_prob = ga_share[None, :] * ga_noise
    ga_prob /= ga_prob.sum(axis=1, keepdims=True)
    cum = np.cumsum(ga_prob, axis=1)
    p_ga = (rng.random(n_products)[:, None] > cum[p_cluster]).sum(axis=1)
    p_ga = np.minimum(p_ga, len(ga) - 1)
    a_ga = p_ga[a_product].copy()
    redraw = (rank > 0) & (rng.random(n_art) < 0.18)
    a_ga[redraw] = np.minimum((rng.random(redraw.sum())[:, None] > cum[p_cluster[a_product[redraw]]]).sum(axis=1),
                              len(ga) - 1)
    denim = np.flatnonzero(ga_names == "Denim")
    solid = int(np.flatnonzero(ga_names == "Solid")[0])
    if len(denim):
        bad = (a_ga == denim[0]) & ~np.isin(group_names[p_type[a_product]], list(DENIM_OK))
        a_ga[bad] = solid

    # ---- perceived colour combos per colour group
    combos = vocab.colour_combos
    colours = vocab.colours
    a_value = np.empty(n_art, dtype=object)
    a_value_name = np.empty(n_art, dtype=object)
    a_master = np.empty(n_art, dtype=object)
    a_master_name = np.empty(n_art, dtype=object)
    col_codes = colours["colour_group_code"].to_numpy()
    for ci, code in enumerate(col_codes):
        idx = np.flatnonzero(a_colour == ci)
        if len(idx) == 0:
            continue
        rows = combos[combos["colour_group_code"] == code]
        if len(rows) == 0:
            rows = combos[combos["colour_group_code"] == -1]
        w = rows["n"].to_numpy(float)
        pick = rng.choice(len(rows), size=len(idx), p=w / w.sum())
        a_value[idx] = rows["perceived_colour_value_id"].to_numpy()[pick]
        a_value_name[idx] = rows["perceived_colour_value_name"].to_numpy()[pick]
        a_master[idx] = rows["perceived_colour_master_id"].to_numpy()[pick]
        a_master_name[idx] = rows["perceived_colour_master_name"].to_numpy()[pick]

    # ---- variant popularity: the first (palette favourite) colour sells more
    a_pop = pop[a_product] * rng.lognormal(0.0, 0.7, n_art) * np.where(rank == 0, 1.6, 1.0)
    # variant prices: mostly the product's, some variants a step apart
    a_price = p_price[a_product].copy()
    shift = (rank > 0) & (rng.random(n_art) < 0.08)
    a_price[shift] = snap_price(a_price[shift] * rng.choice([0.8, 1.2], shift.sum()))
    md_factor = rng.choice([0.5, 0.6, 0.7, 0.75], n_art, p=[0.3, 0.3, 0.3, 0.1])
    a_md = np.maximum(np.floor(a_price * md_factor), 20).astype(np.int64)

    # ---- outfits: products of one cluster launched the same week, mixed product groups
    outfit_p = np.full(n_products, -1, dtype=np.int64)
    garment = np.isin(group_names[p_type], ["Garment Upper body", "Garment Lower body", "Garment Full body",
                                            "Accessories", "Shoes", "Swimwear"])
    cand = np.flatnonzero(garment)
    key = pd.DataFrame({"p": cand, "c": p_cluster[cand], "w": launch[cand], "g": group_names[p_type[cand]],
                        "r": rng.random(len(cand))}).sort_values(["c", "w", "g", "r"], kind="stable")
    next_id = 0
    for _, grp in key.groupby(["c", "w"], sort=False):
        members = grp["p"].to_numpy()
        if len(members) < 2:
            continue
        n_out = max(1, len(members) // 3)
        outfit_p[members] = next_id + (np.arange(len(members)) % n_out)
        next_id += n_out
    # singletons after the round robin get no outfit
    sizes = np.bincount(outfit_p[outfit_p >= 0], minlength=max(next_id, 1))
    outfit_p[(outfit_p >= 0) & (sizes[np.maximum(outfit_p, 0)] < 2)] = -1
    a_outfit = outfit_p[a_product]
    # partners of an article: for each other product of its outfit, the variant closest in colour
    # (same colour if it exists, else that product's first variant)
    by_outfit = pd.Series(np.arange(n_products)[outfit_p >= 0]).groupby(outfit_p[outfit_p >= 0]).apply(np.array)
    ptr = np.zeros(n_art + 1, dtype=np.int64)
    lists = [np.empty(0, dtype=np.int64)] * n_art
    for members in by_outfit:
        for p in members:
            others = members[members != p]
            for a in range(product_start[p], product_start[p] + variants[p]):
                chosen = []
                for q in others:
                    s, n = product_start[q], variants[q]
                    same = np.flatnonzero(a_colour[s:s + n] == a_colour[a])
                    chosen.append(s + (same[0] if len(same) else 0))
                lists[a] = np.array(chosen, dtype=np.int64)
    counts = np.array([len(x) for x in lists], dtype=np.int64)
    ptr[1:] = np.cumsum(counts)
    partner_idx = np.concatenate(lists) if counts.sum() else np.empty(0, dtype=np.int64)

    # ---- text
    ig_names = np.array(INDEX_GROUPS, dtype=object)[clusters.index_group[p_cluster]]
    names, descs = _texts(rng, vocab, type_names[p_type], ig_names, n_products)
    a_name = names[a_product].astype(object)
    suffix = redraw & (rng.random(n_art) < 0.6)
    a_name[suffix] = [f"{n} (1)" for n in a_name[suffix]]
    a_desc = descs[a_product].astype(object)
    a_desc[rng.random(n_art) < 0.004] = None

    dep = deps.loc[p_dept[a_product]]
    a_type = p_type[a_product]
    frame = pd.DataFrame({
        "article_id": [f"{x:010d}" for x in article_id],
        "product_code": p_code[a_product],
        "prod_name": a_name,
        "product_type_no": pt["product_type_no"].to_numpy()[a_type],
        "product_type_name": type_names[a_type],
        "product_group_name": group_names[a_type],
        "graphical_appearance_no": ga["graphical_appearance_no"].to_numpy()[a_ga],
        "graphical_appearance_name": ga_names[a_ga],
        "colour_group_code": col_codes[a_colour],
        "colour_group_name": colours["colour_group_name"].to_numpy()[a_colour],
        "perceived_colour_value_id": a_value,
        "perceived_colour_value_name": a_value_name,
        "perceived_colour_master_id": a_master,
        "perceived_colour_master_name": a_master_name,
        "department_no": p_dept[a_product],
        "department_name": dep["department_name"].to_numpy(),
        "index_code": dep["index_code"].to_numpy(),
        "index_name": dep["index_name"].to_numpy(),
        "index_group_no": dep["index_group_no"].to_numpy(),
        "index_group_name": dep["index_group_name"].to_numpy(),
        "section_no": dep["section_no"].to_numpy(),
        "section_name": dep["section_name"].to_numpy(),
        "garment_group_no": dep["garment_group_no"].to_numpy(),
        "garment_group_name": dep["garment_group_name"].to_numpy(),
        "detail_desc": a_desc,
    })[ARTICLE_COLUMNS]

    sil_of_type = np.array([silhouette_of(t, g) for t, g in zip(type_names, group_names)], dtype=object)
    pattern = np.array([PATTERN_BY_APPEARANCE.get(n, "solid") for n in ga_names], dtype=object)[a_ga]
    has_image = rng.random(n_art) >= image_missing_share
    return Catalogue(
        articles=frame, clusters=clusters, product=a_product, cluster=p_cluster[a_product], type_idx=a_type,
        colour_idx=a_colour, pattern=pattern, silhouette=sil_of_type[a_type], launch_week=launch[a_product],
        rise=rise[a_product], half_life=half[a_product], end_week=end[a_product],
        markdown_week=markdown[a_product], popularity=a_pop, basic=p_basic[a_product], outfit=a_outfit,
        price_k=a_price.astype(np.int64), markdown_k=a_md, rel_price=p_rel_price[a_product], has_image=has_image,
        product_start=product_start, product_count=variants, partner_ptr=ptr, partner_idx=partner_idx,
    )


def _texts(rng: np.random.Generator, vocab: Vocab, types: np.ndarray, index_groups: np.ndarray,
           n: int) -> tuple[np.ndarray, np.ndarray]:
    """prod_name from real names / real stems + type words; detail_desc from a real description
    of the same type (and index group), with a sentence swapped or dropped now and then."""
    pools = vocab.text["types"]
    stems = vocab.text["stems"]
    names = np.empty(n, dtype=object)
    descs = np.empty(n, dtype=object)
    u = rng.random((n, 8))
    stem_pick = rng.integers(0, len(stems), n)
    for i in range(n):
        pool = pools.get(types[i]) or pools["Top"]
        real, sfx = pool["names"], pool["suffixes"]
        if real and (u[i, 0] < 0.4 or not sfx):
            name = real[int(u[i, 1] * len(real))]
        elif sfx:
            name = f"{stems[stem_pick[i]]} {sfx[int(u[i, 1] * len(sfx))]}"
        else:
            name = f"{stems[stem_pick[i]]} {types[i].lower()}"
        if u[i, 2] < 0.06:
            name = name.upper()
        names[i] = name
        texts = pool["by_index_group"].get(index_groups[i]) or pool["descs"]
        if not texts:
            descs[i] = f"{types[i]} in soft fabric."
            continue
        parts = list(texts[int(u[i, 3] * len(texts))])
        det = pool["details"]
        if len(parts) > 1 and det and u[i, 4] < 0.35:
            parts[1 + int(u[i, 5] * (len(parts) - 1))] = det[int(u[i, 6] * len(det))]
        elif len(parts) > 2 and u[i, 4] > 0.8:
            del parts[1 + int(u[i, 5] * (len(parts) - 1))]
        descs[i] = " ".join(dict.fromkeys(parts))
    return names, descs


def season_matrix(type_names: np.ndarray, week_doy: np.ndarray) -> np.ndarray:
    """(n_types, n_weeks) demand factor per type and week, mean 1 over a year."""
    out = np.ones((len(type_names), len(week_doy)))
    grid = np.arange(1, 366)
    for i, t in enumerate(type_names):
        s = SEASON_BY_TYPE.get(t)
        if s is None:
            continue
        norm = _season_weight(grid, s[0], s[1]).mean()
        out[i] = _season_weight(week_doy, s[0], s[1]) / norm
    return out
