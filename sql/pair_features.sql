-- Pair features for every surviving (customer, candidate article) of the week.
-- Inputs: the view `candidates` (customer_key, article_id, score_<retriever>, rank_<retriever>,
-- n_retrievers, best_rank), the week's history `transactions`, `articles`, the four feature
-- tables and the taste vectors `article_taste` (article_id, vector, taste clusters and their sales shares) and `customer_taste`
-- (customer_key, taste_long, taste_recent), unit vectors (hm_assets/pipeline/features/taste.py). Parameter: $cutoff (DATE).
WITH history AS (
    SELECT t.customer_key, t.article_id, t.t_dat, a.product_code, a.product_type_no, a.product_group_name,
           a.colour_group_code, a.graphical_appearance_no, a.section_no, a.department_no, a.garment_group_no, a.index_group_no,
           -- how many of the customer's purchases came after this one: a re-buy looks back over the
           -- last few items bought more than over calendar days
           rank() OVER (PARTITION BY t.customer_key ORDER BY t.t_dat DESC) - 1 AS items_after,
           ln(af.price_vs_type) AS log_price_vs_type,
           h_taste.taste_cluster_16, h_taste.taste_cluster_64
    FROM transactions t
    JOIN articles a USING (article_id)
    JOIN article_features af USING (article_id)
    LEFT JOIN article_taste h_taste USING (article_id)
    SEMI JOIN (SELECT DISTINCT customer_key FROM candidates) c USING (customer_key)
),
-- the customer's usual price level within a product type (log of price / the type's median)
price_level AS (SELECT customer_key, avg(log_price_vs_type) AS v FROM history GROUP BY ALL),
pref_cluster_16 AS (
    SELECT customer_key, taste_cluster_16 AS v, count(*) AS n FROM history WHERE taste_cluster_16 IS NOT NULL GROUP BY ALL
),
pref_cluster_64 AS (
    SELECT customer_key, taste_cluster_64 AS v, count(*) AS n FROM history WHERE taste_cluster_64 IS NOT NULL GROUP BY ALL
),
pref_type AS (
    SELECT customer_key, product_type_no AS v, count(*) AS n,
           count(*) FILTER (WHERE t_dat >= $cutoff::DATE - 28) AS n_4w, $cutoff::DATE - max(t_dat) AS days_since
    FROM history GROUP BY ALL
),
pref_group AS (SELECT customer_key, product_group_name AS v, count(*) AS n FROM history GROUP BY ALL),
pref_colour AS (SELECT customer_key, colour_group_code AS v, count(*) AS n FROM history GROUP BY ALL),
pref_appearance AS (SELECT customer_key, graphical_appearance_no AS v, count(*) AS n FROM history GROUP BY ALL),
pref_section AS (
    SELECT customer_key, section_no AS v, count(*) AS n, count(*) FILTER (WHERE t_dat >= $cutoff::DATE - 28) AS n_4w
    FROM history GROUP BY ALL
),
pref_department AS (
    SELECT customer_key, department_no AS v, count(*) AS n, count(*) FILTER (WHERE t_dat >= $cutoff::DATE - 28) AS n_4w
    FROM history GROUP BY ALL
),
pref_garment AS (SELECT customer_key, garment_group_no AS v, count(*) AS n FROM history GROUP BY ALL),
pref_index AS (SELECT customer_key, index_group_no AS v, count(*) AS n FROM history GROUP BY ALL),
same_product AS (
    SELECT customer_key, product_code AS v, count(*) AS n, $cutoff::DATE - max(t_dat) AS days_since,
           min(items_after) AS items_since
    FROM history GROUP BY ALL
),
same_article AS (
    SELECT customer_key, article_id, count(*) AS n, $cutoff::DATE - max(t_dat) AS days_since,
           min(items_after) AS items_since
    FROM history GROUP BY ALL
)
SELECT c.*,
       cf.* EXCLUDE (customer_key),
       cs.* EXCLUDE (customer_key),
       af.* EXCLUDE (article_id, product_code),
       ats.* EXCLUDE (article_id),
       CAST(coalesce(p_type.n, 0) / nullif(cs.txn_all, 0) AS FLOAT) AS pref_product_type,
       CAST(coalesce(p_group.n, 0) / nullif(cs.txn_all, 0) AS FLOAT) AS pref_product_group,
       CAST(coalesce(p_colour.n, 0) / nullif(cs.txn_all, 0) AS FLOAT) AS pref_colour_group,
       CAST(coalesce(p_appearance.n, 0) / nullif(cs.txn_all, 0) AS FLOAT) AS pref_graphical_appearance,
       CAST(coalesce(p_section.n, 0) / nullif(cs.txn_all, 0) AS FLOAT) AS pref_section,
       CAST(coalesce(p_garment.n, 0) / nullif(cs.txn_all, 0) AS FLOAT) AS pref_garment_group,
       CAST(coalesce(p_index.n, 0) / nullif(cs.txn_all, 0) AS FLOAT) AS pref_index_group,
       CAST(coalesce(s_product.n, 0) AS SMALLINT) AS bought_same_product,
       CAST(coalesce(s_article.n, 0) AS SMALLINT) AS bought_same_article,
       CAST(s_article.days_since AS SMALLINT) AS days_since_bought_article,
       -- interaction recency (the strongest features of the best H&M solutions)
       CAST(s_product.days_since AS SMALLINT) AS days_since_bought_product,
       CAST(p_type.days_since AS SMALLINT) AS days_since_bought_type,
       CAST(s_article.items_since AS SMALLINT) AS items_since_bought_article,
       CAST(s_product.items_since AS SMALLINT) AS items_since_bought_product,
       CAST(coalesce(p_type.n_4w, 0) / nullif(cs.txn_4w, 0) AS FLOAT) AS pref_product_type_4w,
       CAST(coalesce(p_section.n_4w, 0) / nullif(cs.txn_4w, 0) AS FLOAT) AS pref_section_4w,
       CAST(coalesce(p_department.n, 0) / nullif(cs.txn_all, 0) AS FLOAT) AS pref_department,
       CAST(coalesce(p_department.n_4w, 0) / nullif(cs.txn_4w, 0) AS FLOAT) AS pref_department_4w,
       CAST((ats.sales_1w + 1.0) / (ats.sales_prev_1w + 1.0) AS FLOAT) AS trend_1w_vs_prev,
       CAST(af.price / nullif(cs.median_price_all, 0) AS FLOAT) AS price_vs_customer_median,
       CAST(af.price / nullif(cs.max_price_all, 0) AS FLOAT) AS price_vs_customer_max,
       CAST(abs(ln(af.price_vs_type) - p_level.v) AS FLOAT) AS price_level_gap,
       CAST(cf.age - ats.buyers_mean_age AS FLOAT) AS age_vs_buyers_mean,
       CAST(abs(cf.age - ats.buyers_mean_age) AS FLOAT) AS age_gap_to_buyers,
       CAST(ats.article_online_share - cf.customer_online_share AS FLOAT) AS channel_gap,
       -- cosine of the article's ALS vector with the customer's long-term and recent taste
       CAST(list_inner_product(c_taste.taste_long, a_taste.vector) AS FLOAT) AS taste_long,
       CAST(list_inner_product(c_taste.taste_recent, a_taste.vector) AS FLOAT) AS taste_recent,
       -- the customer's share of purchases in the candidate's taste cluster, the candidate's share of
       -- that cluster's sales last week, and their product (the chance of "my style, selling now")
       -- (null for an article without a taste vector)
       CAST(CASE WHEN a_taste.article_id IS NOT NULL THEN coalesce(p_c16.n, 0) / nullif(cs.txn_all, 0) END AS FLOAT)
           AS pref_taste_cluster_16,
       CAST(CASE WHEN a_taste.article_id IS NOT NULL THEN coalesce(p_c64.n, 0) / nullif(cs.txn_all, 0) END AS FLOAT)
           AS pref_taste_cluster_64,
       CAST(a_taste.taste_cluster_16_share_1w AS FLOAT) AS taste_cluster_16_share_1w,
       CAST(a_taste.taste_cluster_64_share_1w AS FLOAT) AS taste_cluster_64_share_1w,
       CAST(coalesce(p_c64.n, 0) / nullif(cs.txn_all, 0) * a_taste.taste_cluster_64_share_1w AS FLOAT) AS taste_cluster_affinity
