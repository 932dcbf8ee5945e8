// Package policy holds the policy file's schema and its evaluation: which API
// requests a run may make, which need a human, and what is masked. It also maps
// kubectl command lines to the requests they would make, for `check`.
package policy

// Attributes describe one API request the way Kubernetes authorization sees
// it. The proxy derives them from HTTP requests; `check` from kubectl argv.
type Attributes struct {
	Verb            string `json:"verb"` // get list watch create update patch delete deletecollection impersonate, or an HTTP verb for non-resource URLs
	APIGroup        string `json:"apiGroup"`
	APIVersion      string `json:"apiVersion,omitempty"`
	Resource        string `json:"resource,omitempty"`
	Subresource     string `json:"subresource,omitempty"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name,omitempty"`
	ResourceRequest bool   `json:"resourceRequest"`
	Path            string `json:"path"`
	DryRun          bool   `json:"dryRun,omitempty"`
	// Impersonate lists who the request impersonates (kubectl --as), "user:NAME", "group:NAME", "uid:UID",
	// and "extra:KEY=VALUE" (Impersonate-Extra-KEY). Evaluate also checks each entry as the verb
	// `impersonate` on users, groups, serviceaccounts, uids or userextras/KEY (see ImpersonationAttributes).
	Impersonate []string `json:"impersonate,omitempty"`
	// Command is the argv of a pods/exec request (its `command=` query parameters), for CEL's `exec`.
	Command []string `json:"command,omitempty"`
}

// Action is what a rule (or the default) says to do.
type Action string

// Actions, in increasing strength: deny wins over approve, approve over allow.
const (
	Allow   Action = "allow"
	Approve Action = "approve"
	Deny    Action = "deny"
)
