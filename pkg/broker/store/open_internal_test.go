package store

import (
	"errors"
	"strings"
	"testing"
)

func TestSQLitePath(t *testing.T) {
	cases := map[string]string{
		"sqlite:///var/lib/b.db": "/var/lib/b.db",
		"sqlite://b.db":          "b.db",
		"sqlite:b.db":            "b.db",
		"file:b.db":              "b.db",
		"file:///abs/b.db":       "/abs/b.db",
		"sqlite://:memory:":      ":memory:",
	}
	for in, want := range cases {
		if got, err := sqlitePath(in); err != nil || got != want {
			t.Errorf("sqlitePath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"sqlite://", "file:", "sqlite:///b.db?_pragma=x", "sqlite://b.db#x"} {
		if _, err := sqlitePath(bad); !errors.Is(err, ErrUnsupportedURL) {
			t.Errorf("sqlitePath(%q) = %v, want ErrUnsupportedURL", bad, err)
		}
	}
}

// The path goes into a DSN whose query we build: nothing a user writes may
// smuggle in pragmas or other parameters.
func FuzzSQLitePath(f *testing.F) {
	for _, s := range []string{"sqlite:///a.db", "sqlite://a.db", "file:a.db", "sqlite://a.db?_pragma=foreign_keys(0)", "sqlite:", "file:#", "sqlite://x?y#z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := sqlitePath(in)
		if err != nil {
			if !errors.Is(err, ErrUnsupportedURL) {
				t.Fatalf("error %v is not ErrUnsupportedURL", err)
			}
			return
		}
		if p == "" || strings.ContainsAny(p, "?#") {
			t.Fatalf("sqlitePath(%q) = %q", in, p)
		}
	})
}

func FuzzRebind(f *testing.F) {
	for _, s := range []string{"SELECT 1", "SELECT ? FROM t WHERE a = ? AND b = ? {lock}", "?????", "é?ü?"} {
		f.Add(s)
	}
	pg := &sqlStore{d: postgresDialect()}
	lite := &sqlStore{d: sqliteDialect()}
	f.Fuzz(func(t *testing.T, q string) {
		if strings.Contains(q, "$") {
			return
		}
		n := strings.Count(q, "?")
		out := pg.q(q)
		if strings.Count(out, "?") != 0 || strings.Count(out, "$") != n || strings.Contains(out, "{lock}") {
			t.Fatalf("rebind(%q) = %q", q, out)
		}
		if lq := lite.q(q); strings.Contains(lq, "{lock}") || strings.Count(lq, "?") != n {
			t.Fatalf("sqlite q(%q) = %q", q, lq)
		}
	})
}
