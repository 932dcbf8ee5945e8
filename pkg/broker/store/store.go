// Package store keeps the broker's state: per-run sessions, token bindings,
// the DPoP replay cache, issued credentials, transcripts, the Merkle log,
// approvals and the broker's signing keys.
//
// Two implementations share one interface: SQLite (the default, one broker)
// and PostgreSQL (several brokers behind a load balancer). Open picks one from
// a URL. Every operation that must be atomic across brokers (one session per
// run, first token binding wins, a proof jti used once, log indexes, approval
// decisions, consuming an approval) is made so by the database (unique
// indexes, row locks in transactions), never by the broker's memory.
//
// Time: methods that decide something by time take "now" from the caller, so
// the broker's clock (and a test's fake clock) is the only clock.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Sentinel errors. Implementations wrap them with what was being done, so
// test with errors.Is.
var (
	// ErrNotFound: no such session, approval, binding or log entry.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write contradicts what is stored (a duplicate id, a
	// transcript line that differs from the one already stored at its seq, a
	// log key already used with another hash, a reviewer voting twice).
	ErrConflict = errors.New("conflict")
	// ErrSeqGap: a transcript chunk starts after the next expected seq.
	ErrSeqGap = errors.New("transcript sequence gap")
	// ErrSealed: new lines for a transcript that is already sealed.
	ErrSealed = errors.New("transcript sealed")
	// ErrReplay: a DPoP proof jti that was already used.
	ErrReplay = errors.New("replayed")
	// ErrDecided: the approval is no longer pending (approved, denied or expired).
	ErrDecided = errors.New("approval already decided")
	// ErrExpired: the approval's deadline passed before a decision; it is now expired.
	ErrExpired = errors.New("approval expired")
	// ErrNotApproved: Consume on an approval that is not approved.
	ErrNotApproved = errors.New("approval not approved")
	// ErrConsumed: Consume on an approval that was already used.
	ErrConsumed = errors.New("approval already used")
	// ErrMismatch: Consume with a request digest other than the approved one.
	ErrMismatch = errors.New("request does not match the approved request")
	// ErrInvalid: an argument the store cannot take (an empty id, a negative
	// seq, Required < 1, an unknown verdict).
	ErrInvalid = errors.New("invalid argument")
	// ErrUnsupportedURL: Open with a URL whose scheme is not a known store.
	ErrUnsupportedURL = errors.New("unsupported store URL")
)

