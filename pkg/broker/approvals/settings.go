package approvals

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
)

// Defaults of approvals.
const (
	DefaultTimeout = 15 * time.Minute
	MaxTimeout     = 24 * time.Hour
	MinTimeout     = 5 * time.Second
	MaxRequired    = 10
)

// Resolved are the settings that apply to one filed approval.
type Resolved struct {
	Timeout  time.Duration
	Required int
	Groups   []string
	Webhook  string
}

// Settings are the approval settings of every trust rule, by rule name.
type Settings map[string]api.ApprovalSettings

// ParseSettings reads the `approvals` field of each trust rule. Unknown fields
// and bad values are refused, naming the rule, so that a broker never runs
// with approval settings it half understood.
func ParseSettings(rules []config.TrustRule) (Settings, error) {
	out := Settings{}
	for _, r := range rules {
		if len(bytes.TrimSpace(r.Approvals)) == 0 || string(bytes.TrimSpace(r.Approvals)) == "null" {
			continue
		}
		var s api.ApprovalSettings
		dec := json.NewDecoder(bytes.NewReader(r.Approvals))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("trust rule %q: approvals: %v (fields: timeout, required, groups, webhook, rules)", r.Name, err)
		}
		if err := checkSettings(s, true); err != nil {
			return nil, fmt.Errorf("trust rule %q: approvals: %w", r.Name, err)
		}
		for name, o := range s.Rules {
			if err := checkSettings(o, false); err != nil {
				return nil, fmt.Errorf("trust rule %q: approvals.rules[%s]: %w", r.Name, name, err)
			}
		}
		out[r.Name] = s
	}
	return out, nil
}

func checkSettings(s api.ApprovalSettings, top bool) error {
	if s.Timeout != nil && (s.Timeout.Duration < MinTimeout || s.Timeout.Duration > MaxTimeout) {
		return fmt.Errorf("timeout %s: use between %s and %s", s.Timeout.Duration, MinTimeout, MaxTimeout)
	}
	if s.Required < 0 || s.Required > MaxRequired {
		return fmt.Errorf("required %d: use 1 to %d", s.Required, MaxRequired)
	}
	if !top && (s.Webhook != "" || len(s.Rules) > 0) {
		return fmt.Errorf("only timeout, required and groups can be set per policy rule")
	}
	if s.Webhook != "" {
		u, err := url.Parse(s.Webhook)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("webhook %q is not an http(s) URL", s.Webhook)
		}
	}
	return nil
}

// Resolve returns the settings for an approval filed under trust rule
// trustRule for policy rule policyRule: the policy rule's overrides, then
// the trust rule's, then the defaults.
func (s Settings) Resolve(trustRule, policyRule string) Resolved {
	out := Resolved{Timeout: DefaultTimeout, Required: 1}
	tr, ok := s[trustRule]
	if !ok {
		return out
	}
	apply := func(a api.ApprovalSettings) {
		if a.Timeout != nil && a.Timeout.Duration > 0 {
			out.Timeout = a.Timeout.Duration
		}
		if a.Required > 0 {
			out.Required = a.Required
		}
		if len(a.Groups) > 0 {
			out.Groups = append([]string(nil), a.Groups...)
		}
	}
	apply(tr)
	out.Webhook = tr.Webhook
	if o, ok := tr.Rules[policyRule]; ok {
		// The rule name comes from the client: an override never lowers
		// the trust rule's number of approvals.
		floor := out.Required
		apply(o)
		out.Required = max(out.Required, floor)
	}
	return out
}
