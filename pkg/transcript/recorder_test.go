package transcript

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// testBroker is a real HTTP server that takes transcript chunks the way the
// broker does: idempotent by seq, checked with a ChainVerifier.
type testBroker struct {
	srv    *httptest.Server
	mu     sync.Mutex
	v      *ChainVerifier
	lines  []string
	down   atomic.Bool
	posts  atomic.Int64
	reject error
}

func newTestBroker(t *testing.T, sessionID string, pub ed25519.PublicKey) *testBroker {
	b := &testBroker{v: NewChainVerifier(sessionID, pub)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sessions/{id}/transcript", func(w http.ResponseWriter, r *http.Request) {
		b.posts.Add(1)
		if b.down.Load() || r.PathValue("id") != sessionID {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		var c api.TranscriptChunk
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		next := b.v.Next()
		if c.FirstSeq > next {
			c.Lines = nil // a gap: ask for what is missing
		} else if skip := next - c.FirstSeq; skip > 0 {
			c.Lines = c.Lines[min(skip, int64(len(c.Lines))):]
			c.FirstSeq = next
		}
		if len(c.Lines) > 0 {
			if err := b.v.Accept(c.FirstSeq, c.Lines); err != nil {
				b.reject = err
				http.Error(w, err.Error(), http.StatusUnprocessableEntity)
				return
			}
			b.lines = append(b.lines, c.Lines...)
		}
		ack := api.TranscriptAck{NextSeq: b.v.Next(), Sealed: b.v.Sealed()}
		if ack.Sealed {
			ack.Inclusion = &api.InclusionProof{LeafIndex: 7, TreeSize: 8}
		}
		_ = json.NewEncoder(w).Encode(ack)
	})
	b.srv = httptest.NewServer(mux)
	t.Cleanup(b.srv.Close)
	return b
}

// httpUploader is an Uploader over plain HTTP (the real one adds DPoP).
type httpUploader struct {
	url string
}

