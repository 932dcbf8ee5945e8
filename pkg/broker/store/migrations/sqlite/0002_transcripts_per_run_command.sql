-- A session (one CI run) may hold several transcripts: each
-- `kubectl agent exec` of the run records its own. Transcripts and their
-- lines are keyed by (session_id, transcript_id); transcript_id '' is the
-- single transcript of sessions recorded before this migration.
--
-- created_at and updated_at are broker wall-clock times (Unix ns) of the
-- first and the latest append; summary is the end event's payload (exit
-- code and counts) once the transcript is sealed, 'null' before.

CREATE TABLE transcripts_v2 (
    session_id    TEXT NOT NULL REFERENCES sessions (id),
    transcript_id TEXT NOT NULL,
    next_seq      BIGINT NOT NULL DEFAULT 0,
    last_digest   TEXT NOT NULL DEFAULT '',
    sealed        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL DEFAULT 0,
    updated_at    BIGINT NOT NULL DEFAULT 0,
    summary       TEXT NOT NULL DEFAULT 'null',
    PRIMARY KEY (session_id, transcript_id)
);

CREATE TABLE transcript_lines_v2 (
    session_id    TEXT NOT NULL,
    transcript_id TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    line          TEXT NOT NULL,
    digest        TEXT NOT NULL,
    PRIMARY KEY (session_id, transcript_id, seq),
    FOREIGN KEY (session_id, transcript_id) REFERENCES transcripts_v2 (session_id, transcript_id)
);

-- Old rows become transcript ''. Sessions that never uploaded a line had an
-- empty row made up front; rows are now made by the first append, so those
-- are left behind.
INSERT INTO transcripts_v2 (session_id, transcript_id, next_seq, last_digest, sealed, created_at, updated_at)
    SELECT t.session_id, '', t.next_seq, t.last_digest, t.sealed, s.created_at, s.created_at
    FROM transcripts t JOIN sessions s ON s.id = t.session_id
    WHERE t.next_seq > 0 OR t.sealed;

INSERT INTO transcript_lines_v2 (session_id, transcript_id, seq, line, digest)
    SELECT session_id, '', seq, line, digest FROM transcript_lines;

DROP TABLE transcript_lines;
DROP TABLE transcripts;
ALTER TABLE transcripts_v2 RENAME TO transcripts;
ALTER TABLE transcript_lines_v2 RENAME TO transcript_lines;

CREATE INDEX transcripts_created ON transcripts (created_at);
