package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const valid = `apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: https://broker.example.com/
listen: 127.0.0.1:8443
issuers:
- issuer: https://token.actions.githubusercontent.com
clusters:
- name: prod
  server: https://prod.example.com
  backend:
    type: kubernetes
    kubernetes:
      kubeconfig: broker.kubeconfig
trustRules:
- name: deploy
  issuer: https://token.actions.githubusercontent.com
  match:
    repository: "acme/*"
    ref: [refs/heads/main, "refs/tags/v*"]
  cluster: prod
  ttl: 20m
  grant:
    namespaces: [apps]
    rules:
    - verbs: [get, list]
      apiGroups: [""]
      resources: [pods]
`

func TestParseValid(t *testing.T) {
	c, err := Parse("/etc/broker/broker.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if c.PublicURL != "https://broker.example.com" {
		t.Errorf("publicURL = %q, want the trailing slash trimmed", c.PublicURL)
	}
	if c.Store.URL != DefaultStoreURL || c.ReconcileEvery() != DefaultReconcileInterval {
		t.Errorf("defaults not filled: store %q, reconcile %s", c.Store.URL, c.ReconcileEvery())
	}
	is := c.Issuers[0]
	if got := is.PresetFor().Name; got != "github" {
		t.Errorf("preset = %q, want github from the issuer URL", got)
	}
	if len(is.Audiences) != 1 || is.Audiences[0] != "https://broker.example.com" {
		t.Errorf("audiences = %v, want the public URL", is.Audiences)
	}
	if k := c.Clusters[0].Backend.Kubernetes; k.Namespace != DefaultNamespace || k.Kubeconfig != "/etc/broker/broker.kubeconfig" {
		t.Errorf("kubernetes backend = %+v, want default namespace and a path relative to the file", k)
	}
	r := c.TrustRules[0]
	if r.RuleTTL() != 20*time.Minute || len(r.Match["ref"]) != 2 {
		t.Errorf("rule = %+v", r)
	}
	g := r.Grant.API(r.Name, r.RuleTTL())
	if g.Rule != "deploy" || g.Namespaces[0] != "apps" || g.TTL.Duration != 20*time.Minute {
		t.Errorf("grant = %+v", g)
	}
}

// Each broken file names the file, the line and the field, and says what is wrong.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, from, to string
		want           string
	}{
		{"unknown top-level field", "listen: 127.0.0.1:8443", "listen: 127.0.0.1:8443\nlisten_addr: x", "broker.yaml:5: listen_addr: unknown field"},
		{"unknown nested field", "  server: https://prod.example.com", "  server: https://prod.example.com\n  sever: x", "broker.yaml:10: clusters[0].sever: unknown field"},
		{"unknown field in grant", "    namespaces: [apps]", "    namespace: [apps]", "broker.yaml:23: trustRules[0].grant.namespace: unknown field"},
		{"bad glob", `repository: "acme/*"`, `repository: "acme/[a"`, `broker.yaml:18: trustRules[0].match.repository: bad glob "acme/[a"`},
		{"undefined cluster", "  cluster: prod", "  cluster: staging", `broker.yaml:20: trustRules[0].cluster: cluster "staging" is not defined`},
		{"undefined issuer", "  issuer: https://token.actions.githubusercontent.com\n  match", "  issuer: https://gitlab.com\n  match", `trustRules[0].issuer: issuer "https://gitlab.com" is not in issuers`},
		{"github rule without repository pin", `repository: "acme/*"`, `workflow: "deploy"`, "github's issuer serves everyone"},
		{"github rule pinned only by a wildcard", `repository: "acme/*"`, `repository: "*/app"`, "github's issuer serves everyone"},
		{"match on sub", `    repository: "acme/*"`, "    repository: \"acme/*\"\n    sub: \"repo:acme/*\"", `must not match on "sub"`},
		{"plain http off loopback", "listen: 127.0.0.1:8443", "listen: 0.0.0.0:8080", "plain HTTP on \"0.0.0.0:8080\" would expose tokens"},
		{"ttl too long", "ttl: 20m", "ttl: 48h", "trustRules[0].ttl: must be between"},
		{"bad ttl", "ttl: 20m", "ttl: soon", `broker.yaml:21: trustRules[0].ttl: invalid duration "soon"`},
		{"rules without namespaces", "    namespaces: [apps]\n", "", "rules apply in namespaces"},
		{"wrong kind", "kind: BrokerConfig", "kind: Broker", `kind: must be "BrokerConfig"`},
		{"unknown backend", "type: kubernetes", "type: gke", `backend.type: must be kubernetes or eks, not "gke"`},
		{"alg HS256", "- issuer: https://token.actions.githubusercontent.com\n", "- issuer: https://token.actions.githubusercontent.com\n  signingAlgs: [HS256]\n", `"HS256" is not allowed`},
		{"not yaml", "kind: BrokerConfig", "kind: [", "not valid YAML"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(valid, tc.from) {
				t.Fatalf("test bug: %q not in the valid config", tc.from)
			}
			data := strings.Replace(valid, tc.from, tc.to, 1)
			_, err := Parse("broker.yaml", []byte(data))
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", data)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestPolicyFileIsRead(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("kind: Policy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := strings.Replace(valid, "  ttl: 20m", "  ttl: 20m\n  policyFile: policy.yaml", 1)
	c, err := Parse(filepath.Join(dir, "broker.yaml"), []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if c.TrustRules[0].Policy != "kind: Policy\n" {
		t.Errorf("policy = %q, want the file's content", c.TrustRules[0].Policy)
	}
	data = strings.Replace(valid, "  ttl: 20m", "  ttl: 20m\n  policyFile: missing.yaml", 1)
	if _, err := Parse(filepath.Join(dir, "broker.yaml"), []byte(data)); err == nil || !strings.Contains(err.Error(), "policyFile: cannot read") {
		t.Errorf("missing policy file: %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want ErrNotExist", err)
	}
}

// The shipped example must always load.
func TestExampleLoads(t *testing.T) {
	if _, err := Load("../../../examples/broker.yaml"); err != nil {
		t.Fatalf("examples/broker.yaml: %v", err)
	}
}

func TestPresets(t *testing.T) {
	for iss, want := range map[string]string{
		"https://token.actions.githubusercontent.com":      "github",
		"https://token.actions.githubusercontent.com/acme": "github",
		"https://gitlab.com":                               "gitlab",
		"https://oidc.circleci.com/org/1234":               "circleci",
		"https://agent.buildkite.com":                      "buildkite",
		"https://ci.example.com":                           "generic",
	} {
		if got := (Issuer{Issuer: iss}).PresetFor().Name; got != want {
			t.Errorf("preset of %s = %s, want %s", iss, got, want)
		}
	}
	p := Issuer{Issuer: "https://ci.example.com", RunClaims: []string{"build"}, IdentityClaims: map[string]string{"repository": "project"}}.PresetFor()
	if p.RunClaims[0] != "build" || p.Identity["repository"] != "project" || p.Identity["runID"] != "jti" {
		t.Errorf("overrides not applied: %+v", p)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte("apiVersion: x\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("trustRules:\n- match: {a: [1, {b: c}]}\n"))
	f.Add([]byte("issuers: {x: y}\nclusters: 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err == nil && (c.APIVersion != APIVersion || len(c.TrustRules) == 0) {
			t.Fatalf("Parse accepted a config without apiVersion or rules")
		}
	})
}