func (u *httpUploader) Upload(ctx context.Context, c api.TranscriptChunk) (api.TranscriptAck, error) {
	body, _ := json.Marshal(c)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u.url, bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return api.TranscriptAck{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return api.TranscriptAck{}, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var ack api.TranscriptAck
	return ack, json.NewDecoder(resp.Body).Decode(&ack)
}

func (f *fixture) pub() ed25519.PublicKey { return f.key.Public().(ed25519.PublicKey) }

func TestRecorderUploadsToBroker(t *testing.T) {
	f := newFixture(t, "sess-up", true)
	b := newTestBroker(t, f.sessionID, f.pub())
	opts := f.options(newFakeClock().Now)
	opts.Uploader = &httpUploader{url: b.srv.URL + "/v1/sessions/sess-up/transcript"}
	r, err := NewRecorder(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 40 {
		if err := r.Append(ctx, requestEvent(i, "get", "pods", "allow", 200)); err != nil {
			t.Fatal(err)
		}
	}
	proof, err := r.Close(ctx, EndEvent{})
	if err != nil {
		t.Fatalf("close: %v (broker rejected: %v)", err, b.reject)
	}
	if proof == nil || proof.LeafIndex != 7 {
		t.Fatalf("inclusion proof = %+v", proof)
	}
	spool, _ := os.ReadFile(f.path)
	if got := strings.Join(b.lines, "\n") + "\n"; got != string(spool) {
		t.Fatal("broker's copy differs from the spool")
	}
	if !b.v.Sealed() {
		t.Fatal("broker did not see the seal")
	}
	// Batching: far fewer uploads than lines.
	if n := b.posts.Load(); n >= int64(len(b.lines)) {
		t.Logf("uploads: %d for %d lines", n, len(b.lines))
	}
}

func TestRecorderBrokerOutage(t *testing.T) {
	f := newFixture(t, "sess-down", true)
	b := newTestBroker(t, f.sessionID, f.pub())
	b.down.Store(true)
	opts := f.options(time.Now)
	opts.Uploader = &httpUploader{url: b.srv.URL + "/v1/sessions/sess-down/transcript"}
	r, err := NewRecorder(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		if err := r.Append(ctx, requestEvent(i, "get", "pods", "allow", 200)); err != nil {
			t.Fatalf("the run must not block or fail on a broker outage: %v", err)
		}
	}
	// Wait until an upload was tried and refused, then let the broker recover.
	waitFor(t, func() bool { return b.posts.Load() > 0 })
	if r.Acked() != 0 {
		t.Fatal("acked while the broker is down")
	}
	b.down.Store(false)
	if _, err := r.Close(ctx, EndEvent{}); err != nil {
		t.Fatalf("close after recovery: %v", err)
	}
	if !b.v.Sealed() {
		t.Fatal("broker did not get the whole transcript after its outage")
	}

	// A broker that stays down: Close returns ErrUploadIncomplete in time.
	f2 := newFixture(t, "sess-down2", true)
	b2 := newTestBroker(t, f2.sessionID, f2.pub())
	b2.down.Store(true)
	opts2 := f2.options(time.Now)
	opts2.Uploader = &httpUploader{url: b2.srv.URL + "/v1/sessions/sess-down2/transcript"}
	r2, err := NewRecorder(opts2)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := r2.Close(cctx, EndEvent{}); !errors.Is(err, ErrUploadIncomplete) {
		t.Fatalf("close with the broker down: %v", err)
	}
	if _, err := Verify(mustOpen(t, f2.path), VerifyOptions{JWKS: f2.broker.jwks}); err != nil {
		t.Fatalf("the spool must hold the sealed transcript: %v", err)
	}
}

func TestRequireRecordingFailsClosed(t *testing.T) {
	f := newFixture(t, "sess-req", true)
	b := newTestBroker(t, f.sessionID, f.pub())
	b.down.Store(true)
	var now atomic.Int64
	now.Store(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).UnixNano())
	opts := f.options(func() time.Time { return time.Unix(0, now.Load()).UTC() })
	opts.Uploader = &httpUploader{url: b.srv.URL + "/v1/sessions/sess-req/transcript"}
	opts.RequireRecording = true
	opts.BrokerOutageLimit = 60 * time.Second
	r, err := NewRecorder(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Append(ctx, requestEvent(1, "get", "pods", "allow", 200)); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(61 * time.Second))
	err = r.Append(ctx, requestEvent(2, "get", "pods", "allow", 200))
	if err == nil || !strings.Contains(err.Error(), "has not acknowledged") {
		t.Fatalf("append after 61s of outage: %v", err)
	}
	b.down.Store(false)
	waitFor(t, func() bool { return r.Healthy() == nil })
	if err := r.Append(ctx, requestEvent(3, "get", "pods", "allow", 200)); err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
	if _, err := r.Close(ctx, EndEvent{}); err != nil {
		t.Fatal(err)
	}
}

func TestSpoolCrashRecovery(t *testing.T) {
	f := newFixture(t, "sess-crash", true)
	opts := f.options(newFakeClock().Now)
	r, err := NewRecorder(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 7 {
		if err := r.Append(ctx, requestEvent(i, "get", "pods", "allow", 200)); err != nil {
			t.Fatal(err)
		}
	}
	// The process dies mid-write: the last line is torn.
	r.f.Close()
	data, _ := os.ReadFile(f.path)
	lines := splitLines(data)
	torn := len(data) - len(lines[len(lines)-1])/2
	if err := os.Truncate(f.path, int64(torn)); err != nil {
		t.Fatal(err)
	}
	// Without Resume, the spool is never overwritten.
	if _, err := NewRecorder(opts); err == nil {
		t.Fatal("NewRecorder overwrote an existing spool")
	}
	opts.Resume = true
	opts.Clock = newFakeClock().Now
	r2, err := NewRecorder(opts)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if got := r2.Lines(); got != int64(len(lines)-1) {
		t.Fatalf("resumed at %d lines, want %d", got, len(lines)-1)
	}
	for i := range 3 {
		if err := r2.Append(ctx, requestEvent(100+i, "list", "pods", "allow", 200)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r2.Close(ctx, EndEvent{}); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(mustOpen(t, f.path), VerifyOptions{JWKS: f.broker.jwks})
	if err != nil || !rep.Sealed {
		t.Fatalf("verify after recovery: %+v %v", rep, err)
	}

	// Damage in the middle is not silently dropped.
	mid := bytes.Replace(data[:torn], []byte(`"get"`), []byte(`"gex"`), 1)
	p := filepath.Join(t.TempDir(), "damaged.jsonl")
	_ = os.WriteFile(p, mid, 0o600)
	opts.SpoolPath = p
	if _, err := NewRecorder(opts); err == nil || !strings.Contains(err.Error(), "damaged before its end") {
		t.Fatalf("resume of a damaged spool: %v", err)
	}
}

func TestSpoolPermissionsAndNoExtraData(t *testing.T) {
	f := newFixture(t, "sess-perm", true)
	secret := "hunter2-very-secret-value"
	r, err := NewRecorder(f.options(newFakeClock().Now))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The proxy masked the Secret before handing the event over; the
	// recorder must write what it was given and nothing else.
	ev := requestEvent(1, "get", "secrets", "allow", 200)
	ev.Request.ResponseObject = json.RawMessage(`{"kind":"Secret","data":{"password":"***"}}`)
	ev.Request.MaskedPaths = []string{"data.password"}
	if err := r.Append(ctx, ev); err != nil {
		t.Fatal(err)
	}
	tap := r.StreamTap()
	up, down := tap.Open("audit-x", "v5.channel.k8s.io")
	_, _ = up.Write(wsFrame(t, true, 0, []byte("echo ok\n")))
	_, _ = down.Write(wsFrame(t, false, 1, []byte("ok\n")))
	up.(interface{ Close() error }).Close()
	down.(interface{ Close() error }).Close()
	if _, err := r.Close(ctx, EndEvent{}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(f.path)
	if bytes.Contains(data, []byte(secret)) || bytes.Contains(data, []byte("hunter2")) {
		t.Fatal("secret in spool")
	}
	if !bytes.Contains(data, []byte(`"password":"***"`)) {
		t.Fatal("masked object missing from spool")
	}
	st, _ := os.Stat(f.path)
	dst, _ := os.Stat(filepath.Dir(f.path))
	if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
		t.Fatalf("spool mode %v, dir mode %v", st.Mode().Perm(), dst.Mode().Perm())
	}
	// Every line is an event the recorder was given, or its own bookkeeping.
	for _, l := range splitLines(data) {
		var e Event
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		switch e.Type {
		case TypeStart, TypeRequest, TypeStream, TypeCheckpoint, TypeEnd, TypeSeal:
		default:
			t.Fatalf("unexpected %s event in spool", e.Type)
		}
	}
}

func TestConcurrentAppends(t *testing.T) {
	f := newFixture(t, "sess-conc", true)
	opts := f.options(time.Now)
	opts.CheckpointEvery = 10
	r, err := NewRecorder(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if err := r.Append(ctx, requestEvent(g*100+i, "get", "pods", "allow", 200)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if _, err := r.Close(ctx, EndEvent{}); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(mustOpen(t, f.path), VerifyOptions{JWKS: f.broker.jwks})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts["requests"] != 200 {
		t.Fatalf("counts = %v", rep.Counts)
	}
}

func TestTimedCheckpoint(t *testing.T) {
	f := newFixture(t, "sess-tick", true)
	opts := f.options(time.Now)
	opts.CheckpointInterval = 5 * time.Millisecond
	opts.CheckpointEvery = 1000
	r, err := NewRecorder(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Append(context.Background(), requestEvent(1, "get", "pods", "allow", 200)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		b, _ := os.ReadFile(f.path)
		return bytes.Contains(b, []byte(`"type":"checkpoint"`))
	})
	if _, err := r.Close(context.Background(), EndEvent{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(mustOpen(t, f.path), VerifyOptions{JWKS: f.broker.jwks}); err != nil {
		t.Fatal(err)
	}
}

func TestAppendRefusesRecorderEvents(t *testing.T) {
	f := newFixture(t, "sess-own", false)
	r, err := NewRecorder(f.options(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{TypeStart, TypeCheckpoint, TypeSeal, TypeEnd} {
		if err := r.Append(context.Background(), Event{Type: typ}); err == nil {
			t.Errorf("Append accepted a %s event", typ)
		}
	}
	if _, err := r.Close(context.Background(), EndEvent{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Append(context.Background(), requestEvent(1, "get", "pods", "allow", 200)); err == nil {
		t.Error("Append after Close succeeded")
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// waitFor polls a condition; the test's own timeout bounds it.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(5 * time.Millisecond)
	}
}
