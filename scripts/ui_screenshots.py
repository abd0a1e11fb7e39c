"""Screenshots of the Dagster UI pages a platform team looks at first, and of the gallery opened
from its asset page over http, with headless Chromium (what docs/screenshots/ holds).

    python scripts/ui_screenshots.py OUT_DIR --ui http://127.0.0.1:3000 --serve http://127.0.0.1:8000 \
        --live-week 2026-12-02 --known-week 2026-11-25

Start `make ui` (dagster dev and hm-recs serve) on a materialized HM_HOME first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hm_assets_tests.chromium import headless_chromium  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--ui", default="http://127.0.0.1:3000")
    parser.add_argument("--serve", default="http://127.0.0.1:8000")
    parser.add_argument("--live-week", required=True)
    parser.add_argument("--known-week", required=True)
    args = parser.parse_args()
    from selenium.webdriver.common.by import By

    ui, live, known = args.ui, args.live_week, args.known_week
    pages = {
        "01-overview-timeline": f"{ui}/overview/timeline",
        "02-asset-graph": f"{ui}/asset-groups",
        "03-sensors": f"{ui}/overview/automation",
        "04-recommendations-partitions": f"{ui}/assets/recommendations?view=partitions",
        "05-gallery-asset": f"{ui}/assets/gallery?partition={live}",
        "06-evaluation-newest-known-week": f"{ui}/assets/evaluation?view=partitions&partition={known}",
        "07-runs": f"{ui}/runs",
        "09-backtest-summary": f"{ui}/assets/backtest_summary",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with headless_chromium(args.out / ".chromium-profile", width=1600, height=1000) as browser:
        for name, url in pages.items():
            browser.get(url)
            time.sleep(6)
            for button in browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
                button.click()  # the UI's one-time community prompt
                time.sleep(1)
            if name.startswith("01"):
                for button in browser.find_elements(By.XPATH, "//button[normalize-space()='1hr']"):
                    button.click()
                    time.sleep(2)
            browser.save_screenshot(str(args.out / f"{name}.png"))
            print(name, url)
        browser.get(f"{ui}/assets/gallery?partition={live}")
        time.sleep(6)
        link = browser.find_element(By.XPATH, f"//a[starts-with(@href, '{args.serve}/files/')]")
        link.click()
        time.sleep(4)
        browser.switch_to.window(browser.window_handles[-1])
        browser.save_screenshot(str(args.out / "08-gallery-opened-from-its-asset-page.png"))
        print("08-gallery-opened-from-its-asset-page", browser.current_url, browser.title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
