package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/approval"
	"github.com/kubectl-agent/kubectl-agent/pkg/buildinfo"
	"github.com/kubectl-agent/kubectl-agent/pkg/mask"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/proxy"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
	"github.com/kubectl-agent/kubectl-agent/pkg/ui"
)

// spoolDir is where exec spools transcripts: beside the session cache, so a
// per-job cache folder (RUNNER_TEMP, ...) holds both, and `transcript push`
// finds what a killed run left.
func (o *ExecOptions) spoolDir() (string, error) {
	dir, err := session.DefaultCacheDir(o.Getenv)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "transcripts"), nil
}

// pushLeftovers uploads, in the background, spooled transcripts of this
// session that earlier invocations left (the broker was down, or the
// wrapper was killed), removing each once the broker holds all of it and it
// is sealed. It never blocks the run: an unfinished push resumes next time
// (uploads are idempotent by seq). done is closed when it is finished.
func (o *ExecOptions) pushLeftovers(ctx context.Context, up *Upstream, current string) (done <-chan struct{}) {
	ch := make(chan struct{})
	dir, err := o.spoolDir()
	if up.Client == nil || err != nil {
		close(ch)
		return ch
	}
	files, _ := filepath.Glob(filepath.Join(dir, up.SessionID+".*.transcript.jsonl"))
	go func() {
		defer close(ch)
		p := &TranscriptPushOptions{g: o.g, deps: TranscriptDeps{
			NewUploader: func(_ context.Context, _ *GlobalOptions, start transcript.StartEvent) (transcript.Uploader, error) {
				if start.SessionID != up.SessionID {
					return nil, fmt.Errorf("spooled for session %s, not this run's", start.SessionID)
				}
				return &transcriptUploader{c: up.Client, sessionID: up.SessionID, transcriptID: start.TranscriptID}, nil
			},
		}}
		for _, f := range files {
			if f == current {
				continue
			}
			if _, sealed, err := p.push(ctx, f); err == nil && sealed {
				_ = os.Remove(f)
			}
		}
	}()
	return ch
}

// startRecorder opens the run's transcript. Every run is recorded: in broker
// mode the spool streams to the broker; in local mode it stays on disk
// (--transcript FILE puts it there), sealed with a key no broker bound.
func (o *ExecOptions) startRecorder(ctx context.Context, up *Upstream, pol *policy.Policy) (*transcript.Recorder, string, error) {
	key := up.Key
	if key == nil {
		var err error
		if _, key, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, "", fmt.Errorf("generating a transcript key: %w", err)
		}
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return nil, "", err
	}
	tid := hex.EncodeToString(id)
	spool := o.TranscriptFile
	if spool == "" || up.Mode == "broker" {
		dir, err := o.spoolDir()
		if err != nil {
			return nil, "", err
		}
		spool = filepath.Join(dir, transcript.SpoolFileName(up.SessionID+"."+tid))
	}
	var uploader transcript.Uploader
	if up.Client != nil {
		uploader = &transcriptUploader{c: up.Client, sessionID: up.SessionID, transcriptID: tid}
	}
	// With --require-recording, how long the broker may leave lines
	// unacknowledged before requests are refused (documented in
	// docs/transcript.md; tests shorten it).
	outage := transcript.DefaultBrokerOutageLimit
	if v := o.Getenv("KUBECTL_AGENT_RECORDING_OUTAGE_LIMIT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, "", fmt.Errorf("KUBECTL_AGENT_RECORDING_OUTAGE_LIMIT=%q: give a positive duration such as 60s", v)
		}
		outage = d
	}
	grant, _ := json.Marshal(up.Grant)
	if up.Mode != "broker" {
		grant = nil
	}
	rec, err := transcript.NewRecorder(transcript.RecorderOptions{
		SessionID: up.SessionID, Key: key, KeyBinding: up.KeyBinding, SpoolPath: spool,
		Uploader: uploader, RequireRecording: o.RequireRecording, BrokerOutageLimit: outage,
		Start: transcript.StartEvent{
			TranscriptID: tid, Cluster: up.Cluster, Mode: up.Mode, PolicyDigest: pol.Digest(),
			Identity: up.Identity, Grant: grant,
			Tools: map[string]string{"kubectl-agent": buildinfo.Get().Version},
		},
		Logf: func(format string, args ...any) {
			ui.NewWithEnv(o.streams.ErrOut, o.Getenv).Warn("transcript: "+format, args...)
		},
	})
	if err != nil {
		return nil, "", err
	}
	dir, _ := os.Getwd()
	if err := rec.Append(ctx, transcript.Event{Type: transcript.TypeCommand, Command: &transcript.CommandEvent{Argv: o.Command, Dir: dir}}); err != nil {
		_, _ = rec.Close(context.WithoutCancel(ctx), transcript.EndEvent{ExitCode: ExitRefused})
		return nil, "", err
	}
	return rec, spool, nil
}

