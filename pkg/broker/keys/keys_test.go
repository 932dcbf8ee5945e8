package keys

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestSessionTokens(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	now := time.Now()
	clock := func() time.Time { return now }
	m := New(st, "https://broker.test", time.Hour, clock)
	if err := m.Load(ctx); err != nil {
		t.Fatal(err)
	}
	tok, err := m.SignSession("s1", "prod", "thumb", now.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.VerifySession(ctx, tok)
	if err != nil || c.Subject != "s1" || c.Cnf.JKT != "thumb" || c.Cluster != "prod" {
		t.Fatalf("VerifySession = %+v, %v", c, err)
	}
	// Another broker on the same store verifies it (and signs with the same key).
	other := New(st, "https://broker.test", time.Hour, clock)
	if err := other.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.VerifySession(ctx, tok); err != nil {
		t.Errorf("the second broker refuses the first's token: %v", err)
	}
	if len(other.JWKS().Keys) != 1 {
		t.Errorf("two brokers made %d keys, want 1 shared", len(other.JWKS().Keys))
	}
	// Another issuer (a broker with another public URL) refuses it.
	foreign := New(st, "https://elsewhere.test", time.Hour, clock)
	if err := foreign.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := foreign.VerifySession(ctx, tok); err == nil {
		t.Error("a token for another issuer was accepted")
	}
	// Tampered, expired, and binding JWTs used as session tokens are refused.
	if _, err := m.VerifySession(ctx, tok[:len(tok)-3]+"AAA"); err == nil {
		t.Error("a tampered token was accepted")
	}
	now = now.Add(11 * time.Minute)
	if _, err := m.VerifySession(ctx, tok); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	binding, err := m.SignBinding("s1", "prod", pub, api.Identity{Repository: "acme/app"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.VerifySession(ctx, binding); err == nil {
		t.Error("a binding JWT was accepted as a session token")
	}
}

func TestRotationKeepsOldKeysPublished(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	now := time.Now()
	m := New(st, "https://broker.test", time.Hour, func() time.Time { return now })
	if err := m.Load(ctx); err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	old, err := m.SignBinding("s1", "prod", pub, api.Identity{Repository: "acme/app", RunID: "9"})
	if err != nil {
		t.Fatal(err)
	}
	session, err := m.SignSession("s1", "prod", "jkt", now.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if err := m.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	// A session token signed before the rotation still verifies.
	if _, err := m.VerifySession(ctx, session); err != nil {
		t.Errorf("session token after rotation: %v", err)
	}
	set := m.JWKS()
	if len(set.Keys) != 2 {
		t.Fatalf("JWKS has %d keys after rotation, want 2", len(set.Keys))
	}
	fresh, _ := m.SignBinding("s2", "prod", pub, api.Identity{})
	if kidOf(t, fresh) == kidOf(t, old) {
		t.Error("rotation did not change the signing key")
	}
	c, got, err := VerifyBinding(old, set)
	if err != nil || !got.Equal(pub) || c.Identity.RunID != "9" || c.Subject != "s1" {
		t.Errorf("old binding after rotation: %+v, %v", c, err)
	}
	// A JWKS without the signing key refuses the binding.
	set.Keys = set.Keys[1:]
	if _, _, err := VerifyBinding(old, set); err == nil {
		t.Error("a binding verified without its key")
	}
}

// kidOf is the protected header segment, which holds the kid.
func kidOf(t *testing.T, tok string) string {
	t.Helper()
	return strings.SplitN(tok, ".", 2)[0]
}
