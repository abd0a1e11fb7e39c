"""The taste features' marginal cost at the size of one full-scale customer shard: 100,000 customers x
105 candidates (10.5M pairs), 105k articles with 64-dimensional unit vectors, ~4 purchases per
customer in the 16-week window. Times ``taste.customer_taste`` and the two cosines per pair in
DuckDB, as ``sql/pair_features.sql`` computes them.

    python benchmarks/bench_taste.py
"""
import time
from datetime import date

import duckdb
import numpy as np
import pyarrow as pa

from hm_assets.pipeline.features.taste import customer_taste, vector_column

rng = np.random.default_rng(0)
n_articles, n_customers, per = 105_000, 100_000, 105
vectors = rng.normal(size=(n_articles, 64)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
ids = np.arange(n_articles, dtype=np.int32)
con = duckdb.connect()
con.execute("SET threads=2")
# history: 16 weeks, ~4 purchases per customer in the window (full H&M: ~5M rows over 1.37M customers)
n_rows = n_customers * 4
con.register("h", pa.table({"customer_key": rng.integers(0, n_customers, n_rows), "article_id": rng.integers(0, n_articles, n_rows).astype(np.int32),
                            "t_dat": pa.array(np.datetime64("2020-09-16") - rng.integers(1, 112, n_rows).astype("timedelta64[D]"))}))
con.execute("CREATE TABLE transactions AS SELECT customer_key, article_id, CAST(t_dat AS DATE) AS t_dat FROM h")
con.register("c", pa.table({"customer_key": np.repeat(np.arange(n_customers), per), "article_id": rng.integers(0, n_articles, n_customers * per).astype(np.int32)}))
con.execute("CREATE TABLE candidates AS SELECT * FROM c")
t = time.perf_counter()
taste = customer_taste(con, date(2020, 9, 16), ids, vectors, "SELECT DISTINCT customer_key FROM candidates")
t_customer = time.perf_counter() - t
con.register("customer_taste", taste)
con.register("article_taste", pa.table({"article_id": ids, "vector": vector_column(vectors)}))
t = time.perf_counter()
con.execute("""CREATE TABLE out AS SELECT c.customer_key, c.article_id,
  CAST(list_inner_product(ct.taste_long, a.vector) AS FLOAT) AS taste_long,
  CAST(list_inner_product(ct.taste_recent, a.vector) AS FLOAT) AS taste_recent
  FROM candidates c LEFT JOIN customer_taste ct USING (customer_key) LEFT JOIN article_taste a USING (article_id)""")
t_pairs = time.perf_counter() - t
print(f"{n_customers} customers x {per} candidates = {n_customers*per:,} pairs: customer taste {t_customer:.1f} s, two cosines per pair {t_pairs:.1f} s")
