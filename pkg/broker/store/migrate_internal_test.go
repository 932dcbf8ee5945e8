package store

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver, to build a version-1 database by hand

	"github.com/kubectl-agent/kubectl-agent/test/pgtest"
)

// A database a broker of schema version 1 wrote (one transcript per
// session) keeps its transcripts as transcript "" after migration 0002, and
// their chains go on; the empty rows made up front for sessions that never
// uploaded are left behind.
func TestMigrateTranscriptsToPerCommand(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "v1.db")
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		testMigrate0002(t, db, sqliteDialect(), "sqlite://"+path)
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		testMigrate0002(t, db, postgresDialect(), url)
	})
}

func testMigrate0002(t *testing.T, db *sql.DB, d dialect, url string) {
	ctx := context.Background()
	raw := &sqlStore{db: db, d: d}
	v1, err := fs.ReadFile(migrationsFS, "migrations/"+d.name+"/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, raw.q(q), args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`)
	exec(string(v1))
	exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, '0001_init.sql', 0)`)
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for i, id := range []string{"old", "idle"} {
		exec(`INSERT INTO sessions (id, run_issuer, run_repository, run_id, run_attempt, cluster, identity, grant_doc, policy,
			key_thumbprint, public_key, key_binding, created_at, expires_at, sealed, unsealed_end)
			VALUES (?, 'iss', 'acme/web', ?, '1', 'prod', 'null', 'null', '', 'tp', ?, 'kb', ?, ?, FALSE, FALSE)`,
			id, id, []byte{1}, ns(t0.Add(time.Duration(i)*time.Minute)), ns(t0.Add(time.Hour)))
		exec(`INSERT INTO transcripts (session_id) VALUES (?)`, id)
	}
	old := []string{`{"seq":0}`, `{"seq":1}`}
	for i, l := range old {
		exec(`INSERT INTO transcript_lines (session_id, seq, line, digest) VALUES ('old', ?, ?, ?)`, i, l, LineDigest(l))
	}
	exec(`UPDATE transcripts SET next_seq = 2, last_digest = ? WHERE session_id = 'old'`, LineDigest(old[1]))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("migrating a version-1 database: %v", err)
	}
	defer s.Close()
	got, err := s.ReadTranscript(ctx, "old", "", 0, 0)
	if err != nil || strings.Join(got, "\n") != strings.Join(old, "\n") {
		t.Fatalf("old transcript after migration = %q, %v", got, err)
	}
	st, err := s.AppendTranscript(ctx, "old", "", 1, []string{old[1], `{"seq":2}`})
	if err != nil || st.NextSeq != 3 {
		t.Fatalf("old transcript goes on: %+v, %v", st, err)
	}
	if _, err := s.AppendTranscript(ctx, "old", "new", 0, []string{`{"seq":0,"x":1}`}); err != nil {
		t.Fatal(err)
	}
	ts, err := s.ListTranscripts(ctx, TranscriptFilter{})
	if len(ts) == 2 && ts[0].TranscriptID == "new" {
		ts[0], ts[1] = ts[1], ts[0] // "new" was made at the wall clock's now
	}
	if err != nil || len(ts) != 2 || ts[0].TranscriptID != "" || ts[1].TranscriptID != "new" || !ts[0].CreatedAt.Equal(t0) {
		t.Fatalf("transcripts after migration = %+v, %v (want old/'' and old/new; idle's empty row dropped)", ts, err)
	}
}
