package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestNewDatabaseAndRestart(t *testing.T) {
	ctx := context.Background()
	dsn := NewDatabase(t)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)

	other := NewDatabase(t)
	if other == dsn {
		t.Fatalf("NewDatabase returned the same database twice: %s", dsn)
	}

	Restart(t)
	// The data survives an immediate shutdown (crash recovery replays WAL).
	c, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting after restart: %v", err)
	}
	defer c.Close(ctx)
	var v int
	if err := c.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after restart: v=%d err=%v, want 42", v, err)
	}
}

func TestStopLeavesNothing(t *testing.T) {
	s, err := Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pid := s.cmd.Process.Pid
	base := s.base
	s.Stop()
	if _, err := os.Stat(base); !os.IsNotExist(err) {
		t.Errorf("folder %s still there after Stop (err=%v)", base, err)
	}
	// The postmaster was our child and was reaped; its process group must be empty.
	if err := killProbe(pid); err == nil {
		t.Errorf("process group %d still has processes after Stop", pid)
	}
}
