package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqlitePath extracts the file path from sqlite:///abs, sqlite://rel, sqlite:rel, file:path.
func sqlitePath(raw string) (string, error) {
	rest := raw
	for _, p := range []string{"sqlite://", "sqlite:", "file://", "file:"} {
		if strings.HasPrefix(raw, p) {
			rest = raw[len(p):]
			break
		}
	}
	if rest == "" || strings.ContainsAny(rest, "?#") {
		return "", fmt.Errorf("opening store: %w: %q: give a file path without query, e.g. sqlite:///var/lib/agent-broker/broker.db", ErrUnsupportedURL, raw)
	}
	return rest, nil
}

func sqliteDialect() dialect {
	code := func(err error) int {
		var e *sqlite.Error
		if errors.As(err, &e) {
			return e.Code()
		}
		return 0
	}
	return dialect{
		name: "sqlite",
		classify: func(err error) error {
			switch code(err) {
			case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
				return ErrConflict
			case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
				return ErrNotFound
			}
			return nil
		},
		retryable: func(err error) bool {
			c := code(err) & 0xff
			return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
		},
	}
}

// openSQLite opens (creating it 0600) a SQLite database. One connection does
// all the work: SQLite has one writer anyway, and a single connection makes
// SQLITE_BUSY between our own goroutines impossible. busy_timeout covers
// another process on the same file. ":memory:" is for tests.
func openSQLite(ctx context.Context, path string) (Store, error) {
	if path != ":memory:" {
		// Create the file ourselves so it is never readable by others
		// (SQLite gives its -wal and -shm files the same mode).
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening the sqlite store %s: %w", path, err)
		}
		err = f.Chmod(0o600)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("opening the sqlite store %s: %w", path, err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	if path != ":memory:" {
		q.Add("_pragma", "journal_mode(WAL)")
	}
	// FULL: a line the broker acknowledged survives a power cut.
	q.Add("_pragma", "synchronous(FULL)")
	// Immediate transactions take the write lock at BEGIN, so a read-then-
	// write transaction never fails to upgrade its lock.
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening the sqlite store %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	d := sqliteDialect()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening the sqlite store %s: %w", path, err)
	}
	if err := migrate(ctx, db, d, nil); err != nil {
		db.Close()
		return nil, err
	}
	return &sqlStore{db: db, d: d}, nil
}
