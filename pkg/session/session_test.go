package session

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/session/sessiontest"
)

// TestMain doubles as the helper process of the multi-process test: with
// SESSION_TEST_HELPER set, the test binary is one "kubectl credential
// plugin" process of a run.
func TestMain(m *testing.M) {
	if os.Getenv("SESSION_TEST_HELPER") == "1" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

func helperMain() int {
	m, err := newManager(os.Getenv("HELPER_BROKER"), os.Getenv("HELPER_DIR"), os.Getenv, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: os.Getenv("HELPER_TOKEN")}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, _, err := m.Credential(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Print(c.Token)
	return 0
}

func fakeJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

var runToken = fakeJWT(map[string]any{"iss": "https://token.actions.githubusercontent.com", "repository": "o/r", "run_id": "42", "run_attempt": "1"})

func newManager(broker, dir string, env func(string) string, src oauth2.TokenSource) (*Manager, error) {
	cl, err := NewClient(broker)
	if err != nil {
		return nil, err
	}
	cl.Backoff = 5 * time.Millisecond
	cache, err := OpenCache(dir)
	if err != nil {
		return nil, err
	}
	return &Manager{Broker: broker, Cluster: "c1", Audience: "aud", Source: src, Client: cl, Cache: cache, Env: env}, nil
}

// countingSource counts token fetches.
type countingSource struct {
	n   atomic.Int32
	tok string
	err error
}

func (s *countingSource) Token() (*oauth2.Token, error) {
	s.n.Add(1)
	if s.err != nil {
		return nil, s.err
	}
	return &oauth2.Token{AccessToken: s.tok}, nil
}

func noEnv(string) string { return "" }

func ghEnv(runID string) func(string) string {
	m := map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": runID, "GITHUB_RUN_ATTEMPT": "1"}
	return func(k string) string { return m[k] }
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestClientCalls(t *testing.T) {
	b := sessiontest.New(t)
	cl, err := NewClient(b.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := newKey(t)
	resp, err := cl.Exchange(ctx, runToken, "c1", key)
	if err != nil {
		t.Fatal(err)
	}
	if b.LastSubject() != runToken || resp.Session.ID != "s1" {
		t.Fatalf("exchange: %+v", resp)
	}
	sc := cl.WithSession(resp.AccessToken, key)
	s, err := sc.Get(ctx, resp.Session.ID)
	if err != nil || s.Grant.Rule != "r1" {
		t.Fatalf("get: %+v, %v", s, err)
	}
	c, err := sc.Credential(ctx, resp.Session.ID)
	if err != nil || c.Token != "cluster-refreshed-1" {
		t.Fatalf("credential: %+v, %v", c, err)
	}
	ack, err := sc.UploadTranscript(ctx, resp.Session.ID, api.TranscriptChunk{FirstSeq: 3, Lines: []string{"a", "b"}})
	if err != nil || ack.NextSeq != 5 {
		t.Fatalf("upload: %+v, %v", ack, err)
	}
	cls, err := cl.Clusters(ctx)
	if err != nil || len(cls.Clusters) != 1 {
		t.Fatalf("clusters: %+v, %v", cls, err)
	}
	// The wrong key: the broker refuses the proof.
	if _, err := cl.WithSession(resp.AccessToken, newKey(t)).Get(ctx, resp.Session.ID); err == nil {
		t.Fatal("a proof by another key was accepted")
	}
	if err := sc.End(ctx, resp.Session.ID); err != nil {
		t.Fatal(err)
	}
	_, err = sc.Get(ctx, resp.Session.ID)
	if !SessionGone(err) || !strings.Contains(err.Error(), "kubectl agent logout") {
		t.Fatalf("after end: %v", err)
	}
	if err := cl.Do(ctx, "GET", "/v1/approvals", nil, nil); err == nil {
		t.Fatal("a session call without a session was made")
	}
}

func TestClientErrors(t *testing.T) {
	b := sessiontest.New(t)
	cl, _ := NewClient(b.URL)
	cl.Backoff = time.Millisecond
	ctx := context.Background()

	// A refused exchange: one line with the broker's reason, no retry.
	_, err := cl.Exchange(ctx, "refuse-me", "c1", newKey(t))
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "invalid_grant: no trust rule matches repository o/evil") {
		t.Fatalf("refused exchange: %v", err)
	}
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != "invalid_grant" {
		t.Fatalf("api.Error not reachable: %v", err)
	}
	_, err = cl.Exchange(ctx, runToken, "nope", newKey(t))
	if err == nil || !strings.Contains(err.Error(), "--cluster") {
		t.Fatalf("unknown cluster: %v", err)
	}

	// 5xx is retried: two 503s, then success.
	b.FailNext.Store(2)
	if _, err := cl.Exchange(ctx, runToken, "c1", newKey(t)); err != nil {
		t.Fatalf("after 503s: %v", err)
	}
	// More 503s than attempts: the last error surfaces.
	b.FailNext.Store(int32(cl.Attempts))
	if _, err := cl.Exchange(ctx, runToken, "c1", newKey(t)); err == nil || !strings.Contains(err.Error(), "temporarily_unavailable") {
		t.Fatalf("persistent 503: %v", err)
	}
	if b.FailNext.Load() != 0 {
		t.Fatalf("made %d attempts, want %d", int32(cl.Attempts)-b.FailNext.Load(), cl.Attempts)
	}

	// Broker down: a network error, retried, then one line.
	b.Close()
	_, err = cl.Exchange(ctx, runToken, "c1", newKey(t))
	if err == nil || !strings.Contains(err.Error(), "cannot reach the broker") {
		t.Fatalf("broker down: %v", err)
	}
	// The overall timeout bounds retries.
	cl.Timeout, cl.Attempts, cl.Backoff = 50*time.Millisecond, 100, 20*time.Millisecond
	start := time.Now()
	if _, err := cl.Exchange(ctx, runToken, "c1", newKey(t)); err == nil {
		t.Fatal("no error")
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("the timeout did not bound the retries")
	}

	for _, bad := range []string{"", "broker.example", "ftp://x", "http://broker.example"} {
		if _, err := NewClient(bad); err == nil {
			t.Errorf("NewClient(%q) accepted", bad)
		}
	}
}

func TestCachePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "c")
	c, err := OpenCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache folder mode %o", fi.Mode().Perm())
	}
	e := &Entry{Key: strings.Repeat("a", 64), SessionKey: newKey(t), SessionToken: "secret"}
	if err := c.Store(e); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, e.Key+".json")
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("entry mode %o", fi.Mode().Perm())
	}
	if got, err := c.Load(e.Key); err != nil || got.SessionToken != "secret" {
		t.Fatalf("load: %+v, %v", got, err)
	}
	// A group-readable entry is refused, with what to do.
	_ = os.Chmod(p, 0o640)
	if _, err := c.Load(e.Key); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable entry: %v", err)
	}
	_ = os.Chmod(p, 0o600)
	// A world-readable folder is refused.
	_ = os.Chmod(dir, 0o755)
	if _, err := OpenCache(dir); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("world-readable folder: %v", err)
	}
	_ = os.Chmod(dir, 0o700)
	// A damaged entry is an error naming the file, not a silent re-exchange.
	_ = os.WriteFile(p, []byte("{not json"), 0o600)
	if _, err := c.Load(e.Key); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("damaged entry: %v", err)
	}
	if _, err := c.Load("../../etc/passwd"); err == nil {
		t.Fatal("a path-like key was used")
	}
}

