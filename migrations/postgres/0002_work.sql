-- Sessions placed on workers: where each session runs, and the work queue workers
-- claim from (see src/worker/queue.rs).
ALTER TABLE sessions ADD COLUMN placement TEXT NOT NULL DEFAULT 'local';
CREATE INDEX sessions_run_id ON sessions (run_id);

CREATE TABLE work (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    -- The spawn, signed by the gateway (src/worker/token.rs).
    token TEXT NOT NULL,
    worker TEXT,
    lease_until TIMESTAMPTZ,
    claims INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ,
    done_at TIMESTAMPTZ,
    -- Why no worker may run it (its token did not verify).
    rejected TEXT
);
CREATE INDEX work_open ON work (seq) WHERE done_at IS NULL AND revoked_at IS NULL AND rejected IS NULL;

CREATE INDEX outbox_pending ON outbox (created_at_ms) WHERE delivered_at_ms IS NULL AND undeliverable IS NULL;

-- The gateway's public key, for workers not given one.
CREATE TABLE gateway_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    public_key TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
