package policy

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
)

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse([]byte(src), "test.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func decide(t testing.TB, p *Policy, in Input) Decision {
	t.Helper()
	d, err := p.Evaluate(context.Background(), in)
	if err != nil {
		t.Fatalf("Evaluate(%+v): %v", in.Attributes, err)
	}
	return d
}

func raw(t testing.TB, method, p string, q url.Values) Attributes {
	t.Helper()
	a, err := ParsePath(method, p, q)
	if err != nil {
		t.Fatalf("ParsePath(%s %s): %v", method, p, err)
	}
	return a
}

func TestExamplePolicy(t *testing.T) {
	p, err := Load("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path string
		obj          map[string]any
		want         Action
		rule         string
	}{
		{"DELETE", "/api/v1/namespaces/prod", nil, Deny, "never-delete-namespaces"},
		{"GET", "/api/v1/namespaces/prod/pods", nil, Allow, ""},
		{"POST", "/api/v1/namespaces/prod-eu/configmaps", nil, Approve, "prod-changes-need-a-human"},
		{"POST", "/api/v1/namespaces/kube-system/pods/x/exec", nil, Deny, "no-exec-in-kube-system"},
		{"GET", "/api/v1/namespaces/kube-system/pods/x/exec", nil, Deny, "no-exec-in-kube-system"},
		{"POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", map[string]any{"roleRef": map[string]any{"name": "cluster-admin"}}, Deny, "no-cluster-admin-grants"},
		{"POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", map[string]any{"roleRef": map[string]any{"name": "view"}}, Allow, ""},
	}
	for _, c := range cases {
		d := decide(t, p, Input{Attributes: raw(t, c.method, c.path, nil), Object: c.obj})
		if d.Action != c.want || d.Rule != c.rule {
			t.Errorf("%s %s: got %+v, want %s by %q", c.method, c.path, d, c.want, c.rule)
		}
	}
	if !p.NeedsObject(raw(t, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", nil)) {
		t.Error("NeedsObject(create clusterrolebindings) = false, want true")
	}
	if p.NeedsObject(raw(t, "GET", "/api/v1/namespaces/a/pods", nil)) {
		t.Error("NeedsObject(list pods) = true, want false")
	}
	if m := p.Mask(); len(m) != 2 || m[1].Kinds[0] != "ConfigMap" || !m[1].Keys[0].MatchString("DB_PASSWORD") {
		t.Errorf("Mask() = %+v", m)
	}
	if _, err := os.Stat("../../examples/policy.yaml"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Digest(), "sha256:") {
		t.Errorf("Digest() = %q", p.Digest())
	}
}
