package policy

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	cases := []struct {
		method, path, query string
		want                string // verb group/resource/sub ns name rr
	}{
		{"GET", "/api/v1/namespaces/a/pods", "", "list /pods/ a  true"},
		{"GET", "/api/v1/namespaces/a/pods", "watch=true", "watch /pods/ a  true"},
		{"GET", "/api/v1/namespaces/a/pods", "watch=", "watch /pods/ a  true"}, // the apiserver reads an empty value as true
		{"GET", "/api/v1/namespaces/a/pods", "watch=0", "list /pods/ a  true"},
		{"GET", "/api/v1/namespaces/a/pods", "fieldSelector=metadata.name%3Dweb", "list /pods/ a web true"},
		{"GET", "/api/v1/watch/namespaces/a/pods/web", "", "watch /pods/ a web true"},
		{"GET", "/api/v1/namespaces/a/pods/web", "", "get /pods/ a web true"},
		{"HEAD", "/api/v1/namespaces/a/pods/web", "", "get /pods/ a web true"},
		{"GET", "/api/v1/namespaces/a/pods/web/log", "follow=true", "get /pods/log a web true"},
		{"GET", "/api/v1/namespaces/a/pods/web/exec", "command=sh", "create /pods/exec a web true"},
		{"POST", "/api/v1/namespaces/a/pods/web/exec", "command=sh", "create /pods/exec a web true"},
		{"GET", "/api/v1/namespaces/a/pods/web/portforward", "", "create /pods/portforward a web true"},
		{"GET", "/api/v1/namespaces/a/pods/web/proxy/x/y", "", "get /pods/proxy a web true"},
		{"GET", "/api/v1/proxy/namespaces/a/pods/web/x", "", "proxy /pods/ a web true"},
		{"DELETE", "/api/v1/namespaces/a/pods", "", "deletecollection /pods/ a  true"},
		{"DELETE", "/api/v1/namespaces/a", "", "delete /namespaces/ a a true"},
		{"PUT", "/api/v1/namespaces/a/finalize", "", "update /namespaces/finalize a a true"},
		{"GET", "/api/v1/namespaces/a/status", "", "get /namespaces/status a a true"},
		{"GET", "/api/v1/namespaces", "", "list /namespaces/   true"},
		{"POST", "/apis/apps/v1/namespaces/a/deployments", "", "create apps/deployments/ a  true"},
		{"PATCH", "/apis/apps/v1/namespaces/a/deployments/x/scale", "", "patch apps/deployments/scale a x true"},
		{"PUT", "/apis/rbac.authorization.k8s.io/v1/clusterroles/x", "", "update rbac.authorization.k8s.io/clusterroles/  x true"},
		{"GET", "/apis/apps/v1", "", "get /// / false"},
		{"GET", "/api/v1", "", "get /// / false"},
		{"GET", "/healthz", "", "get /// / false"},
		{"POST", "/apis/apps", "", "post /// / false"},
		{"OPTIONS", "/api/v1/pods", "", " /pods/   true"},
		{"GET", "/", "", "get /// / false"},
	}
	for _, c := range cases {
		q, err := url.ParseQuery(c.query)
		if err != nil {
			t.Fatal(err)
		}
		a, err := ParsePath(c.method, c.path, q)
		if err != nil {
			t.Errorf("%s %s: %v", c.method, c.path, err)
			continue
		}
		got := fmt.Sprintf("%s %s/%s/%s %s %s %v", a.Verb, a.APIGroup, a.Resource, a.Subresource, a.Namespace, a.Name, a.ResourceRequest)
		if !a.ResourceRequest {
			got = fmt.Sprintf("%s /// / %v", a.Verb, a.ResourceRequest)
		}
		if strings.Join(strings.Fields(got), " ") != strings.Join(strings.Fields(c.want), " ") {
			t.Errorf("%s %s?%s: got %q, want %q", c.method, c.path, c.query, got, c.want)
		}
	}
	a, _ := ParsePath("DELETE", "/api/v1/namespaces/a/pods/x", url.Values{"dryRun": {"All"}})
	if !a.DryRun {
		t.Error("dryRun=All not seen")
	}
	a, _ = ParsePath("POST", "/api/v1/namespaces/a/pods/x/exec", url.Values{"command": {"sh", "-c", "id"}})
	if strings.Join(a.Command, " ") != "sh -c id" {
		t.Errorf("Command = %q", a.Command)
	}
	if _, err := ParsePath("GET", "/api/v1/watch", nil); err == nil {
		t.Error("/api/v1/watch: no error")
	}
}