// Store is the broker's persistent state. Implementations are safe for
// concurrent use by many goroutines, and (PostgreSQL) by many brokers.
type Store interface {
	// CreateOrGetSession returns the live session (not ended, expires after
	// s.CreatedAt) of s.Run, or creates s when there is none, reporting
	// whether it created. A live-looking session of that run that has
	// expired by s.CreatedAt is marked ended (at its expiry) first. Atomic
	// across goroutines and brokers: for one run key exactly one caller
	// creates. s.ID must be new (ErrConflict otherwise).
	CreateOrGetSession(ctx context.Context, s Session) (_ Session, created bool, _ error)
	// GetSession returns a session by id (ErrNotFound).
	GetSession(ctx context.Context, id string) (Session, error)
	// EndSession sets the session's end time (idempotent: the first end time
	// stays) and returns the session. If any of its transcripts is not
	// sealed (or it has none) it is marked UnsealedEnd.
	EndSession(ctx context.Context, id string, at time.Time) (Session, error)
	// ListSessions returns sessions matching f, newest first.
	ListSessions(ctx context.Context, f SessionFilter) ([]Session, error)
	// ListLiveSessionIDs returns the ids of sessions neither ended nor expired at now.
	ListLiveSessionIDs(ctx context.Context, now time.Time) ([]string, error)

	// BindToken binds a token (issuer + jti) to a session key thumbprint
	// until b.ExpiresAt and returns the thumbprint it is bound to: b's when b
	// is the first (or the earlier binding expired by now), the earlier
	// binding's otherwise. The caller compares.
	BindToken(ctx context.Context, b TokenBinding, now time.Time) (thumbprint string, _ error)

	// UseProofJTI records a DPoP proof jti as used until expiresAt; it
	// returns ErrReplay when it was already used and has not expired by now.
	// Expired entries are purged.
	UseProofJTI(ctx context.Context, jti string, expiresAt, now time.Time) error

	// RecordCredential records a cluster credential issued for a session (for audit).
	RecordCredential(ctx context.Context, c CredentialRecord) error
	// ListCredentials returns a session's credential records, oldest first.
	ListCredentials(ctx context.Context, sessionID string) ([]CredentialRecord, error)

	// A session holds several transcripts (each `kubectl agent exec` of the
	// run records one), named by a transcript id; "" is the one transcript
	// of sessions recorded before transcripts had ids. A transcript exists
	// once its first line is appended.

	// AppendTranscript stores lines as seqs firstSeq, firstSeq+1, ... of a
	// transcript of the session (seqs start at 0). Idempotent by seq: lines
	// at seqs already stored must be byte-equal to the stored ones
	// (ErrConflict otherwise); firstSeq beyond the next expected seq is
	// ErrSeqGap; new lines after the transcript was sealed are ErrSealed.
	// It returns the state after the append. The session must exist
	// (ErrNotFound). Transcripts of one session are independent.
	AppendTranscript(ctx context.Context, sessionID, transcriptID string, firstSeq int64, lines []string) (TranscriptState, error)
	// TranscriptState returns how far a transcript goes (one with no lines
	// yet has NextSeq 0; ErrNotFound for no session).
	TranscriptState(ctx context.Context, sessionID, transcriptID string) (TranscriptState, error)
	// ReadTranscript returns lines [from, to) of a transcript (to <= 0 or
	// beyond the end means up to the end); ErrNotFound when the session or
	// the transcript does not exist.
	ReadTranscript(ctx context.Context, sessionID, transcriptID string, from, to int64) ([]string, error)
	// SealTranscript marks a transcript sealed at its current last line
	// (idempotent: the first summary stays) and keeps summary (the end
	// event's payload, JSON; may be empty). The session is Sealed once all
	// of its transcripts are, which clears its UnsealedEnd marker.
	SealTranscript(ctx context.Context, sessionID, transcriptID string, summary json.RawMessage) (TranscriptState, error)
	// ListTranscripts returns transcripts whose sessions match f, newest
	// session first, then by transcript creation.
	ListTranscripts(ctx context.Context, f TranscriptFilter) ([]TranscriptInfo, error)

	// AppendLeaf appends a leaf hash to the Merkle log under a key (a
	// transcript's LogKey) and returns its index. Indexes are dense and serialized
	// across brokers. Idempotent by key: the same key and hash return the
	// first index; the same key with another hash is ErrConflict.
	AppendLeaf(ctx context.Context, key string, leafHash []byte) (index uint64, _ error)
	// LeafByKey returns the log entry appended under key (ErrNotFound).
	LeafByKey(ctx context.Context, key string) (LogLeaf, error)
	// LeafHashes returns the leaf hashes with indexes in [from, to).
	LeafHashes(ctx context.Context, from, to uint64) ([][]byte, error)
	// LogSize returns the number of leaves.
	LogSize(ctx context.Context) (uint64, error)
	// PutCheckpoint stores a signed checkpoint (idempotent by size: a second
	// checkpoint for the same size keeps the first).
	PutCheckpoint(ctx context.Context, c Checkpoint) error
	// LatestCheckpoint returns the checkpoint with the largest size (ErrNotFound when none).
	LatestCheckpoint(ctx context.Context) (Checkpoint, error)

	// CreateApproval files a pending approval (ErrConflict on a duplicate id;
	// ErrNotFound when its session does not exist).
	CreateApproval(ctx context.Context, a Approval) error
	// GetApproval returns an approval with its decisions (ErrNotFound). Its
	// State is as stored; a pending approval past its deadline reports
	// StateAt(now) == expired until something transitions it.
	GetApproval(ctx context.Context, id string) (Approval, error)
	// ListPendingApprovals returns approvals pending and not expired at now, oldest first.
	ListPendingApprovals(ctx context.Context, now time.Time) ([]Approval, error)
	// Decide records a reviewer's verdict atomically with the state
	// transition and returns the approval after it: a deny makes it denied;
	// an approve makes it approved once Required distinct reviewers approved.
	// A decided approval never changes (ErrDecided); a decision at or after
	// the deadline expires it (ErrExpired); a reviewer voting twice is
	// ErrConflict. On these errors the returned approval is the stored one.
	Decide(ctx context.Context, approvalID string, d Decision) (Approval, error)
	// ExpireApprovals turns pending approvals whose deadline is at or before now into expired; it returns how many.
	ExpireApprovals(ctx context.Context, now time.Time) (int, error)
	// Consume marks an approved approval used, exactly once, for the request
	// it was approved for (ErrNotApproved, ErrMismatch, ErrConsumed).
	Consume(ctx context.Context, approvalID string, req RequestDigest, now time.Time) error

	// ListSigningKeys returns the broker signing keys, oldest first.
	ListSigningKeys(ctx context.Context) ([]SigningKey, error)
	// InsertSigningKey adds a signing key (ErrConflict on a duplicate kid).
	InsertSigningKey(ctx context.Context, k SigningKey) error

	// Purge deletes expired token bindings and DPoP jtis (the broker's
	// reconciler calls it; UseProofJTI also purges now and then).
	Purge(ctx context.Context, now time.Time) error
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Close releases the database.
	Close() error
}

