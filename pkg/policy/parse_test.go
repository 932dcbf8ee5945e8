package policy

import (
	"context"
	"net/url"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	head := "apiVersion: kubectl-agent.io/v1alpha1\nkind: Policy\n"
	cases := []struct{ src, want string }{
		{head + "rules:\n- name: a\n  action: deny\n- name: b\n  action: deny\n- name: no-exec\n  action: deny\n  verbs: [delet]\n", `test.yaml: rules[2] "no-exec": verbs: unknown verb "delet" (use get, list`},
		{head + "rules:\n- name: a\n  action: deny\n  verb: [get]\n", `rules[0] "a": unknown field "verb"`},
		{head + "rulez: []\n", `unknown field "rulez"`},
		{head + "rules:\n- action: deny\n", `rules[0]: name: every rule needs a name`},
		{head + "rules:\n- name: a\n  action: block\n", `rules[0] "a": action: unknown action "block"`},
		{head + "rules:\n- name: a\n  action: deny\n  resources: ['@nope']\n", `unknown macro "@nope"`},
		{head + "rules:\n- name: a\n  action: deny\n  when: 'object.x =='\n", `rules[0] "a": when:`},
		{head + "rules:\n- name: a\n  action: deny\n  when: '1 + 1'\n", `must be a boolean expression`},
		{head + "rules:\n- name: a\n  action: deny\n- name: a\n  action: allow\n", `already used by rules[0]`},
		{head + "defaultAction: maybe\n", `defaultAction: unknown action "maybe"`},
		{"apiVersion: v1\nkind: Policy\n", `apiVersion: "v1" is not supported`},
		{head + "kind: Policy\n", `not valid YAML`}, // duplicate key
		{head + "mask:\n- keys: [a]\n", `mask[0]: kinds: at least one kind`},
		{head + "mask:\n- kinds: [ConfigMap]\n  keys: ['(']\n", `mask[0]: keys[0]: not a valid regular expression`},
		{head + "rules:\n- name: a\n  action: deny\n  namespaces: ['[']\n", `not a valid glob`},
		{head + "rules:\n- name: a\n  action: deny\n  verbs: get\n", `verbs: got string, want a list of strings`},
		{"", `policy is empty`},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.src), "test.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", c.src, err, c.want)
		}
	}
}

func TestParseJSON(t *testing.T) {
	p, err := Parse([]byte(`{"apiVersion":"kubectl-agent.io/v1alpha1","kind":"Policy","defaultAction":"deny","rules":[{"name":"reads","action":"allow","verbs":["GET","list"]}]}`), "p.json")
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(t, p, Input{Attributes: raw(t, "GET", "/api/v1/namespaces/a/pods/x", nil)}); d.Action != Allow || d.Rule != "reads" {
		t.Errorf("get: %+v", d)
	}
	if d := decide(t, p, Input{Attributes: raw(t, "DELETE", "/api/v1/namespaces/a/pods/x", nil)}); d.Action != Deny || d.Rule != "" {
		t.Errorf("delete under defaultAction deny: %+v", d)
	}
}

const head = "apiVersion: kubectl-agent.io/v1alpha1\nkind: Policy\n"

func TestMatching(t *testing.T) {
	p := mustParse(t, head+`rules:
- {name: pods-only, action: deny, verbs: [get], resources: [pods], namespaces: [a]}
- {name: any-scale, action: deny, resources: ["*/scale"]}
- {name: pod-subs, action: approve, resources: ["pods/*"], namespaces: [b]}
- {name: prod-glob, action: deny, verbs: [delete], namespaces: ["prod-*"]}
- {name: named, action: deny, verbs: [get, list, watch], resources: [configmaps], names: ["secret-*"]}
- {name: allow-exact, action: allow, resources: [leases]}
`)
	cases := []struct {
		method, path, query string
		want                Action
		rule                string
	}{
		{"GET", "/api/v1/namespaces/a/pods/x", "", Deny, "pods-only"},
		{"GET", "/api/v1/namespaces/a/pods/x/log", "", Allow, ""}, // pods does not match pods/log
		{"GET", "/api/v1/namespaces/b/pods/x/log", "", Approve, "pod-subs"},
		{"GET", "/api/v1/namespaces/b/pods/x", "", Allow, ""}, // pods/* does not match pods
		{"PATCH", "/apis/apps/v1/namespaces/c/deployments/x/scale", "", Deny, "any-scale"},
		{"DELETE", "/api/v1/namespaces/prod-eu/pods/x", "", Deny, "prod-glob"},
		{"DELETE", "/api/v1/namespaces/prod-eu", "", Deny, "prod-glob"}, // the namespace object is in itself
		{"DELETE", "/api/v1/namespaces/staging", "", Allow, ""},
		{"DELETE", "/api/v1/nodes/prod-1", "", Allow, ""}, // cluster-scoped: namespaces never match
		{"GET", "/api/v1/namespaces/a/configmaps/secret-db", "", Deny, "named"},
		{"GET", "/api/v1/namespaces/a/configmaps", "", Deny, "named"}, // a list touches every name
		{"GET", "/api/v1/namespaces/a/configmaps/plain", "", Allow, ""},
	}
	for _, c := range cases {
		q, _ := url.ParseQuery(c.query)
		d := decide(t, p, Input{Attributes: raw(t, c.method, c.path, q)})
		if d.Action != c.want || d.Rule != c.rule {
			t.Errorf("%s %s: got %s by %q, want %s by %q", c.method, c.path, d.Action, d.Rule, c.want, c.rule)
		}
	}
	// A list across all namespaces touches namespace a for a deny rule.
	q := url.Values{}
	p2 := mustParse(t, head+"rules:\n- {name: no-list-a, action: deny, verbs: [list], resources: [pods], namespaces: [a]}\n- {name: ok-a, action: allow, verbs: [list], namespaces: [a]}\n")
	if d := decide(t, p2, Input{Attributes: raw(t, "GET", "/api/v1/pods", q)}); d.Action != Deny {
		t.Errorf("list pods across namespaces under a deny for namespace a: %+v", d)
	}
}

