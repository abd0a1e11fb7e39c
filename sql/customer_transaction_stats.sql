-- Customer transaction statistics over windows: last week, last 4 weeks, all history.
-- Parameters: $cutoff (DATE). Only customers with history appear.
SELECT customer_key,
       CAST(count(*) FILTER (WHERE t_dat >= $cutoff::DATE - 7) AS INTEGER) AS txn_1w,
       CAST(count(*) FILTER (WHERE t_dat >= $cutoff::DATE - 28) AS INTEGER) AS txn_4w,
       CAST(count(*) AS INTEGER) AS txn_all,
       CAST(median(price) FILTER (WHERE t_dat >= $cutoff::DATE - 28) AS FLOAT) AS median_price_4w,
       CAST(median(price) AS FLOAT) AS median_price_all,
       CAST(avg(price) AS FLOAT) AS mean_price_all,
       CAST(min(price) AS FLOAT) AS min_price_all,
       CAST(max(price) AS FLOAT) AS max_price_all,
       CAST($cutoff::DATE - max(t_dat) AS INTEGER) AS days_since_last_purchase,
       CAST(count(DISTINCT article_id) AS INTEGER) AS distinct_articles,
       CAST(count(DISTINCT t_dat) AS INTEGER) AS shopping_days
FROM transactions
GROUP BY customer_key
ORDER BY customer_key