func TestConcurrentGoroutinesOneExchange(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  func(string) string
	}{{"index", ghEnv("42")}, {"claims only", noEnv}} {
		t.Run(tc.name, func(t *testing.T) {
			b := sessiontest.New(t)
			dir := filepath.Join(t.TempDir(), "cache")
			src := &countingSource{tok: runToken}
			var wg sync.WaitGroup
			tokens := make([]string, 20)
			errs := make([]error, 20)
			for i := range 20 {
				wg.Go(func() {
					m, err := newManager(b.URL, dir, tc.env, src)
					if err != nil {
						errs[i] = err
						return
					}
					c, _, err := m.Credential(context.Background())
					if err == nil {
						tokens[i] = c.Token
					}
					errs[i] = err
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("goroutine %d: %v", i, err)
				}
				if tokens[i] != "cluster-1-0" {
					t.Fatalf("goroutine %d got %q", i, tokens[i])
				}
			}
			if n := b.Exchanges.Load(); n != 1 {
				t.Fatalf("%d exchanges, want 1", n)
			}
		})
	}
}

func TestConcurrentProcessesOneExchange(t *testing.T) {
	b := sessiontest.New(t)
	dir := filepath.Join(t.TempDir(), "cache")
	procs := make([]*exec.Cmd, 20)
	outs := make([]strings.Builder, 20)
	for i := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SESSION_TEST_HELPER=1", "HELPER_BROKER="+b.URL, "HELPER_DIR="+dir, "HELPER_TOKEN="+runToken,
			"GITHUB_ACTIONS=true", "GITHUB_SERVER_URL=https://github.com", "GITHUB_REPOSITORY=o/r", "GITHUB_RUN_ID=42", "GITHUB_RUN_ATTEMPT=1")
		cmd.Stdout = &outs[i]
		cmd.Stderr = &outs[i]
		procs[i] = cmd
	}
	for _, c := range procs {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range procs {
		if err := c.Wait(); err != nil {
			t.Fatalf("process %d: %v: %s", i, err, outs[i].String())
		}
		if outs[i].String() != "cluster-1-0" {
			t.Fatalf("process %d printed %q", i, outs[i].String())
		}
	}
	if n := b.Exchanges.Load(); n != 1 {
		t.Fatalf("%d exchanges, want 1", n)
	}
}

