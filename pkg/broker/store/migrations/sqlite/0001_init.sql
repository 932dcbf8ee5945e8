-- Times are Unix nanoseconds (BIGINT) in both dialects, so the queries and
-- their results are the same on SQLite and PostgreSQL.

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    run_issuer     TEXT NOT NULL,
    run_repository TEXT NOT NULL,
    run_id         TEXT NOT NULL,
    run_attempt    TEXT NOT NULL,
    cluster        TEXT NOT NULL,
    identity       TEXT NOT NULL,
    grant_doc      TEXT NOT NULL,
    policy         TEXT NOT NULL,
    key_thumbprint TEXT NOT NULL,
    public_key     BLOB NOT NULL,
    key_binding    TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    ended_at       BIGINT,
    sealed         BOOLEAN NOT NULL DEFAULT FALSE,
    unsealed_end   BOOLEAN NOT NULL DEFAULT FALSE
);
-- One live (not ended) session per run: the database, not the broker, makes
-- create-or-get atomic across brokers.
CREATE UNIQUE INDEX sessions_live_run ON sessions (run_issuer, run_repository, run_id, run_attempt) WHERE ended_at IS NULL;
CREATE INDEX sessions_created ON sessions (created_at);
CREATE INDEX sessions_repository ON sessions (run_repository, created_at);
CREATE INDEX sessions_not_ended ON sessions (expires_at) WHERE ended_at IS NULL;

CREATE TABLE token_bindings (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    thumbprint TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX token_bindings_expires ON token_bindings (expires_at);

CREATE TABLE dpop_jtis (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dpop_jtis_expires ON dpop_jtis (expires_at);

CREATE TABLE credentials (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    kind       TEXT NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX credentials_session ON credentials (session_id, id);

-- One row per session: the lock that serializes appends to its transcript.
CREATE TABLE transcripts (
    session_id  TEXT PRIMARY KEY REFERENCES sessions (id),
    next_seq    BIGINT NOT NULL DEFAULT 0,
    last_digest TEXT NOT NULL DEFAULT '',
    sealed      BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE transcript_lines (
    session_id TEXT NOT NULL REFERENCES transcripts (session_id),
    seq        BIGINT NOT NULL,
    line       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- The single row whose lock serializes log appends across brokers.
CREATE TABLE log_state (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL
);
INSERT INTO log_state (id, size) VALUES (1, 0);

CREATE TABLE log_leaves (
    idx        BIGINT PRIMARY KEY,
    leaf_key   TEXT NOT NULL UNIQUE,
    leaf_hash  BLOB NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE checkpoints (
    size       BIGINT PRIMARY KEY,
    root_hash  BLOB NOT NULL,
    signed     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES sessions (id),
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    body_digest     TEXT NOT NULL,
    rule            TEXT NOT NULL,
    details         TEXT NOT NULL,
    required        INTEGER NOT NULL CHECK (required >= 1),
    reviewer_groups TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    decided_at      BIGINT,
    consumed_at     BIGINT
);
CREATE INDEX approvals_pending ON approvals (created_at) WHERE state = 'pending';
CREATE INDEX approvals_session ON approvals (session_id);

CREATE TABLE approval_decisions (
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    reviewer    TEXT NOT NULL,
    verdict     TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
    reason      TEXT NOT NULL,
    decided_at  BIGINT NOT NULL,
    PRIMARY KEY (approval_id, reviewer)
);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    private_key  BLOB NOT NULL,
    created_at   BIGINT NOT NULL,
    retire_after BIGINT NOT NULL
);
