package transcript

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// fakeClock advances by a fixed step on every read, so that times are
// distinct and deterministic.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(10 * time.Millisecond)
	return c.t
}

type broker struct {
	key  ed25519.PrivateKey
	jwks *jose.JSONWebKeySet
}

func newBroker(t testing.TB) *broker {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &broker{key: key, jwks: &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{BrokerJWK(key.Public().(ed25519.PublicKey))}}}
}

func (b *broker) bind(t testing.TB, sessionID, cluster string, pub ed25519.PublicKey) string {
	jwt, err := SignKeyBinding(b.key, KeyBindingClaims{
		Issuer: "https://broker.example", Subject: sessionID, IssuedAt: 1764064800,
		Cnf: Confirmation{JWK: NewOKPKey(pub)}, Cluster: cluster,
		Identity: api.Identity{Issuer: "https://token.actions.githubusercontent.com", Subject: "repo:acme/app:ref:refs/heads/main", Repository: "acme/app", RunID: "42"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return jwt
}

type fixture struct {
	dir       string
	path      string
	sessionID string
	key       ed25519.PrivateKey
	broker    *broker
	binding   string
}

func newFixture(t testing.TB, sessionID string, bound bool) *fixture {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &fixture{dir: dir, path: filepath.Join(dir, "spool", sessionID+".transcript.jsonl"), sessionID: sessionID, key: key, broker: newBroker(t)}
	if bound {
		f.binding = f.broker.bind(t, sessionID, "prod-eu", key.Public().(ed25519.PublicKey))
	}
	return f
}

func (f *fixture) options(clock func() time.Time) RecorderOptions {
	return RecorderOptions{
		SessionID: f.sessionID, Key: f.key, KeyBinding: f.binding, SpoolPath: f.path, Clock: clock,
		CheckpointInterval: -1, CheckpointEvery: 3,
		Start: StartEvent{Cluster: "prod-eu", PolicyDigest: "sha256:abc", Identity: map[string]string{"repository": "acme/app", "runID": "42"}},
	}
}

func requestEvent(i int, verb, resource, decision string, code int) Event {
	return Event{Type: TypeRequest, Request: &RequestEvent{
		AuditID: fmt.Sprintf("audit-%d", i), Stage: "ResponseComplete", RequestURI: "/api/v1/namespaces/default/" + resource,
		Verb: verb, ObjectRef: &ObjectRef{Resource: resource, Namespace: "default", APIVersion: "v1"},
		ResponseStatus: &ResponseStatus{Code: code}, Decision: decision,
		RequestReceivedTimestamp: time.Date(2026, 11, 25, 10, 0, i, 0, time.UTC), StageTimestamp: time.Date(2026, 11, 25, 10, 0, i, 5e6, time.UTC),
	}}
}

// record writes a small but complete transcript and returns its bytes.
func (f *fixture) record(t testing.TB) []byte {
	t.Helper()
	clock := newFakeClock()
	r, err := NewRecorder(f.options(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.Append(ctx, Event{Type: TypeCommand, Command: &CommandEvent{Argv: []string{"kubectl", "apply", "-f", "x.yaml"}}}))
	must(r.Append(ctx, requestEvent(1, "get", "pods", "allow", 200)))
	must(r.Append(ctx, requestEvent(2, "delete", "namespaces", "deny", 403)))
	exit := 1
	must(r.Append(ctx, Event{Type: TypeStream, Stream: &StreamEvent{AuditID: "audit-3", Channel: "stdout", Data: "hello\n"}}))
	must(r.Append(ctx, Event{Type: TypeStream, Stream: &StreamEvent{AuditID: "audit-3", Channel: "error", Exit: &exit}}))
	must(r.Append(ctx, Event{Type: TypeApproval, Approval: &ApprovalEvent{ID: "ap-1", AuditID: "audit-4", State: "denied", At: time.Date(2026, 11, 25, 10, 1, 0, 0, time.UTC)}}))
	if _, err := r.Close(ctx, EndEvent{ExitCode: 1}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.path)
	must(err)
	return b
}

func splitLines(b []byte) [][]byte {
	parts := bytes.SplitAfter(b, []byte{'\n'})
	if len(parts[len(parts)-1]) == 0 {
		parts = parts[:len(parts)-1]
	}
	return parts
}

// record2 records the fixture's transcript again into a fresh file.
func (f *fixture) record2(t testing.TB) []byte {
	g := *f
	g.path = f.path + ".2"
	return g.record(t)
}

func b64std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func paeOf(body []byte) []byte { return dsse.PAE(PayloadType, body) }