// RunKey identifies one attempt of one pipeline run: one run = one session.
type RunKey struct {
	Issuer     string `json:"issuer"`
	Repository string `json:"repository"`
	RunID      string `json:"runID"`
	RunAttempt string `json:"runAttempt"`
}

// Session is a per-run session.
type Session struct {
	ID      string `json:"id"`
	Run     RunKey `json:"run"`
	Cluster string `json:"cluster"`
	// Identity and Grant are JSON documents (api.Identity, api.Grant), stored
	// byte for byte.
	Identity json.RawMessage `json:"identity"`
	Grant    json.RawMessage `json:"grant"`
	Policy   string          `json:"policy,omitempty"`
	// KeyThumbprint is the RFC 7638 thumbprint of the session key, PublicKey
	// its raw bytes, KeyBinding the broker-signed binding JWT.
	KeyThumbprint string    `json:"keyThumbprint"`
	PublicKey     []byte    `json:"publicKey"`
	KeyBinding    string    `json:"keyBinding"`
	CreatedAt     time.Time `json:"createdAt"`
	ExpiresAt     time.Time `json:"expiresAt"`
	// EndedAt is zero while the session has not ended.
	EndedAt time.Time `json:"endedAt,omitzero"`
	// Sealed is set when every transcript of the session (at least one)
	// has its seal line.
	Sealed bool `json:"sealed"`
	// UnsealedEnd is set when the session ended while a transcript of it was
	// not sealed (e.g. the runner was killed) or it had none; seals of all
	// of its transcripts clear it.
	UnsealedEnd bool `json:"unsealedEnd,omitempty"`
}

// Ended reports whether the session has ended.
func (s Session) Ended() bool { return !s.EndedAt.IsZero() }

// LiveAt reports whether the session is neither ended nor expired at now.
func (s Session) LiveAt(now time.Time) bool { return !s.Ended() && now.Before(s.ExpiresAt) }

// SessionState filters sessions by their state.
type SessionState string

// Session states for SessionFilter.
const (
	SessionAny     SessionState = ""
	SessionLive    SessionState = "live"    // not ended, not expired at Now
	SessionEnded   SessionState = "ended"   // EndedAt set
	SessionExpired SessionState = "expired" // not ended but expired at Now
)

// SessionFilter selects sessions for audit queries. Empty fields match everything.
type SessionFilter struct {
	Issuer     string
	Repository string
	RunID      string
	Cluster    string
	// Since and Until bound CreatedAt: Since <= CreatedAt < Until.
	Since, Until time.Time
	State        SessionState
	// Now is the time States are judged at (required for live/expired).
	Now time.Time
	// Limit caps the result (0: 1000).
	Limit int
}

// TokenBinding binds a subject token to the session key that first presented it.
type TokenBinding struct {
	Issuer     string
	JTI        string
	Thumbprint string
	ExpiresAt  time.Time
}

