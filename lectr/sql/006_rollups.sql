-- Hourly rollups of request_logs, kept current by the rollups job (lectr/jobs/rollups.py).
--
-- One row per org, UTC hour, feature, task, provider and model_used. Analysis (the dashboard
-- aggregator, anomalies, recommendations) reads these instead of raw rows, so its cost follows
-- the number of org-hours, not the number of requests.
CREATE TABLE request_rollups (
    org_id                bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    hour                  timestamptz NOT NULL,          -- date_trunc('hour', created_at) in UTC
    feature               text NOT NULL,
    task                  text NOT NULL DEFAULT '',      -- '' when the request had no X-Lectr-Task
    provider              text NOT NULL,
    model_used            text NOT NULL DEFAULT '',      -- coalesce(model_used, model, '')
    requests              bigint NOT NULL,
    errors_provider       bigint NOT NULL,               -- error_origin = 'provider'
    errors_lectr          bigint NOT NULL,               -- error_origin = 'lectr'
    errors_client         bigint NOT NULL,               -- error_origin = 'client'
    cost_usd              numeric(20, 10) NOT NULL,      -- NULL costs count 0
    cost_sq_usd           double precision NOT NULL,     -- sum of cost_usd ^ 2
    partial_cost_requests bigint NOT NULL,
    unpriced_requests     bigint NOT NULL,               -- the aggregator's "cost unknown, not zero"
    prompt_tokens         bigint NOT NULL,
    completion_tokens     bigint NOT NULL,
    cached_tokens         bigint NOT NULL,
    reasoning_tokens      bigint NOT NULL,
    measured_requests     bigint NOT NULL,               -- token_source = 'measured'
    latency_ms_sum        double precision NOT NULL,
    latency_buckets       integer[] NOT NULL,            -- lectr.analysis.histogram bucket counts
    ttfb_count            bigint NOT NULL,
    ttfb_ms_sum           double precision NOT NULL,
    ttfb_buckets          integer[] NOT NULL,
    bytes_in              bigint NOT NULL,
    bytes_out             bigint NOT NULL,
    -- Beyond the shared contract: what the dashboard aggregator counts.
    errors                bigint NOT NULL,               -- status_code >= 400 OR error_type IS NOT NULL
    provider_fault_errors bigint NOT NULL,               -- the provider's own failures (not its 4xx)
    connection_errors     bigint NOT NULL,               -- Lectr could not reach the provider
    lectr_fault_errors    bigint NOT NULL,               -- Lectr's own refusals and failures
    unread_requests       bigint NOT NULL,               -- usage_note IS NOT NULL
    PRIMARY KEY (org_id, hour, feature, task, provider, model_used)
);
CREATE INDEX request_rollups_hour ON request_rollups (hour);

-- The same per UTC day, merged from the hourly rows by the same job (long windows read these).
CREATE TABLE request_rollups_daily (LIKE request_rollups INCLUDING DEFAULTS);
ALTER TABLE request_rollups_daily RENAME COLUMN hour TO day;
ALTER TABLE request_rollups_daily ADD PRIMARY KEY (org_id, day, feature, task, provider, model_used),
    ADD FOREIGN KEY (org_id) REFERENCES organizations (id) ON DELETE CASCADE;
CREATE INDEX request_rollups_daily_day ON request_rollups_daily (day);

-- Bucket counts (an int[] of ``size``) from an int[] of 0-based bucket indexes.
CREATE FUNCTION lectr_histogram(indexes int[], size int) RETURNS int[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    counts int[] := array_fill(0, ARRAY[size]);
    i int;
BEGIN
    FOREACH i IN ARRAY indexes LOOP
        counts[i + 1] := counts[i + 1] + 1;
    END LOOP;
    RETURN counts;
END $$;

-- Org-hours whose rollups are stale. Every write to request_logs marks the (org, hour) pairs it
-- touched here, in the same transaction as the rows themselves, so a mark becomes visible exactly
-- when its rows do, whatever order writers commit in and however old their created_at is. The
-- job takes the marks and recomputes those org-hours whole. No key: writers only append, so they
-- never wait on each other or on the job.
CREATE TABLE rollup_dirty (
    org_id bigint NOT NULL,
    hour   timestamptz NOT NULL
);

CREATE FUNCTION lectr_rollup_mark_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (org_id, hour)
    SELECT DISTINCT org_id, date_trunc('hour', created_at, 'UTC') FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION lectr_rollup_mark_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (org_id, hour)
    SELECT DISTINCT org_id, date_trunc('hour', created_at, 'UTC') FROM old_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION lectr_rollup_mark_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (org_id, hour)
    SELECT org_id, date_trunc('hour', created_at, 'UTC') FROM old_rows
    UNION SELECT org_id, date_trunc('hour', created_at, 'UTC') FROM new_rows;
    RETURN NULL;
END $$;

-- Truncating request_logs empties every hour.
CREATE FUNCTION lectr_rollup_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM request_rollups;
    DELETE FROM request_rollups_daily;
    DELETE FROM rollup_dirty;
    RETURN NULL;
END $$;

-- Statement-level: one insert into rollup_dirty per COPY batch, not per row.
CREATE TRIGGER request_logs_rollup_insert AFTER INSERT ON request_logs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION lectr_rollup_mark_new();
CREATE TRIGGER request_logs_rollup_delete AFTER DELETE ON request_logs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION lectr_rollup_mark_old();
CREATE TRIGGER request_logs_rollup_update AFTER UPDATE ON request_logs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lectr_rollup_mark_changed();
CREATE TRIGGER request_logs_rollup_truncate AFTER TRUNCATE ON request_logs
    FOR EACH STATEMENT EXECUTE FUNCTION lectr_rollup_truncated();

-- Rows recorded before this migration: every org-hour they cover is stale.
INSERT INTO rollup_dirty (org_id, hour)
SELECT DISTINCT org_id, date_trunc('hour', created_at, 'UTC') FROM request_logs;
