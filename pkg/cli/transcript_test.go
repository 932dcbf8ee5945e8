package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

type recorded struct {
	path, jwksPath string
	pub            ed25519.PublicKey
}

// recordTranscript writes a real sealed transcript with a request, a denied
// request and an exec session.
func recordTranscript(t *testing.T, bound bool) recorded {
	t.Helper()
	dir := t.TempDir()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	_, brokerKey, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	binding := ""
	if bound {
		var err error
		binding, err = transcript.SignKeyBinding(brokerKey, transcript.KeyBindingClaims{
			Issuer: "https://broker.example", Subject: "sess-cli", IssuedAt: 1, Cluster: "prod",
			Cnf:      transcript.Confirmation{JWK: transcript.NewOKPKey(pub)},
			Identity: api.Identity{Repository: "acme/app", RunID: "42"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(250 * time.Millisecond); return now }
	path := filepath.Join(dir, "run.transcript.jsonl")
	r, err := transcript.NewRecorder(transcript.RecorderOptions{
		SessionID: "sess-cli", Key: key, KeyBinding: binding, SpoolPath: path, Clock: clock, CheckpointInterval: -1,
		Start: transcript.StartEvent{Cluster: "prod", PolicyDigest: "sha256:00"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := func(id, verb, res, name, decision string, code int) transcript.Event {
		return transcript.Event{Type: transcript.TypeRequest, Request: &transcript.RequestEvent{
			AuditID: id, Stage: "ResponseComplete", RequestURI: "/api/v1/namespaces/default/" + res, Verb: verb, Decision: decision,
			ObjectRef: &transcript.ObjectRef{Resource: res, Namespace: "default", Name: name}, ResponseStatus: &transcript.ResponseStatus{Code: code},
			Rule: map[bool]string{true: "never-delete-namespaces"}[decision == "deny"],
		}}
	}
	for _, ev := range []transcript.Event{
		{Type: transcript.TypeCommand, Command: &transcript.CommandEvent{Argv: []string{"kubectl", "exec", "web", "--", "ls"}}},
		req("a-1", "get", "pods", "web", "allow", 200),
		req("a-2", "delete", "namespaces", "prod", "deny", 403),
		req("a-3", "create", "pods", "web", "allow", 101),
		{Type: transcript.TypeStream, Stream: &transcript.StreamEvent{AuditID: "a-3", Channel: "open"}},
		{Type: transcript.TypeStream, Stream: &transcript.StreamEvent{AuditID: "a-3", Channel: "resize", Data: `{"Width":100,"Height":30}`}},
		{Type: transcript.TypeStream, Stream: &transcript.StreamEvent{AuditID: "a-3", Channel: "stdout", Data: "bin\n"}},
		{Type: transcript.TypeStream, Stream: &transcript.StreamEvent{AuditID: "a-3", Channel: "stdout", Data: "etc\n"}},
		{Type: transcript.TypeStream, Stream: &transcript.StreamEvent{AuditID: "a-3", Channel: "close"}},
	} {
		if err := r.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Close(ctx, transcript.EndEvent{ExitCode: 0}); err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{transcript.BrokerJWK(brokerKey.Public().(ed25519.PublicKey))}})
	jwksPath := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksPath, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	return recorded{path: path, jwksPath: jwksPath, pub: pub}
}

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Execute(context.Background(), genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	return out.String(), errOut.String(), code
}

func TestTranscriptVerifyCommand(t *testing.T) {
	rec := recordTranscript(t, true)
	out, errOut, code := runCLI(t, "transcript", "verify", rec.path, "--jwks", rec.jwksPath)
	if code != 0 || !strings.Contains(out, "sealed, ") || !strings.Contains(out, "bound to acme/app run 42 by broker https://broker.example") {
		t.Fatalf("verify: %d %q %q", code, out, errOut)
	}
	// The JWKS from a URL, as the broker serves it.
	jwks, _ := os.ReadFile(rec.jwksPath)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(jwks) }))
	defer srv.Close()
	if out, errOut, code := runCLI(t, "transcript", "verify", rec.path, "--jwks", srv.URL+api.PathJWKS); code != 0 {
		t.Fatalf("verify with URL: %d %q %q", code, out, errOut)
	}
	// Without --jwks, it says the binding was not checked.
	if out, _, code := runCLI(t, "transcript", "verify", rec.path); code != 0 || !strings.Contains(out, "NOT checked") {
		t.Fatalf("verify without jwks: %d %q", code, out)
	}

	// Tampered: exit 1 naming the line.
	data, _ := os.ReadFile(rec.path)
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	_ = os.WriteFile(bad, bytes.Replace(data, []byte(`"verb":"delete"`), []byte(`"verb":"get"`), 1), 0o600)
	out, errOut, code = runCLI(t, "transcript", "verify", bad, "--jwks", rec.jwksPath)
	if code != 1 || !strings.Contains(errOut, "line 5: prev does not match sha256 of line 4") {
		t.Fatalf("tampered: %d %q %q", code, out, errOut)
	}

	// Unsealed: exit 1, or 0 with --allow-unsealed; both say how far.
	lines := bytes.SplitAfter(data, []byte("\n"))
	cut := filepath.Join(t.TempDir(), "cut.jsonl")
	_ = os.WriteFile(cut, bytes.Join(lines[:len(lines)-3], nil), 0o600)
	out, _, code = runCLI(t, "transcript", "verify", cut, "--jwks", rec.jwksPath)
	if code != 1 || !strings.Contains(out, "unsealed: verified up to line") {
		t.Fatalf("unsealed: %d %q", code, out)
	}
	if _, _, code = runCLI(t, "transcript", "verify", cut, "--allow-unsealed"); code != 0 {
		t.Fatalf("unsealed allowed: %d", code)
	}

	// JSON output.
	out, _, code = runCLI(t, "transcript", "verify", rec.path, "--jwks", rec.jwksPath, "-o", "json")
	var rep struct {
		OK     bool  `json:"ok"`
		Sealed bool  `json:"sealed"`
		Lines  int64 `json:"lines"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || !rep.OK || !rep.Sealed {
		t.Fatalf("json: %d %q %v", code, out, err)
	}

	// Local mode: integrity only; --jwks fails it.
	local := recordTranscript(t, false)
	out, _, code = runCLI(t, "transcript", "verify", local.path)
	if code != 0 || !strings.Contains(out, "not bound by a broker") {
		t.Fatalf("local: %d %q", code, out)
	}
	if _, errOut, code = runCLI(t, "transcript", "verify", local.path, "--jwks", rec.jwksPath); code != 1 || !strings.Contains(errOut, "line 1: the session key is not bound") {
		t.Fatalf("local with jwks: %d %q", code, errOut)
	}
}

func TestTranscriptShowCommand(t *testing.T) {
	rec := recordTranscript(t, true)
	out, errOut, code := runCLI(t, "transcript", "show", rec.path)
	if code != 0 {
		t.Fatalf("show: %d %q", code, errOut)
	}
	for _, want := range []string{"TIME", "DECISION", "kubectl exec web -- ls", "delete    namespaces/prod ", "deny", "403", "never-delete-namespaces", "exit 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("escape codes without a terminal")
	}
	out, _, code = runCLI(t, "transcript", "show", rec.path, "-o", "json")
	var evs []transcript.Event
	if err := json.Unmarshal([]byte(out), &evs); err != nil || code != 0 || evs[0].Type != "start" || evs[len(evs)-1].Type != "seal" {
		t.Fatalf("show -o json: %d %v", code, err)
	}
}

func TestTranscriptExportCommand(t *testing.T) {
	rec := recordTranscript(t, true)
	out, errOut, code := runCLI(t, "transcript", "export", rec.path, "--format", "audit")
	if code != 0 {
		t.Fatalf("export audit: %d %q", code, errOut)
	}
	var n int
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			APIVersion  string            `json:"apiVersion"`
			Kind        string            `json:"kind"`
			AuditID     string            `json:"auditID"`
			Verb        string            `json:"verb"`
			Annotations map[string]string `json:"annotations"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.APIVersion != "audit.k8s.io/v1" || ev.Kind != "Event" {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if ev.AuditID == "a-2" && (ev.Annotations["kubectl-agent.io/decision"] != "deny" || ev.Verb != "delete") {
			t.Fatalf("audit event %+v", ev)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d audit events, want 3", n)
	}

	out, errOut, code = runCLI(t, "transcript", "export", rec.path, "--format", "asciicast")
	if code != 0 {
		t.Fatalf("export asciicast: %d %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var hdr struct{ Version, Width, Height int }
	if err := json.Unmarshal([]byte(lines[0]), &hdr); err != nil || hdr.Version != 2 || hdr.Width != 100 || hdr.Height != 30 {
		t.Fatalf("asciicast header %q", lines[0])
	}
	var ev []any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ev); err != nil || ev[1] != "o" || ev[2] != "etc\n" {
		t.Fatalf("asciicast last event %q", lines[len(lines)-1])
	}
	dir := t.TempDir()
	if _, errOut, code = runCLI(t, "transcript", "export", rec.path, "--format", "asciicast", "--out-dir", dir); code != 0 {
		t.Fatalf("out-dir: %d %q", code, errOut)
	}
	if st, err := os.Stat(filepath.Join(dir, "a-3.cast")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("a-3.cast: %v", err)
	}
	if _, _, code = runCLI(t, "transcript", "export", rec.path, "--format", "html"); code != 2 {
		t.Fatalf("bad format exit %d", code)
	}
}

func TestTranscriptReplay(t *testing.T) {
	rec := recordTranscript(t, true)
	var out bytes.Buffer
	var slept []time.Duration
	o := &TranscriptReplayOptions{File: rec.path, Speed: 2, MaxPause: time.Second, IOStreams: genericiooptions.IOStreams{Out: &out},
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The two stdout events are 250ms apart in the recording: 125ms at speed 2.
	if out.String() != "bin\netc\n" || len(slept) != 1 || slept[0] != 125*time.Millisecond {
		t.Fatalf("replay wrote %q, slept %v", out.String(), slept)
	}
}

// memBroker takes uploads like the broker: idempotent, chain-checked.
type memBroker struct {
	v     *transcript.ChainVerifier
	lines []string
}

func (b *memBroker) Upload(_ context.Context, c api.TranscriptChunk) (api.TranscriptAck, error) {
	if skip := b.v.Next() - c.FirstSeq; skip > 0 {
		c.Lines, c.FirstSeq = c.Lines[min(skip, int64(len(c.Lines))):], b.v.Next()
	}
	if err := b.v.Accept(c.FirstSeq, c.Lines); err != nil {
		return api.TranscriptAck{}, err
	}
	b.lines = append(b.lines, c.Lines...)
	return api.TranscriptAck{NextSeq: b.v.Next(), Sealed: b.v.Sealed()}, nil
}

func TestTranscriptPush(t *testing.T) {
	rec := recordTranscript(t, true)
	b := &memBroker{v: transcript.NewChainVerifier("sess-cli", rec.pub)}
	// Half of it arrived before the broker went away.
	data, _ := os.ReadFile(rec.path)
	all := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if _, err := b.Upload(context.Background(), api.TranscriptChunk{Lines: all[:4]}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	cmd := NewTranscriptCommandWith(&GlobalOptions{}, streams, TranscriptDeps{
		NewUploader: func(_ context.Context, _ *GlobalOptions, start transcript.StartEvent) (transcript.Uploader, error) {
			id := start.SessionID
			if id != "sess-cli" {
				t.Errorf("uploader for %q", id)
			}
			return b, nil
		},
	})
	cmd.SetArgs([]string{"push", "--dir", filepath.Dir(rec.path), "--remove"})
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("push: %v %s", err, errOut.String())
	}
	if !b.v.Sealed() || strings.Join(b.lines, "\n") != strings.Join(all, "\n") {
		t.Fatal("the broker does not hold the whole transcript")
	}
	if _, err := os.Stat(rec.path); !os.IsNotExist(err) {
		t.Fatal("--remove kept the pushed transcript")
	}
	// Unwired: a clear failure.
	other := recordTranscript(t, true)
	var uo, ue bytes.Buffer
	unwired := NewTranscriptCommand(&GlobalOptions{}, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &uo, ErrOut: &ue})
	unwired.SetArgs([]string{"push", other.path})
	unwired.SilenceErrors, unwired.SilenceUsage = true, true
	if err := unwired.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "needs a broker client") {
		t.Fatalf("unwired push: %v", err)
	}
	// Wired to the session cache: a session that is not cached is named.
	t.Setenv("KUBECACHEDIR", t.TempDir())
	if _, errOut, code := runCLI(t, "transcript", "push", other.path); code != 1 || !strings.Contains(errOut, "not in the session cache") {
		t.Fatalf("push without the session: %d %q", code, errOut)
	}
}
