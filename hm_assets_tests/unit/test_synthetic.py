"""The built-in synthetic data generator: layout, determinism, calendar, calibration, latent signals."""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hm_assets.synthetic import PRESETS, generate, last_tuesday_before
from hm_assets.synthetic import generator as gen_mod
from hm_assets.synthetic.cli import main
from hm_assets.synthetic.timeline import parse_end_date
from hm_assets.synthetic.validate import measure
from hm_assets.synthetic.vocab import COLOUR_RGB, load_vocab

ARTICLE_COLUMNS = (
    "article_id,product_code,prod_name,product_type_no,product_type_name,product_group_name,"
    "graphical_appearance_no,graphical_appearance_name,colour_group_code,colour_group_name,"
    "perceived_colour_value_id,perceived_colour_value_name,perceived_colour_master_id,"
    "perceived_colour_master_name,department_no,department_name,index_code,index_name,index_group_no,"
    "index_group_name,section_no,section_name,garment_group_no,garment_group_name,detail_desc"
).split(",")
CUSTOMER_COLUMNS = ["customer_id", "FN", "Active", "club_member_status", "fashion_news_frequency", "age", "postal_code"]
TXN_COLUMNS = ["t_dat", "customer_id", "article_id", "price", "sales_channel_id"]
HEX64 = re.compile(r"^[0-9a-f]{64}$")
END = date(2024, 6, 25)  # a Tuesday


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    out, truth = root / "tiny", root / "truth"
    summary = generate(out, preset="tiny", seed=0, end_date=END, truth_dir=truth)
    return out, truth, summary


@pytest.fixture(scope="module")
def frames(tiny):
    out, truth, _ = tiny
    a = pd.read_csv(out / "articles.csv", dtype=str, keep_default_na=False)
    c = pd.read_csv(out / "customers.csv", dtype=str, keep_default_na=False)
    t = pd.read_csv(out / "transactions_train.csv", dtype=str, keep_default_na=False)
    tr = pd.read_csv(truth / "articles_truth.csv", dtype={"article_id": str})
    return a, c, t, tr


@pytest.fixture(scope="module")
def measures(tiny):
    return measure(tiny[0])


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# layout


def test_files_and_headers(tiny):
    out, _, summary = tiny
    assert sorted(p.name for p in out.iterdir()) == [
        "articles.csv", "customers.csv", "images", "oracle.csv", "transactions_train.csv"]
    assert (out / "articles.csv").read_text().splitlines()[0].split(",") == ARTICLE_COLUMNS
    assert (out / "customers.csv").read_text().splitlines()[0].split(",") == CUSTOMER_COLUMNS
    with open(out / "transactions_train.csv") as fh:
        assert fh.readline().rstrip("\n").split(",") == TXN_COLUMNS
    assert summary["rows"]["articles"] == PRESETS["tiny"].n_articles
    assert summary["rows"]["customers"] == PRESETS["tiny"].n_customers
    assert abs(summary["rows"]["transactions"] / PRESETS["tiny"].n_transactions - 1) < 0.03


def test_articles_schema(frames):
    a, _, _, _ = frames
    assert list(a.columns) == ARTICLE_COLUMNS
    assert a.article_id.str.fullmatch(r"0\d{9}|[1-9]\d{9}").all() and a.article_id.str.len().eq(10).all()
    assert a.article_id.is_unique and a.article_id.is_monotonic_increasing
    code = a.product_code.astype(int)
    assert code.between(100000, 999999).all()
    assert (a.article_id.str[:7] == code.map("{:07d}".format)).all()
    # variants share the product's name stem and type, and differ in colour
    per_product = a.groupby("product_code")
    assert per_product.product_type_no.nunique().max() == 1
    multi = per_product.filter(lambda g: len(g) > 1)
    assert multi.groupby("product_code").colour_group_code.nunique().gt(1).mean() > 0.95
    # real codes stay consistent with their names
    vocab = load_vocab()
    for code_col, name_col in [("product_type_no", "product_type_name"), ("colour_group_code", "colour_group_name"),
                               ("department_no", "department_name"), ("section_no", "section_name"),
                               ("garment_group_no", "garment_group_name"), ("index_code", "index_name"),
                               ("index_group_no", "index_group_name")]:
        assert a.groupby(code_col)[name_col].nunique().max() == 1, code_col
    deps = vocab.departments.astype(str).set_index("department_no")
    joined = a.join(deps[["section_no", "index_code", "garment_group_no"]], on="department_no", rsuffix="_v")
    assert (joined.section_no == joined.section_no_v).all() and (joined.index_code == joined.index_code_v).all()
    # realistic text
    assert a.prod_name.str.len().gt(0).all()
    assert a.detail_desc.str.len().gt(20).mean() > 0.97
    assert a.detail_desc.str.contains(r"\.$").mean() > 0.95


