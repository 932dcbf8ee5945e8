package transcript_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds kubectl-agent and agent-broker once per test binary.
func binaries(t *testing.T) (agent, broker string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "transcript-e2e-bin-")
		if buildErr != nil {
			return
		}
		for _, p := range []string{"kubectl-agent", "agent-broker"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, p), "../../../cmd/"+p).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("building %s: %v\n%s", p, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "kubectl-agent"), filepath.Join(binDir, "agent-broker")
}

// broker is an agent-broker process; Restart runs it again on the same
// address and store.
type broker struct {
	URL, bin, cfgFile, db string
	cmd                   *exec.Cmd
	done                  chan struct{}
	mu                    sync.Mutex
	logs                  strings.Builder
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startBroker runs agent-broker with a grant for acme/app in appNS: read
// ConfigMaps, Secrets and Pods, delete ConfigMaps, exec into Pods.
func startBroker(t *testing.T, c *cluster.Cluster, iss *oidcissuer.Issuer, bin, brokerNS, appNS string) *broker {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	url := "http://" + addr
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, c.CAData, 0o600); err != nil {
		t.Fatal(err)
	}
	b := &broker{URL: url, bin: bin, db: filepath.Join(dir, "broker.db"), cfgFile: filepath.Join(dir, "broker.yaml")}
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
	if err := os.WriteFile(b.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	b.Start(t)
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			t.Logf("broker logs:\n%s", b.Logs())
		}
	})
	return b
}

func (b *broker) Start(t *testing.T) {
	t.Helper()
	b.done = make(chan struct{})
	b.cmd = exec.Command(b.bin, "serve", "--config", b.cfgFile, "--log-level", "debug")
	pr, pw, _ := os.Pipe()
	b.cmd.Stdout, b.cmd.Stderr = pw, pw
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			b.mu.Lock()
			b.logs.WriteString(sc.Text() + "\n")
			b.mu.Unlock()
		}
	}()
	done := b.done
	go func() { _ = b.cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(b.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("agent-broker exited:\n%s", b.Logs())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent-broker not ready after 30s:\n%s", b.Logs())
		}
	}
}

func (b *broker) Logs() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.logs.String()
}

// Stop kills the broker (as a crash would).
func (b *broker) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Kill()
	<-b.done
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

func run(t *testing.T, bin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}
