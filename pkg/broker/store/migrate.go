package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Migrations are versioned SQL files, one folder per dialect, named
// NNNN_what.sql. They are applied in order, each once, recorded in
// schema_migrations; never edit one that has shipped, add the next.
//
//go:embed migrations
var migrationsFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations(dialect string) ([]migration, error) {
	dir := path.Join("migrations", dialect)
	entries, err := fs.ReadDir(migrationsFS, dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s migrations: %w", dialect, err)
	}
	var out []migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s/%s: name must start with a positive version number and '_'", dir, name)
		}
		b, err := fs.ReadFile(migrationsFS, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", name, err)
		}
		out = append(out, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", out[i-1].name, out[i].name)
		}
	}
	return out, nil
}

// migrate applies the migrations the database lacks, all in one
// transaction. lock runs first inside it (PostgreSQL: an advisory lock, so
// brokers starting together apply them once; SQLite: the immediate
// transaction already holds the write lock).
func migrate(ctx context.Context, db *sql.DB, d dialect, lock func(*sql.Tx) error) error {
	ms, err := loadMigrations(d.name)
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrating the %s store: %w", d.name, err)
	}
	defer func() { _ = tx.Rollback() }()
	if lock != nil {
		if err := lock(tx); err != nil {
			return fmt.Errorf("migrating the %s store: taking the migration lock: %w", d.name, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrating the %s store: creating schema_migrations: %w", d.name, err)
	}
	applied := map[int]bool{}
	maxApplied := 0
	rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("migrating the %s store: reading schema_migrations: %w", d.name, err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("migrating the %s store: %w", d.name, err)
		}
		applied[v] = true
		maxApplied = max(maxApplied, v)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("migrating the %s store: %w", d.name, err)
	}
	// Fail closed on a database a newer broker has migrated: this broker
	// does not know what the newer schema means.
	if latest := ms[len(ms)-1].version; maxApplied > latest {
		return fmt.Errorf("the %s store has schema version %d, newer than this broker knows (%d): upgrade agent-broker", d.name, maxApplied, latest)
	}
	insert := `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`
	if d.dollar {
		insert = `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("migrating the %s store: applying %s: %w", d.name, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, insert, m.version, m.name, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("migrating the %s store: recording %s: %w", d.name, m.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrating the %s store: %w", d.name, err)
	}
	return nil
}