func TestIndexHitNeedsNoToken(t *testing.T) {
	b := sessiontest.New(t)
	dir := filepath.Join(t.TempDir(), "cache")
	src := &countingSource{tok: runToken}
	m, _ := newManager(b.URL, dir, ghEnv("42"), src)
	if _, err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A later process of the run: its token source would fail, and the
	// broker is gone; the cache answers.
	b.Close()
	failing := &countingSource{err: errors.New("no token here")}
	m2, _ := newManager(b.URL, dir, ghEnv("42"), failing)
	c, _, err := m2.Credential(context.Background())
	if err != nil || c.Token != "cluster-1-0" {
		t.Fatalf("cache hit: %v, %v", c, err)
	}
	if failing.n.Load() != 0 {
		t.Fatal("a cache hit fetched a pipeline token")
	}
	// Another run (other GITHUB_RUN_ID) does not see it: it needs a token.
	m3, _ := newManager(b.URL, dir, ghEnv("43"), failing)
	if _, err := m3.Ensure(context.Background()); err == nil || !strings.Contains(err.Error(), "no token here") {
		t.Fatalf("other run: %v", err)
	}
	// Without an environment run identity, the token's claims find it.
	m4, _ := newManager(b.URL, dir, noEnv, src)
	if e, err := m4.Lookup(context.Background()); err != nil || e == nil || e.Session.ID != "s1" {
		t.Fatalf("claims lookup: %+v, %v", e, err)
	}
	// Another cluster or audience is another entry.
	m5, _ := newManager(b.URL, dir, ghEnv("42"), failing)
	m5.Audience = "other"
	if e, err := m5.Lookup(context.Background()); err == nil && e != nil {
		t.Fatal("an entry of another audience was used")
	}
}

func TestRefresh(t *testing.T) {
	b := sessiontest.New(t)
	b.CredTTL = 90 * time.Second
	dir := filepath.Join(t.TempDir(), "cache")
	src := &countingSource{tok: runToken}
	m, _ := newManager(b.URL, dir, ghEnv("42"), src)
	ctx := context.Background()
	c, _, err := m.Credential(ctx)
	if err != nil || c.Token != "cluster-1-0" {
		t.Fatalf("first: %v, %v", c, err)
	}
	// 70 s later the 90 s credential is within a third of its life of the
	// end: 20 managers (processes) refresh it once.
	later := time.Now().Add(70 * time.Second)
	var wg sync.WaitGroup
	got := make([]string, 20)
	for i := range got {
		wg.Go(func() {
			m, _ := newManager(b.URL, dir, ghEnv("42"), src)
			m.Now = func() time.Time { return later }
			c, _, err := m.Credential(ctx)
			if err != nil {
				got[i] = err.Error()
				return
			}
			got[i] = c.Token
		})
	}
	wg.Wait()
	for i, g := range got {
		if g != "cluster-refreshed-1" {
			t.Fatalf("manager %d: %s", i, g)
		}
	}
	if b.Refreshes.Load() != 1 || b.Exchanges.Load() != 1 {
		t.Fatalf("%d refreshes, %d exchanges", b.Refreshes.Load(), b.Exchanges.Load())
	}
}

