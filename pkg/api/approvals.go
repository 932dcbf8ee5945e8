package api

import "time"

// Approvals: a request that matches an `approve` rule is filed by the
// client (POST PathApprovals, a DPoP session call), which then long-polls
// PathApproval until the approval is decided, and uses an approved one once
// (POST PathApprovalConsume) for exactly the request it was filed for.
// Reviewers list (GET PathApprovals), read (GET PathApproval) and decide
// (POST PathApprovalDecision) with "Authorization: Bearer <their own
// Kubernetes token>", which the broker checks with a TokenReview and
// authorizes with a SubjectAccessReview.
const (
	PathApprovalConsume = "/v1/approvals/{id}/consume" // POST: use an approved approval, once (session, DPoP)

	// ApprovalWaitParam is the long-poll query parameter of GET PathApproval
	// ("30s"; the broker caps it at MaxApprovalWait).
	ApprovalWaitParam = "wait"
	MaxApprovalWait   = 30 * time.Second

	// RBAC of reviewers: who may decide is whoever the cluster allows the
	// verb "approve" on approvals.kubectl-agent.io (name = approval id,
	// namespace = the held request's namespace); reading needs "get", listing
	// "list".
	ApprovalAPIGroup = "kubectl-agent.io"
	ApprovalResource = "approvals"
	ApprovalVerb     = "approve"
)

// Approval states as the API reports them.
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
	ApprovalDenied   = "denied"
	ApprovalExpired  = "expired"
)

// Verdicts of reviewers.
const (
	VerdictApprove = "approve"
	VerdictDeny    = "deny"
)

// ApprovalFiling is the body of POST /v1/approvals: one held request.
type ApprovalFiling struct {
	// AuditID is the proxy's id of the held request. Filing is idempotent per
	// session and AuditID: a retried POST returns the approval filed first.
	AuditID string `json:"auditID"`
	// Method, Path (the request URI, with its query) and BodyDigest
	// ("sha256:<hex>" of the exact body bytes) are what an approval covers.
	Method     string             `json:"method"`
	Path       string             `json:"path"`
	BodyDigest string             `json:"bodyDigest"`
	Attributes ApprovalAttributes `json:"attributes"`
	// Rule and Message are the policy rule that held the request.
	Rule    string `json:"rule"`
	Message string `json:"message,omitempty"`
	// Preview is what the request would do (a server-side dry run), masked.
	Preview *Preview `json:"preview,omitempty"`
	// Command is the wrapped command line, for reviewers.
	Command []string `json:"command,omitempty"`
}

// ApprovalAttributes are the held request's authorization attributes.
type ApprovalAttributes struct {
	Verb        string `json:"verb"`
	APIGroup    string `json:"apiGroup,omitempty"`
	APIVersion  string `json:"apiVersion,omitempty"`
	Resource    string `json:"resource,omitempty"`
	Subresource string `json:"subresource,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Name        string `json:"name,omitempty"`
	Path        string `json:"path,omitempty"`
}

// Preview kinds.
const (
	PreviewDiff   = "diff"   // update, patch: the live object against the dry-run result
	PreviewObject = "object" // create: the object as the apiserver would store it
	PreviewDelete = "delete" // delete: what would go
	PreviewNone   = "none"   // no dry run possible (exec, connect, non-resource); Note says why
)

// Preview is what a held request would do, from a server-side dry run
// (dryRun=All), with every secret value masked.
type Preview struct {
	Kind string `json:"kind"`
	// DryRun reports whether the apiserver accepted the dry run; when it
	// refused, Note holds its answer (the real request would fail the same way).
	DryRun bool `json:"dryRun"`
	// Diff is a unified diff of the live object against the dry-run result
	// (YAML, managedFields and resourceVersion left out).
	Diff string `json:"diff,omitempty"`
	// Object is the created object (kind "object") or the deleted one (kind
	// "delete"), as YAML.
	Object string `json:"object,omitempty"`
	// Deletes counts what a namespace deletion would remove, by resource.
	Deletes []DeleteCount `json:"deletes,omitempty"`
	Note    string        `json:"note,omitempty"`
}

// DeleteCount is how many objects of one resource a deletion would remove.
type DeleteCount struct {
	Resource string `json:"resource"` // plural, with the group when not core: "deployments.apps"
	Count    int    `json:"count"`
}

// Approval is an approval as the broker reports it.
type Approval struct {
	ID         string             `json:"id"`
	State      string             `json:"state"`
	SessionID  string             `json:"sessionID"`
	Cluster    string             `json:"cluster,omitempty"`
	Method     string             `json:"method"`
	Path       string             `json:"path"`
	BodyDigest string             `json:"bodyDigest"`
	AuditID    string             `json:"auditID,omitempty"`
	Attributes ApprovalAttributes `json:"attributes"`
	Rule       string             `json:"rule"`
	Message    string             `json:"message,omitempty"`
	Preview    *Preview           `json:"preview,omitempty"`
	Command    []string           `json:"command,omitempty"`
	// Requester is the pipeline identity that made the request.
	Requester Identity `json:"requester"`
	// Required approvals and, when set, the groups reviewers must be in.
	Required   int                `json:"required"`
	Groups     []string           `json:"groups,omitempty"`
	CreatedAt  time.Time          `json:"createdAt"`
	ExpiresAt  time.Time          `json:"expiresAt"`
	DecidedAt  time.Time          `json:"decidedAt,omitzero"`
	ConsumedAt time.Time          `json:"consumedAt,omitzero"`
	Decisions  []ApprovalDecision `json:"decisions,omitempty"`
	// URL is the approval's web page; ApproveCommand the CLI command that
	// approves it.
	URL            string `json:"url,omitempty"`
	ApproveCommand string `json:"approveCommand,omitempty"`
}

// ApprovalDecision is one reviewer's verdict.
type ApprovalDecision struct {
	Reviewer string    `json:"reviewer"`
	Verdict  string    `json:"verdict"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
}

// ApprovalList is the body of GET /v1/approvals.
type ApprovalList struct {
	Approvals []Approval `json:"approvals"`
}

// DecisionRequest is the body of POST /v1/approvals/{id}/decision.
type DecisionRequest struct {
	Verdict string `json:"verdict"` // approve | deny
	Reason  string `json:"reason,omitempty"`
}

// ConsumeRequest is the body of POST /v1/approvals/{id}/consume: the request
// about to be sent, which must be the approved one.
type ConsumeRequest struct {
	Method     string `json:"method"`
	Path       string `json:"path"`
	BodyDigest string `json:"bodyDigest"`
}

// ApprovalSettings are the approval settings of a trust rule (its
// `approvals` field in the broker configuration), with per-policy-rule
// overrides.
type ApprovalSettings struct {
	// Timeout is how long an approval waits before it expires (a timeout
	// denies). Default 15m.
	Timeout *Duration `json:"timeout,omitempty"`
	// Required is how many distinct reviewers must approve (default 1).
	Required int `json:"required,omitempty"`
	// Groups: reviewers must be in one of these groups (default: any
	// reviewer RBAC allows).
	Groups []string `json:"groups,omitempty"`
	// Webhook is a URL that gets a Slack-compatible JSON message per filed
	// approval.
	Webhook string `json:"webhook,omitempty"`
	// Rules overrides timeout, required and groups per policy rule name.
	Rules map[string]ApprovalSettings `json:"rules,omitempty"`
}
