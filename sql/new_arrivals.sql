-- New arrivals: articles that have never sold before the cut-off and whose product code lies among
-- the codes of the articles that first sold in the last 4 weeks (product codes ascend with launch,
-- in H&M's data as in hm-synth's). Articles with lower codes that never sold are old stock nobody
-- bought; higher codes are launches further away. Inputs: views `transactions` (every customer's
-- history before the cut-off) and `articles`. Parameter: $cutoff (DATE).
WITH first_sale AS (
    SELECT article_id, min(t_dat) AS first_day FROM transactions GROUP BY article_id
),
recent_launches AS (
    SELECT a.product_code FROM first_sale f JOIN articles a USING (article_id)
    WHERE f.first_day >= $cutoff::DATE - 28
),
bounds AS (
    SELECT quantile_cont(product_code, 0.1) AS low, max(product_code) AS high FROM recent_launches
)
SELECT a.article_id, a.product_code, a.department_no, a.product_type_no, a.colour_group_code,
       a.graphical_appearance_no
FROM articles a CROSS JOIN bounds b
ANTI JOIN first_sale f ON f.article_id = a.article_id
WHERE a.product_code BETWEEN b.low AND b.high
ORDER BY a.article_id
