package store

import (
	"context"
	"fmt"
	"strings"
)

// Open opens (creating and migrating as needed) the store a URL names:
//
//	sqlite:///abs/path.db, sqlite://relative.db, file:path.db  SQLite
//	postgres://..., postgresql://...                            PostgreSQL
//
// Migrations run before Open returns; several brokers may open the same
// PostgreSQL database at once.
func Open(ctx context.Context, url string) (Store, error) {
	switch {
	case strings.HasPrefix(url, "sqlite:"), strings.HasPrefix(url, "file:"):
		path, err := sqlitePath(url)
		if err != nil {
			return nil, err
		}
		return openSQLite(ctx, path)
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return openPostgres(ctx, url)
	default:
		return nil, fmt.Errorf("opening store: %w: %q: use sqlite:///path/to/broker.db or postgres://user@host/db", ErrUnsupportedURL, redactURL(url))
	}
}
