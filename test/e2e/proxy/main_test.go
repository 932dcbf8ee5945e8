// Package proxy_test runs kubectl-agent's proxy against a real control plane
// (etcd + kube-apiserver + kwok) with the real kubectl and client-go as
// children of the real kubectl-agent binary.
package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

// Binaries built once for the package by TestMain.
var bins struct{ dir, agent, deletens string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kubectl-agent-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir = dir
	bins.agent = filepath.Join(dir, "kubectl-agent")
	bins.deletens = filepath.Join(dir, "deletens")
	for _, b := range [][2]string{
		{bins.agent, "github.com/kubectl-agent/kubectl-agent/cmd/kubectl-agent"},
		{bins.deletens, "./testdata/deletens"},
	} {
		out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", b[1], err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := cluster.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

const denyPolicy = `apiVersion: kubectl-agent.io/v1alpha1
kind: Policy
defaultAction: allow
rules:
- name: never-delete-namespaces
  action: deny
  verbs: ["delete", "deletecollection"]
  apiGroups: [""]
  resources: ["namespaces"]
  message: namespaces are never deleted from pipelines
- name: prod-needs-a-human
  action: approve
  verbs: ["create", "update", "patch", "delete"]
  namespaces: ["prod-*"]
mask:
- kinds: ["ConfigMap"]
  keys: ["(?i)password"]
`

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// run is one kubectl-agent run.
type run struct {
	stdout, stderr string
	code           int
}

// agent runs `kubectl-agent --kubeconfig ADMIN flags... -- child...` with
// stdin and extra environment.
func agent(t testing.TB, c *cluster.Cluster, stdin string, env []string, flags []string, child ...string) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--kubeconfig", c.AdminKubeconfig, "exec"}, flags...)
	args = append(args, "--")
	args = append(args, child...)
	cmd := exec.CommandContext(ctx, bins.agent, args...)
	cmd.Env = append(append(os.Environ(), "NO_COLOR=1", "GITHUB_ACTIONS="), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := run{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running kubectl-agent %v: %v", args, err)
	}
	return r
}

// kubectl runs the real kubectl under kubectl-agent with the policy.
func kubectl(t testing.TB, c *cluster.Cluster, pol string, args ...string) run {
	t.Helper()
	return agent(t, c, "", nil, []string{"--policy", pol}, append([]string{c.KubectlPath()}, args...)...)
}
