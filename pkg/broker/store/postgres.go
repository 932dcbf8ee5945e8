package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// migrationLockKey is the advisory lock brokers take while migrating
// ("kubectl-agent" folded into an int64).
const migrationLockKey = 0x6b75626563746c61

func postgresDialect() dialect {
	code := func(err error) string {
		var e *pgconn.PgError
		if errors.As(err, &e) {
			return e.Code
		}
		return ""
	}
	return dialect{
		name:      "postgres",
		dollar:    true,
		forUpdate: "FOR UPDATE",
		classify: func(err error) error {
			switch code(err) {
			case "23505": // unique_violation
				return ErrConflict
			case "23503": // foreign_key_violation
				return ErrNotFound
			}
			return nil
		},
		retryable: func(err error) bool {
			switch code(err) {
			case "40001", "40P01": // serialization_failure, deadlock_detected
				return true
			}
			return false
		},
	}
}

// openPostgres connects a pgxpool and runs the shared SQL over it through
// pgx's database/sql adapter. Transactions run at READ COMMITTED; what must
// be atomic is made so by unique indexes, INSERT ... ON CONFLICT, row locks
// (FOR UPDATE) and conditional UPDATEs.
func openPostgres(ctx context.Context, raw string) (Store, error) {
	cfg, err := pgxpool.ParseConfig(raw)
	if err != nil {
		// pgx's message may quote the URL, password included: do not wrap it.
		return nil, fmt.Errorf("opening the postgres store %s: %w: the URL does not parse", redactURL(raw), ErrUnsupportedURL)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the postgres store %s: %w", redactURL(raw), err)
	}
	db := stdlib.OpenDBFromPool(pool)
	closeAll := func() {
		db.Close()
		pool.Close()
	}
	if err := db.PingContext(ctx); err != nil {
		closeAll()
		return nil, fmt.Errorf("opening the postgres store %s: %w", redactURL(raw), err)
	}
	d := postgresDialect()
	lock := func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockKey))
		return err
	}
	if err := migrate(ctx, db, d, lock); err != nil {
		closeAll()
		return nil, err
	}
	return &sqlStore{db: db, d: d, onClose: pool.Close}, nil
}

// redactURL hides a password in a store URL, for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
