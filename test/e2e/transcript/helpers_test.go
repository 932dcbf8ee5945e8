package transcript_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

// broker is an agent-broker process and the file of its SQLite store.
type broker struct {
	*agenttest.Broker
	db string
}

// startBroker runs agent-broker with a grant for acme/app in appNS: read
// ConfigMaps, Secrets and Pods, delete ConfigMaps, exec into Pods.
func startBroker(t *testing.T, c *cluster.Cluster, iss *oidcissuer.Issuer, bin, brokerNS, appNS string) *broker {
	t.Helper()
	dir := t.TempDir()
	addr := agenttest.FreeAddr(t)
	url := "http://" + addr
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, c.CAData, 0o600); err != nil {
		t.Fatal(err)
	}
	b := &broker{db: filepath.Join(dir, "broker.db")}
	cfg := fmt.Sprintf(`apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: %s
listen: %s
store: {url: "sqlite://%s"}
issuers:
- issuer: %s
  preset: github
clusters:
- name: c1
  server: %s
  caFile: %s
  backend:
    type: kubernetes
    kubernetes: {kubeconfig: %s, namespace: %s}
trustRules:
- name: app
  issuer: %s
  match: {repository: acme/app}
  cluster: c1
  ttl: 30m
  grant:
    namespaces: [%s]
    rules:
    - {verbs: [get, list, watch, delete], apiGroups: [""], resources: [configmaps]}
    - {verbs: [get, list], apiGroups: [""], resources: [secrets, pods]}
    - {verbs: [create, get], apiGroups: [""], resources: [pods/exec]}
`, url, addr, b.db, iss.URL, c.Server, caFile, c.AdminKubeconfig, brokerNS, iss.URL, appNS)
	b.Broker = agenttest.StartBroker(t, bin, addr, cfg)
	return b
}

// job is one CI job of acme/app: its environment and session cache.
type job struct {
	env      []string
	cacheDir string
	runID    string
}

func newJob(t *testing.T, c *cluster.Cluster, iss *oidcissuer.Issuer, b *broker) *job {
	runID := fmt.Sprint(time.Now().UnixNano())
	cacheDir := t.TempDir()
	return &job{runID: runID, cacheDir: cacheDir, env: []string{
		"KUBECACHEDIR=" + cacheDir,
		"PATH=" + c.BinDir() + string(os.PathListSeparator) + os.Getenv("PATH"),
		"GITHUB_ACTIONS=true",
		"GITHUB_SERVER_URL=https://github.com",
		"GITHUB_REPOSITORY=acme/app",
		"GITHUB_RUN_ID=" + runID,
		"GITHUB_RUN_ATTEMPT=1",
		"GITHUB_STEP_SUMMARY=" + filepath.Join(cacheDir, "summary.md"),
		"ACTIONS_ID_TOKEN_REQUEST_URL=" + iss.URL + "/token?repository=acme/app&run_id=" + runID,
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN=request-token",
		"KUBECTL_AGENT_BROKER=" + b.URL, "KUBECTL_AGENT_CLUSTER=c1", "KUBECTL_AGENT_TOKEN_SOURCE=auto", "KUBECTL_AGENT_AUDIENCE=",
		"RUNNER_TEMP=", "NO_COLOR=1",
	}}
}

func (j *job) spoolDir() string { return filepath.Join(j.cacheDir, "kubectl-agent", "transcripts") }

func (j *job) spools(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(j.spoolDir(), "*.transcript.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
