-- Alerts (issue 15): where each org's anomaly alerts go, and one row per alert sent or to send.

CREATE TABLE alert_settings (
    org_id bigint PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
    email_recipients text[] NOT NULL DEFAULT '{}',
    email_enabled boolean NOT NULL DEFAULT true,
    webhook_url text,
    webhook_enabled boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per anomaly x channel x target: the UNIQUE key is what makes enqueueing idempotent
-- (a second process, or a restart, inserts nothing new).
CREATE TABLE alert_deliveries (
    id bigserial PRIMARY KEY,
    org_id bigint NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    anomaly_id bigint NOT NULL,
    channel text NOT NULL CHECK (channel IN ('email', 'webhook')),
    target text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    UNIQUE (anomaly_id, channel, target)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE status = 'pending';

-- The anomalies table comes from migration 007; reference it when it is there.
DO $$
BEGIN
    IF to_regclass('anomalies') IS NOT NULL THEN
        ALTER TABLE alert_deliveries ADD CONSTRAINT alert_deliveries_anomaly_fk
            FOREIGN KEY (anomaly_id) REFERENCES anomalies(id) ON DELETE CASCADE;
    END IF;
END $$;
