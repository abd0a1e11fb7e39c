-- Article transaction statistics: sales over windows, trend, recency, buyers' profile.
-- Parameters: $cutoff (DATE). Only articles with sales appear.
WITH stats AS (
SELECT t.article_id,
       CAST(count(*) FILTER (WHERE t.t_dat >= $cutoff::DATE - 7) AS INTEGER) AS sales_1w,
       CAST(count(*) FILTER (WHERE t.t_dat >= $cutoff::DATE - 14 AND t.t_dat < $cutoff::DATE - 7) AS INTEGER) AS sales_prev_1w,
       CAST(count(*) FILTER (WHERE t.t_dat >= $cutoff::DATE - 28) AS INTEGER) AS sales_4w,
       CAST(count(*) AS INTEGER) AS sales_all,
       CAST((count(*) FILTER (WHERE t.t_dat >= $cutoff::DATE - 7) + 1.0)
            / (count(*) FILTER (WHERE t.t_dat >= $cutoff::DATE - 28) / 4.0 + 1.0) AS FLOAT) AS trend_ratio,
       CAST(sum(exp(-($cutoff::DATE - t.t_dat) / 7.0)) AS FLOAT) AS decayed_sales,
       CAST($cutoff::DATE - min(t.t_dat) AS INTEGER) AS days_since_first_sale,
       CAST($cutoff::DATE - max(t.t_dat) AS INTEGER) AS days_since_last_sale,
       CAST(count(DISTINCT t.customer_key) AS INTEGER) AS buyers_all,
       CAST(avg(c.age) AS FLOAT) AS buyers_mean_age,
       CAST(avg(CASE WHEN t.sales_channel_id = 2 THEN 1.0 ELSE 0.0 END) AS FLOAT) AS article_online_share,
       CAST(count(*) FILTER (WHERE t.sales_channel_id = 1 AND t.t_dat >= $cutoff::DATE - 28) AS INTEGER) AS store_sales_4w,
       CAST(count(*) FILTER (WHERE t.sales_channel_id = 2 AND t.t_dat >= $cutoff::DATE - 28) AS INTEGER) AS online_sales_4w
FROM transactions t
LEFT JOIN customers c USING (customer_key)
GROUP BY t.article_id
),
-- basics are bought again by the same people: the share of the article's buyers who bought it on
-- more than one day
rebuy AS (
    SELECT article_id, CAST(avg(CASE WHEN days > 1 THEN 1.0 ELSE 0.0 END) AS FLOAT) AS rebuy_rate
    FROM (SELECT article_id, customer_key, count(DISTINCT t_dat) AS days FROM transactions GROUP BY ALL)
    GROUP BY article_id
)
-- where the article stands among its department's and its product type's sales of the last week
SELECT s.*,
       r.rebuy_rate,
       CAST(s.sales_1w / nullif(sum(s.sales_1w) OVER (PARTITION BY a.department_no), 0) AS FLOAT) AS department_share_1w,
       CAST(rank() OVER (PARTITION BY a.department_no ORDER BY s.sales_1w DESC) AS INTEGER) AS department_rank_1w,
       CAST(s.sales_1w / nullif(sum(s.sales_1w) OVER (PARTITION BY a.product_type_no), 0) AS FLOAT) AS type_share_1w
FROM stats s
JOIN rebuy r USING (article_id)
JOIN articles a USING (article_id)
ORDER BY s.article_id
