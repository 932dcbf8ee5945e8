// Package bypass holds the deny-bypass corpus: kubectl command lines and raw
// HTTP requests that must be denied (and some that must be allowed) under the
// corpus policy in this folder. `check`'s engine runs it offline
// (bypass_test.go); the proxy's tests run the same cases through the live
// proxy.
//
// Data format (cases.yaml):
//
//	deny:                 # cases that must be denied (or refused: a path the
//	                      # proxy will not parse counts as denied)
//	- kubectl: delete ns victim          # a kubectl command line, without "kubectl";
//	                                     # shell-like quoting ('...', "...", \x);
//	                                     # -f/-k paths are relative to this folder
//	  why: optional note
//	- raw:                               # a raw HTTP request
//	    method: DELETE
//	    path: /api/v1/namespaces/%76ictim   # as sent on the wire: escaped path and ?query
//	    body: '{"roleRef": ...}'            # optional JSON/YAML request body
//	    impersonate: ["user:admin"]         # optional, as Impersonate-User/-Group/-Uid headers
//	allow:
//	- ...                 # cases that must be allowed
//
// The default namespace of kubectl cases is "default".
package bypass

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
)

// Corpus is the loaded cases and policy.
type Corpus struct {
	Dir    string
	Policy *policy.Policy
	Deny   []Case `json:"deny"`
	Allow  []Case `json:"allow"`
}

// Case is one command line or raw request.
type Case struct {
	Kubectl string `json:"kubectl,omitempty"`
	Raw     *Raw   `json:"raw,omitempty"`
	Why     string `json:"why,omitempty"`
}

// Raw is an HTTP request as a client would send it.
type Raw struct {
	Method      string   `json:"method"`
	Path        string   `json:"path"` // escaped path, optionally with ?query
	Body        string   `json:"body,omitempty"`
	Impersonate []string `json:"impersonate,omitempty"`
}

// String names the case in test output.
func (c Case) String() string {
	if c.Raw != nil {
		s := c.Raw.Method + " " + c.Raw.Path
		if len(c.Raw.Impersonate) > 0 {
			s += " as " + strings.Join(c.Raw.Impersonate, ",")
		}
		return s
	}
	return "kubectl " + c.Kubectl
}

// Load reads cases.yaml and policy.yaml from dir.
func Load(dir string) (*Corpus, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cases.yaml"))
	if err != nil {
		return nil, fmt.Errorf("reading the bypass corpus: %w", err)
	}
	c := &Corpus{Dir: dir}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Join(dir, "cases.yaml"), err)
	}
	for i, list := range [][]Case{c.Deny, c.Allow} {
		for j, k := range list {
			if (k.Kubectl == "") == (k.Raw == nil) {
				return nil, fmt.Errorf("cases.yaml: %s[%d]: give exactly one of kubectl and raw", []string{"deny", "allow"}[i], j)
			}
			if k.Raw != nil && (k.Raw.Method == "" || k.Raw.Path == "") {
				return nil, fmt.Errorf("cases.yaml: %s[%d]: raw needs method and path", []string{"deny", "allow"}[i], j)
			}
		}
	}
	if c.Policy, err = policy.Load(filepath.Join(dir, "policy.yaml")); err != nil {
		return nil, err
	}
	return c, nil
}

// Argv splits the case's kubectl line into words, with "kubectl" first.
func (c Case) Argv() ([]string, error) {
	words, err := SplitWords(c.Kubectl)
	if err != nil {
		return nil, err
	}
	return append([]string{"kubectl"}, words...), nil
}

// SplitWords splits a command line the way a POSIX shell would for plain
// words, '...' and "..." quoting and backslash escapes (no expansions).
func SplitWords(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated '")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case ch == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New(`unterminated "`)
			}
			inWord = true
		case ch == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// Result is the offline decision for one case.
type Result struct {
	Action   policy.Action
	Requests []policy.MappedRequest
	// Decisions are per request, in order.
	Decisions []policy.Decision
	// Refused is set when the request was refused before evaluation (a
	// non-canonical path); Action is then deny.
	Refused error
}

// Decide runs a case through check's engine: MapKubectl (or CanonicalPath
// and ParsePath for raw requests) and Evaluate; the strongest decision wins.
// Evaluation errors deny, as in the proxy.
func (c *Corpus) Decide(ctx context.Context, k Case) (Result, error) {
	var reqs []policy.MappedRequest
	if k.Raw != nil {
		r, err := RawRequest(k.Raw)
		if err != nil {
			return Result{Action: policy.Deny, Refused: err}, nil
		}
		reqs = []policy.MappedRequest{r}
	} else {
		argv, err := k.Argv()
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", k, err)
		}
		reqs, err = policy.MapKubectl(argv, policy.MapOptions{DefaultNamespace: "default", Dir: c.Dir})
		if err != nil {
			var ce interface{ Error() string }
			if errors.As(err, &ce) && isRefusal(err) {
				return Result{Action: policy.Deny, Refused: err}, nil
			}
			return Result{}, err
		}
	}
	res := Result{Action: policy.Allow, Requests: reqs}
	for _, r := range reqs {
		d, err := c.Policy.Evaluate(ctx, policy.Input{Attributes: r.Attributes, Object: r.Object})
		if err != nil {
			d = policy.Decision{Action: policy.Deny, Rule: d.Rule, Message: err.Error()}
		}
		res.Decisions = append(res.Decisions, d)
		if rank(d.Action) > rank(res.Action) {
			res.Action = d.Action
		}
	}
	return res, nil
}

// isRefusal reports a --raw path that CanonicalPath refused.
func isRefusal(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "request path")
}

func rank(a policy.Action) int {
	switch a {
	case policy.Allow:
		return 0
	case policy.Approve:
		return 1
	}
	return 2
}

// RawRequest derives a raw case's attributes as the proxy does: the escaped
// path must be canonical, then ParsePath on the decoded path and query.
func RawRequest(r *Raw) (policy.MappedRequest, error) {
	escaped, rawQuery, _ := strings.Cut(r.Path, "?")
	if err := policy.CanonicalPath(escaped); err != nil {
		return policy.MappedRequest{}, err
	}
	u, err := url.Parse(r.Path)
	if err != nil {
		return policy.MappedRequest{}, fmt.Errorf("request path %q: %w", r.Path, err)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return policy.MappedRequest{}, fmt.Errorf("request query %q: %w", rawQuery, err)
	}
	a, err := policy.ParsePath(r.Method, u.Path, q)
	if err != nil {
		return policy.MappedRequest{}, err
	}
	a.Impersonate = r.Impersonate
	mr := policy.MappedRequest{Attributes: a, Method: r.Method, Description: "raw"}
	if r.Body != "" {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(r.Body), &obj); err != nil {
			return policy.MappedRequest{}, fmt.Errorf("request body: %w", err)
		}
		mr.Object = obj
	}
	return mr, nil
}
