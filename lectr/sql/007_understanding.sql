-- What the detector and the recommendation engine found (issue 15): one row per anomaly, one
-- per (org, feature, current model) recommendation. Both jobs read request_rollups (006).

CREATE TABLE anomalies (
    id              bigserial PRIMARY KEY,
    org_id          bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    feature         text,                       -- NULL: the org as a whole
    metric          text NOT NULL CHECK (metric IN ('cost', 'requests', 'error_rate', 'p95_latency',
                                                    'model_drift', 'latency_threshold')),
    direction       text NOT NULL CHECK (direction IN ('up', 'down')),
    window_start    timestamptz NOT NULL,       -- first anomalous hour
    window_end      timestamptz NOT NULL,       -- end of the last anomalous hour seen so far
    current_value   double precision NOT NULL,
    baseline_mean   double precision,
    baseline_std    double precision,
    deviation_sigma double precision,
    detail          jsonb NOT NULL DEFAULT '{}',
    opened_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    acknowledged_at timestamptz
);
-- Recorded once, however many runs, workers or machines see it.
CREATE UNIQUE INDEX anomalies_once ON anomalies (org_id, metric, coalesce(feature, ''), window_start);
-- At most one open anomaly per scope, metric and direction: a run that lost a race inserts nothing.
CREATE UNIQUE INDEX anomalies_one_open ON anomalies (org_id, metric, coalesce(feature, ''), direction)
    WHERE resolved_at IS NULL;
CREATE INDEX anomalies_by_org ON anomalies (org_id, window_start DESC, id DESC);

CREATE TABLE recommendations (
    id                 bigserial PRIMARY KEY,
    org_id             bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    feature            text NOT NULL,
    provider           text NOT NULL,
    current_model      text NOT NULL,
    suggested_model    text NOT NULL,
    aggressiveness     text NOT NULL,
    confidence         text NOT NULL CHECK (confidence IN ('high', 'medium')),
    reason             text NOT NULL,
    signals            jsonb NOT NULL,
    monthly_saving_usd numeric(20, 6),          -- NULL when the target is unpriced
    state              text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'dismissed', 'applied')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, feature, current_model)
);