// finishRecording seals the transcript, waits (bounded) for the broker to
// hold all of it, and copies it to --transcript FILE when the spool is
// elsewhere. A broker that cannot be reached leaves the spool for
// `kubectl agent transcript push` (the next exec runs it too).
func (o *ExecOptions) finishRecording(ctx context.Context, u *ui.UI, up *Upstream, rec *transcript.Recorder, spool string, end transcript.EndEvent) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), transcript.DefaultCloseTimeout)
	proof, err := rec.Close(cctx, end)
	cancel()
	switch {
	case errors.Is(err, transcript.ErrUploadIncomplete):
		u.Warn("transcript: the broker does not hold all of it yet; it stays in %s for `kubectl agent transcript push`", spool)
	case err != nil:
		u.Warn("transcript: %v", err)
	case up.Mode == "broker" && proof != nil:
		u.OK("transcript sealed and logged by the broker (log index %d of %d)", proof.LeafIndex, proof.TreeSize)
	}
	where := spool
	if o.TranscriptFile != "" && o.TranscriptFile != spool {
		if err := copyFile(spool, o.TranscriptFile); err != nil {
			u.Warn("transcript: writing %s: %v (it is in %s)", o.TranscriptFile, err, spool)
		} else {
			where = o.TranscriptFile
		}
	}
	u.OK("transcript: %s (check it with: kubectl agent transcript verify %s)", where, where)
	if u.GitHub() {
		summary := fmt.Sprintf("Transcript of session `%s` (%s mode): `%s`", up.SessionID, up.Mode, where)
		if up.Mode == "broker" {
			summary += fmt.Sprintf(", stored at %s", up.BrokerURL)
		}
		if err := u.StepSummary(summary + "\n"); err != nil {
			u.Warn("%v", err)
		}
	}
	if err == nil && up.Mode == "broker" && o.TranscriptFile != "" && o.TranscriptFile != spool {
		_ = os.Remove(spool) // the broker holds it and FILE has a copy
	}
}

// copyFile copies a transcript; the copy is 0600 like the spool and must not
// exist yet.
func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(to)
		return err
	}
	return out.Close()
}

// approver is who decides held requests: the broker's reviewers in broker
// mode; in local mode nobody, so an approve rule denies and says why.
func (o *ExecOptions) approver(up *Upstream, pol *policy.Policy, rec *transcript.Recorder) (proxy.Approver, error) {
	if up.Client == nil {
		return approval.Local{}, nil
	}
	var rules []mask.Rule
	for _, r := range pol.Mask() {
		rules = append(rules, mask.Rule{Kinds: r.Kinds, Keys: r.Keys})
	}
	pv, err := approval.NewPreviewer(up.Config, mask.New(rules))
	if err != nil {
		return nil, fmt.Errorf("preparing approval previews: %w", err)
	}
	return approval.New(approval.Options{
		Broker: up.Client, Previewer: pv, Sink: rec, Out: o.streams.ErrOut, Getenv: o.Getenv, Command: o.Command,
	})
}
