package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/server"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/pkg/tlog"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

type uploader struct {
	c  *session.Client
	id string
}

func (u uploader) Upload(ctx context.Context, c api.TranscriptChunk) (api.TranscriptAck, error) {
	return u.c.UploadTranscript(ctx, u.id, c)
}

// A run's transcript streams to the broker, which checks the chain, stores
// it, seals it and logs it; the client gets an inclusion proof that verifies
// against the broker's log key, and the stored transcript verifies offline
// with the broker's JWKS.
func TestTranscriptIngest(t *testing.T) {
	e := newEnv(t)
	b := e.startBroker(t, e.storeURL, nil)
	ctx := context.Background()
	r := newRunner(t, b.URL)
	resp, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "600", audience)))
	if err != nil {
		t.Fatal(err)
	}
	sc := r.session(resp)
	spool := filepath.Join(t.TempDir(), "run.transcript.jsonl")
	rec, err := transcript.NewRecorder(transcript.RecorderOptions{
		SessionID: resp.Session.ID, Key: r.key, KeyBinding: resp.Session.KeyBinding, SpoolPath: spool,
		Uploader: uploader{sc, resp.Session.ID}, CheckpointEvery: 2,
		Start: transcript.StartEvent{Cluster: "test", PolicyDigest: "sha256:00"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := rec.Append(ctx, transcript.Event{Type: transcript.TypeRequest, Request: &transcript.RequestEvent{
			AuditID: "a-" + string(rune('0'+i)), Stage: "ResponseComplete", RequestURI: "/api/v1/pods", Verb: "list", Decision: "allow",
			ResponseStatus: &transcript.ResponseStatus{Code: 200}}}); err != nil {
			t.Fatal(err)
		}
	}
	proof, err := rec.Close(ctx, transcript.EndEvent{ExitCode: 0})
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if proof == nil {
		t.Fatal("no inclusion proof for the sealed transcript")
	}
	spooled, err := os.ReadFile(spool)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(spooled), "\n"), "\n")

	// The proof verifies with the log's published verifier key.
	var logInfo struct{ VerifierKey string }
	getJSON(t, b.URL+server.PathTranscriptLog, &logInfo)
	if err := tlog.VerifyInclusion(proof, []byte(lines[len(lines)-1]), logInfo.VerifierKey); err != nil {
		t.Errorf("inclusion proof: %v", err)
	}

	// The broker holds the same bytes, and they verify with its JWKS.
	stored, err := b.Store.ReadTranscript(ctx, resp.Session.ID, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(stored, "\n") != strings.Join(lines, "\n") {
		t.Fatalf("stored transcript (%d lines) differs from the spool (%d lines)", len(stored), len(lines))
	}
	var jwks jose.JSONWebKeySet
	getJSON(t, b.URL+api.PathJWKS, &jwks)
	rep, err := transcript.Verify(bytes.NewReader(spooled), transcript.VerifyOptions{JWKS: &jwks})
	if err != nil || !rep.Sealed || !rep.BindingVerified {
		t.Fatalf("verify = %+v, %v", rep, err)
	}

	// Resending is idempotent; a different line at a stored seq is refused,
	// and so is a line that breaks the chain.
	if ack, err := sc.UploadTranscript(ctx, resp.Session.ID, api.TranscriptChunk{FirstSeq: 0, Lines: lines}); err != nil || !ack.Sealed || ack.NextSeq != int64(len(lines)) {
		t.Errorf("resend = %+v, %v", ack, err)
	}
	forged := append([]string{}, lines[:2]...)
	forged[1] = strings.Replace(forged[1], `"list"`, `"delete"`, 1)
	_, err = sc.UploadTranscript(ctx, resp.Session.ID, api.TranscriptChunk{FirstSeq: 0, Lines: forged})
	if ae := apiError(err); ae == nil || ae.Code != "invalid_transcript" {
		t.Errorf("forged resend: %v, want invalid_transcript", err)
	}
}

// A chunk that breaks the chain is refused before anything is stored.
func TestTranscriptChainChecked(t *testing.T) {
	e := newEnv(t)
	b := e.startBroker(t, e.storeURL, nil)
	ctx := context.Background()
	r := newRunner(t, b.URL)
	resp, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "601", audience)))
	if err != nil {
		t.Fatal(err)
	}
	sc := r.session(resp)
	// A transcript recorded for another session id.
	spool := filepath.Join(t.TempDir(), "other.jsonl")
	rec, err := transcript.NewRecorder(transcript.RecorderOptions{SessionID: "someone-else", Key: r.key, SpoolPath: spool,
		Start: transcript.StartEvent{Cluster: "test", PolicyDigest: "sha256:00"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Close(ctx, transcript.EndEvent{}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(spool)
	other := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	_, err = sc.UploadTranscript(ctx, resp.Session.ID, api.TranscriptChunk{FirstSeq: 0, Lines: other})
	if ae := apiError(err); ae == nil || ae.Code != "invalid_transcript" {
		t.Errorf("another session's transcript: %v, want invalid_transcript", err)
	}
	if st, err := b.Store.TranscriptState(ctx, resp.Session.ID, ""); err != nil || st.NextSeq != 0 {
		t.Errorf("state after a refused chunk = %+v, %v; want nothing stored", st, err)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