func TestCanonicalPath(t *testing.T) {
	for _, ok := range []string{"/", "/api", "/api/v1/namespaces/a/pods/x", "/apis/apps/v1/deployments", "/api/v1/namespaces/a/services/https:web:443/proxy/m"} {
		if err := CanonicalPath(ok); err != nil {
			t.Errorf("CanonicalPath(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "api", "/api/v1/namespaces/%76ictim", "/api/v1/namespaces/a%2Fb", "//api", "/api//v1", "/api/./v1", "/api/../v1", "/api/v1/", "/api\\v1", "/api/v1\x00", "/api/v1\n", "/api/v1?x", "/api/v1#x", "/.", "/.."} {
		if err := CanonicalPath(bad); err == nil {
			t.Errorf("CanonicalPath(%q) accepted", bad)
		}
	}
}

func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "/api/v1/namespaces/%76ictim", "//x", "/a/./b", "/a/b/", "/a\\b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if CanonicalPath(p) != nil {
			return
		}
		// Accepted paths are their own cleaned, unescaped form.
		if u, err := url.PathUnescape(p); err != nil || u != p {
			t.Fatalf("accepted %q, which unescapes to %q", p, u)
		}
		for _, seg := range strings.Split(p[1:], "/") {
			if p != "/" && (seg == "" || seg == "." || seg == "..") {
				t.Fatalf("accepted %q with segment %q", p, seg)
			}
		}
	})
}

func FuzzParsePath(f *testing.F) {
	f.Add("GET", "/api/v1/namespaces/a/pods", "watch=1")
	f.Add("DELETE", "/api/v1/namespaces/victim", "")
	f.Add("GET", "/apis/apps/v1/watch/namespaces/a/deployments/x", "fieldSelector=metadata.name%3Dy")
	f.Add("POST", "/api/v1/namespaces/a/pods/x/exec", "command=sh&command=-c")
	f.Add("GET", "/api/v1/proxy/nodes/n/x/y", "")
	f.Fuzz(func(t *testing.T, method, p, query string) {
		q, _ := url.ParseQuery(query)
		a, err := ParsePath(method, p, q)
		if err != nil {
			return
		}
		if CanonicalPath(p) != nil {
			t.Fatalf("ParsePath accepted non-canonical %q", p)
		}
		if a.ResourceRequest {
			if a.Resource == "" {
				t.Fatalf("%s %s: resource request without resource: %+v", method, p, a)
			}
			for _, s := range []string{a.Resource, a.Namespace, a.Name, a.Subresource} {
				if strings.Contains(s, "/") {
					t.Fatalf("%s %s: attribute with a slash: %+v", method, p, a)
				}
			}
		}
		// Evaluation of any parsed request under the example policy never panics.
		_, _ = examplePolicy(t).Evaluate(t.Context(), Input{Attributes: a})
	})
}

func examplePolicy(t testing.TB) *Policy {
	p, err := Load("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(head + "rules:\n- {name: a, action: deny, verbs: [get], resources: ['@exec'], when: 'request.verb == \"get\"'}\n"))
	f.Add([]byte(`{"apiVersion":"kubectl-agent.io/v1alpha1","kind":"Policy","mask":[{"kinds":["Secret"],"keys":["a"]}]}`))
	f.Add([]byte("a: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the source: %v", err)
			}
			return
		}
		// A policy that parses evaluates, masks and digests without panicking,
		// and reparsing is stable.
		_, _ = p.Evaluate(t.Context(), Input{Attributes: Attributes{Verb: "get", Resource: "pods", ResourceRequest: true, Namespace: "a", Name: "b"}})
		_ = p.Mask()
		if d1, d2 := p.Digest(), p.Digest(); d1 != d2 {
			t.Fatal("digest not stable")
		}
	})
}

func FuzzMapKubectl(f *testing.F) {
	for _, s := range []string{"delete ns x", "get po -A -w", "exec -it -n a web -- sh", "cp a/b:/c d", "--raw /api/v1/x get", "-n", "apply -f -"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		reqs, err := MapKubectl(strings.Fields(line), fsOpts(map[string]string{"ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"}))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "cannot map ") {
				t.Fatalf("error does not say what it could not map: %v", err)
			}
			return
		}
		for _, r := range reqs {
			if r.ResourceRequest && (r.Resource == "" || r.APIVersion == "") {
				t.Fatalf("%q: incomplete request %+v", line, r)
			}
		}
	})
}
