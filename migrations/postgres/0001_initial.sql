-- The durable store's tables, as the SQLite backend has them (src/store/sqlite.rs,
-- schema version 2), with one difference: `sessions.pos` numbers rows in the order
-- they were written, as SQLite's rowid does (a session started again takes a new one).
-- Counts, sequence numbers and times are BIGINT (unsigned 32-bit values do not fit in
-- INTEGER); JSON stays TEXT, written and read as the SQLite backend does.
--
-- Applied inside a transaction by src/store/postgres/migrate.rs: no statement here may
-- need to run outside one (CREATE INDEX CONCURRENTLY, for one).

CREATE TABLE snapshots (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    json TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    pos BIGSERIAL NOT NULL,
    parent TEXT,
    agent_id TEXT NOT NULL,
    parent_run_id TEXT,
    spawn_json TEXT NOT NULL,
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    final_text TEXT,
    usage_json TEXT NOT NULL DEFAULT '{}',
    started_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT,
    resumes BIGINT NOT NULL DEFAULT 0,
    follow_ups BIGINT NOT NULL DEFAULT 0,
    follow_up_task TEXT
);
CREATE UNIQUE INDEX sessions_pos ON sessions (pos);

CREATE TABLE messages (
    session_key TEXT NOT NULL,
    seq BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    json TEXT NOT NULL,
    reasoning_json TEXT,
    announce_id TEXT,
    PRIMARY KEY (session_key, seq)
);

CREATE TABLE tool_results (
    session_key TEXT NOT NULL,
    call_id TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (session_key, call_id)
);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    parent_key TEXT NOT NULL,
    parent_run_id TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    undeliverable TEXT
);