// CredentialRecord is a cluster credential issued for a session (never the token itself).
type CredentialRecord struct {
	SessionID string    `json:"sessionID"`
	Kind      string    `json:"kind"` // e.g. "kubernetes", "eks"
	IssuedAt  time.Time `json:"issuedAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// LogKey is the Merkle log key of a sealed transcript: the session id and
// the transcript id joined by "/", or the bare session id for transcript ""
// (as logged before sessions held several transcripts).
func LogKey(sessionID, transcriptID string) string {
	if transcriptID == "" {
		return sessionID
	}
	return sessionID + "/" + transcriptID
}

// TranscriptInfo describes one stored transcript, for audit queries.
type TranscriptInfo struct {
	SessionID    string `json:"sessionID"`
	TranscriptID string `json:"transcriptID"`
	TranscriptState
	// CreatedAt and UpdatedAt are when the broker stored its first and its latest line.
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// Summary is the end event's payload once sealed (JSON), nil before.
	Summary json.RawMessage `json:"summary,omitempty"`
	// Session is the session it belongs to.
	Session Session `json:"session"`
}

// TranscriptFilter selects transcripts for audit queries: the session
// filter (run, cluster, creation time of the session; State is ignored),
// and optionally one session.
type TranscriptFilter struct {
	SessionFilter
	SessionID string
}

// TranscriptState is how far a transcript goes.
type TranscriptState struct {
	// NextSeq is the seq the next line must have; every line before it is stored.
	NextSeq int64 `json:"nextSeq"`
	// LastDigest is "sha256:<hex>" of the bytes of line NextSeq-1 ("" when empty):
	// the "prev" the next line must carry.
	LastDigest string `json:"lastDigest"`
	Sealed     bool   `json:"sealed"`
}

// LogLeaf is one entry of the Merkle log.
type LogLeaf struct {
	Index     uint64
	Key       string
	LeafHash  []byte
	CreatedAt time.Time
}

// Checkpoint is a signed statement of the log's size and root.
type Checkpoint struct {
	Size      uint64
	RootHash  []byte
	Signed    string // the signed note
	CreatedAt time.Time
}

// ApprovalState is where an approval is in its life.
type ApprovalState string

// Approval states: pending -> approved | denied | expired, never back.
const (
	ApprovalPending  ApprovalState = "pending"
	ApprovalApproved ApprovalState = "approved"
	ApprovalDenied   ApprovalState = "denied"
	ApprovalExpired  ApprovalState = "expired"
)

// Verdict is a reviewer's answer.
type Verdict string

// Verdicts.
const (
	VerdictApprove Verdict = "approve"
	VerdictDeny    Verdict = "deny"
)

// RequestDigest identifies the exact request an approval is for.
type RequestDigest struct {
	Method     string `json:"method"`
	Path       string `json:"path"`
	BodyDigest string `json:"bodyDigest"` // "sha256:<hex>" of the request body
}

// Approval is a held request waiting for reviewers.
type Approval struct {
	ID        string        `json:"id"`
	SessionID string        `json:"sessionID"`
	Request   RequestDigest `json:"request"`
	Rule      string        `json:"rule"`
	// Details is a JSON document for reviewers (attributes, dry-run diff, ...).
	Details json.RawMessage `json:"details,omitempty"`
	// Required is how many distinct reviewers must approve (at least 1).
	Required int `json:"required"`
	// Groups are the reviewer groups allowed to decide (empty: any reviewer);
	// the broker checks membership, the store keeps them.
	Groups     []string      `json:"groups,omitempty"`
	State      ApprovalState `json:"state"`
	CreatedAt  time.Time     `json:"createdAt"`
	ExpiresAt  time.Time     `json:"expiresAt"`
	DecidedAt  time.Time     `json:"decidedAt,omitzero"`
	ConsumedAt time.Time     `json:"consumedAt,omitzero"`
	Decisions  []Decision    `json:"decisions,omitempty"`
}

// StateAt is the approval's state as of now: a pending approval past its
// deadline is expired even before ExpireApprovals stores that.
func (a Approval) StateAt(now time.Time) ApprovalState {
	if a.State == ApprovalPending && !now.Before(a.ExpiresAt) {
		return ApprovalExpired
	}
	return a.State
}

// Decision is one reviewer's verdict on an approval.
type Decision struct {
	Reviewer string    `json:"reviewer"`
	Verdict  Verdict   `json:"verdict"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
}

// SigningKey is a broker signing key, shared by all brokers of one store.
type SigningKey struct {
	KID       string
	Algorithm string // e.g. "EdDSA", "ES256"
	// Private is the private key material (e.g. PKCS#8 DER). It is a secret:
	// never log it.
	Private     []byte
	CreatedAt   time.Time
	RetireAfter time.Time
}
