package store_test

import (
	"database/sql"

	_ "modernc.org/sqlite" // the driver the store itself uses
)

func sqlOpen(path string) (*sql.DB, error) { return sql.Open("sqlite", path) }