func TestMacros(t *testing.T) {
	p := mustParse(t, head+`rules:
- {name: exec, action: deny, resources: ["@exec"]}
- {name: secrets, action: deny, resources: ["@secret-read"]}
- {name: rbac, action: approve, resources: ["@rbac-write"]}
- {name: imp, action: deny, resources: ["@impersonate"], names: [root]}
- {name: exec-get-only, action: approve, resources: ["@exec"], verbs: [get], namespaces: [z]}
`)
	for _, c := range []struct {
		method, path string
		want         Action
	}{
		{"POST", "/api/v1/namespaces/a/pods/x/exec", Deny},
		{"GET", "/api/v1/namespaces/a/pods/x/attach", Deny},
		{"GET", "/api/v1/namespaces/a/services/x/proxy", Deny},
		{"GET", "/api/v1/nodes/n/proxy", Deny},
		{"GET", "/api/v1/namespaces/a/secrets", Deny},
		{"DELETE", "/api/v1/namespaces/a/secrets/x", Allow},
		{"POST", "/api/v1/namespaces/a/serviceaccounts/x/token", Deny},
		{"POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", Approve},
		{"GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", Allow},
		{"GET", "/api/v1/namespaces/a/pods/x/log", Allow},
	} {
		if d := decide(t, p, Input{Attributes: raw(t, c.method, c.path, nil)}); d.Action != c.want {
			t.Errorf("%s %s: %+v, want %s", c.method, c.path, d, c.want)
		}
	}
	a := raw(t, "GET", "/api/v1/namespaces/a/pods", nil)
	a.Impersonate = []string{"user:root"}
	if d := decide(t, p, Input{Attributes: a}); d.Action != Deny || d.Rule != "imp" {
		t.Errorf("impersonating root: %+v", d)
	}
	a.Impersonate = []string{"user:alice", "extra:scopes=x"}
	if d := decide(t, p, Input{Attributes: a}); d.Action != Allow {
		t.Errorf("impersonating alice: %+v", d)
	}
	a.Impersonate = []string{"bogus"}
	if d, err := p.Evaluate(context.Background(), Input{Attributes: a}); err == nil || d.Action != Deny {
		t.Errorf("malformed impersonation: %+v, %v (want deny and an error)", d, err)
	}
	// Rule verbs replace the macro's: get on pods/exec in z.
	if d := decide(t, p, Input{Attributes: raw(t, "GET", "/api/v1/namespaces/z/pods/x/proxy", nil)}); d.Action != Deny {
		t.Errorf("deny still wins over approve: %+v", d)
	}
}

func TestCombineOnlyTightens(t *testing.T) {
	base := mustParse(t, head+"defaultAction: deny\nrules:\n- {name: reads, action: allow, verbs: [get, list]}\n- {name: hold, action: approve, verbs: [create]}\n")
	local := mustParse(t, head+"rules:\n- {name: everything, action: allow}\n- {name: no-secrets, action: deny, resources: [secrets]}\nmask:\n- kinds: [ConfigMap]\n")
	c := Combine(base, local)
	for _, x := range []struct {
		method, path string
		want         Action
		rule         string
	}{
		{"GET", "/api/v1/namespaces/a/pods", Allow, "reads"},
		{"DELETE", "/api/v1/namespaces/a/pods/x", Deny, ""},    // local allow cannot loosen base's default deny
		{"POST", "/api/v1/namespaces/a/pods", Approve, "hold"}, // nor its approve rule
		{"GET", "/api/v1/namespaces/a/secrets", Deny, "no-secrets"},
	} {
		if d := decide(t, c, Input{Attributes: raw(t, x.method, x.path, nil)}); d.Action != x.want || d.Rule != x.rule {
			t.Errorf("%s %s: %+v, want %s by %q", x.method, x.path, d, x.want, x.rule)
		}
	}
	if c.DefaultAction != Deny {
		t.Errorf("combined defaultAction = %s", c.DefaultAction)
	}
	if m := c.Mask(); len(m) != 2 {
		t.Errorf("combined masks = %+v, want ConfigMap and the implicit Secret", m)
	}
	if Combine(nil, nil).Digest() != Default().Digest() || Combine(base, nil) != base || Combine(nil, local) != local {
		t.Error("Combine with nil")
	}
	if Combine(base, local).Digest() == Combine(local, base).Digest() {
		t.Error("base and local are different roles; their digests should differ")
	}
}

