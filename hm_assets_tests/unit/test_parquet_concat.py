"""A sharded asset's parts are concatenated byte for byte into its week's file
(hm_assets/platform/parquet_concat.py): the same rows, statistics and bloom filters as the parts,
readable by pyarrow and DuckDB; parts it cannot move as bytes are refused before anything is written."""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hm_assets.platform.fanout import ShardOutputs, combine_parts, part_path
from hm_assets.platform.parquet_concat import UnsupportedParquet, concatenate_parquet, read_footer, read_thrift, write_thrift
from hm_assets.platform.store import HMStore


def duckdb_part(path: Path, first: int, rows: int) -> Path:
    """A part as a candidates shard writes it (DuckDB, zstd: dictionaries, bloom filters, nulls,
    122,880-row groups)."""
    duckdb.sql(
        f"""COPY (SELECT range AS customer_key, (range % 97)::INTEGER AS article_id,
                   CASE WHEN range % 5 = 0 THEN NULL ELSE (range % 11)::FLOAT END AS score,
                   'colour ' || (range % 13)::VARCHAR AS colour
            FROM range({first}, {first + rows}) ORDER BY range)
        TO '{path}' (FORMAT parquet, COMPRESSION zstd)"""
    )
    return path


def footer_bytes(path: Path) -> bytes:
    start, _ = read_footer(path)
    data = path.read_bytes()
    return data[start:-8]


def test_a_footer_read_and_written_again_keeps_its_bytes(tmp_path):
    duck = duckdb_part(tmp_path / "duck.parquet", 0, 300_000)
    arrow = tmp_path / "arrow.parquet"
    table = pa.table({"k": pa.array(range(50_000), pa.int64()), "s": pa.array([f"v{i % 7}" for i in range(50_000)]),
                      "flag": pa.array([i % 3 == 0 for i in range(50_000)]), "x": pa.array([i / 3 for i in range(50_000)])})
    pq.write_table(table, arrow, row_group_size=20_000, write_page_index=True, compression="zstd",
                   write_statistics=True, sorting_columns=[pq.SortingColumn(0)])
    for path in (duck, arrow):
        encoded = footer_bytes(path)
        assert write_thrift(read_thrift(encoded)) == encoded


def column_ranges(path: Path) -> list[list[tuple[str, bytes]]]:
    """Per row group and column, the bytes at every place the footer points to: the column chunk,
    its bloom filter and page indexes."""
    meta, data = pq.ParquetFile(path).metadata, path.read_bytes()
    groups = []
    for g in range(meta.num_row_groups):
        ranges = []
        for c in range(meta.num_columns):
            column = meta.row_group(g).column(c)
            start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
            ranges.append(("chunk", data[start: start + column.total_compressed_size]))
            if column.bloom_filter_offset is not None:
                ranges.append(("bloom", data[column.bloom_filter_offset: column.bloom_filter_offset + column.bloom_filter_length]))
        groups.append(ranges)
    return groups


def test_the_concatenation_holds_the_parts_rows_statistics_and_bloom_filters(tmp_path):
    parts = [
        duckdb_part(tmp_path / "p0.parquet", 0, 250_000),
        duckdb_part(tmp_path / "p1.parquet", 250_000, 0),  # an empty shard
        duckdb_part(tmp_path / "p2.parquet", 250_000, 130_000),
    ]
    target = tmp_path / "week.parquet"
    with target.open("wb") as out:
        rows = concatenate_parquet(parts, out)

    assert rows == 380_000 == pq.ParquetFile(target).metadata.num_rows
    expected = pa.concat_tables([pq.read_table(p) for p in parts])
    assert pq.read_table(target).equals(expected)
    # Every row group's pages, statistics and bloom filter, where its part had them.
    assert column_ranges(target) == [g for p in parts for g in column_ranges(p)]
    meta = pq.ParquetFile(target).metadata
    part_meta = [pq.ParquetFile(p).metadata for p in parts]
    stats = [(m.row_group(g).column(0).statistics.min, m.row_group(g).column(0).statistics.max)
             for m in part_meta for g in range(m.num_row_groups)]
    assert [(meta.row_group(g).column(0).statistics.min, meta.row_group(g).column(0).statistics.max)
            for g in range(meta.num_row_groups)] == stats
    assert any(meta.row_group(g).column(3).bloom_filter_offset for g in range(meta.num_row_groups))

    # DuckDB prunes by statistics and bloom filters: the same answers as over the parts.
    query = "SELECT count(*), sum(article_id), count(score) FROM read_parquet({}) WHERE {}"
    parts_list = "[" + ", ".join(f"'{p}'" for p in parts) + "]"
    for where in ("customer_key BETWEEN 240000 AND 260000", "customer_key = 379999", "colour = 'colour 4'", "colour = 'none'"):
        assert duckdb.sql(query.format(f"'{target}'", where)).fetchall() == duckdb.sql(query.format(parts_list, where)).fetchall()
    last_group = meta.num_row_groups - 1
    probe = duckdb.sql(f"SELECT row_group_id, bloom_filter_excludes FROM parquet_bloom_probe('{target}', 'colour', 'colour 4')").fetchall()
    assert (last_group, False) in probe
    absent = duckdb.sql(f"SELECT bool_and(bloom_filter_excludes) FROM parquet_bloom_probe('{target}', 'colour', 'no such colour')").fetchall()
    assert absent == [(True,)]


def test_parts_of_another_schema_are_refused_before_anything_is_written(tmp_path):
    first = duckdb_part(tmp_path / "p0.parquet", 0, 1_000)
    other = tmp_path / "p1.parquet"
    duckdb.sql(f"COPY (SELECT range AS customer_key, range::INTEGER AS article_id FROM range(10)) TO '{other}' (FORMAT parquet)")
    out = io.BytesIO()
    with pytest.raises(UnsupportedParquet, match="schema"):
        concatenate_parquet([first, other], out)
    assert out.getvalue() == b""


def test_the_combine_step_copies_row_groups_of_parts_it_cannot_concatenate(tmp_path):
    """An empty shard's part written from an empty pandas frame has other column types: the combine
    falls back to decoding the row groups and casting them to the first part's schema."""
    store = HMStore(home=str(tmp_path / "home"))
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    tables = [pa.table({"k": pa.array([1, 2], pa.int64()), "v": pa.array([0.5, 1.5], pa.float32())}),
              pa.table({"k": pa.array([], pa.int32()), "v": pa.array([], pa.float64())}),
              pa.table({"k": pa.array([3], pa.int64()), "v": pa.array([2.5], pa.float32())})]
    for index, table in enumerate(tables):
        pq.write_table(table, part_path(parts_dir, "recs", index, ".parquet"))
    final = tmp_path / "week.parquet"
    logged: list[str] = []
    combine_parts(store, parts_dir, [0, 1, 2], ShardOutputs({"recs": ".parquet"}), {"recs": final}, logged.append)
    assert pq.read_table(final).equals(pa.concat_tables([tables[0], tables[2]]))
    assert any("decoded and written again" in line for line in logged)

    same = [t.cast(tables[0].schema) for t in tables]
    for index, table in enumerate(same):
        pq.write_table(table, part_path(parts_dir, "recs", index, ".parquet"))
    logged.clear()
    combine_parts(store, parts_dir, [0, 1, 2], ShardOutputs({"recs": ".parquet"}), {"recs": final}, logged.append)
    assert pq.read_table(final).equals(pa.concat_tables(same))
    assert not any("decoded and written again" in line for line in logged)
