-- Customer features as of the cut-off: attributes, channel preference, activity.
-- Parameters: $cutoff (DATE, first day of the target week; history is strictly before it).
WITH postal AS (
    SELECT postal_code, count(*) AS postal_code_customers FROM customers GROUP BY postal_code
),
activity AS (
    SELECT customer_key,
           count(*) AS txn_count,
           count(DISTINCT t_dat) AS active_days,
           avg(CASE WHEN sales_channel_id = 2 THEN 1.0 ELSE 0.0 END) AS online_share,
           $cutoff::DATE - min(t_dat) AS days_since_first_purchase
    FROM transactions
    GROUP BY customer_key
)
SELECT c.customer_key,
       CAST(c.age AS FLOAT) AS age,
       CAST(c.fn AS TINYINT) AS fn,
       CAST(c.active AS TINYINT) AS active,
       CAST(CASE c.club_member_status WHEN 'ACTIVE' THEN 0 WHEN 'PRE-CREATE' THEN 1 WHEN 'LEFT CLUB' THEN 2 ELSE 3 END AS TINYINT)
           AS club_status_code,
       CAST(CASE c.fashion_news_frequency WHEN 'NONE' THEN 0 WHEN 'REGULARLY' THEN 1 WHEN 'MONTHLY' THEN 2 ELSE 3 END AS TINYINT)
           AS news_frequency_code,
       CAST(coalesce(p.postal_code_customers, 0) AS INTEGER) AS postal_code_customers,
       CAST(coalesce(a.online_share, -1) AS FLOAT) AS customer_online_share,
       CAST(coalesce(a.txn_count, 0) AS INTEGER) AS lifetime_txn_count,
       CAST(coalesce(a.active_days, 0) AS INTEGER) AS lifetime_active_days,
       CAST(coalesce(a.days_since_first_purchase, -1) AS INTEGER) AS days_since_first_purchase
FROM customers c
LEFT JOIN postal p USING (postal_code)
LEFT JOIN activity a USING (customer_key)
ORDER BY c.customer_key