func TestDigest(t *testing.T) {
	a := mustParse(t, head+"rules:\n- {name: x, action: deny, verbs: [get, list]}\n")
	b := mustParse(t, "# same policy\nkind: Policy\napiVersion: kubectl-agent.io/v1alpha1\ndefaultAction: allow\nrules:\n- {verbs: [list, get], action: deny, name: x}\n")
	c := mustParse(t, head+"rules:\n- {name: x, action: deny, verbs: [get]}\n")
	if a.Digest() != b.Digest() {
		t.Errorf("equal policies, different digests: %s %s", a.Digest(), b.Digest())
	}
	if a.Digest() == c.Digest() {
		t.Error("different policies, same digest")
	}
}

func TestWhenFailsClosed(t *testing.T) {
	p := mustParse(t, head+`rules:
- {name: deny-big, action: deny, resources: [deployments], when: 'object.spec.replicas > 10'}
- {name: allow-small, action: allow, resources: [configmaps], when: 'object.data.size == "small"'}
- {name: exec-rm, action: deny, resources: [pods/exec], when: 'exec.exists(w, w == "rm")'}
- {name: by-session, action: approve, resources: [jobs], when: 'session.ref != "refs/heads/main"'}
- {name: slow, action: deny, resources: [leases], when: '[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, [1,2,3,4,5,6,7,8,9,10].all(f, a+b+c+d+e+f > 0))))))'}
`)
	dep := raw(t, "PATCH", "/apis/apps/v1/namespaces/a/deployments/x", nil)
	if d := decide(t, p, Input{Attributes: dep, Object: map[string]any{"spec": map[string]any{"replicas": float64(20)}}}); d.Action != Deny {
		t.Errorf("replicas 20: %+v", d)
	}
	if d := decide(t, p, Input{Attributes: dep, Object: map[string]any{"spec": map[string]any{"replicas": float64(2)}}}); d.Action != Allow {
		t.Errorf("replicas 2: %+v", d)
	}
	// No object: the deny rule's when errors → deny, with the error.
	if d, err := p.Evaluate(context.Background(), Input{Attributes: dep}); err == nil || d.Action != Deny || d.Rule != "deny-big" {
		t.Errorf("missing object: %+v, %v", d, err)
	}
	exec := raw(t, "POST", "/api/v1/namespaces/a/pods/x/exec", url.Values{"command": {"rm", "-rf", "/"}})
	if d := decide(t, p, Input{Attributes: exec}); d.Action != Deny || d.Rule != "exec-rm" {
		t.Errorf("exec rm: %+v", d)
	}
	job := raw(t, "POST", "/apis/batch/v1/namespaces/a/jobs", nil)
	if d := decide(t, p, Input{Attributes: job, Session: map[string]any{"ref": "refs/heads/dev"}}); d.Action != Approve {
		t.Errorf("session: %+v", d)
	}
	lease := raw(t, "GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/x", nil)
	if d, err := p.Evaluate(context.Background(), Input{Attributes: lease}); err == nil || d.Action != Deny {
		t.Errorf("cost limit: %+v, %v (want deny with an error)", d, err)
	}
	if !p.NeedsObject(dep) || p.NeedsObject(exec) || p.NeedsObject(job) {
		t.Error("NeedsObject: want true only for the rules that read object")
	}
}

func TestNamespaceCreateNeedsName(t *testing.T) {
	p := mustParse(t, head+"rules:\n- {name: no-prod-ns, action: deny, verbs: [create], resources: [namespaces], namespaces: [prod]}\n")
	a := raw(t, "POST", "/api/v1/namespaces", nil)
	if !p.NeedsObject(a) {
		t.Fatal("NeedsObject(create namespaces) = false; the proxy would not see the name")
	}
	if d := decide(t, p, Input{Attributes: a, Object: map[string]any{"metadata": map[string]any{"name": "prod"}}}); d.Action != Deny {
		t.Errorf("create namespace prod: %+v", d)
	}
}
