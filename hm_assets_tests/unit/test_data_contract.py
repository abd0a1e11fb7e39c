"""Ingest accepts the real files and their variants; bad input is rejected naming file, column, line."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from hm_assets.pipeline.ingest.data_contract import InputDataError, load_articles, load_customers, load_transactions
from hm_assets.pipeline.ingest.ingest import normalised_articles, normalised_customers


def test_real_sample_rows_are_ingested(real_sample: Path):
    con = duckdb.connect()
    articles = normalised_articles(con, real_sample).df()
    customers = normalised_customers(con, real_sample).df()
    assert len(articles) == 4903 and articles["article_id"].min() > 100_000_000
    assert 108775015 in set(articles["article_id"])  # written without its leading zero, behind an index column
    assert len(customers) == 10000 and customers["customer_key"].is_unique
    assert customers["age"].dropna().between(10, 100).all()  # ages written as floats
    assert load_transactions(con, real_sample) == 10000
    ids = con.execute("SELECT count(*) FROM transactions_raw t SEMI JOIN articles_raw a USING (article_id)").fetchall()
    assert ids[0][0] == 10000  # 9-digit article ids in transactions match the catalogue


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str], newline: str = "\n") -> None:
    path.write_text(newline.join(lines) + newline, encoding="utf-8")


def _replace_field(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


TRANSACTION_CASES = {
    "missing column": (lambda ls: [",".join(l.split(",")[:4]) for l in ls], "sales_channel_id", 1, "missing column"),
    "unparsable date": (lambda ls: ls[:3] + [_replace_field(ls[3], 0, "2020-13-45")] + ls[4:], "t_dat", 4, "t_dat"),
    "negative price": (lambda ls: ls[:5] + [_replace_field(ls[5], 3, "-0.02")] + ls[6:], "price", 6, "non-negative"),
    "non-numeric price": (lambda ls: ls[:5] + [_replace_field(ls[5], 3, "cheap")] + ls[6:], "price", 6, "price"),
    "bad channel": (lambda ls: ls[:2] + [_replace_field(ls[2], 4, "3")] + ls[3:], "sales_channel_id", 3, "1 or 2"),
    "truncated last line": (lambda ls: ls[:-1] + [ls[-1][:30]], None, None, "columns"),
}


@pytest.mark.parametrize("case", sorted(TRANSACTION_CASES))
def test_bad_transactions_name_file_column_and_line(tiny_copy: Path, case: str):
    breaker, column, line, words = TRANSACTION_CASES[case]
    path = tiny_copy / "transactions_train.csv"
    lines = _lines(path)
    _write(path, breaker(lines))
    with pytest.raises(InputDataError) as error:
        load_transactions(duckdb.connect(), tiny_copy)
    assert error.value.file.endswith("transactions_train.csv")
    assert words in str(error.value)
    if column:
        assert error.value.column == column
    if line:
        assert error.value.line == line
    if case == "truncated last line":
        assert error.value.line == len(lines)


def test_empty_and_non_csv_files_are_rejected(tiny_copy: Path):
    path = tiny_copy / "transactions_train.csv"
    path.write_bytes(b"")
    with pytest.raises(InputDataError, match="empty"):
        load_transactions(duckdb.connect(), tiny_copy)
    path.write_bytes(next((tiny_copy / "images").rglob("*.jpg")).read_bytes())
    with pytest.raises(InputDataError, match="not a CSV"):
        load_transactions(duckdb.connect(), tiny_copy)
    path.write_text("t_dat,customer_id,article_id,price,sales_channel_id\n")
    with pytest.raises(InputDataError, match="no data rows"):
        load_transactions(duckdb.connect(), tiny_copy)


def test_duplicated_customer_id_names_both_lines(tiny_copy: Path):
    path = tiny_copy / "customers.csv"
    lines = _lines(path)
    _write(path, lines + [lines[3]])
    with pytest.raises(InputDataError) as error:
        load_customers(duckdb.connect(), tiny_copy)
    assert error.value.column == "customer_id" and error.value.line == len(lines) + 1
    assert "first seen on line 4" in str(error.value)


def test_bom_crlf_float_age_index_column_and_short_ids_are_accepted(tiny_copy: Path):
    articles = pd.read_csv(tiny_copy / "articles.csv", dtype=str)
    articles["article_id"] = articles["article_id"].str.lstrip("0")
    articles.to_csv(tiny_copy / "articles.csv", index=True)  # unnamed leading index column
    customers = _lines(tiny_copy / "customers.csv")
    (tiny_copy / "customers.csv").write_bytes(("\ufeff" + "\r\n".join(customers) + "\r\n").encode("utf-8"))
    con = duckdb.connect()
    assert load_articles(con, tiny_copy) == len(articles)
    assert load_customers(con, tiny_copy) == len(customers) - 1
    ages = con.execute("SELECT count(*) FROM customers_raw WHERE age IS NOT NULL").fetchall()[0][0]
    assert ages > 0


def test_missing_article_column_is_named(tiny_copy: Path):
    articles = pd.read_csv(tiny_copy / "articles.csv", dtype=str).drop(columns=["colour_group_name"])
    articles.to_csv(tiny_copy / "articles.csv", index=False)
    with pytest.raises(InputDataError) as error:
        load_articles(duckdb.connect(), tiny_copy)
    assert error.value.column == "colour_group_name" and error.value.line == 1


def test_missing_file_is_named(tiny_copy: Path):
    shutil.move(tiny_copy / "customers.csv", tiny_copy / "elsewhere.csv")
    with pytest.raises(InputDataError, match="customers.csv: file not found"):
        load_customers(duckdb.connect(), tiny_copy)
