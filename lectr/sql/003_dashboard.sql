-- What the dashboard reads: pre-computed summaries, sessions, and events lost per minute.

-- One row per org per period, rewritten by the aggregator every minute. The dashboard reads
-- these and never aggregates request_logs on page load.
CREATE TABLE dashboard_summaries (
    org_id      bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    period      text NOT NULL CHECK (period IN ('last_24h', 'last_7d', 'last_30d')),
    computed_at timestamptz NOT NULL,
    data        jsonb NOT NULL,
    PRIMARY KEY (org_id, period)
);

-- Events each process could not record, per minute, org and reason, for the degradation banner.
CREATE TABLE event_drops (
    minute  timestamptz NOT NULL,
    org_id  bigint,
    reason  text NOT NULL,
    count   integer NOT NULL CHECK (count > 0)
);
CREATE INDEX event_drops_org_minute ON event_drops (org_id, minute);

-- Dashboard sessions: the cookie holds a random token; only its hash is stored. A session
-- belongs to the key it was opened with, so rotating the key ends it.
CREATE TABLE dashboard_sessions (
    token_hash text PRIMARY KEY,
    org_id     bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    key_id     bigint NOT NULL REFERENCES org_keys (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
