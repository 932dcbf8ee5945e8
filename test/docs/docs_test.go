// Package docs checks every YAML snippet in the README and docs/ and every
// file in examples/, so that what a newcomer copies works: broker configs
// pass the broker's own validation, policies load, kubeconfigs parse, CI
// workflows ask for an OIDC token and name the broker.
package docs

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
)

var fence = regexp.MustCompile("(?s)```(yaml|json)\n(.*?)```")

type snippet struct {
	where string
	lang  string
	body  []byte
}

func snippets(t *testing.T) []snippet {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	var out []snippet
	for _, f := range files {
		if strings.HasSuffix(f, "design.md") {
			continue // the design map quotes contracts, not copyable config
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range fence.FindAllSubmatchIndex(b, -1) {
			line := bytes.Count(b[:m[0]], []byte("\n")) + 1
			out = append(out, snippet{
				where: filepath.Base(f) + ":" + itoa(line) + " (snippet " + itoa(i+1) + ")",
				lang:  string(b[m[2]:m[3]]),
				body:  b[m[4]:m[5]],
			})
		}
	}
	examples, _ := filepath.Glob("../../examples/*.y*ml")
	more, _ := filepath.Glob("../../examples/*/*.y*ml")
	for _, f := range append(examples, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, snippet{where: "examples/" + strings.TrimPrefix(f, "../../examples/"), lang: "yaml", body: b})
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestEverySnippetIsValid(t *testing.T) {
	checked := map[string]int{}
	for _, s := range snippets(t) {
		kind := classify(s)
		checked[kind]++
		t.Run(s.where, func(t *testing.T) {
			switch kind {
			case "BrokerConfig":
				if _, err := config.Parse(s.where, s.body); err != nil {
					t.Fatalf("broker config does not validate: %v", err)
				}
			case "Policy":
				if _, err := policy.Parse(s.body, s.where); err != nil {
					t.Fatalf("policy does not load: %v", err)
				}
			case "kubeconfig":
				if _, err := clientcmd.Load(s.body); err != nil {
					t.Fatalf("kubeconfig does not parse: %v", err)
				}
				if bytes.Contains(s.body, []byte("exec:")) && !bytes.Contains(s.body, []byte("command: kubectl-agent")) {
					t.Fatalf("an exec entry should run kubectl-agent (kuberc allowlists trust it by name)")
				}
			case "github-workflow":
				if !regexp.MustCompile(`id-token:\s*write`).Match(s.body) {
					t.Fatalf("a GitHub workflow using kubectl-agent needs permissions: id-token: write")
				}
			case "gitlab-ci":
				if !bytes.Contains(s.body, []byte("id_tokens:")) || !bytes.Contains(s.body, []byte("aud:")) {
					t.Fatalf("a GitLab job needs id_tokens with an aud")
				}
			case "broker-fragment":
				// trustRules shown alone: checked inside a minimal config that
				// defines the issuer and cluster they name.
				doc := append([]byte(brokerHeader), s.body...)
				if _, err := config.Parse(s.where, doc); err != nil {
					t.Fatalf("trust rule fragment does not validate inside a BrokerConfig: %v", err)
				}
			case "policy-fragment":
				doc := append([]byte("apiVersion: kubectl-agent.io/v1alpha1\nkind: Policy\n"), s.body...)
				if _, err := policy.Parse(doc, s.where); err != nil {
					t.Fatalf("policy fragment does not load inside a Policy: %v", err)
				}
			case "exec-fragment":
				if !bytes.Contains(s.body, []byte("command: kubectl-agent")) {
					t.Fatalf("an exec entry should run kubectl-agent (kuberc allowlists trust it by name)")
				}
			case "configmap-broker":
				var cm struct {
					Data map[string]string `json:"data"`
				}
				for _, doc := range bytes.Split(s.body, []byte("\n---\n")) {
					if bytes.Contains(doc, []byte("kind: ConfigMap")) {
						if err := yaml.Unmarshal(doc, &cm); err != nil {
							t.Fatal(err)
						}
					}
				}
				for key, cfg := range cm.Data {
					if _, err := config.Parse(s.where+" data."+key, []byte(cfg)); err != nil {
						t.Fatalf("the broker config in the ConfigMap does not validate: %v", err)
					}
				}
			case "reference", "aws-auth", "manifests", "json":
				// Kubernetes manifests are applied against a real apiserver in
				// test/e2e/examples; here they must at least parse.
			default:
				t.Fatalf("unrecognized snippet; teach test/docs what it is:\n%s", s.body)
			}
			if s.lang == "yaml" {
				for _, doc := range bytes.Split(s.body, []byte("\n---\n")) {
					var v any
					if err := yaml.Unmarshal(doc, &v); err != nil {
						t.Fatalf("not valid YAML: %v", err)
					}
				}
			}
		})
	}
	t.Logf("checked snippets by kind: %v", checked)
	for _, want := range []string{"BrokerConfig", "Policy", "kubeconfig", "github-workflow", "gitlab-ci"} {
		if checked[want] == 0 {
			t.Errorf("no %s snippet found: the docs and examples should show one", want)
		}
	}
}

// brokerHeader completes a trustRules fragment into a BrokerConfig.
const brokerHeader = `apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: https://agent-broker.example.com
listen: 127.0.0.1:8080
store:
  url: sqlite:///var/lib/agent-broker/broker.db
issuers:
- issuer: https://token.actions.githubusercontent.com
  audiences: [https://agent-broker.example.com]
clusters:
- name: prod
  server: https://prod.k8s.example.com
  backend:
    type: kubernetes
    kubernetes: {namespace: agent-broker}
`

func classify(s snippet) string {
	b := s.body
	switch {
	case s.lang == "json":
		return "json"
	case bytes.Contains(b, []byte("[...]")):
		return "reference" // a schema sketch, not meant to be copied whole
	case bytes.Contains(b, []byte("kind: ConfigMap")) && bytes.Contains(b, []byte("kind: BrokerConfig")):
		return "configmap-broker"
	case bytes.HasPrefix(b, []byte("mapRoles:")):
		return "aws-auth"
	case bytes.HasPrefix(b, []byte("exec:")):
		return "exec-fragment"
	case bytes.HasPrefix(b, []byte("trustRules:")):
		return "broker-fragment"
	case bytes.HasPrefix(b, []byte("mask:")) || bytes.HasPrefix(b, []byte("rules:")):
		return "policy-fragment"
	case bytes.Contains(b, []byte("kind: BrokerConfig")):
		return "BrokerConfig"
	case bytes.Contains(b, []byte("kind: Policy")) && !bytes.Contains(b, []byte("\n---\n")):
		return "Policy"
	case bytes.Contains(b, []byte("id_tokens:")):
		return "gitlab-ci"
	case bytes.Contains(b, []byte("jobs:")) || bytes.Contains(b, []byte("runs-on:")):
		return "github-workflow"
	case bytes.Contains(b, []byte("users:")) || bytes.Contains(b, []byte("kind: Config")):
		return "kubeconfig"
	case bytes.Contains(b, []byte("apiVersion:")) && bytes.Contains(b, []byte("kind:")):
		return "manifests"
	}
	return "unknown"
}