func TestEndedSessionIsReplaced(t *testing.T) {
	b := sessiontest.New(t)
	b.CredTTL = 90 * time.Second
	dir := filepath.Join(t.TempDir(), "cache")
	src := &countingSource{tok: runToken}
	m, _ := newManager(b.URL, dir, ghEnv("42"), src)
	ctx := context.Background()
	e, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The session ends behind our back (reaper, another logout).
	if err := m.SessionClient(e).End(ctx, e.Session.ID); err != nil {
		t.Fatal(err)
	}
	m.Now = func() time.Time { return time.Now().Add(70 * time.Second) }
	c, e2, err := m.Credential(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e2.Session.ID == e.Session.ID || c.Token != "cluster-2-0" || b.Exchanges.Load() != 2 {
		t.Fatalf("not replaced: %s %s, %d exchanges", e2.Session.ID, c.Token, b.Exchanges.Load())
	}
}

func TestEnd(t *testing.T) {
	b := sessiontest.New(t)
	dir := filepath.Join(t.TempDir(), "cache")
	src := &countingSource{tok: runToken}
	m, _ := newManager(b.URL, dir, ghEnv("42"), src)
	ctx := context.Background()
	e, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ended, err := m.End(ctx)
	if err != nil || ended == nil || ended.Session.ID != e.Session.ID {
		t.Fatalf("end: %+v, %v", ended, err)
	}
	if _, err := m.SessionClient(e).Get(ctx, e.Session.ID); !SessionGone(err) {
		t.Fatalf("the old session token still works: %v", err)
	}
	if got, err := m.Cache.Load(e.Key); err != nil || got != nil {
		t.Fatalf("entry still cached: %+v, %v", got, err)
	}
	if again, err := m.End(ctx); err != nil || again != nil {
		t.Fatalf("second end: %+v, %v", again, err)
	}
}

func TestRunWithoutIDIsKeyedByToken(t *testing.T) {
	b := sessiontest.New(t)
	dir := filepath.Join(t.TempDir(), "cache")
	ctx := context.Background()
	a := &countingSource{tok: fakeJWT(map[string]any{"iss": "x", "sub": "same", "n": 1})}
	z := &countingSource{tok: fakeJWT(map[string]any{"iss": "x", "sub": "same", "n": 2})}
	m1, _ := newManager(b.URL, dir, noEnv, a)
	m2, _ := newManager(b.URL, dir, noEnv, z)
	e1, err := m1.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := m2.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e1.Key == e2.Key {
		t.Fatal("two tokens without run ids share a cache entry")
	}
}

func FuzzCacheLoad(f *testing.F) {
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"key":"` + strings.Repeat("a", 64) + `","sessionKey":"AAAA"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		c := &Cache{Dir: dir}
		key := strings.Repeat("a", 64)
		if err := os.WriteFile(filepath.Join(dir, key+".json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		e, err := c.Load(key)
		if err == nil && e != nil && len(e.SessionKey) != ed25519.PrivateKeySize {
			t.Fatal("loaded an entry without a valid key")
		}
	})
}

func BenchmarkCacheHit(b *testing.B) {
	br := sessiontest.New(b)
	dir := filepath.Join(b.TempDir(), "cache")
	m, err := newManager(br.URL, dir, ghEnv("42"), &countingSource{tok: runToken})
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := m.Credential(context.Background()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := m.Credential(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// A run keeps its session key across sessions: the broker binds a pipeline
// token to the first key it sees, and a GitLab job has one token for life.
func TestNextSessionOfARunReusesItsKey(t *testing.T) {
	b := sessiontest.New(t)
	dir := filepath.Join(t.TempDir(), "cache")
	ctx := context.Background()
	src := &countingSource{tok: fakeJWT(map[string]any{"iss": "x", "sub": "s", "repository": "acme/app", "run_id": "7", "run_attempt": "1"})}
	m, _ := newManager(b.URL, dir, noEnv, src)
	e1, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.End(ctx); err != nil {
		t.Fatal(err)
	}
	e2, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e2.Session.ID == e1.Session.ID {
		t.Fatal("a new session was expected after End")
	}
	if !bytes.Equal(e1.SessionKey, e2.SessionKey) {
		t.Fatal("the run's next session got a new key; a token bound to the first key would be refused")
	}
	if fi, err := os.Stat(filepath.Join(dir, "key-"+e1.Key+".json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("run key file: %v %v", fi, err)
	}
}
