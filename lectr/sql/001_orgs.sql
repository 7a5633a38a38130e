-- Organizations, their keys (hashes only) and their Azure OpenAI endpoints.

CREATE TABLE organizations (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    p95_threshold_ms integer CHECK (p95_threshold_ms > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- A key is stored as the SHA-256 of its text; the text itself is shown once and forgotten.
CREATE TABLE org_keys (
    id         bigserial PRIMARY KEY,
    org_id     bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    key_hash   text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_hint   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX org_keys_active ON org_keys (org_id) WHERE revoked_at IS NULL;

CREATE TABLE azure_configs (
    org_id      bigint PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    endpoint    text NOT NULL CHECK (endpoint ~ '^https?://[^/?#]+'),
    api_version text NOT NULL CHECK (length(api_version) BETWEEN 1 AND 64),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every process caches these tables in memory; any change, from whatever client, tells
-- them all to reload.
CREATE FUNCTION lectr_notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lectr_config', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER organizations_notify AFTER INSERT OR UPDATE OR DELETE ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION lectr_notify_config();
CREATE TRIGGER org_keys_notify AFTER INSERT OR UPDATE OR DELETE ON org_keys
    FOR EACH STATEMENT EXECUTE FUNCTION lectr_notify_config();
CREATE TRIGGER azure_configs_notify AFTER INSERT OR UPDATE OR DELETE ON azure_configs
    FOR EACH STATEMENT EXECUTE FUNCTION lectr_notify_config();