FROM candidates c
LEFT JOIN customer_features cf USING (customer_key)
LEFT JOIN customer_transaction_stats cs USING (customer_key)
LEFT JOIN article_features af USING (article_id)
LEFT JOIN article_transaction_stats ats USING (article_id)
LEFT JOIN pref_type p_type ON p_type.customer_key = c.customer_key AND p_type.v = af.product_type_no
LEFT JOIN articles a ON a.article_id = c.article_id
LEFT JOIN pref_group p_group ON p_group.customer_key = c.customer_key AND p_group.v = a.product_group_name
LEFT JOIN pref_colour p_colour ON p_colour.customer_key = c.customer_key AND p_colour.v = af.colour_group_code
LEFT JOIN pref_appearance p_appearance
       ON p_appearance.customer_key = c.customer_key AND p_appearance.v = af.graphical_appearance_no
LEFT JOIN pref_section p_section ON p_section.customer_key = c.customer_key AND p_section.v = af.section_no
LEFT JOIN pref_department p_department
       ON p_department.customer_key = c.customer_key AND p_department.v = a.department_no
LEFT JOIN pref_garment p_garment ON p_garment.customer_key = c.customer_key AND p_garment.v = af.garment_group_no
LEFT JOIN pref_index p_index ON p_index.customer_key = c.customer_key AND p_index.v = af.index_group_no
LEFT JOIN same_product s_product ON s_product.customer_key = c.customer_key AND s_product.v = a.product_code
LEFT JOIN same_article s_article ON s_article.customer_key = c.customer_key AND s_article.article_id = c.article_id
LEFT JOIN price_level p_level ON p_level.customer_key = c.customer_key
LEFT JOIN customer_taste c_taste ON c_taste.customer_key = c.customer_key
LEFT JOIN article_taste a_taste ON a_taste.article_id = c.article_id
LEFT JOIN pref_cluster_16 p_c16 ON p_c16.customer_key = c.customer_key AND p_c16.v = a_taste.taste_cluster_16
LEFT JOIN pref_cluster_64 p_c64 ON p_c64.customer_key = c.customer_key AND p_c64.v = a_taste.taste_cluster_64
ORDER BY c.customer_key, c.best_rank, c.article_id
