-- Article features: catalogue attributes as integer codes, price level, launch.
-- Parameters: $cutoff (DATE).
WITH sales AS (
    SELECT article_id,
           min(t_dat) AS first_sale,
           median(price) AS median_price_all,
           median(price) FILTER (WHERE t_dat >= $cutoff::DATE - 28) AS median_price_4w
    FROM transactions
    GROUP BY article_id
),
type_price AS (
    SELECT a.product_type_no, median(t.price) AS type_median_price
    FROM transactions t JOIN articles a USING (article_id)
    GROUP BY a.product_type_no
)
SELECT a.article_id,
       a.product_code,
       a.product_type_no,
       CAST(dense_rank() OVER (ORDER BY a.product_group_name) AS SMALLINT) AS product_group_code,
       a.graphical_appearance_no,
       a.colour_group_code,
       a.perceived_colour_value_id,
       a.perceived_colour_master_id,
       a.department_no,
       CAST(dense_rank() OVER (ORDER BY a.index_code) AS SMALLINT) AS index_code_no,
       a.index_group_no,
       a.section_no,
       a.garment_group_no,
       CAST(coalesce(s.median_price_4w, s.median_price_all, tp.type_median_price) AS FLOAT) AS price,
       CAST(coalesce(s.median_price_all, tp.type_median_price) / nullif(tp.type_median_price, 0) AS FLOAT)
           AS price_vs_type,
       CAST(coalesce($cutoff::DATE - s.first_sale, -1) AS INTEGER) AS days_since_launch
FROM articles a
LEFT JOIN sales s USING (article_id)
LEFT JOIN type_price tp USING (product_type_no)
ORDER BY a.article_id
