package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/approval"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

// brokerTranscriptDeps wires `transcript push` to the session cache (a
// spooled transcript is uploaded with the session that recorded it), and
// `transcript list|get` to the broker's audit API with the reader's own
// kubeconfig bearer token, as `kubectl agent approvals` does.
func brokerTranscriptDeps() TranscriptDeps {
	return TranscriptDeps{NewUploader: cachedSessionUploader, NewClient: newAuditClient}
}

// auditClient reads transcripts at the broker as a person: GET
// /v1/transcripts and /v1/transcripts/{session}/{transcript}.
type auditClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

func newAuditClient(_ context.Context, g *GlobalOptions) (TranscriptClient, error) {
	broker := g.Broker
	if broker == "" {
		broker = os.Getenv("KUBECTL_AGENT_BROKER")
	}
	if broker == "" {
		return nil, UsageError("no broker: pass --broker URL (or set KUBECTL_AGENT_BROKER)")
	}
	// Validates the URL (https, or http only to loopback) the way reviewers' calls do.
	if _, err := approval.NewReviewerClient(broker, "-"); err != nil {
		return nil, UsageError("%v", err)
	}
	u, _ := url.Parse(strings.TrimRight(broker, "/"))
	cfg, err := g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading your kubeconfig (you read transcripts with your own cluster identity): %w", err)
	}
	tok, err := approval.BearerToken(cfg)
	if err != nil {
		return nil, err
	}
	return &auditClient{base: u, token: tok, http: &http.Client{Timeout: 2 * time.Minute}}, nil
}

func (c *auditClient) get(ctx context.Context, p string, q url.Values) ([]byte, error) {
	u := *c.base
	u.Path += p
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach the broker at %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	// A transcript is at most what the broker took in 4 MiB chunks; cap
	// the read well above any real one.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return nil, fmt.Errorf("reading the broker's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(data, &e) == nil && e.Description != "" {
			return nil, errors.New(e.Description)
		}
		return nil, fmt.Errorf("the broker answered HTTP %d", resp.StatusCode)
	}
	return data, nil
}

func (c *auditClient) ListTranscripts(ctx context.Context, f TranscriptFilter) ([]api.TranscriptSummary, error) {
	q := url.Values{}
	for k, v := range map[string]string{"repository": f.Repository, "run": f.Run, "cluster": f.Cluster, "session": f.Session,
		"since": f.Since, "until": f.Until, "decision": f.Decision} {
		if v != "" {
			q.Set(k, v)
		}
	}
	data, err := c.get(ctx, "/v1/transcripts", q)
	if err != nil {
		return nil, err
	}
	var out struct {
		Transcripts []api.TranscriptSummary `json:"transcripts"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("the broker's answer is not a transcript list: %w", err)
	}
	return out.Transcripts, nil
}

func (c *auditClient) GetTranscript(ctx context.Context, sessionID, transcriptID string) ([]byte, error) {
	if transcriptID == "" {
		transcriptID = "-"
	}
	return c.get(ctx, "/v1/transcripts/"+url.PathEscape(sessionID)+"/"+url.PathEscape(transcriptID), nil)
}

func cachedSessionUploader(_ context.Context, _ *GlobalOptions, start transcript.StartEvent) (transcript.Uploader, error) {
	if start.Mode == "local" || start.KeyBinding == "" {
		return nil, fmt.Errorf("session %s ran in local mode: there is no broker to push its transcript to", start.SessionID)
	}
	dir, err := session.DefaultCacheDir(os.Getenv)
	if err != nil {
		return nil, err
	}
	cache, err := session.OpenCache(dir)
	if err != nil {
		return nil, err
	}
	e, err := cache.FindSession(start.SessionID)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, fmt.Errorf("session %s is not in the session cache %s: push from the job that recorded it (the upload needs its session key)", start.SessionID, dir)
	}
	c, err := session.NewClient(e.Broker)
	if err != nil {
		return nil, err
	}
	return &transcriptUploader{c: c.WithSession(e.SessionToken, e.PrivateKey()), sessionID: e.Session.ID, transcriptID: start.TranscriptID}, nil
}

// transcriptUploader sends one transcript's chunks with its session.
type transcriptUploader struct {
	c            *session.Client
	sessionID    string
	transcriptID string
}

func (u *transcriptUploader) Upload(ctx context.Context, chunk api.TranscriptChunk) (api.TranscriptAck, error) {
	chunk.Transcript = u.transcriptID
	return u.c.UploadTranscript(ctx, u.sessionID, chunk)
}
