package proxy_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

const secretValue = "s3cr3t-value-9f8e7d"

func noLeak(t *testing.T, what string, r run) {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString([]byte(secretValue))
	for _, out := range []string{r.stdout, r.stderr} {
		if strings.Contains(out, secretValue) || strings.Contains(out, b64) {
			t.Fatalf("%s leaked the secret value:\n%s", what, out)
		}
	}
}

func TestSecretsMasked(t *testing.T) {
	c := cluster.Shared(t)
	ns := c.Namespace(t)
	pol := writeFile(t, "policy.yaml", denyPolicy)
	sec := writeFile(t, "secret.yaml", `apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: `+secretValue+`
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  dbPassword: `+secretValue+`
  color: blue
`)
	r := kubectl(t, c, pol, "apply", "-n", ns, "-f", sec)
	if r.code != 0 {
		t.Fatalf("apply: %d %s", r.code, r.stderr)
	}
	noLeak(t, "apply", r)
	// The value really is in the cluster (and in the last-applied annotation).
	direct, _, _ := c.Kubectl(t, nil, "get", "secret", "-n", ns, "db", "-o", "yaml")
	if !strings.Contains(direct, base64.StdEncoding.EncodeToString([]byte(secretValue))) || !strings.Contains(direct, "last-applied-configuration") {
		t.Fatalf("direct read does not show the value; the test would prove nothing:\n%s", direct)
	}

	for _, args := range [][]string{
		{"get", "secret", "db", "-o", "yaml"},
		{"get", "secret", "db", "-o", "json"},
		{"get", "secrets"},
		{"get", "secrets", "-o", "wide", "--show-labels"},
		{"get", "secret", "--sort-by=.metadata.name", "-o", "yaml"},
		{"get", "secret", "--sort-by=.metadata.name"},
		{"get", "secret", "db", "-o", "jsonpath={.data.password}"},
		{"get", "secrets", "-o", "custom-columns=N:.metadata.name,A:.metadata.annotations"},
		{"get", "secret,configmap", "-o", "yaml"},
		{"get", "all,secrets", "-o", "json"},
		{"describe", "secret", "db"},
		{"get", "configmap", "cfg", "-o", "yaml"},
		{"get", "--raw", "/api/v1/namespaces/" + ns + "/secrets"},
		{"get", "--raw", "/api/v1/secrets?limit=1"},
		{"get", "secrets", "-w", "--request-timeout=3s"},
		{"get", "secrets", "-w", "-o", "json", "--request-timeout=3s"},
		{"get", "--raw", "/api/v1/namespaces/" + ns + "/secrets?watch=true&timeoutSeconds=2"},
	} {
		args = append(args, "-n", ns)
		r := kubectl(t, c, pol, args...)
		noLeak(t, strings.Join(args, " "), r)
		if args[1] != "--raw" && args[len(args)-3] != "--request-timeout=3s" && r.code != 0 {
			t.Fatalf("kubectl %v: code %d stderr %s", args, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "db") && args[0] != "describe" && !strings.Contains(strings.Join(args, " "), "cfg") && !strings.Contains(args[len(args)-3], "jsonpath") {
			t.Fatalf("kubectl %v: output does not show the secret at all:\n%s\n%s", args, r.stdout, r.stderr)
		}
	}
	r = kubectl(t, c, pol, "get", "configmap", "cfg", "-n", ns, "-o", "jsonpath={.data.color}")
	if r.stdout != "blue" {
		t.Fatalf("unmatched ConfigMap key masked: %q", r.stdout)
	}
	r = kubectl(t, c, pol, "get", "secret", "db", "-n", ns, "-o", "jsonpath={.data.password}")
	if dec, _ := base64.StdEncoding.DecodeString(r.stdout); string(dec) != "***masked-by-kubectl-agent***" {
		t.Fatalf("masked value %q is not base64 of the placeholder", r.stdout)
	}
}
