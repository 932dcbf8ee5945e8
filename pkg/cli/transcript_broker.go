package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

// brokerTranscriptDeps wires `transcript push` to the session cache: a
// spooled transcript is uploaded with the session that recorded it.
func brokerTranscriptDeps() TranscriptDeps {
	return TranscriptDeps{NewUploader: cachedSessionUploader}
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
