"""Headless Chromium for the UI tests: find the Debian ``chromium`` + ``chromium-driver`` and drive them
with selenium. CI installs them with ``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BROWSER_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "chromedriver")
HEADLESS_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--allow-file-access-from-files",
)


def _first(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        if Path(name).is_absolute():
            if Path(name).is_file():
                return name
        elif (found := shutil.which(name)) is not None:
            return found
    return None


def chromium_binary() -> str | None:
    return _first(BROWSER_CANDIDATES)


def chromedriver_binary() -> str | None:
    return _first(DRIVER_CANDIDATES)


def missing_reason() -> str | None:
    """Why a Chromium test cannot run here (None: it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if chromium_binary() is None:
        return "Chromium is not installed (Debian: apt-get install -y chromium chromium-driver)"
    if chromedriver_binary() is None:
        return "chromedriver is not installed (Debian: apt-get install -y chromium-driver)"
    return None


@contextmanager
def headless_chromium(user_data_dir: Path, width: int = 1280, height: int = 1600) -> Iterator["object"]:
    """A selenium Chrome driver on headless Chromium with a fresh profile in ``user_data_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()
    for flag in HEADLESS_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver_binary()), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()
