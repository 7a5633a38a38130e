-- Six-hour rollups: the hours of each block starting at 00, 06, 12 or 18 UTC merged, kept by the
-- rollups job beside the daily ones (lectr/jobs/rollups.py). The dashboard's 7-day chart has
-- six-hour points, and the ends of a long window that are not whole days are mostly whole
-- blocks: read here, they cost one row where the hourly table has six.
CREATE TABLE request_rollups_6h (LIKE request_rollups INCLUDING DEFAULTS);  -- hour: the block's first
ALTER TABLE request_rollups_6h ADD PRIMARY KEY (org_id, hour, feature, task, provider, model_used),
    ADD FOREIGN KEY (org_id) REFERENCES organizations (id) ON DELETE CASCADE;
CREATE INDEX request_rollups_6h_hour ON request_rollups_6h (hour);

CREATE OR REPLACE FUNCTION lectr_rollup_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM request_rollups;
    DELETE FROM request_rollups_6h;
    DELETE FROM request_rollups_daily;
    DELETE FROM rollup_dirty;
    RETURN NULL;
END $$;

-- Hours rolled up before this migration: recomputed by the next run, which fills their blocks.
INSERT INTO rollup_dirty (org_id, hour) SELECT DISTINCT org_id, hour FROM request_rollups;
