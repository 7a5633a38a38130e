-- Each org-hour's latency p95 for the anomaly detector, the org as a whole and per feature, as
-- the detector reads it (lectr.analysis.histogram.quantile(..., 0.95, spread=True) of the merged
-- hourly histograms). Written by the rollups job in the transaction that recomputes the org-hour,
-- so a detector starting afresh reads 240 hours of p95s instead of re-merging their histograms.
-- requests and rollup_rows are the org-hour's figures they were computed from: a reader uses
-- the p95s only while those still match (else it computes them itself).
CREATE TABLE rollup_hour_p95 (
    org_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    hour timestamptz NOT NULL,
    rollup_rows bigint NOT NULL,
    requests bigint NOT NULL,
    p95_ms float8,              -- the org as a whole
    features text[] NOT NULL,   -- each feature of the hour ...
    feature_p95_ms float8[] NOT NULL,  -- ... and its p95, in the same order
    PRIMARY KEY (org_id, hour)
);

CREATE OR REPLACE FUNCTION lectr_rollup_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM request_rollups;
    DELETE FROM request_rollups_6h;
    DELETE FROM request_rollups_daily;
    DELETE FROM rollup_hour_p95;
    DELETE FROM rollup_dirty;
    RETURN NULL;
END $$;

-- Hours rolled up before this migration: recomputed by the next run, which stores their p95s.
INSERT INTO rollup_dirty (org_id, hour) SELECT DISTINCT org_id, hour FROM request_rollups;
