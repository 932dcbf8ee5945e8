// Package transcript records what a run did as hash-chained JSON lines, seals
// them with a DSSE envelope signed by the session key, verifies them offline,
// and replays and exports them.
package transcript

import (
	"context"
	"encoding/json"
	"time"
)

// Event types.
const (
	TypeStart      = "start"
	TypeCommand    = "command"
	TypeRequest    = "request"
	TypeStream     = "stream"
	TypeApproval   = "approval"
	TypeCheckpoint = "checkpoint"
	TypeEnd        = "end"
	TypeSeal       = "seal"
)

// Event is one line of a transcript. Seq, Time and Prev are filled by the
// recorder; producers fill Type and the one payload that goes with it.
type Event struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	Type string    `json:"type"`

	Start    *StartEvent    `json:"start,omitempty"`
	Command  *CommandEvent  `json:"command,omitempty"`
	Request  *RequestEvent  `json:"request,omitempty"`
	Stream   *StreamEvent   `json:"stream,omitempty"`
	Approval *ApprovalEvent `json:"approval,omitempty"`
	End      *EndEvent      `json:"end,omitempty"`
	// Checkpoint and Seal payloads are raw so the recorder owns their shape.
	Checkpoint json.RawMessage `json:"checkpoint,omitempty"`
	Seal       json.RawMessage `json:"seal,omitempty"`

	Prev string `json:"prev"` // "sha256:<hex>" of the previous line's bytes; "" on the first line
}

// StartEvent opens a transcript.
type StartEvent struct {
	SessionID string `json:"sessionID"`
	// TranscriptID tells this transcript from the session's others (a run
	// may wrap several commands); uploads carry it as the chunk's Transcript.
	TranscriptID string            `json:"transcriptID,omitempty"`
	Cluster      string            `json:"cluster"`
	Mode         string            `json:"mode"` // "broker" or "local"
	Identity     map[string]string `json:"identity,omitempty"`
	Grant        json.RawMessage   `json:"grant,omitempty"`
	PolicyDigest string            `json:"policyDigest"`
	Tools        map[string]string `json:"tools,omitempty"`
	// ServerIdentity is the cluster's own view of who the run is (one SelfSubjectReview).
	ServerIdentity json.RawMessage `json:"serverIdentity,omitempty"`
	KeyBinding     string          `json:"keyBinding,omitempty"`
	PublicKey      string          `json:"publicKey"` // session ed25519 public key, unpadded base64url
}

// CommandEvent is the wrapped command line.
type CommandEvent struct {
	Argv []string `json:"argv"`
	Dir  string   `json:"dir,omitempty"`
}

// RequestEvent is one API request through the proxy: the fields of an
// audit.k8s.io/v1 Event plus the policy decision.
type RequestEvent struct {
	AuditID                  string          `json:"auditID"`
	Stage                    string          `json:"stage"` // ResponseComplete, or ResponseStarted for streams
	RequestURI               string          `json:"requestURI"`
	Verb                     string          `json:"verb"`
	UserAgent                string          `json:"userAgent,omitempty"`
	ImpersonatedUser         string          `json:"impersonatedUser,omitempty"`
	ObjectRef                *ObjectRef      `json:"objectRef,omitempty"`
	ResponseStatus           *ResponseStatus `json:"responseStatus,omitempty"`
	RequestObject            json.RawMessage `json:"requestObject,omitempty"`
	ResponseObject           json.RawMessage `json:"responseObject,omitempty"`
	RequestReceivedTimestamp time.Time       `json:"requestReceivedTimestamp"`
	StageTimestamp           time.Time       `json:"stageTimestamp"`
	DryRun                   bool            `json:"dryRun,omitempty"`

	Decision    string   `json:"decision"` // allow, deny, approve
	Rule        string   `json:"rule,omitempty"`
	Message     string   `json:"message,omitempty"`
	MaskedPaths []string `json:"maskedPaths,omitempty"`
	// Truncated is set when a body was too large to keep whole; Digest then covers it.
	Truncated bool   `json:"truncated,omitempty"`
	BodyBytes int64  `json:"bodyBytes,omitempty"`
	Digest    string `json:"digest,omitempty"`
}

// ObjectRef is audit.k8s.io/v1 ObjectReference.
type ObjectRef struct {
	Resource    string `json:"resource,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Name        string `json:"name,omitempty"`
	APIGroup    string `json:"apiGroup,omitempty"`
	APIVersion  string `json:"apiVersion,omitempty"`
	Subresource string `json:"subresource,omitempty"`
}

// ResponseStatus is the part of metav1.Status that audit events keep.
type ResponseStatus struct {
	Code    int    `json:"code"`
	Status  string `json:"status,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// StreamEvent is a piece of an exec, attach or port-forward stream.
type StreamEvent struct {
	AuditID  string `json:"auditID"`            // the request that opened the stream
	Protocol string `json:"protocol,omitempty"` // v5.channel.k8s.io, SPDY/3.1+portforward.k8s.io, ...
	Channel  string `json:"channel"`            // stdin, stdout, stderr, error, resize, data, open, close
	Data     string `json:"data,omitempty"`     // text, when it is valid UTF-8 text
	Size     int64  `json:"size,omitempty"`
	Digest   string `json:"digest,omitempty"` // sha256 of binary data, which is not kept
	Exit     *int   `json:"exit,omitempty"`
}

// ApprovalEvent is a held request and what became of it.
type ApprovalEvent struct {
	ID       string    `json:"id"`
	AuditID  string    `json:"auditID"`
	State    string    `json:"state"` // filed, approved, denied, expired
	Rule     string    `json:"rule,omitempty"`
	Reviewer string    `json:"reviewer,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
}

// EndEvent closes the run.
type EndEvent struct {
	ExitCode int              `json:"exitCode"`
	Counts   map[string]int64 `json:"counts"`
}

// Sink receives events. The recorder is one; the proxy and the exec command
// only ever see this interface. Append must return an error when the event
// could not be recorded, so that callers can fail closed.
type Sink interface {
	Append(ctx context.Context, ev Event) error
}
