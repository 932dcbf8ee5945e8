package server

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/approvals"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

func startLine(t *testing.T, tid, binding string) string {
	t.Helper()
	b, err := json.Marshal(transcript.Event{Type: transcript.TypeStart, Start: &transcript.StartEvent{SessionID: "s", TranscriptID: tid, KeyBinding: binding}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The broker checks what the chain verifier leaves to it: the start line
// names the transcript it is uploaded as and carries this session's binding.
func TestCheckStart(t *testing.T) {
	sess := store.Session{ID: "s", KeyBinding: "binding-of-s"}
	if err := checkStart(startLine(t, "ab12", "binding-of-s"), sess, "ab12"); err != nil {
		t.Fatalf("good start refused: %v", err)
	}
	for name, tc := range map[string]struct{ line, tid, want string }{
		"other transcript": {startLine(t, "ab12", "binding-of-s"), "cd34", "names transcript"},
		"spliced start":    {startLine(t, "", "binding-of-s"), "ab12", "names transcript"},
		"foreign binding":  {startLine(t, "ab12", "binding-of-other"), "ab12", "key binding"},
		"no binding":       {startLine(t, "ab12", ""), "ab12", "key binding"},
		"not a start":      {`{"seq":0,"type":"request"}`, "ab12", "start event"},
		"garbage":          {`{`, "ab12", "start event"},
	} {
		if err := checkStart(tc.line, sess, tc.tid); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", name, err, tc.want)
		}
	}
}

func FuzzValidTranscriptID(f *testing.F) {
	for _, s := range []string{"", "0123456789ab", "ABC", "../x", strings.Repeat("a", 65), "a/b", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !validTranscriptID(id) {
			return
		}
		if len(id) > 64 || strings.ContainsAny(id, "/.-_ ") || strings.ToLower(id) != id {
			t.Fatalf("accepted %q", id)
		}
	})
}

func TestParseAuditTime(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	if got, err := parseAuditTime("24h", now); err != nil || !got.Equal(now.Add(-24*time.Hour)) {
		t.Errorf("24h = %v, %v", got, err)
	}
	if got, err := parseAuditTime("2026-11-24T08:00:00Z", now); err != nil || got.Hour() != 8 {
		t.Errorf("RFC 3339 = %v, %v", got, err)
	}
	for _, bad := range []string{"-1h", "yesterday", "2026-11-24"} {
		if _, err := parseAuditTime(bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestIsWorkload(t *testing.T) {
	for _, rv := range []approvals.Reviewer{
		{Name: "system:serviceaccount:agent-broker:run-1"},
		{Name: "system:node:n1"},
		{Name: "x", Groups: []string{"system:serviceaccounts"}},
	} {
		if !isWorkload(rv) {
			t.Errorf("%+v is a workload", rv)
		}
	}
	if isWorkload(approvals.Reviewer{Name: "alice", Groups: []string{"reviewers"}}) {
		t.Error("alice is a person")
	}
}

func TestSummarize(t *testing.T) {
	ended := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	ti := store.TranscriptInfo{SessionID: "s", TranscriptID: "ab", TranscriptState: store.TranscriptState{NextSeq: 9, Sealed: true},
		Summary: json.RawMessage(`{"exitCode":3,"counts":{"allowed":4,"denied":1}}`),
		Session: store.Session{ID: "s", Cluster: "prod", Run: store.RunKey{Repository: "acme/web", RunID: "7"}, EndedAt: ended,
			Identity: json.RawMessage(`{"subject":"repo:acme/web:ref:refs/heads/main"}`)}}
	sum := summarize(ti)
	if sum.ExitCode == nil || *sum.ExitCode != 3 || sum.Counts["denied"] != 1 || sum.Unsealed || sum.Repository != "acme/web" || sum.Subject == "" || sum.Lines != 9 {
		t.Fatalf("summary = %+v", sum)
	}
	ti.Sealed, ti.Summary = false, nil
	if sum := summarize(ti); !sum.Unsealed || sum.ExitCode != nil {
		t.Fatalf("unsealed after the end = %+v", sum)
	}
}
