package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store/storetest"
	"github.com/kubectl-agent/kubectl-agent/test/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t testing.TB, url string) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func sqliteURL(t testing.TB) string {
	return "sqlite://" + filepath.Join(t.TempDir(), "broker.db")
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, sqliteURL(t)) })
}

// Two Store instances on one SQLite file: not the way to run several
// brokers, but two processes on one file must stay correct.
func TestSQLitePair(t *testing.T) {
	storetest.RunPair(t, func(t *testing.T) (store.Store, store.Store) {
		u := sqliteURL(t)
		return open(t, u), open(t, u)
	})
}

func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, pgtest.NewDatabase(t)) })
}

func TestPostgresPair(t *testing.T) {
	storetest.RunPair(t, func(t *testing.T) (store.Store, store.Store) {
		u := pgtest.NewDatabase(t)
		return open(t, u), open(t, u)
	})
}

func TestOpenURLs(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(dir, "abs.db")
	open(t, "sqlite://"+abs) // sqlite:///abs/path.db
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("sqlite:///abs did not create %s: %v", abs, err)
	}
	t.Chdir(dir)
	open(t, "sqlite://rel.db")
	open(t, "file:file.db")
	for _, name := range []string{"rel.db", "file.db"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s not created: %v", name, err)
		}
	}
	open(t, "sqlite://:memory:")
	for _, bad := range []string{"mysql://x/y", "", "sqlite://", "sqlite:///x.db?mode=ro", "redis://u:hunter2@h/0"} {
		_, err := store.Open(context.Background(), bad)
		if !errors.Is(err, store.ErrUnsupportedURL) {
			t.Errorf("Open(%q) = %v, want ErrUnsupportedURL", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

func TestPostgresOpenErrorHidesPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Nothing listens on port 1.
	_, err := store.Open(ctx, "postgres://broker:hunter2@127.0.0.1:1/db?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("Open succeeded against a closed port")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestSQLiteFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := open(t, "sqlite://"+path)
	// Write something so the WAL files exist.
	if err := s.InsertSigningKey(context.Background(), store.SigningKey{KID: "k", Algorithm: "EdDSA", Private: []byte("secret"), CreatedAt: time.Now(), RetireAfter: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600 (it holds signing keys)", p, fi.Mode().Perm())
		}
	}
}

// Data outlives the process: reopen the file and find it, migrations not reapplied.
func TestSQLiteReopen(t *testing.T) {
	u := sqliteURL(t)
	ctx := context.Background()
	s, err := store.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendLeaf(ctx, "k", []byte("h")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, u)
	if n, err := s.LogSize(ctx); err != nil || n != 1 {
		t.Fatalf("after reopen: size %d, %v", n, err)
	}
}

// Brokers starting together on a fresh database migrate it once.
func TestPostgresConcurrentOpen(t *testing.T) {
	u := pgtest.NewDatabase(t)
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := store.Open(context.Background(), u)
			if err == nil {
				err = s.Ping(context.Background())
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c, err := pgx.Connect(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var count, versions int
	if err := c.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT version) FROM schema_migrations`).Scan(&count, &versions); err != nil {
		t.Fatal(err)
	}
	if count != versions || count == 0 {
		t.Fatalf("schema_migrations has %d rows for %d versions", count, versions)
	}
}

// A database migrated by a newer broker is refused, not used blindly.
func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	for name, u := range map[string]string{"sqlite": sqliteURL(t), "postgres": pgtest.NewDatabase(t)} {
		t.Run(name, func(t *testing.T) {
			s, err := store.Open(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			raw := rawExec(t, u)
			raw(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)`)
			_, err = store.Open(ctx, u)
			if err == nil || !strings.Contains(err.Error(), "upgrade agent-broker") {
				t.Fatalf("Open on a newer schema = %v, want a refusal", err)
			}
		})
	}
}

// rawExec runs SQL on a store's database around the Store API.
func rawExec(t *testing.T, u string) func(string) {
	return func(q string) {
		t.Helper()
		ctx := context.Background()
		if strings.HasPrefix(u, "postgres") {
			c, err := pgx.Connect(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
			return
		}
		db, err := sqlOpen(strings.TrimPrefix(u, "sqlite://"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
}

// The database restarting under a running broker: calls fail while it is
// down and work again after, with no new Open.
func TestPostgresSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	u := pgtest.NewDatabase(t)
	s := open(t, u)
	if _, err := s.AppendLeaf(ctx, "before", []byte("h1")); err != nil {
		t.Fatal(err)
	}
	pgtest.Restart(t)
	// The pool's connections died with the server; the store must recover
	// on its own. Wait for the condition, not a time.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.Ping(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover after a restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	idx, err := s.AppendLeaf(ctx, "after", []byte("h2"))
	if err != nil || idx != 1 {
		t.Fatalf("append after restart = %d, %v; want 1", idx, err)
	}
}

func benchCreateOrGet(b *testing.B, s store.Store) {
	ctx := context.Background()
	t0 := time.Now()
	mk := func(i int, id string) store.Session {
		return store.Session{
			ID: id, Run: store.RunKey{Issuer: "iss", Repository: "acme/web", RunID: fmt.Sprint(i), RunAttempt: "1"},
			Cluster: "prod", Identity: []byte(`{}`), Grant: []byte(`{}`), KeyThumbprint: "t", PublicKey: []byte("k"),
			CreatedAt: t0, ExpiresAt: t0.Add(time.Hour),
		}
	}
	b.Run("new", func(b *testing.B) {
		start := time.Now()
		for i := 0; b.Loop(); i++ {
			if _, created, err := s.CreateOrGetSession(ctx, mk(i, fmt.Sprintf("n%d", i))); err != nil || !created {
				b.Fatalf("created=%v err=%v", created, err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	})
	b.Run("repeat", func(b *testing.B) {
		if _, _, err := s.CreateOrGetSession(ctx, mk(-1, "r")); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for i := 0; b.Loop(); i++ {
			if _, created, err := s.CreateOrGetSession(ctx, mk(-1, fmt.Sprintf("r%d", i))); err != nil || created {
				b.Fatalf("created=%v err=%v", created, err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	})
}

func BenchmarkCreateOrGetSessionSQLite(b *testing.B) {
	benchCreateOrGet(b, open(b, sqliteURL(b)))
}

func BenchmarkCreateOrGetSessionPostgres(b *testing.B) {
	benchCreateOrGet(b, open(b, pgtest.NewDatabase(b)))
}
