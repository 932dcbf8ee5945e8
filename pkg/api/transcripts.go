package api

import "time"

// Audit queries: people (not pipelines) read the transcripts the broker holds.
const (
	// PathTranscripts lists transcripts: ?repository=&run=&cluster=&since=&until=&decision=&session=&limit=
	PathTranscripts = "/v1/transcripts"
	// PathTranscriptLines is one transcript's JSON lines. The legacy
	// transcript of a session recorded before transcripts had ids is "-".
	PathTranscriptLines = "/v1/transcripts/{session}/{transcript}"
	// TranscriptResource is what readers need RBAC for, in ApprovalAPIGroup:
	// `list` to list, `get` (resourceNames: the session id) to read one.
	TranscriptResource = "transcripts"
)

// TranscriptSummary is one transcript in an audit list.
type TranscriptSummary struct {
	Session    string `json:"session"`
	Transcript string `json:"transcript"`
	Cluster    string `json:"cluster"`
	Issuer     string `json:"issuer"`
	Repository string `json:"repository"`
	Run        string `json:"run"`
	RunAttempt string `json:"runAttempt,omitempty"`
	// Subject is the run's token subject (e.g. repo:acme/web:ref:refs/heads/main).
	Subject          string    `json:"subject,omitempty"`
	SessionCreatedAt time.Time `json:"sessionCreatedAt"`
	SessionEndedAt   time.Time `json:"sessionEndedAt,omitzero"`
	// CreatedAt and UpdatedAt: when the broker stored its first and latest line.
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	Lines     int64     `json:"lines"`
	Sealed    bool      `json:"sealed"`
	// Unsealed is set when the session ended and this transcript has no seal
	// (the runner was killed, or its tail is still to be pushed).
	Unsealed bool `json:"unsealed,omitempty"`
	// ExitCode and Counts come from the end event of a sealed transcript.
	ExitCode *int             `json:"exitCode,omitempty"`
	Counts   map[string]int64 `json:"counts,omitempty"`
}

// TranscriptList is the answer of GET /v1/transcripts and of GET
// /v1/sessions/{id}/transcript without ?transcript.
type TranscriptList struct {
	Transcripts []TranscriptSummary `json:"transcripts"`
}