def test_customers_schema(frames):
    _, c, t, _ = frames
    assert list(c.columns) == CUSTOMER_COLUMNS
    assert c.customer_id.str.fullmatch(HEX64).all() and c.customer_id.is_unique
    assert c.customer_id.is_monotonic_increasing
    assert c.postal_code.str.fullmatch(HEX64).all()
    assert set(c.FN) <= {"1.0", ""} and set(c.Active) <= {"1.0", ""}
    assert set(c.club_member_status) <= {"ACTIVE", "PRE-CREATE", "LEFT CLUB", ""}
    assert set(c.fashion_news_frequency) <= {"NONE", "Regularly", "Monthly", ""}
    ages = c.age[c.age != ""]
    assert ages.str.fullmatch(r"\d+").all() and ages.astype(int).between(16, 99).all()
    assert 0.002 < (c.age == "").mean() < 0.04
    # some customers never bought anything; all buyers are in customers.csv
    assert set(t.customer_id) <= set(c.customer_id)
    assert len(set(c.customer_id) - set(t.customer_id)) > 0


def test_transactions_schema(frames, tiny):
    a, _, t, _ = frames
    assert list(t.columns) == TXN_COLUMNS
    assert t.t_dat.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert t.t_dat.is_monotonic_increasing
    assert t.t_dat.iloc[-1] == END.isoformat()
    assert t.t_dat.iloc[0] == (END - timedelta(days=PRESETS["tiny"].weeks * 7 - 1)).isoformat()
    assert t.article_id.str.fullmatch(r"\d{10}").all() and set(t.article_id) <= set(a.article_id)
    assert t.customer_id.str.fullmatch(HEX64).all()
    assert set(t.sales_channel_id) == {"1", "2"}
    price = t.price.astype(float)
    assert price.between(0.0005, 0.6).all()
    # real format: k/59000 truncated to 16 decimals
    assert t.price.str.fullmatch(r"0\.\d{1,16}").all()
    k = price * 59000
    assert np.abs(k - np.round(k)).max() < 1e-6


def test_images_layout(frames, tiny):
    out, _, summary = tiny
    a = frames[0]
    files = sorted((out / "images").rglob("*.jpg"))
    assert summary["images"] == len(files)
    for f in files[:50]:
        assert f.parent.name == f.stem[:3] and f.parent.parent == out / "images"
    ids = {f.stem for f in files}
    assert ids <= set(a.article_id)
    missing = len(a) - len(ids)
    assert 1 <= missing <= 0.05 * len(a)
    im = Image.open(files[0])
    assert im.format == "JPEG" and im.size == (64, 96) and im.mode == "RGB"


# ---------------------------------------------------------------------------------------------
# determinism and calendar


def test_deterministic_by_seed(tiny, tmp_path):
    out = tiny[0]
    same = tmp_path / "same"
    other = tmp_path / "other"
    generate(same, preset="tiny", seed=0, end_date=END)
    generate(other, preset="tiny", seed=1, end_date=END, images=False)
    for name in ("articles.csv", "customers.csv", "transactions_train.csv"):
        assert (same / name).read_bytes() == (out / name).read_bytes(), name
        assert (other / name).read_bytes() != (out / name).read_bytes(), name
    assert _digest(same / "images") == _digest(out / "images")


def test_end_date_is_a_tuesday():
    for offset in range(14):
        today = date(2024, 6, 1) + timedelta(days=offset)
        last = last_tuesday_before(today)
        assert last.weekday() == 1 and 1 <= (today - last).days <= 7
    assert last_tuesday_before(date(2024, 6, 25)) == date(2024, 6, 18)  # a Tuesday: the one before
    assert last_tuesday_before(date(2024, 6, 26)) == date(2024, 6, 25)
    with pytest.raises(ValueError, match="Tuesday"):
        parse_end_date("2024-06-26")
    assert gen_mod.default_end_date("full") == date(2020, 9, 22)
    assert gen_mod.default_end_date("tiny", today=date(2024, 6, 27)) == date(2024, 6, 25)


