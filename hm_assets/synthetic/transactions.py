"""Shopping sessions and the transactions they produce, simulated day by day and streamed to CSV.

Model (all vectorised over one day's sessions):

- sessions: each customer shops on days drawn from a heavy-tailed personal rate inside an active
  window (join .. churn), normalised so the daily number of sessions follows the real daily curve;
  a newcomer's first session is on the joining day; a session sometimes has a follow-up a few days
  later (bursty customers);
- basket: 1 + geometric items, bigger online; channel from the customer's own channel habit;
- each item is either taken from the customer's recent history (re-buying the same article,
  mostly basics, or another colour of the same product) or drawn fresh: a style cluster from the
  customer's taste mixture (most items of a session from one cluster), then a few candidate
  articles from that cluster's current popularity (popularity x life cycle x season), of which
  the one that best fits the customer's favourite colours and price band is bought;
- extras: outfit partners of a fresh item, a second colour of the same product;
- multi-unit purchases are written as repeated rows;
- price: regular price, the marked-down price late in the article's life or on sale days, a
  small per-transaction jitter.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from .catalogue import Catalogue, snap_price
from .people import Customers
from .timeline import Timeline

PRICE_UNIT = 59000.0
HEADER = b"t_dat,customer_id,article_id,price,sales_channel_id\n"


@dataclass(frozen=True)
class BehaviourParams:
    rows_per_session: float = 3.15    # used to turn the transaction target into a session count
    basket_extra_online: float = 1.6  # mean items beyond the first, online
    basket_extra_store: float = 1.0
    max_basket: int = 25
    p_session_cluster: float = 0.8    # item from the session's cluster (else from the taste mixture)
    n_candidates: int = 6
    beta_colour: float = 1.2
    beta_type: float = 1.5
    p_type_focus: float = 0.45        # fresh items looked for among the customer's favourite types
    beta_price: float = 5.0
    p_history: float = 0.2            # share of items that look back at the customer's history
    p_history_follow: float = 0.5     # the same in a follow-up session (coming back for more / another size)
    lookback_p: float = 0.3           # geometric: how far back (in items) the look goes
    tau_history: float = 5.0          # days: how fast a non-basic re-buy becomes unlikely
    tau_basic: float = 25.0
    tau_sibling: float = 12.0
    p_repeat_nonbasic: float = 0.6
    p_repeat_follow: float = 0.5      # a follow-up session re-buys a recent non-basic item (basics: 1)
    p_same_article: float = 0.6       # a history re-buy is the same article (basics: always)
    p_outfit: float = 0.2
    p_variant: float = 0.07
    p_dup: float = 0.075
    p_dup_basic: float = 0.22
    p_follow: float = 0.3
    store_extra_markdown: float = 0.04  # stores clear a few more items at the marked-down price
    follow_p: float = 0.4             # geometric parameter of the follow-up delay (days)
    hist_slots: int = 24
    penalty_seen: float = 6.0         # fresh draws avoid articles in the customer's recent history
    life_floor: float = 0.02


# --------------------------------------------------------------------------------------------
# Sessions


def plan_sessions(rng: np.random.Generator, cust: Customers, n_days: int, day_weight: np.ndarray,
                  n_sessions: int, p_follow: float, follow_p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All shopping sessions as (day, customer, is_follow_up) arrays sorted by day then customer_id."""
    n = cust.n
    buyer = ~cust.never_buys
    target = n_sessions * day_weight / day_weight.sum()
    join, end = cust.join_day, cust.end_day
    forced = buyer & (join > 0)
    forced_d = np.bincount(join[forced], minlength=n_days).astype(float)
    base = np.maximum(target / (1 + p_follow) - forced_d, 0.2 * target / (1 + p_follow))
    act = np.where(buyer, cust.activity, 0.0)
    diff = np.zeros(n_days + 1)
    np.add.at(diff, join, act)
    np.add.at(diff, end, -act)
    alive = np.maximum(np.cumsum(diff)[:n_days], 1e-9)
    g = base / alive
    cg = np.concatenate([[0.0], np.cumsum(g)])
    expect = act * (cg[end] - cg[join])
    count = rng.poisson(expect)
    c = np.repeat(np.arange(n), count)
    u = cg[join[c]] + rng.random(len(c)) * (cg[end[c]] - cg[join[c]])
    d = np.clip(np.searchsorted(cg, u, side="right") - 1, join[c], end[c] - 1)
    c = np.concatenate([c, np.flatnonzero(forced)])
    d = np.concatenate([d, join[forced]])
    follow = rng.random(len(c)) < p_follow
    fc = c[follow]
    fd = d[follow] + rng.geometric(follow_p, follow.sum())
    ok = fd < end[fc]
    c = np.concatenate([c, fc[ok]])
    d = np.concatenate([d, fd[ok]])
    is_follow = np.concatenate([np.zeros(len(c) - ok.sum(), dtype=bool), np.ones(ok.sum(), dtype=bool)])
    key = d.astype(np.int64) * n + cust.rank[c]
    order = np.lexsort((~is_follow, key))  # per (day, customer) keep the follow-up flag if any
    key, is_follow = key[order], is_follow[order]
    first = np.concatenate([[True], key[1:] != key[:-1]])
    key, is_follow = key[first], is_follow[first]
    by_rank = np.empty(n, dtype=np.int64)
    by_rank[cust.rank] = np.arange(n)
    return (key // n).astype(np.int32), by_rank[key % n].astype(np.int32), is_follow


# --------------------------------------------------------------------------------------------
# Article choice


class WeekTables:
    """Per-week sampling tables: articles grouped (by cluster, or by cluster and type), cumulative
    weights offset by the group number so that one ``searchsorted`` serves every group."""

    def __init__(self, cat: Catalogue, groups: np.ndarray, n_groups: int, safe: bool = False):
        self.cat = cat
        self.safe = safe
        self.perm = np.argsort(groups, kind="stable")
        self.sorted_group = groups[self.perm]
        self.counts = np.bincount(self.sorted_group, minlength=n_groups)
        self.start = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.stop = self.start + self.counts
        self.ok = np.zeros(n_groups, dtype=bool)

    def set_weights(self, weight: np.ndarray, launched: np.ndarray) -> None:
        ws = weight[self.perm]
        self._fill(ws)
        if self.safe and (~self.ok & (self.counts > 0)).any():
            # cannot happen (every cluster keeps evergreen products); stay safe: launched articles
            bad = ~self.ok & (self.counts > 0)
            ws = ws + np.where(bad[self.sorted_group] & launched[self.perm], 1e-9, 0.0)
            self._fill(ws)
        self.alive = weight > 0

    def _fill(self, ws: np.ndarray) -> np.ndarray:
        cs = np.cumsum(ws)
        cs0 = np.concatenate([[0.0], cs])
        tot = cs0[self.stop] - cs0[self.start]
        self.ok = tot > 0
        g = self.sorted_group
        self.cdf = g + (cs - cs0[self.start][g]) / np.where(self.ok, tot, 1.0)[g]
        nonempty = np.flatnonzero(self.counts > 0)
        self.cdf[self.stop[nonempty] - 1] = nonempty + 1.0
        pos = np.where(ws > 0, np.arange(len(ws)), -1)
        self.prev_pos = np.maximum.accumulate(pos)
        return tot

    def draw(self, rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
        """One article per entry of ``group`` (groups must be ``ok``)."""
        pos = np.searchsorted(self.cdf, group + rng.random(len(group)), side="right")
        pos = np.clip(pos, self.start[group], self.stop[group] - 1)
        prev = self.prev_pos[pos]
        pos = np.where(prev >= self.start[group], prev, pos)
        return self.perm[pos]


class Market:
    """The week's article weights (popularity x life cycle x season) and both sampling tables."""

    def __init__(self, cat: Catalogue, base_weight: np.ndarray, season: np.ndarray, floor: float):
        self.cat = cat
        self.base = base_weight
        self.season = season
        self.floor = floor
        k = int(cat.cluster.max()) + 1
        self.n_types = season.shape[0]
        self.by_cluster = WeekTables(cat, cat.cluster, k, safe=True)
        self.by_type = WeekTables(cat, cat.cluster * self.n_types + cat.type_idx, k * self.n_types)
        self.week = None

    def life(self, w: int) -> np.ndarray:
        cat = self.cat
        t = w - cat.launch_week
        ramp = np.clip((t + 1) / cat.rise, 0.0, 1.0)
        decay = 0.5 ** (np.maximum(t - cat.rise, 0) / cat.half_life)
        life = np.maximum(ramp * decay, self.floor)
        return np.where((t < 0) | (w >= cat.end_week), 0.0, life)

    def set_week(self, w: int) -> None:
        if self.week == w:
            return
        self.week = w
        sw = min(max(w, 0), self.season.shape[1] - 1)
        weight = self.base * self.life(w) * self.season[self.cat.type_idx, sw]
        launched = self.cat.launch_week <= w
        self.weight = weight
        self.by_cluster.set_weights(weight, launched)
        self.by_type.set_weights(weight, launched)
        self.alive = self.by_cluster.alive


def choose(rng: np.random.Generator, tables: WeekTables, group: np.ndarray, cat: Catalogue, cust: Customers,
           c: np.ndarray, bp: BehaviourParams, history: np.ndarray | None = None,
           retry_tables: WeekTables | None = None) -> np.ndarray:
    """Fresh purchase: candidates from the group's current popularity; the best fit for the
    customer's colours, types and price band wins; articles of products bought recently are
    avoided (re-buys come from the history mechanism only)."""
    m = bp.n_candidates
    cand = tables.draw(rng, np.repeat(group, m)).reshape(-1, m)
    fav = cust.fav_colours[c]
    col = cat.colour_idx[cand]
    match = (col == fav[:, :1]) | (col == fav[:, 1:2])
    dev = (cat.rel_price[cand] - cust.price_pref[c][:, None]) ** 2
    ft = cust.fav_types[c]
    typ = cat.type_idx[cand]
    tmatch = (typ == ft[:, :1]) | (typ == ft[:, 1:2])
    score = bp.beta_colour * match + bp.beta_type * tmatch - bp.beta_price * dev + rng.gumbel(size=cand.shape)
    if history is None:
        return cand[np.arange(len(c)), np.argmax(score, axis=1)]
    hp = cat.product[np.maximum(history[c], 0)]
    hp[history[c] < 0] = -1
    seen = (cat.product[cand][:, :, None] == hp[:, None, :]).any(axis=2)
    score -= bp.penalty_seen * seen
    best = np.argmax(score, axis=1)
    out = cand[np.arange(len(c)), best]
    stuck = np.flatnonzero(seen[np.arange(len(c)), best])
    if len(stuck) and retry_tables is not None:
        # everything offered was bought before: look in one of the customer's clusters
        k2 = cust.clusters[c[stuck], rng.integers(0, cust.clusters.shape[1], len(stuck))]
        alt = choose(rng, retry_tables, k2, cat, cust, c[stuck], bp, history, None)
        alt_seen = (cat.product[alt][:, None] == hp[stuck]).any(axis=1)
        out[stuck] = np.where(alt_seen, out[stuck], alt)
    return out


def fresh_draw(rng: np.random.Generator, market: Market, cat: Catalogue, cust: Customers, c: np.ndarray,
               k: np.ndarray, bp: BehaviourParams, history: np.ndarray | None = None) -> np.ndarray:
    """Some items are looked for among the customer's favourite product types, the others in
    the whole style cluster."""
    out = np.empty(len(c), dtype=np.int64)
    focus = rng.random(len(c)) < bp.p_type_focus
    ft = cust.fav_types[c, rng.integers(0, 2, len(c))]
    g = k * market.n_types + ft
    focus &= market.by_type.ok[g]
    fi = np.flatnonzero(focus)
    ri = np.flatnonzero(~focus)
    if len(fi):
        out[fi] = choose(rng, market.by_type, g[fi], cat, cust, c[fi], bp, None if history is None else history,
                         market.by_cluster)
    if len(ri):
        out[ri] = choose(rng, market.by_cluster, k[ri], cat, cust, c[ri], bp, history, market.by_cluster)
    return out


def pick_slots(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    cum = np.cumsum(weights, axis=1)
    return np.minimum((rng.random(len(weights))[:, None] > cum).sum(axis=1), weights.shape[1] - 1)


def sibling(rng: np.random.Generator, cat: Catalogue, a: np.ndarray) -> np.ndarray:
    """Another colour variant of the same product (the article itself if it has none)."""
    p = cat.product[a]
    n = cat.product_count[p]
    s = cat.product_start[p]
    r = a - s
    step = 1 + (rng.random(len(a)) * np.maximum(n - 1, 1)).astype(np.int64)
    return np.where(n > 1, s + (r + step) % n, a)


# --------------------------------------------------------------------------------------------
# Calibration


def calibrate(rng: np.random.Generator, cat: Catalogue, cust: Customers, timeline: Timeline, sess_day: np.ndarray,
              sess_cust: np.ndarray, targets: dict, type_names: np.ndarray, colour_names: np.ndarray,
              bp: BehaviourParams, season: np.ndarray, sale_prob: np.ndarray, iterations: int = 6,
              n_pilot: int = 150_000) -> dict:
    """Fit article weight multipliers (type, colour) and index-group taste multipliers so that the
    transaction shares match the real ones. Works on a pilot sample of fresh draws."""
    from .vocab import INDEX_GROUPS

    n_types, n_col = len(type_names), len(colour_names)
    t_type = np.array([targets["type_txn"].get(t, 1e-6) for t in type_names])
    t_type /= t_type.sum()
    t_col = np.array([targets["colour_txn"].get(c, 1e-6) for c in colour_names])
    t_col /= t_col.sum()
    t_ig = np.array([targets["ig_txn"][g] for g in INDEX_GROUPS])
    t_ig /= t_ig.sum()
    ig_of_cluster = cat.clusters.index_group
    m_type = np.ones(n_types)
    m_col = np.ones(n_col)
    pick = rng.choice(len(sess_day), size=min(n_pilot, max(len(sess_day), 1) * 3), replace=True)
    pc = sess_cust[pick]
    pw = timeline.week_of_day(sess_day[pick])
    order = np.argsort(pw, kind="stable")
    pc, pw = pc[order], pw[order]
    weeks, wstart = np.unique(pw, return_index=True)
    wstop = np.append(wstart[1:], len(pw))
    present_t = np.bincount(cat.type_idx, minlength=n_types) > 0
    present_c = np.bincount(cat.colour_idx, minlength=n_col) > 0
    tt = np.where(present_t, t_type, 0)
    tt /= tt.sum()
    tc = np.where(present_c, t_col, 0)
    tc /= tc.sum()
    history = []
    for it in range(iterations):
        if it == iterations - 1:  # the last pass measures with the final prices
            pass
        base = cat.popularity * m_type[cat.type_idx] * m_col[cat.colour_idx]
        market = Market(cat, base, season, bp.life_floor)
        slot = pick_slots(rng, cust.weights[pc])
        kk = cust.clusters[pc, slot]
        arts = np.empty(len(pc), dtype=np.int64)
        for w, s, e in zip(weeks, wstart, wstop):
            market.set_week(int(w))
            arts[s:e] = fresh_draw(rng, market, cat, cust, pc[s:e], kk[s:e], bp)
        # price level: scale the catalogue so the mean paid price hits the real one
        days = sess_day[pick][order]
        marked = (pw >= cat.markdown_week[arts]) | (rng.random(len(arts)) < sale_prob[days])
        paid = np.where(marked, cat.markdown_k[arts], cat.price_k[arts]).mean() / PRICE_UNIT
        f = targets["mean_price"] / paid
        if abs(f - 1) > 0.01:
            cat.price_k = snap_price(cat.price_k * f)
            cat.markdown_k = np.maximum(np.floor(cat.markdown_k * f), 20).astype(np.int64)
        # the extras a fresh item brings (outfit partners, second colours), as in the simulation
        n_part = cat.partner_ptr[arts + 1] - cat.partner_ptr[arts]
        want = (n_part > 0) & (rng.random(len(arts)) < bp.p_outfit)
        part = cat.partner_idx[cat.partner_ptr[arts[want]] + (rng.random(want.sum()) * n_part[want]).astype(np.int64)]
        want_v = (cat.product_count[cat.product[arts]] > 1) & (rng.random(len(arts)) < bp.p_variant)
        bought = np.concatenate([arts, part, sibling(rng, cat, arts[want_v])])
        sh_t = np.bincount(cat.type_idx[bought], minlength=n_types) / len(bought)
        sh_c = np.bincount(cat.colour_idx[bought], minlength=n_col) / len(bought)
        sh_ig = np.bincount(ig_of_cluster[kk], minlength=len(INDEX_GROUPS)) / len(arts)
        err = float(np.abs(sh_t - tt).sum() / 2), float(np.abs(sh_c - tc).sum() / 2), float(np.abs(sh_ig - t_ig).sum() / 2)
        history.append(err)
        if it == iterations - 1:
            break
        # smoothed ratio updates (small categories are noisy in the pilot)
        prior = 20.0 / len(bought)
        m_type *= np.clip(((tt + prior) / (sh_t + prior)) ** 0.8, 0.25, 4.0)
        m_col *= np.clip(((tc + prior) / (sh_c + prior)) ** 0.8, 0.25, 4.0)
        m_type = np.clip(m_type, 0.02, 50.0)
        m_col = np.clip(m_col, 0.02, 50.0)
        ig_mult = np.clip((t_ig / np.maximum(sh_ig, 1e-6)) ** 0.9, 0.3, 3.0)
        cust.weights *= ig_mult[ig_of_cluster[cust.clusters]]
        cust.weights /= cust.weights.sum(axis=1, keepdims=True)
    return {"m_type": m_type, "m_colour": m_col, "pilot_error": history}


# --------------------------------------------------------------------------------------------
# CSV row encoding


class RowEncoder:
    """Builds CSV bytes for many rows at once with numpy (fixed-width fields + masked price)."""

    PRICE_W = 22

    def __init__(self, cust_bytes: np.ndarray, article_ids: list[str], dates: list[str], max_k: int):
        self.cust = cust_bytes
        self.art = np.frombuffer("".join(article_ids).encode(), dtype=np.uint8).reshape(-1, 10)
        self.dates = [np.frombuffer(d.encode(), dtype=np.uint8) for d in dates]
        table = np.zeros((max_k + 1, 2, self.PRICE_W), dtype=np.uint8)
        length = np.zeros((max_k + 1, 2), dtype=np.int64)
        for k in range(1, max_k + 1):
            s = price_str(k)
            for ch in (0, 1):
                b = f"{s},{ch + 1}\n".encode()
                table[k, ch, :len(b)] = np.frombuffer(b, dtype=np.uint8)
                length[k, ch] = len(b)
        self.table = table
        self.length = length
        self.fixed_w = 10 + 1 + 64 + 1 + 10 + 1

    def encode(self, day: int, cust: np.ndarray, art: np.ndarray, price_k: np.ndarray, channel: np.ndarray) -> bytes:
        n = len(cust)
        if n == 0:
            return b""
        width = self.fixed_w + self.PRICE_W
        m = np.empty((n, width), dtype=np.uint8)
        m[:, 0:10] = self.dates[day]
        m[:, 10] = ord(",")
        m[:, 11:75] = self.cust[cust]
        m[:, 75] = ord(",")
        m[:, 76:86] = self.art[art]
        m[:, 86] = ord(",")
        ch = channel - 1
        m[:, 87:] = self.table[price_k, ch]
        mask = np.ones((n, width), dtype=bool)
        mask[:, 87:] = np.arange(self.PRICE_W)[None, :] < self.length[price_k, ch][:, None]
        return m[mask].tobytes()


def price_str(k: int) -> str:
    """The real file's price format: k/59000 truncated to 16 decimals, trailing zeros dropped."""
    s = "%.20f" % (k / PRICE_UNIT)
    whole, frac = s.split(".")
    frac = frac[:16].rstrip("0") or "0"
    return f"{whole}.{frac}"


# --------------------------------------------------------------------------------------------
# The day loop


@dataclass
class SimStats:
    rows: int = 0
    sessions: int = 0
    items: int = 0
    from_history: int = 0
    outfit_extras: int = 0
    variant_extras: int = 0
    price_sum: float = 0.0
    online_rows: int = 0


@dataclass
class History:
    """Each customer's latest purchases (a ring of ``slots`` articles and their days)."""

    articles: np.ndarray   # (customers, slots) int32, -1 = empty
    days: np.ndarray       # (customers, slots) int16
    pointer: np.ndarray    # (customers,) int64: slots written so far

    @classmethod
    def empty(cls, n_customers: int, slots: int) -> "History":
        return cls(np.full((n_customers, slots), -1, dtype=np.int32), np.zeros((n_customers, slots), dtype=np.int16),
                   np.zeros(n_customers, dtype=np.int64))

    def rows(self, customers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.articles[customers].copy(), self.days[customers].copy(), self.pointer[customers].copy()

    def restore(self, customers: np.ndarray, saved: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.articles[customers], self.days[customers], self.pointer[customers] = saved

    def remember(self, day: int, sc: np.ndarray, all_s: np.ndarray, all_a: np.ndarray) -> None:
        """Append one day's items (one session per customer per day, items contiguous by session)."""
        slots = self.articles.shape[1]
        all_c = sc[all_s]
        first = np.searchsorted(all_s, all_s, side="left")
        j = np.arange(len(all_a)) - first
        pos = (self.pointer[all_c] + j) % slots
        self.articles[all_c, pos] = all_a
        self.days[all_c, pos] = day
        self.pointer[sc] += np.bincount(all_s, minlength=len(sc))


@dataclass
class DayItems:
    online: np.ndarray   # per session
    all_s: np.ndarray    # per item: its session (sorted), one line per article and session
    all_a: np.ndarray    # per item: the article
    base_items: int
    from_history: int
    outfit_extras: int
    variant_extras: int


def day_items(rng: np.random.Generator, cat: Catalogue, cust: Customers, market: Market, history: History, d: int,
              sc: np.ndarray, sf: np.ndarray, scale: float, bp: BehaviourParams) -> DayItems:
    """What one day's sessions buy under the model: the basket, re-buys from each customer's
    history, fresh draws from the week's market and their outfit / colour extras."""
    slots = history.articles.shape[1]
    hist_a, hist_d, hist_ptr = history.articles, history.days, history.pointer
    ns = len(sc)
    online = rng.random(ns) < cust.p_online[sc]
    mean_extra = np.where(online, bp.basket_extra_online, bp.basket_extra_store) * scale
    size = 1 + rng.geometric(1.0 / (1.0 + mean_extra)) - 1
    size = np.minimum(size, bp.max_basket)
    item_s = np.repeat(np.arange(ns), size)
    ni = len(item_s)
    c = sc[item_s]
    # ---- style cluster per item
    sess_slot = pick_slots(rng, cust.weights[sc])
    slot = np.where(rng.random(ni) < bp.p_session_cluster, sess_slot[item_s], pick_slots(rng, cust.weights[c]))
    k = cust.clusters[c, slot]
    art = np.full(ni, -1, dtype=np.int64)
    from_history = 0
    # ---- re-buys from the customer's history
    look = np.flatnonzero(rng.random(ni) < np.where(sf[item_s], bp.p_history_follow, bp.p_history))
    if len(look):
        back = np.minimum(rng.geometric(bp.lookback_p, len(look)), slots)  # 1 = the latest item
        hs = (hist_ptr[c[look]] - back) % slots
        ha = hist_a[c[look], hs].astype(np.int64)
        age = d - hist_d[c[look], hs].astype(np.int64)
        ok = ha >= 0
        ha0 = np.maximum(ha, 0)
        hb = cat.basic[ha0]
        # same article (basics: slow decay) or another colour of the same product (slower decay)
        want_same = hb | (rng.random(len(look)) < bp.p_same_article)
        has_sib = cat.product_count[cat.product[ha0]] > 1
        want_same |= ~has_sib
        p_acc = np.where(hb, np.exp(-age / bp.tau_basic), bp.p_repeat_nonbasic * np.exp(-age / bp.tau_history))
        p_acc = np.where(want_same, p_acc, bp.p_repeat_nonbasic * np.exp(-age / bp.tau_sibling))
        follow_acc = np.where(hb, 1.0, bp.p_repeat_follow)
        p_acc = np.where(sf[item_s[look]] & (age <= 10), np.maximum(p_acc, follow_acc), p_acc)
        acc = ok & (rng.random(len(look)) < p_acc)
        ha = ha[acc]
        choice = np.where(want_same[acc], ha, sibling(rng, cat, ha))
        choice = np.where(market.alive[choice], choice, ha)
        art[look[acc]] = choice
        from_history = int(acc.sum())
    fresh = np.flatnonzero(art < 0)
    art[fresh] = fresh_draw(rng, market, cat, cust, c[fresh], k[fresh], bp, hist_a)
    # ---- extras: outfit partners and second colours of fresh items
    fa = art[fresh]
    n_part = cat.partner_ptr[fa + 1] - cat.partner_ptr[fa]
    want_out = (n_part > 0) & (rng.random(len(fresh)) < bp.p_outfit)
    pa = cat.partner_idx[cat.partner_ptr[fa[want_out]] + (rng.random(want_out.sum()) * n_part[want_out]).astype(np.int64)]
    keep = market.alive[pa]
    out_s, out_a = item_s[fresh[want_out]][keep], pa[keep]
    want_var = (cat.product_count[cat.product[fa]] > 1) & (rng.random(len(fresh)) < bp.p_variant)
    va = sibling(rng, cat, fa[want_var])
    keep = market.alive[va]
    var_s, var_a = item_s[fresh[want_var]][keep], va[keep]
    all_s = np.concatenate([item_s, out_s, var_s])
    all_a = np.concatenate([art, out_a, var_a])
    # one line per article and session (multi-unit purchases are added by the caller)
    _, first_idx = np.unique(all_s.astype(np.int64) * cat.n + all_a, return_index=True)
    keep = np.sort(first_idx)
    all_s, all_a = all_s[keep], all_a[keep]
    order = np.argsort(all_s, kind="stable")
    return DayItems(online, all_s[order], all_a[order], ni, from_history, len(out_a), len(var_a))


@dataclass
class OracleWeek:
    """The state the model is in when a week starts, kept to replay that week for the oracle."""

    week: int
    first_day: int
    buyers: np.ndarray                     # customers with a session in the week
    saved: tuple[np.ndarray, np.ndarray, np.ndarray]
    scales: dict[int, float] = field(default_factory=dict)  # day -> basket scale used that day


def simulate(rng: np.random.Generator, cat: Catalogue, cust: Customers, timeline: Timeline, sess_day: np.ndarray,
             sess_cust: np.ndarray, sess_follow: np.ndarray, base_weight: np.ndarray, season: np.ndarray, day_weight: np.ndarray,
             sale_prob: np.ndarray, n_transactions: int, bp: BehaviourParams, out: io.BufferedWriter,
             encoder: RowEncoder, progress=None, oracle_weeks: list[int] = ()) -> tuple[SimStats, list[OracleWeek]]:
    """Simulate every day and stream the rows to ``out``. For each week in ``oracle_weeks`` the
    state at its start is kept (read-only: the simulation and its output do not change)."""
    n_days = timeline.n_days
    tables = Market(cat, base_weight, season, bp.life_floor)
    history = History.empty(cust.n, bp.hist_slots)
    day_start = np.searchsorted(sess_day, np.arange(n_days + 1))
    target_cum = np.cumsum(day_weight / day_weight.sum()) * n_transactions
    day_week = timeline.week_of_day(np.arange(n_days))
    kept: dict[int, OracleWeek] = {}
    stats = SimStats()
    amp = 1.35  # rows per base item, learned as we go
    base_items = 0
    mean_extra_nominal = 0.7 * bp.basket_extra_online + 0.3 * bp.basket_extra_store
    out.write(HEADER)
    for d in range(n_days):
        w = int(day_week[d])
        if w in oracle_weeks and w not in kept:
            days = np.flatnonzero(day_week == w)
            buyers = np.unique(sess_cust[day_start[days[0]]:day_start[days[-1] + 1]]).astype(np.int64)
            kept[w] = OracleWeek(w, int(days[0]), buyers, history.rows(buyers))
        sc = sess_cust[day_start[d]:day_start[d + 1]].astype(np.int64)
        sf = sess_follow[day_start[d]:day_start[d + 1]]
        ns = len(sc)
        if ns == 0:
            continue
        tables.set_week(w)
        # ---- basket sizes, steered so cumulative rows follow the target curve
        want = max(target_cum[d] - stats.rows, 0.3 * (target_cum[d] - (target_cum[d - 1] if d else 0.0)))
        per_sess = want / ns / amp
        scale = float(np.clip((per_sess - 1.0) / mean_extra_nominal, 0.15, 4.0))
        if w in kept:
            kept[w].scales[d] = scale
        items = day_items(rng, cat, cust, tables, history, d, sc, sf, scale, bp)
        online, all_s, all_a = items.online, items.all_s, items.all_a
        all_c = sc[all_s]
        n_items = len(all_a)
        stats.from_history += items.from_history
        stats.outfit_extras += items.outfit_extras
        stats.variant_extras += items.variant_extras
        # ---- multi-unit purchases
        p_dup = np.where(cat.basic[all_a], bp.p_dup_basic, bp.p_dup)
        units = 1 + (rng.random(n_items) < p_dup) * rng.geometric(0.6, n_items)
        # ---- price
        in_store = ~online[all_s]
        marked = np.where(w >= cat.markdown_week[all_a], rng.random(n_items) < 0.85,
                          rng.random(n_items) < sale_prob[d] + bp.store_extra_markdown * in_store)
        pk = np.where(marked, cat.markdown_k[all_a], cat.price_k[all_a])
        jit = rng.random(n_items)
        pk = pk + (jit < 0.02).astype(np.int64) - ((jit > 0.98) & (pk > 30)).astype(np.int64)
        channel = np.where(online[all_s], 2, 1)
        # ---- rows
        rows_i = np.repeat(np.arange(n_items), units)
        out.write(encoder.encode(d, all_c[rows_i], all_a[rows_i], pk[rows_i], channel[rows_i]))
        history.remember(d, sc, all_s, all_a)
        # ---- stats
        n_rows = len(rows_i)
        stats.rows += n_rows
        stats.sessions += ns
        stats.items += n_items
        stats.price_sum += float(pk[rows_i].sum()) / PRICE_UNIT
        stats.online_rows += int((channel[rows_i] == 2).sum())
        base_items += items.base_items
        amp = stats.rows / max(base_items, 1)
        if progress is not None and (d % 28 == 27 or d == n_days - 1):
            progress(d + 1, n_days, stats.rows)
    return stats, [kept[w] for w in sorted(kept)]


# --------------------------------------------------------------------------------------------
# The oracle


def follow_share_by_gap(sess_day: np.ndarray, sess_cust: np.ndarray, sess_follow: np.ndarray, before_day: int,
                        max_gap: int = 60) -> np.ndarray:
    """P(a session is a follow-up | days since the customer's previous session), as the session
    plan made them before ``before_day``: the model's follow-up chance once the coin is hidden."""
    order = np.lexsort((sess_day, sess_cust))
    c, d, f = sess_cust[order], sess_day[order].astype(np.int64), sess_follow[order]
    same = np.concatenate([[False], c[1:] == c[:-1]])
    gap = np.where(same, d - np.concatenate([[0], d[:-1]]), max_gap)
    use = d < before_day
    gap = np.minimum(gap[use], max_gap)
    seen = np.bincount(gap, minlength=max_gap + 1).astype(float)
    follow = np.bincount(gap, weights=f[use].astype(float), minlength=max_gap + 1)
    share = follow / np.maximum(seen, 1.0)
    share[max_gap] = 0.0  # first sessions and long gaps are not follow-ups
    return share


def oracle_top_k(rng: np.random.Generator, cat: Catalogue, cust: Customers, timeline: Timeline, base_weight: np.ndarray,
                 season: np.ndarray, sess_day: np.ndarray, sess_cust: np.ndarray, sess_follow: np.ndarray,
                 bp: BehaviourParams, kept: OracleWeek, history: History, replicas: int, k: int = 12
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The latent model's expected top-k per buyer of a week, by replaying the week ``replicas``
    times from its starting state: (customer index per row, article index per row), k rows each,
    most likely first.

    Conditioned on who shops on which day (MAP@12 scores only the week's buyers); everything
    else (follow-up or not, basket, re-buys, fresh draws, extras) is drawn anew from the model
    with ``rng``, which is not the simulation's. ``history`` is scratch space of the full size."""
    market = Market(cat, base_weight, season, bp.life_floor)
    market.set_week(kept.week)
    days = sorted(kept.scales)
    day_start = np.searchsorted(sess_day, np.arange(timeline.n_days + 1))
    share = follow_share_by_gap(sess_day, sess_cust, sess_follow, kept.first_day)
    n = cat.n
    per_replica = []
    for _ in range(replicas):
        history.restore(kept.buyers, kept.saved)
        bought = []
        for d in days:
            sc = sess_cust[day_start[d]:day_start[d + 1]].astype(np.int64)
            last = history.days[sc, (history.pointer[sc] - 1) % history.articles.shape[1]].astype(np.int64)
            had = history.pointer[sc] > 0
            gap = np.where(had, np.minimum(d - last, len(share) - 1), len(share) - 1)
            sf = rng.random(len(sc)) < share[gap]
            items = day_items(rng, cat, cust, market, history, d, sc, sf, kept.scales[d], bp)
            history.remember(d, sc, items.all_s, items.all_a)
            bought.append(sc[items.all_s] * n + items.all_a)
        if bought:
            per_replica.append(np.unique(np.concatenate(bought)))
    if not per_replica:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    keys, hits = np.unique(np.concatenate(per_replica), return_counts=True)
    c, a = keys // n, keys % n
    # most often bought first; ties by the article's weight in the week's market, then its index
    order = np.lexsort((a, -market.weight[a], -hits, c))
    c, a = c[order], a[order]
    first = np.searchsorted(c, c, side="left")
    rank = np.arange(len(c)) - first
    keep = rank < k
    return c[keep], a[keep]
