package trust

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

func setup(t testing.TB, preset string, rules string) (*oidcissuer.Issuer, *config.Config) {
	t.Helper()
	iss, err := oidcissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	if rules == "" {
		rules = `  match: {repository: "acme/*"}`
	}
	data := fmt.Sprintf(`apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: https://broker.test
issuers:
- issuer: %[1]s
  preset: %[2]s
clusters:
- name: c1
  server: https://c1.test
  backend: {type: kubernetes}
- name: c2
  server: https://c2.test
  backend: {type: kubernetes}
trustRules:
- name: r1
  issuer: %[1]s
  cluster: c1
%[3]s
  grant: {clusterRules: [{verbs: [get], resources: [pods]}]}
- name: r2
  issuer: %[1]s
  cluster: c1
  match: {%[4]s: "acme/*", ref: refs/heads/release}
  grant: {clusterRules: [{verbs: [list], resources: [pods]}]}
`, iss.URL, preset, rules, map[bool]string{true: "project_path", false: "repository"}[preset == "gitlab"])
	cfg, err := config.Parse("test.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return iss, cfg
}

func TestVerifyGitHub(t *testing.T) {
	iss, cfg := setup(t, "github", "")
	v := NewVerifier(cfg, Options{})
	ctx := context.Background()
	claims := iss.GitHubClaims("acme/app", "77", "https://broker.test")
	got, err := v.Verify(ctx, iss.Mint(claims))
	if err != nil {
		t.Fatal(err)
	}
	if got.Identity.Repository != "acme/app" || got.Identity.RunID != "77" || got.Identity.RunAttempt != "1" || got.Identity.Ref != "refs/heads/main" {
		t.Errorf("identity = %+v", got.Identity)
	}
	if got.Run.Repository != "acme/app" || got.Run.RunID != "77" || got.Run.RunAttempt != "1" || got.Run.Issuer != iss.URL {
		t.Errorf("run key = %+v", got.Run)
	}
	if got.JTI != claims["jti"] {
		t.Errorf("jti = %q", got.JTI)
	}
	// ES256 works too, and keys are cached: many tokens, one JWKS fetch.
	for range 20 {
		if _, err := v.Verify(ctx, iss.MintES256(iss.GitHubClaims("acme/app", "78", "https://broker.test"))); err != nil {
			t.Fatal(err)
		}
	}
	if n := iss.JWKSHits(); n != 1 {
		t.Errorf("JWKS fetched %d times, want 1 (cached)", n)
	}
	// An unknown kid refetches at most once per MinRefresh (10 s): right
	// after the first fetch, made-up kids cause no fetch at all.
	for range 5 {
		_, err := v.Verify(ctx, iss.Sign("RS256", "rotated-away", claims))
		if e, ok := err.(*api.Error); !ok || !strings.Contains(e.Description, "no key with kid") {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if n := iss.JWKSHits(); n != 1 {
		t.Errorf("JWKS fetched %d times after unknown kids, want still 1", n)
	}
	// With no rate limit, an unknown kid refetches (key rotation at the issuer).
	v2 := NewVerifier(cfg, Options{MinRefresh: time.Nanosecond})
	_, _ = v2.Verify(ctx, iss.Mint(claims))
	_, _ = v2.Verify(ctx, iss.Sign("RS256", "rotated-away", claims))
	if n := iss.JWKSHits(); n != 3 {
		t.Errorf("JWKS fetched %d times, want 3 (one more per verifier, one refetch)", n)
	}
}

func TestRunKeysPerPreset(t *testing.T) {
	cases := []struct {
		preset string
		claims map[string]any
		repo   string
		runID  string
	}{
		{"gitlab", map[string]any{"project_path": "acme/app", "pipeline_id": "991", "ref_path": "refs/heads/main", "project_id": "5"}, "acme/app", "991"},
		{"buildkite", map[string]any{"organization_slug": "acme", "pipeline_slug": "app", "build_number": "12", "job_id": "j"}, "acme/app", "12"},
		{"circleci", map[string]any{"oidc.circleci.com/project-id": "p-1", "oidc.circleci.com/workflow-id": "w-9"}, "p-1", "w-9"},
		{"generic", map[string]any{"jti": "tok-1"}, "ci-user", "tok-1"},
	}
	for _, tc := range cases {
		t.Run(tc.preset, func(t *testing.T) {
			rules := `  match: {repository: "acme/*"}`
			if tc.preset != "gitlab" {
				rules = `  match: {iss: "*"}`
			} else {
				rules = `  match: {project_path: "acme/*"}`
			}
			iss, cfg := setup(t, tc.preset, rules)
			now := time.Now()
			c := map[string]any{"iss": iss.URL, "aud": "https://broker.test", "sub": "ci-user", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
			for k, v := range tc.claims {
				c[k] = v
			}
			got, err := NewVerifier(cfg, Options{}).Verify(context.Background(), iss.Mint(c))
			if err != nil {
				t.Fatal(err)
			}
			if got.Run.Repository != tc.repo || got.Run.RunID != tc.runID {
				t.Errorf("run key = %+v, want repository %q run %q", got.Run, tc.repo, tc.runID)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	iss, cfg := setup(t, "github", "")
	v := NewVerifier(cfg, Options{})
	verify := func(mod func(map[string]any)) *Verified {
		c := iss.GitHubClaims("acme/app", "1", "https://broker.test")
		mod(c)
		got, err := v.Verify(context.Background(), iss.Mint(c))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	r, err := Match(cfg, verify(func(map[string]any) {}), "c1")
	if err != nil || r.Name != "r1" {
		t.Errorf("first matching rule = %v, %v; want r1", r, err)
	}
	_, err = Match(cfg, verify(func(c map[string]any) { c["repository"] = "other/app" }), "c1")
	if e, ok := err.(*api.Error); !ok || e.Code != CodeUnauthorizedClient || !strings.Contains(e.Description, `rule "r1": claim "repository" ("other/app") does not match`) ||
		strings.Contains(e.Description, "acme/*") {
		t.Errorf("no match: %v (must name the rule and claim, not the pattern)", err)
	}
	_, err = Match(cfg, verify(func(map[string]any) {}), "c2")
	if e, ok := err.(*api.Error); !ok || !strings.Contains(e.Description, "no trust rule gives tokens") {
		t.Errorf("cluster without rules: %v", err)
	}
	_, err = Match(cfg, verify(func(map[string]any) {}), "c3")
	if e, ok := err.(*api.Error); !ok || e.Code != CodeInvalidTarget {
		t.Errorf("unknown cluster: %v", err)
	}
}

func TestResolveTemplate(t *testing.T) {
	c := map[string]string{"a": "x", "b": "y"}
	for spec, want := range map[string]string{"a": "x", "{a}/{b}": "x/y", "{a}-{missing}": "", "{a": "", "pre-{b}": "pre-y"} {
		if got := resolve(spec, c); got != want {
			t.Errorf("resolve(%q) = %q, want %q", spec, got, want)
		}
	}
}

// peek must never panic and must refuse what is not a three-part JWS of JSON objects.
func FuzzPeek(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln")
	f.Add("a.b.c")
	f.Add("...")
	f.Add("bnVsbA.bnVsbA.")
	f.Fuzz(func(t *testing.T, s string) {
		h, p, err := peek(s)
		if err == nil && (h == nil || p == nil) {
			t.Fatalf("peek(%q) accepted without header or payload", s)
		}
	})
}

// An issuer that cannot be reached is the broker's problem: 503-class
// temporarily_unavailable, not invalid_grant.
func TestIssuerUnreachable(t *testing.T) {
	iss, _ := setup(t, "github", "")
	down := "http://127.0.0.1:1"
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: https://broker.test
issuers:
- issuer: %[1]s
  preset: github
clusters:
- {name: c1, server: "https://c1.test", backend: {type: kubernetes}}
trustRules:
- name: r1
  issuer: %[1]s
  cluster: c1
  match: {repository: "acme/*"}
  grant: {clusterRules: [{verbs: [get], resources: [pods]}]}
`, down)))
	if err != nil {
		t.Fatal(err)
	}
	c := iss.GitHubClaims("acme/app", "1", "https://broker.test")
	c["iss"] = down
	_, err = NewVerifier(cfg, Options{}).Verify(context.Background(), iss.Mint(c))
	if e, ok := err.(*api.Error); !ok || e.Code != CodeUnavailable {
		t.Errorf("unreachable issuer: %v, want %s", err, CodeUnavailable)
	}
}
