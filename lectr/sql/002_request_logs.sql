-- One row per request, partitioned by day. Metadata only: never prompt or completion text,
-- never a key. Partitions are created ahead of time and dropped past retention by Lectr.

CREATE TABLE request_logs (
    id                bigserial,
    created_at        timestamptz NOT NULL,
    org_id            bigint NOT NULL,
    provider          text NOT NULL,
    model             text,               -- as requested
    model_used        text,               -- after routing rules (same as model until rules exist)
    feature           text NOT NULL,      -- 'untagged' when the header is missing
    task              text,
    status_code       smallint NOT NULL,
    error_type        text,
    error_origin      text CHECK (error_origin IN ('lectr', 'provider', 'client')),
    stream            boolean NOT NULL,
    latency_ms        double precision NOT NULL,
    ttfb_ms           double precision,
    overhead_us       integer NOT NULL,   -- Lectr's own added time
    prompt_tokens     integer,
    completion_tokens integer,
    cached_tokens     integer,
    reasoning_tokens  integer,
    token_source      text NOT NULL CHECK (token_source IN ('provider', 'measured', 'none')),
    cost_usd          numeric(18, 10),
    cost_partial      boolean NOT NULL DEFAULT false,  -- measured rows price the completion only
    pricing_id        bigint,
    provider_unknown  boolean NOT NULL DEFAULT false,
    rule_id           bigint,
    bytes_in          bigint NOT NULL,
    bytes_out         bigint NOT NULL,
    PRIMARY KEY (created_at, id)
) PARTITION BY RANGE (created_at);

-- The requests table pages by (created_at, id) per org; breakdowns filter by feature/model.
CREATE INDEX request_logs_org_time ON request_logs (org_id, created_at DESC, id DESC);
CREATE INDEX request_logs_org_feature ON request_logs (org_id, feature, created_at);
CREATE INDEX request_logs_org_model ON request_logs (org_id, model, created_at);
CREATE INDEX request_logs_org_failures ON request_logs (org_id, created_at DESC)
    WHERE status_code >= 400 OR error_type IS NOT NULL;

-- Batches replayed from the spool: written in the same transaction as their rows, so a
-- batch is applied exactly once even if Lectr dies between COPY and deleting the file.
CREATE TABLE event_batches (
    batch_id   uuid PRIMARY KEY,
    rows       integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Versioned prices in USD per million tokens. An operator's row (negotiated prices) wins over
-- a seeded one; among rows of one source the latest effective_from not in the future wins.
CREATE TABLE model_pricing (
    id                        bigserial PRIMARY KEY,
    provider                  text NOT NULL,
    model                     text NOT NULL,
    input_usd_per_mtok        numeric(14, 6) NOT NULL CHECK (input_usd_per_mtok >= 0),
    output_usd_per_mtok       numeric(14, 6) NOT NULL CHECK (output_usd_per_mtok >= 0),
    cached_input_usd_per_mtok numeric(14, 6) CHECK (cached_input_usd_per_mtok >= 0),
    effective_from            timestamptz NOT NULL,
    source                    text NOT NULL CHECK (source IN ('seed', 'operator')),
    note                      text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, model, source, effective_from)
);

-- Within-provider cheaper siblings, for the recommendation engine.
CREATE TABLE model_downgrades (
    provider       text NOT NULL,
    from_model     text NOT NULL,
    to_model       text NOT NULL,
    aggressiveness text NOT NULL CHECK (aggressiveness IN ('conservative', 'moderate', 'aggressive')),
    PRIMARY KEY (provider, from_model, aggressiveness)
);

CREATE TRIGGER model_pricing_notify AFTER INSERT OR UPDATE OR DELETE ON model_pricing
    FOR EACH STATEMENT EXECUTE FUNCTION lectr_notify_config();
CREATE TRIGGER model_downgrades_notify AFTER INSERT OR UPDATE OR DELETE ON model_downgrades
    FOR EACH STATEMENT EXECUTE FUNCTION lectr_notify_config();
