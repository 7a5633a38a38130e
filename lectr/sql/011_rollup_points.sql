-- Each org's dashboard chart point for every whole hour, six-hour block and UTC day: requests,
-- errors, cost and the latency p95 (lectr.analysis.histogram.quantile(..., 0.95) of the org's
-- merged histograms of the bucket, as the aggregator computes a point). Written by the rollups
-- job for every hour, block and day it recomputes, in the same transaction, so the aggregator
-- reads a whole point as one row instead of merging its histograms on every run. A bucket
-- without requests has no row.
CREATE TABLE rollup_points (
    org_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    bucket_hours int NOT NULL CHECK (bucket_hours IN (1, 6, 24)),  -- the point's length
    start timestamptz NOT NULL,
    requests bigint NOT NULL,
    errors bigint NOT NULL,
    cost_usd numeric NOT NULL,
    latency_p95_ms float8,
    PRIMARY KEY (bucket_hours, start, org_id)
);

-- Four- and sixteen-day rollups (blocks from 2000-01-01 UTC), re-merged from the days and the
-- four-day blocks: a 30-day window is then about ten rows per combination, not thirty-odd.
CREATE TABLE request_rollups_4d (LIKE request_rollups_daily INCLUDING DEFAULTS);  -- day: the block's first
ALTER TABLE request_rollups_4d ADD PRIMARY KEY (org_id, day, feature, task, provider, model_used),
    ADD FOREIGN KEY (org_id) REFERENCES organizations (id) ON DELETE CASCADE;
CREATE INDEX request_rollups_4d_day ON request_rollups_4d (day);
CREATE TABLE request_rollups_16d (LIKE request_rollups_daily INCLUDING DEFAULTS);
ALTER TABLE request_rollups_16d ADD PRIMARY KEY (org_id, day, feature, task, provider, model_used),
    ADD FOREIGN KEY (org_id) REFERENCES organizations (id) ON DELETE CASCADE;
CREATE INDEX request_rollups_16d_day ON request_rollups_16d (day);

CREATE OR REPLACE FUNCTION lectr_rollup_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM request_rollups;
    DELETE FROM request_rollups_6h;
    DELETE FROM request_rollups_daily;
    DELETE FROM request_rollups_4d;
    DELETE FROM request_rollups_16d;
    DELETE FROM rollup_hour_p95;
    DELETE FROM rollup_points;
    DELETE FROM rollup_dirty;
    RETURN NULL;
END $$;

-- Hours rolled up before this migration: recomputed by the next run, which stores their points
-- and merges their four- and sixteen-day blocks.
INSERT INTO rollup_dirty (org_id, hour) SELECT DISTINCT org_id, hour FROM request_rollups;
