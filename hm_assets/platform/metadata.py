"""Metadata helpers shared by the assets: previews, tables as Markdown, timings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd


def preview(df: pd.DataFrame, rows: int = 5) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(df.head(rows).to_markdown(index=False))


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(df.to_markdown(index=False, floatfmt=floatfmt))


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    yield Stopwatch()
