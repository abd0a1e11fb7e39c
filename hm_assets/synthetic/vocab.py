"""Package data (derived once from the real reference material by ``build_vocab``) plus the few
hand-made mappings the generator needs: colour RGB values, silhouettes, seasons, basics.

Nothing here reads outside the package.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import pandas as pd

INDEX_GROUPS = ["Ladieswear", "Divided", "Menswear", "Baby/Children", "Sport"]

# RGB of each colour group, by name (approximate, as on a product photo).
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "Unknown": (128, 128, 128), "Other": (150, 120, 140), "Transparent": (225, 228, 232),
    "Silver": (192, 192, 200), "Gold": (212, 175, 55),
    "Light Grey": (200, 200, 200), "Grey": (140, 140, 140), "Dark Grey": (80, 80, 84),
    "Black": (22, 22, 24), "White": (250, 250, 250), "Off White": (238, 232, 215),
    "Light Beige": (232, 216, 190), "Beige": (210, 185, 150), "Dark Beige": (170, 140, 105),
    "Greyish Beige": (180, 170, 150), "Yellowish Brown": (160, 110, 50), "Greenish Khaki": (120, 120, 75),
    "Other Yellow": (230, 200, 80), "Light Yellow": (250, 240, 160), "Yellow": (245, 215, 40),
    "Dark Yellow": (200, 160, 20), "Other Orange": (230, 140, 70), "Light Orange": (250, 185, 130),
    "Orange": (240, 130, 30), "Dark Orange": (200, 90, 20), "Other Red": (200, 60, 60),
    "Light Red": (235, 110, 110), "Red": (200, 20, 30), "Dark Red": (120, 15, 25),
    "Other Pink": (230, 140, 170), "Light Pink": (245, 200, 210), "Pink": (235, 130, 170),
    "Dark Pink": (190, 50, 110), "Other Purple": (140, 90, 160), "Light Purple": (200, 170, 220),
    "Purple": (120, 50, 150), "Dark Purple": (70, 25, 90), "Other Blue": (80, 120, 190),
    "Light Blue": (160, 195, 230), "Blue": (40, 90, 190), "Dark Blue": (25, 35, 80),
    "Light Turquoise": (160, 225, 220), "Turquoise": (40, 180, 175), "Dark Turquoise": (20, 110, 110),
    "Other Green": (90, 150, 90), "Light Green": (170, 220, 160), "Green": (40, 140, 60),
    "Dark Green": (25, 70, 40), "Bronze/Copper": (180, 110, 60), "Other Turquoise": (60, 170, 160),
}

# Silhouette drawn for each product type; unlisted types fall back to their product group.
SILHOUETTE_BY_TYPE: dict[str, str] = {
    "Trousers": "trousers", "Leggings/Tights": "leggings", "Outdoor trousers": "trousers",
    "Pyjama bottom": "trousers", "Shorts": "shorts", "Swimwear bottom": "briefs", "Underwear bottom": "briefs",
    "Skirt": "skirt", "Dress": "dress", "Night gown": "dress", "Jumpsuit/Playsuit": "jumpsuit",
    "Dungarees": "jumpsuit", "Pyjama jumpsuit/playsuit": "jumpsuit", "Garment Set": "set", "Pyjama set": "set",
    "Costumes": "jumpsuit", "Underwear body": "swimsuit", "Swimsuit": "swimsuit", "Bodysuit": "swimsuit",
    "T-shirt": "top_short", "Top": "top_short", "Polo shirt": "top_short", "Kids Underwear top": "top_short",
    "Vest top": "vest", "Tailored Waistcoat": "vest", "Outdoor Waistcoat": "vest",
    "Sweater": "top_long", "Blouse": "top_long", "Shirt": "top_long", "Hoodie": "top_long",
    "Cardigan": "top_long", "Jacket": "jacket", "Blazer": "jacket", "Coat": "coat", "Robe": "coat",
    "Bra": "bra", "Bikini top": "bra", "Swimwear set": "bikini", "Underwear set": "bikini",
    "Socks": "socks", "Underwear Tights": "leggings",
    "Sneakers": "shoe", "Boots": "boot", "Sandals": "shoe", "Ballerinas": "shoe", "Other shoe": "shoe",
    "Slippers": "shoe", "Heeled sandals": "shoe", "Pumps": "shoe", "Flat shoe": "shoe", "Flip flop": "shoe",
    "Wedge": "shoe", "Bootie": "boot",
    "Bag": "bag", "Hat/beanie": "hat", "Hat/brim": "hat", "Cap/peaked": "hat", "Straw hat": "hat",
    "Scarf": "scarf", "Tie": "scarf", "Belt": "belt", "Gloves": "gloves",
    "Earring": "jewel", "Necklace": "jewel", "Ring": "jewel", "Bracelet": "jewel", "Watch": "jewel",
    "Hair/alice band": "jewel", "Hair clip": "jewel", "Hair string": "jewel", "Hair ties": "jewel",
    "Sunglasses": "glasses", "Umbrella": "blob", "Soft Toys": "blob", "Fine cosmetics": "blob",
    "Other accessories": "blob", "Sleep Bag": "coat", "Unknown": "blob",
}
SILHOUETTE_BY_GROUP = {
    "Garment Upper body": "top_long", "Garment Lower body": "trousers", "Garment Full body": "dress",
    "Accessories": "blob", "Underwear": "briefs", "Shoes": "shoe", "Swimwear": "bikini",
    "Socks & Tights": "socks", "Nightwear": "set",
}

# Season of each type: (peak day of year, amplitude of log demand). Absent: no seasonality.
SUMMER, WINTER = 185, 355
SEASON_BY_TYPE: dict[str, tuple[int, float]] = {
    "Swimwear bottom": (SUMMER, 1.6), "Bikini top": (SUMMER, 1.6), "Swimsuit": (SUMMER, 1.5),
    "Swimwear set": (SUMMER, 1.5), "Shorts": (SUMMER, 1.1), "Sandals": (SUMMER, 1.1), "Flip flop": (SUMMER, 1.3),
    "Sunglasses": (SUMMER, 1.2), "Straw hat": (SUMMER, 1.3), "Hat/brim": (SUMMER, 0.8), "Heeled sandals": (SUMMER, 0.9),
    "Wedge": (SUMMER, 0.9), "Vest top": (SUMMER, 0.5), "Dress": (SUMMER, 0.35), "Skirt": (SUMMER, 0.3),
    "Jumpsuit/Playsuit": (SUMMER, 0.5),
    "Coat": (WINTER, 1.2), "Jacket": (WINTER, 0.6), "Sweater": (WINTER, 0.6), "Cardigan": (WINTER, 0.5),
    "Hoodie": (WINTER, 0.4), "Boots": (WINTER, 1.0), "Bootie": (WINTER, 0.8), "Hat/beanie": (WINTER, 1.3),
    "Gloves": (WINTER, 1.4), "Scarf": (WINTER, 1.0), "Outdoor Waistcoat": (WINTER, 0.9),
    "Outdoor trousers": (WINTER, 1.0), "Pyjama set": (WINTER, 0.4), "Slippers": (WINTER, 0.6),
    "Underwear Tights": (WINTER, 0.5),
}

# Probability that a product of the type is an evergreen, repeatedly re-bought basic.
BASIC_PROB_BY_TYPE: dict[str, float] = {
    "Socks": 0.55, "Underwear bottom": 0.45, "Bra": 0.25, "Underwear Tights": 0.45, "Leggings/Tights": 0.3,
    "Vest top": 0.22, "T-shirt": 0.18, "Top": 0.08, "Trousers": 0.07, "Kids Underwear top": 0.4,
    "Underwear body": 0.3, "Bodysuit": 0.1, "Hair ties": 0.5, "Hair string": 0.4, "Pyjama set": 0.05,
    "Shorts": 0.04, "Sweater": 0.03, "Shirt": 0.03,
}

# Appearance names that make sense only for some product groups.
DENIM_OK = {"Garment Lower body", "Garment Full body", "Garment Upper body"}

# Appearance -> pattern drawn on the image.
PATTERN_BY_APPEARANCE = {
    "Solid": "solid", "All over pattern": "print", "Melange": "melange", "Denim": "denim", "Stripe": "stripe",
    "Placement print": "placement", "Front print": "placement", "Check": "check", "Lace": "lace",
    "Colour blocking": "block", "Other structure": "structure", "Treatment": "melange", "Embroidery": "placement",
    "Contrast": "block", "Jacquard": "structure", "Application/3D": "placement", "Other pattern": "print",
    "Dot": "dot", "Glittering/Metallic": "glitter", "Mixed solid/pattern": "block", "Sequin": "glitter",
    "Metallic": "glitter", "Neps": "melange", "Chambray": "denim", "Transparent": "lace", "Unknown": "solid",
    "Argyle": "check", "Slub": "melange", "Hologram": "glitter",
}


def _read_csv(name: str) -> pd.DataFrame:
    with resources.files("hm_assets.synthetic").joinpath("data", name).open("rb") as fh:
        return pd.read_csv(fh, keep_default_na=False, na_values=[""])


def _read_json(name: str):
    raw = resources.files("hm_assets.synthetic").joinpath("data", name).read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return json.loads(raw.decode("utf-8"))


@dataclass(frozen=True)
class Vocab:
    departments: pd.DataFrame
    dept_types: pd.DataFrame
    product_types: pd.DataFrame
    colours: pd.DataFrame
    colour_combos: pd.DataFrame
    appearances: pd.DataFrame
    daily: pd.DataFrame
    customers: dict
    targets: dict
    text: dict


@lru_cache(maxsize=1)
def load_vocab() -> Vocab:
    departments = _read_csv("departments.csv")
    dept_types = _read_csv("dept_types.csv")
    product_types = _read_csv("product_types.csv")
    colours = _read_csv("colours.csv")
    combos = _read_csv("colour_combos.csv")
    appearances = _read_csv("appearances.csv")
    daily = _read_csv("daily.csv")
    daily["date"] = pd.to_datetime(daily["date"]).dt.date
    for df in (departments, dept_types, product_types, colours, combos, appearances):
        df.columns = [str(c) for c in df.columns]
    return Vocab(
        departments=departments,
        dept_types=dept_types,
        product_types=product_types,
        colours=colours,
        colour_combos=combos,
        appearances=appearances,
        daily=daily,
        customers=_read_json("customers.json"),
        targets=_read_json("targets.json"),
        text=_read_json("text.json.gz"),
    )


def silhouette_of(type_name: str, group_name: str) -> str:
    return SILHOUETTE_BY_TYPE.get(type_name) or SILHOUETTE_BY_GROUP.get(group_name, "blob")