def test_default_end_date_and_overrides(tmp_path):
    s = generate(tmp_path / "d", preset="tiny", seed=2, images=False, n_customers=300, n_articles=200,
                 n_transactions=4000, weeks=4)
    assert s["end_date"] == last_tuesday_before().isoformat()
    start = date.fromisoformat(s["start_date"])
    assert start.weekday() == 2 and s["days"] == 28
    assert s["rows"]["customers"] == 300 and s["rows"]["articles"] == 200
    with pytest.raises(ValueError):
        generate(tmp_path / "e", preset="tiny", end_date="2024-06-27")
    with pytest.raises(TypeError):
        generate(tmp_path / "f", preset="tiny", no_such_field=1)


def test_atomic_write(tmp_path, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate(foreign, preset="tiny", images=False)
    assert (foreign / "notes.txt").read_text() == "keep me"

    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(gen_mod, "write_images", boom)
    with pytest.raises(RuntimeError):
        generate(tmp_path / "half", preset="tiny", n_transactions=3000, n_customers=200, n_articles=150)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no half-written data set, no temp folder


# ---------------------------------------------------------------------------------------------
# calibration against the real aggregates (tolerances sized for the tiny preset)


def test_calibration(measures):
    m = measures
    tg = load_vocab().targets
    assert abs(m["channel_2_share"] - tg["channel_2_share"]) < 0.04
    assert 0.06 < m["duplicate_group_share"] < 0.13
    assert abs(m["mean_price"] / tg["summary"]["avg_price"] - 1) < 0.12
    ig = m["txn_share_index_group_name"]
    assert 0.55 < ig["Ladieswear"] < 0.72 and 0.15 < ig["Divided"] < 0.3
    types = m["txn_share_product_type_name"]
    assert list(types)[0] in ("Trousers", "Dress") and 0.08 < types["Trousers"] < 0.18
    assert set(list(types)[:6]) & {"Trousers", "Dress", "Sweater", "T-shirt"}
    colours = m["txn_share_colour_group_name"]
    assert list(colours)[0] == "Black" and 0.25 < colours["Black"] < 0.45
    age = m["age_bucket_share"]
    assert abs(age["20_to_29"] - 0.385) < 0.05 and age["20_to_29"] > age["30_to_39"] + 0.1
    assert age["50_to_59"] > 0.12 and age["60_plus"] < age["50_to_59"]
    assert m["club_member_status"]["ACTIVE"] > 0.88
    assert 0.55 < m["fashion_news_frequency"]["NONE"] < 0.72


def test_daily_curve_follows_real_shape(tiny):
    t = pd.read_csv(tiny[0] / "transactions_train.csv", usecols=["t_dat"])
    daily = t.t_dat.value_counts().sort_index()
    assert len(daily) == PRESETS["tiny"].weeks * 7
    from hm_assets.synthetic.timeline import make_timeline

    weight, _ = make_timeline(END, len(daily)).real_curves()
    assert np.corrcoef(daily.to_numpy(), weight)[0, 1] > 0.85


# ---------------------------------------------------------------------------------------------
# latent structure a recommender needs


def test_customers_buy_what_they_bought_before(frames):
    _, _, t, _ = frames
    a = frames[0][["article_id", "product_type_name", "section_name"]]
    t = t.merge(a, on="article_id")
    cut = t.t_dat.sort_values().iloc[int(len(t) * 0.8)]
    train, test = t[t.t_dat < cut], t[t.t_dat >= cut]
    for col in ("product_type_name", "section_name"):
        past = train.groupby(["customer_id", col]).size().rename("n").reset_index()
        past["share"] = past.n / past.groupby("customer_id").n.transform("sum")
        known = test[test.customer_id.isin(past.customer_id)]
        own = known.merge(past, on=["customer_id", col], how="left").share.fillna(0).mean()
        chance = known[col].map(train[col].value_counts(normalize=True)).mean()
        assert own > 1.5 * chance, (col, own, chance)


def test_age_predicts_purchases(frames):
    a, c, t, _ = frames
    t = t.merge(a[["article_id", "index_group_name"]], on="article_id").merge(c[["customer_id", "age"]], on="customer_id")
    t = t[t.age != ""]
    age = t.age.astype(int)
    divided = t.index_group_name == "Divided"
    assert divided[age < 25].mean() > 2.5 * divided[age >= 40].mean()
    kids = t.index_group_name == "Baby/Children"
    assert kids[(age >= 30) & (age <= 45)].mean() > 1.5 * kids[(age < 25) | (age > 55)].mean()


def test_outfit_partners_are_bought_together(frames):
    _, _, t, tr = frames
    t = t.drop_duplicates(["t_dat", "customer_id", "article_id"]).merge(tr[["article_id", "outfit", "product_code"]],
                                                                        on="article_id")
    t = t[t.outfit >= 0]
    pairs = t.merge(t, on=["t_dat", "customer_id"])
    pairs = pairs[pairs.product_code_x < pairs.product_code_y]
    observed = (pairs.outfit_x == pairs.outfit_y).mean()
    share = t.outfit.value_counts(normalize=True)
    chance = float((share ** 2).sum())
    assert observed > 5 * chance, (observed, chance)


def test_basics_are_repurchased(frames):
    _, _, t, tr = frames
    e = t[["customer_id", "article_id", "t_dat"]].drop_duplicates()
    e = e.assign(day=pd.to_datetime(e.t_dat)).sort_values(["customer_id", "article_id", "day"])
    e["gap"] = (e.groupby(["customer_id", "article_id"]).day.shift(-1) - e.day).dt.days
    e = e.merge(tr[["article_id", "basic"]], on="article_id")
    rate = e.assign(re=e.gap.le(21)).groupby("basic").re.mean()
    assert rate[1] > 1.5 * rate[0] and rate[1] > 0.05
    assert 0.02 < e.gap.le(7).mean() < 0.2  # some repurchase, like the real 5%, but not everything


def test_new_customers_every_week(frames):
    _, _, t, _ = frames
    first = t.groupby("customer_id").t_dat.min()
    weeks = pd.to_datetime(first).dt.to_period("W-TUE").value_counts()
    last_weeks = weeks.sort_index().iloc[-8:]
    assert len(last_weeks) == 8 and (last_weeks > 0).all()


def test_images_follow_colour_and_silhouette(frames, tiny):
    out = tiny[0]
    a, _, _, tr = frames
    m = a.merge(tr[["article_id", "has_image", "silhouette", "pattern"]], on="article_id")
    solid = m[(m.has_image == 1) & (m.pattern == "solid")]
    errs, rand_errs = [], []
    rng = np.random.default_rng(0)
    palette = np.array(list(COLOUR_RGB.values()), dtype=float)
    for _, row in solid.head(150).iterrows():
        img = np.asarray(Image.open(out / "images" / row.article_id[:3] / f"{row.article_id}.jpg"), dtype=float)
        fg = np.abs(img - 242).sum(axis=2) > 40
        if fg.sum() < 30:
            continue
        mean = img[fg].mean(axis=0)
        errs.append(np.abs(mean - np.array(COLOUR_RGB[row.colour_group_name])).mean())
        rand_errs.append(np.abs(mean - palette[rng.integers(len(palette))]).mean())
    assert len(errs) > 20 and np.median(errs) < 25 and np.median(errs) < 0.5 * np.median(rand_errs)
    # silhouettes: trousers have a gap between the legs near the hem, dresses do not
    from hm_assets.synthetic.images import render

    grey = np.array([128, 128, 128], dtype=np.float32)
    trousers = render("trousers", "solid", grey, 0, 1)
    dress = render("dress", "solid", grey, 0, 1)
    assert abs(float(trousers[85, 32].mean()) - 242) < 25 and abs(float(dress[85, 32].mean()) - 120) < 30


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([str(out), "--preset", "tiny", "--seed", "3", "--end-date", END.isoformat(), "-q", "--no-images"]) == 0
    text = capsys.readouterr().out
    assert "transactions_train.csv" in text and "2024-06-25" in text and "seconds" in text
    assert (out / "transactions_train.csv").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x"), "--preset", "tiny", "--end-date", "2024-06-26"])
    assert main([str(tmp_path / "cli"), "--preset", "tiny", "--seed", "3", "-q", "--no-images", "--no-overwrite"]) == 2
