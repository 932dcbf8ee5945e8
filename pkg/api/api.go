// Package api holds the wire types that kubectl-agent and agent-broker share.
// Field names are part of the protocol: change them only with both sides.
package api

import "time"

// Token exchange (RFC 8693) at POST /v1/token, form-encoded request.
const (
	PathToken    = "/v1/token"
	PathClusters = "/v1/clusters"
	PathJWKS     = "/.well-known/jwks.json"
	// Session calls; {id} is the session id. All carry
	// "Authorization: DPoP <session_token>" and a "DPoP" proof header.
	PathSession           = "/v1/sessions/{id}"            // GET: session info; DELETE: end the session
	PathSessionCredential = "/v1/sessions/{id}/credential" // POST: a fresh cluster credential
	PathSessionTranscript = "/v1/sessions/{id}/transcript" // POST: append a chunk; GET: the stored transcript
	PathApprovals         = "/v1/approvals"                // POST: file an approval (session, DPoP); GET: list (reviewer)
	PathApproval          = "/v1/approvals/{id}"           // GET: status, long-poll with ?wait=30s
	PathApprovalDecision  = "/v1/approvals/{id}/decision"  // POST: approve or deny (reviewer)

	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeIDToken       = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeDPoP          = "DPoP"

	// Form fields beyond RFC 8693's.
	FormSessionKey = "session_key" // the client's ed25519 public key, raw 32 bytes, unpadded base64url
)

// TokenResponse is the RFC 8693 response, with the session and the first
// cluster credential.
type TokenResponse struct {
	AccessToken     string  `json:"access_token"`      // the session token: a broker-signed JWT bound (cnf.jkt) to the session key
	IssuedTokenType string  `json:"issued_token_type"` // TokenTypeAccessToken
	TokenType       string  `json:"token_type"`        // "DPoP"
	ExpiresIn       int64   `json:"expires_in"`        // seconds until the session ends
	Session         Session `json:"session"`
}

// Session is a per-run session as the broker reports it.
type Session struct {
	ID        string    `json:"id"`
	Cluster   string    `json:"cluster"`
	ExpiresAt time.Time `json:"expiresAt"`
	Identity  Identity  `json:"identity"`
	Grant     Grant     `json:"grant"`
	// Policy is the grant's policy document (YAML or JSON, the policy file
	// format); the client combines it with --policy, local rules only tightening.
	Policy string `json:"policy,omitempty"`
	// KeyBinding is a broker-signed JWT (typ "kubectl-agent-binding+jwt") that
	// binds the session key (cnf.jwk) to the run's verified identity. Transcript
	// seals carry it, so a verifier needs only the broker's JWKS.
	KeyBinding string `json:"keyBinding"`
	// Credential is the cluster credential issued for the session.
	Credential *Credential `json:"credential,omitempty"`
	Ended      bool        `json:"ended,omitempty"`
}

// Identity is the verified pipeline identity of a run.
type Identity struct {
	Issuer      string            `json:"issuer"`
	Subject     string            `json:"subject"`
	Repository  string            `json:"repository,omitempty"`
	RunID       string            `json:"runID,omitempty"`
	RunAttempt  string            `json:"runAttempt,omitempty"`
	Ref         string            `json:"ref,omitempty"`
	Workflow    string            `json:"workflow,omitempty"`
	Environment string            `json:"environment,omitempty"`
	Job         string            `json:"job,omitempty"`
	Claims      map[string]string `json:"claims,omitempty"` // other string claims, for rules and transcripts
}

// Grant is what the matching trust rule gave the run.
type Grant struct {
	Rule       string       `json:"rule"`
	Namespaces []string     `json:"namespaces,omitempty"`
	Rules      []PolicyRule `json:"rules,omitempty"` // RBAC rules, in each namespace (or cluster-wide when Namespaces is empty)
	IAMRole    string       `json:"iamRole,omitempty"`
	TTL        Duration     `json:"ttl"`
}

// PolicyRule mirrors rbac/v1 PolicyRule.
type PolicyRule struct {
	Verbs           []string `json:"verbs"`
	APIGroups       []string `json:"apiGroups,omitempty"`
	Resources       []string `json:"resources,omitempty"`
	ResourceNames   []string `json:"resourceNames,omitempty"`
	NonResourceURLs []string `json:"nonResourceURLs,omitempty"`
}

// Credential is a cluster credential: a bearer token for the cluster's API.
type Credential struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
	Server    string    `json:"server,omitempty"`
	CAData    []byte    `json:"caData,omitempty"`
}

// Cluster is one entry of GET /v1/clusters.
type Cluster struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	CAData []byte `json:"caData,omitempty"`
}

// ClusterList is the body of GET /v1/clusters.
type ClusterList struct {
	Clusters []Cluster `json:"clusters"`
}

// Error is an RFC 6749 error body.
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func (e *Error) Error() string {
	if e.Description == "" {
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// Duration is a time.Duration that marshals as a Go duration string ("1h0m0s").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return &Error{Code: "invalid_request", Description: "duration must be a string such as \"1h\""}
	}
	v, err := time.ParseDuration(string(b[1 : len(b)-1]))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// TranscriptChunk is the body of POST /v1/sessions/{id}/transcript: whole
// transcript lines starting at sequence number FirstSeq. Uploads are
// idempotent by sequence number, so a client resends from what the broker
// last acknowledged.
type TranscriptChunk struct {
	// Transcript names one transcript of the session: a run (one session)
	// may wrap several commands, each with its own sealed transcript. ""
	// is the session's first (and, for older clients, only) transcript.
	Transcript string   `json:"transcript,omitempty"`
	FirstSeq   int64    `json:"firstSeq"`
	Lines      []string `json:"lines"`
}

// TranscriptAck answers a chunk upload.
type TranscriptAck struct {
	NextSeq int64 `json:"nextSeq"` // the broker holds every line before this
	Sealed  bool  `json:"sealed"`
	// Inclusion is set once the sealed transcript is in the broker's log.
	Inclusion *InclusionProof `json:"inclusion,omitempty"`
}

// InclusionProof shows that a sealed transcript is a leaf of the broker's
// RFC 6962 Merkle log.
type InclusionProof struct {
	LeafIndex  uint64   `json:"leafIndex"`
	TreeSize   uint64   `json:"treeSize"`
	LeafHash   []byte   `json:"leafHash"`
	Hashes     [][]byte `json:"hashes"`
	Checkpoint string   `json:"checkpoint"` // a signed note
}
