package transcript

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ReadEvents parses a transcript's lines without verifying them (show,
// replay and export read what Verify checks separately).
func ReadEvents(r io.Reader) ([]Event, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var out []Event
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return out, fmt.Errorf("reading transcript: %w", err)
		}
		var ev Event
		if jerr := json.Unmarshal(line, &ev); jerr != nil {
			return out, lineErr(int64(n), "not a JSON event: %v", jerr)
		}
		out = append(out, ev)
	}
}

// SpoolDir is where transcripts are spooled by default:
// $XDG_CACHE_HOME/kubectl-agent/transcripts (or the OS's cache directory).
func SpoolDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache directory for transcripts: %w", err)
	}
	return filepath.Join(d, "kubectl-agent", "transcripts"), nil
}

// SpoolFileName is the spool file of a session inside SpoolDir.
func SpoolFileName(sessionID string) string { return sessionID + ".transcript.jsonl" }

// StreamSession is one exec/attach stream of a transcript.
type StreamSession struct {
	AuditID  string
	Protocol string
	Command  string // the request URI that opened it, when known
	Events   []timedStream
}

type timedStream struct {
	Time time.Time
	StreamEvent
}

// StreamSessions groups stream events by the request that opened them, in
// order of first appearance.
func StreamSessions(events []Event) []*StreamSession {
	uris := map[string]string{}
	byID := map[string]*StreamSession{}
	var order []*StreamSession
	for _, ev := range events {
		switch {
		case ev.Type == TypeRequest && ev.Request != nil:
			uris[ev.Request.AuditID] = ev.Request.RequestURI
		case ev.Type == TypeStream && ev.Stream != nil:
			s := byID[ev.Stream.AuditID]
			if s == nil {
				s = &StreamSession{AuditID: ev.Stream.AuditID, Protocol: ev.Stream.Protocol, Command: uris[ev.Stream.AuditID]}
				byID[s.AuditID] = s
				order = append(order, s)
			}
			s.Events = append(s.Events, timedStream{Time: ev.Time, StreamEvent: *ev.Stream})
		}
	}
	return order
}

// WriteAsciicast writes one stream session as an asciicast v2 recording:
// stdout and stderr as "o", stdin as "i", resizes as "r". Binary data (only
// its digest is kept) is left out.
func WriteAsciicast(w io.Writer, s *StreamSession) error {
	width, height := 80, 24
	for _, e := range s.Events {
		if e.Channel == "resize" {
			if c, r, ok := parseResize(e.Data); ok {
				width, height = c, r
				break
			}
		}
	}
	var start time.Time
	if len(s.Events) > 0 {
		start = s.Events[0].Time
	}
	title := "kubectl-agent " + s.AuditID
	if s.Command != "" {
		title = s.Command
	}
	hdr, err := json.Marshal(map[string]any{"version": 2, "width": width, "height": height, "timestamp": start.Unix(), "title": title})
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	bw.Write(hdr)
	bw.WriteByte('\n')
	for _, e := range s.Events {
		var code, data string
		switch e.Channel {
		case "stdout", "stderr", "data":
			code, data = "o", e.Data
		case "stdin":
			code, data = "i", e.Data
		case "resize":
			if c, r, ok := parseResize(e.Data); ok {
				code, data = "r", fmt.Sprintf("%dx%d", c, r)
			}
		}
		if code == "" || data == "" {
			continue
		}
		line, err := json.Marshal([]any{roundSeconds(e.Time.Sub(start)), code, data})
		if err != nil {
			return err
		}
		bw.Write(line)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

func roundSeconds(d time.Duration) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(d.Seconds(), 'f', 6, 64), 64)
	return f
}

// parseResize reads the resize channel's {"Width":..,"Height":..}.
func parseResize(s string) (int, int, bool) {
	var r struct{ Width, Height int }
	if err := json.Unmarshal([]byte(s), &r); err != nil || r.Width <= 0 || r.Height <= 0 {
		return 0, 0, false
	}
	return r.Width, r.Height, true
}

// auditTime is audit.k8s.io's MicroTime format.
const auditTime = "2006-01-02T15:04:05.000000Z07:00"

// WriteAudit writes the transcript's API requests as audit.k8s.io/v1 Event
// JSON lines, one per request, with the policy decision in annotations.
// They join 1:1 with the cluster's audit log by auditID.
func WriteAudit(w io.Writer, events []Event) error {
	user := map[string]any{"username": "kubectl-agent"}
	var session string
	bw := bufio.NewWriter(w)
	for _, ev := range events {
		if ev.Type == TypeStart && ev.Start != nil {
			session = ev.Start.SessionID
			extra := map[string][]string{"kubectl-agent.io/session": {session}}
			for k, v := range ev.Start.Identity {
				extra["kubectl-agent.io/"+k] = []string{v}
			}
			user = map[string]any{"username": "kubectl-agent:" + session, "extra": extra}
		}
		if ev.Type != TypeRequest || ev.Request == nil {
			continue
		}
		r := ev.Request
		a := map[string]any{
			"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
			"auditID": r.AuditID, "stage": r.Stage, "requestURI": r.RequestURI, "verb": r.Verb,
			"user":                     user,
			"requestReceivedTimestamp": r.RequestReceivedTimestamp.UTC().Format(auditTime),
			"stageTimestamp":           r.StageTimestamp.UTC().Format(auditTime),
		}
		if r.UserAgent != "" {
			a["userAgent"] = r.UserAgent
		}
		if r.ImpersonatedUser != "" {
			a["impersonatedUser"] = map[string]string{"username": r.ImpersonatedUser}
		}
		if r.ObjectRef != nil {
			a["objectRef"] = r.ObjectRef
		}
		if r.ResponseStatus != nil {
			a["responseStatus"] = r.ResponseStatus
		}
		if len(r.RequestObject) > 0 {
			a["requestObject"] = r.RequestObject
		}
		if len(r.ResponseObject) > 0 {
			a["responseObject"] = r.ResponseObject
		}
		ann := map[string]string{"kubectl-agent.io/decision": r.Decision, "kubectl-agent.io/session": session}
		if r.Rule != "" {
			ann["kubectl-agent.io/rule"] = r.Rule
		}
		if r.Message != "" {
			ann["kubectl-agent.io/message"] = r.Message
		}
		if len(r.MaskedPaths) > 0 {
			ann["kubectl-agent.io/masked"] = strings.Join(r.MaskedPaths, ",")
		}
		if r.DryRun {
			ann["kubectl-agent.io/dry-run"] = "true"
		}
		a["annotations"] = ann
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		bw.Write(b)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// Replay plays stream sessions' output (stdout, stderr) back to w with the
// recorded timing divided by speed. Pauses longer than maxPause are cut to
// it. sleep waits (time.Sleep-like, ending early when ctx ends).
func Replay(ctx context.Context, w io.Writer, sessions []*StreamSession, speed float64, maxPause time.Duration, sleep func(context.Context, time.Duration) error) error {
	if speed <= 0 {
		speed = 1
	}
	for _, s := range sessions {
		var last time.Time
		for _, e := range s.Events {
			if e.Channel != "stdout" && e.Channel != "stderr" || e.Data == "" {
				continue
			}
			if !last.IsZero() {
				d := time.Duration(float64(e.Time.Sub(last)) / speed)
				if maxPause > 0 && d > maxPause {
					d = maxPause
				}
				if d > 0 {
					if err := sleep(ctx, d); err != nil {
						return err
					}
				}
			}
			last = e.Time
			if _, err := io.WriteString(w, e.Data); err != nil {
				return err
			}
		}
	}
	return nil
}
