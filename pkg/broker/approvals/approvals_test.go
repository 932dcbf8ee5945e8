package approvals

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
)

func TestSettings(t *testing.T) {
	s, err := ParseSettings([]config.TrustRule{{Name: "deploy", Approvals: json.RawMessage(
		`{"timeout":"5m","required":2,"groups":["sre"],"webhook":"https://hooks.example/x","rules":{"quick":{"timeout":"10s","required":1}}}`)}})
	if err != nil {
		t.Fatal(err)
	}
	r := s.Resolve("deploy", "other")
	if r.Timeout.String() != "5m0s" || r.Required != 2 || r.Groups[0] != "sre" || r.Webhook == "" {
		t.Errorf("trust rule settings: %+v", r)
	}
	q := s.Resolve("deploy", "quick")
	if q.Timeout.String() != "10s" || q.Required != 2 {
		t.Errorf("a rule override may shorten the timeout but never lower the approvals: %+v", q)
	}
	if d := s.Resolve("unknown", "x"); d.Timeout != DefaultTimeout || d.Required != 1 {
		t.Errorf("defaults: %+v", d)
	}
	for _, bad := range []string{`{"timeut":"5m"}`, `{"timeout":"1ms"}`, `{"required":99}`, `{"webhook":"ftp://x"}`, `{"rules":{"a":{"webhook":"https://x"}}}`} {
		if _, err := ParseSettings([]config.TrustRule{{Name: "r", Approvals: json.RawMessage(bad)}}); err == nil || !strings.Contains(err.Error(), `trust rule "r"`) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestSamePersonAndPipeline(t *testing.T) {
	req := api.Identity{Subject: "repo:acme/app:ref:refs/heads/main", Claims: map[string]string{"actor": "Bob", "user_email": "dana@example.com"}}
	for _, rv := range []Reviewer{{Name: "bob"}, {Name: "oidc:bob"}, {Name: "bob@example.com"}, {Name: "x", Email: "dana@example.com"}, {Name: "dana"}} {
		if !sameperson(rv, req) {
			t.Errorf("%+v is the requester", rv)
		}
	}
	if sameperson(Reviewer{Name: "alice"}, req) {
		t.Error("alice is not the requester")
	}
	if !isPipeline(Reviewer{Name: "system:serviceaccount:ns:ka-1"}) || !isPipeline(Reviewer{Name: "x", Groups: []string{"system:serviceaccounts"}}) || isPipeline(Reviewer{Name: "alice"}) {
		t.Error("isPipeline")
	}
}

func TestWebhookMessageEscapes(t *testing.T) {
	m := Message(api.Approval{ID: "apr-1", Rule: "r", Method: "DELETE", Path: "/x",
		Attributes: api.ApprovalAttributes{Verb: "delete", Resource: "configmaps", Name: "<!channel>", Namespace: "n"},
		URL:        "https://b/approvals/apr-1", ApproveCommand: "kubectl agent approvals approve apr-1"})
	if strings.Contains(m.Text, "<!channel>") || !strings.Contains(m.Text, "&lt;!channel&gt;") || len(m.Blocks) != 2 {
		t.Errorf("message: %+v", m)
	}
}

func FuzzParseSettings(f *testing.F) {
	for _, s := range []string{`{}`, `{"timeout":"5m"}`, `{"rules":{"a":{"required":2}}}`, `null`, `{"groups":["a"]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSettings([]config.TrustRule{{Name: "r", Approvals: json.RawMessage(in)}})
		if err != nil {
			return
		}
		r := s.Resolve("r", "a")
		if r.Required < 1 || r.Timeout < MinTimeout || r.Timeout > MaxTimeout {
			t.Fatalf("%s resolved to %+v", in, r)
		}
	})
}
