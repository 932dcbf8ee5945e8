package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func runCheck(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: ctx, context: {cluster: c, user: u, namespace: team}}]
current-context: ctx
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	code = Execute(context.Background(), streams, append([]string{"--kubeconfig", kc, "check"}, args...))
	return out.String(), errOut.String(), code
}

const examplePolicy = "../../examples/policy.yaml"

func TestCheckExitCodesAndJSON(t *testing.T) {
	cases := []struct {
		args     []string
		code     int
		decision string
	}{
		{[]string{"--policy", examplePolicy, "-o", "json", "--", "kubectl", "delete", "ns", "prod"}, ExitRefused, "deny"},
		{[]string{"--policy", examplePolicy, "-o", "json", "--", "kubectl", "-n", "prod", "scale", "deploy/web", "--replicas=3"}, ExitApprove, "approve"},
		{[]string{"--policy", examplePolicy, "-o", "json", "--", "kubectl", "get", "pods"}, ExitOK, "allow"},
		{[]string{"-o", "json", "--", "kubectl", "delete", "ns", "prod"}, ExitOK, "allow"}, // default policy allows
		{[]string{"--policy", examplePolicy, "-o", "json", "--", "kubectl", "create", "clusterrolebinding", "x", "--clusterrole=cluster-admin", "--user=me"}, ExitRefused, "deny"},
	}
	for _, c := range cases {
		out, errOut, code := runCheck(t, c.args...)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %s)", c.args, code, c.code, errOut)
			continue
		}
		var res struct {
			Decision string `json:"decision"`
			Requests []struct {
				Verb, APIGroup, Resource, Subresource, Namespace, Name, Decision, Rule, Message string
			} `json:"requests"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Errorf("%v: output is not JSON: %v\n%s", c.args, err, out)
			continue
		}
		if res.Decision != c.decision || len(res.Requests) == 0 {
			t.Errorf("%v: decision %q with %d requests, want %q", c.args, res.Decision, len(res.Requests), c.decision)
		}
	}
}

func TestCheckTableAndNamespaceFromKubeconfig(t *testing.T) {
	out, errOut, code := runCheck(t, "--policy", examplePolicy, "--", "kubectl", "delete", "pod", "web")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "DECISION") || !strings.Contains(out, "ALLOW") || !strings.Contains(out, "team") {
		t.Errorf("table without the decision or the kubeconfig's namespace:\n%s", out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("escape codes in non-terminal output")
	}
	out, errOut, code = runCheck(t, "--policy", examplePolicy, "--", "kubectl", "exec", "-n", "kube-system", "etcd-0", "--", "sh")
	if code != ExitRefused || !strings.Contains(out, "no-exec-in-kube-system") || !strings.Contains(errOut, "would be denied") {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
}

func TestCheckErrors(t *testing.T) {
	if _, errOut, code := runCheck(t, "--", "kubectl", "frobnicate"); code != ExitUsage || !strings.Contains(errOut, `cannot map "kubectl frobnicate"`) {
		t.Errorf("unknown subcommand: exit %d, %s", code, errOut)
	}
	if _, errOut, code := runCheck(t, "-o", "xml", "--", "kubectl", "get", "pods"); code != ExitUsage {
		t.Errorf("-o xml: exit %d, %s", code, errOut)
	}
	if _, errOut, code := runCheck(t); code != ExitUsage {
		t.Errorf("no command line: exit %d, %s", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: kubectl-agent.io/v1alpha1\nkind: Policy\nrules:\n- name: x\n  action: deny\n  verbs: [delet]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runCheck(t, "--policy", bad, "--", "kubectl", "get", "pods"); code != ExitFailure || !strings.Contains(errOut, `unknown verb "delet"`) {
		t.Errorf("bad policy: exit %d, %s", code, errOut)
	}
}
