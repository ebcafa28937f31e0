"""The demo's sample table: eSIM profiles with KYC data, generated on the server.

The columns cover the types users move most (bigint keys, text, an enum, numeric, int, bool,
timestamptz, date, uuid, a text array, nested jsonb, NULLs), and the keys are skewed: most rows
sit in one dense block, the rest far apart, so the planner's sampled cuts have something to do.
"""

from __future__ import annotations

from typing import Any

import psycopg

TABLE = "esim_profiles"

SCHEMA = """
CREATE TYPE sim_status AS ENUM ('available', 'reserved', 'active', 'suspended', 'retired');
CREATE TABLE esim_profiles (
    id            bigint PRIMARY KEY,
    iccid         text NOT NULL UNIQUE,
    imsi          text NOT NULL,
    msisdn        text,
    status        sim_status NOT NULL,
    plan_price    numeric(10, 2),
    data_used_mb  integer,
    roaming       boolean NOT NULL,
    activated_at  timestamptz,
    last_seen     date,
    device_id     uuid,
    tags          text[],
    kyc           jsonb
);
"""

# 70 % of the keys are 1..n, the rest are spread over a range ten thousand times wider.
LOAD = """
INSERT INTO esim_profiles
SELECT
    CASE WHEN g %% 10 < 7 THEN g ELSE 10000000000 + g::bigint * 977 END,
    '8944' || lpad(g::text, 15, '0'),
    '23410' || lpad((g::bigint * 7919 %% 10000000000)::text, 10, '0'),
    CASE WHEN g %% 13 = 0 THEN NULL ELSE '+4477' || lpad((g * 31 %% 100000000)::text, 8, '0') END,
    (ARRAY['available', 'reserved', 'active', 'suspended', 'retired'])[1 + g %% 5]::sim_status,
    round((5 + g %% 50) + (g %% 100) / 100.0, 2),
    (g * 37) %% 50000,
    g %% 7 = 0,
    CASE WHEN g %% 5 = 0 THEN NULL
         ELSE timestamptz '2024-01-01 00:00:00+00' + (g %% 500000) * interval '61 seconds' END,
    date '2025-01-01' + g %% 365,
    md5(g::text)::uuid,
    CASE WHEN g %% 3 = 0 THEN ARRAY['prepaid', 'eu'] WHEN g %% 3 = 1 THEN ARRAY['postpaid']
         ELSE NULL END,
    jsonb_build_object(
        'level', (ARRAY['none', 'basic', 'full'])[1 + g %% 3],
        'country', (ARRAY['GB', 'DE', 'FR', 'ES', 'IT', 'NL'])[1 + g %% 6],
        'verified', g %% 4 <> 0,
        'documents', jsonb_build_array(
            jsonb_build_object('type', 'passport', 'expires', date '2030-01-01' + g %% 1000)))
FROM generate_series(1, %s) AS g
"""


def load(dsn: str, rows: int) -> None:
    """Create and fill the sample table, then ANALYZE it so the planner has statistics."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(LOAD, (rows,))
        conn.execute("ANALYZE esim_profiles")


def change_a_few_rows(dsn: str) -> dict[str, Any]:
    """Changes made after the copy, for `verify` (and change capture) to find."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE esim_profiles SET status = 'suspended', roaming = true WHERE id = 5")
        conn.execute("DELETE FROM esim_profiles WHERE id = 12")
        conn.execute(
            "INSERT INTO esim_profiles (id, iccid, imsi, status, roaming) "
            "VALUES (99, '8944999999999999999', '234109999999999', 'available', false) "
            "ON CONFLICT (id) DO NOTHING"
        )
    return {"updated": [5], "deleted": [12], "inserted": [99]}
