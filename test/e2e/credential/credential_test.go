// Package credential_test runs the credential plugin end to end: the real
// agent-broker (JIT ServiceAccounts on the pinned control plane), the OIDC
// issuer stand-in speaking GitHub's Actions token protocol, the built
// kubectl-agent binary written into a kubeconfig by `kubectl agent
// kubeconfig`, and the real kubectl.
package credential_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

func TestMain(m *testing.M) { os.Exit(agenttest.Main(m, cluster.Main)) }

// startBroker runs agent-broker serve with a config granting repository
// acme/app read access to ConfigMaps in appNS, for ttl.
func startBroker(t *testing.T, c *cluster.Cluster, iss *oidcissuer.Issuer, bin, brokerNS, appNS string) *agenttest.Broker {
	t.Helper()
	dir := t.TempDir()
	addr := agenttest.FreeAddr(t)
	url := "http://" + addr
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, c.CAData, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: %s
listen: %s
store: {url: "sqlite://%s/broker.db"}
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
- name: app-reads-configmaps
  issuer: %s
  match: {repository: acme/app}
  cluster: c1
  ttl: 30m
  grant:
    namespaces: [%s]
    rules:
    - {verbs: [get, list, watch], apiGroups: [""], resources: [configmaps]}
`, url, addr, dir, iss.URL, c.Server, caFile, c.AdminKubeconfig, brokerNS, iss.URL, appNS)
	return agenttest.StartBroker(t, bin, addr, cfg)
}

// exchanges counts the broker's exchanges that made a new session and that
// repeated one (its /metrics).
func exchanges(t *testing.T, b *agenttest.Broker) (newSessions, repeats int) {
	t.Helper()
	resp, err := http.Get(b.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		var n int
		if v, ok := strings.CutPrefix(line, `agent_broker_exchanges_total{result="new"} `); ok {
			fmt.Sscan(v, &n)
			newSessions = n
		}
		if v, ok := strings.CutPrefix(line, `agent_broker_exchanges_total{result="repeat"} `); ok {
			fmt.Sscan(v, &n)
			repeats = n
		}
	}
	return newSessions, repeats
}

// runEnv is the environment of one GitHub Actions job of acme/app, run runID.
func runEnv(iss *oidcissuer.Issuer, kubeconfig, cacheDir, runID string) []string {
	return []string{
		"KUBECONFIG=" + kubeconfig,
		"KUBECACHEDIR=" + cacheDir,
		"GITHUB_ACTIONS=true",
		"GITHUB_SERVER_URL=https://github.com",
		"GITHUB_REPOSITORY=acme/app",
		"GITHUB_RUN_ID=" + runID,
		"GITHUB_RUN_ATTEMPT=1",
		"ACTIONS_ID_TOKEN_REQUEST_URL=" + iss.URL + "/token?repository=acme/app&run_id=" + runID,
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN=request-token",
		"KUBECTL_AGENT_BROKER=", "KUBECTL_AGENT_CLUSTER=", "KUBECTL_AGENT_TOKEN_SOURCE=", "KUBECTL_AGENT_AUDIENCE=",
		"RUNNER_TEMP=",
	}
}

// cacheEntry reads the one session entry of a cache folder.
func cacheEntry(t *testing.T, cacheDir string) (string, *session.Entry) {
	t.Helper()
	dir := filepath.Join(cacheDir, "kubectl-agent")
	files, _ := filepath.Glob(filepath.Join(dir, "[0-9a-f]*.json"))
	if len(files) != 1 {
		t.Fatalf("cache entries %v", files)
	}
	key := strings.TrimSuffix(filepath.Base(files[0]), ".json")
	e, err := (&session.Cache{Dir: dir}).Load(key)
	if err != nil || e == nil {
		t.Fatalf("loading the cache entry: %v", err)
	}
	return key, e
}

func TestCredentialPlugin(t *testing.T) {
	c := cluster.Shared(t)
	agent, brokerBin := agenttest.Binaries(t)
	iss, err := oidcissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	iss.RequestToken = "request-token"
	t.Cleanup(func() { _ = iss.Close() })
	brokerNS, appNS := c.Namespace(t), c.Namespace(t)
	b := startBroker(t, c, iss, brokerBin, brokerNS, appNS)
	if _, err := c.Clientset().CoreV1().ConfigMaps(appNS).Create(context.Background(), mustConfigMap(appNS), metaCreate); err != nil {
		t.Fatal(err)
	}

	for i, version := range []string{"client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"} {
		t.Run(version[strings.LastIndex(version, "/")+1:], func(t *testing.T) {
			runID := fmt.Sprintf("run-%d-%d", time.Now().UnixNano(), i)
			kc := filepath.Join(t.TempDir(), "kubeconfig")
			cacheDir := t.TempDir()
			env := runEnv(iss, kc, cacheDir, runID)
			out, errOut, code := agenttest.Run(t, agent, env, "kubeconfig", "--broker", b.URL, "--cluster", "c1",
				"--kubeconfig", kc, "--exec-command", agent, "--exec-api-version", version)
			if code != 0 {
				t.Fatalf("kubectl agent kubeconfig: %s %s", out, errOut)
			}
			newBefore, _ := exchanges(t, b)

			// 20 kubectl processes at once: one exchange at the broker.
			var wg sync.WaitGroup
			results := make([]string, 20)
			for j := range results {
				wg.Go(func() {
					out, errOut, code := c.Kubectl(t, env, "get", "configmaps", "-n", appNS, "-o", "name")
					if code != 0 || !strings.Contains(out, "configmap/app-config") {
						results[j] = fmt.Sprintf("exit %d: %s %s", code, out, errOut)
					}
				})
			}
			wg.Wait()
			for j, r := range results {
				if r != "" {
					t.Fatalf("kubectl %d: %s", j, r)
				}
			}
			newAfter, _ := exchanges(t, b)
			if newAfter-newBefore != 1 {
				t.Fatalf("20 kubectl processes made %d new sessions at the broker, want 1", newAfter-newBefore)
			}
			// The grant holds: outside it, Forbidden.
			_, errOut, code = c.Kubectl(t, env, "get", "secrets", "-n", appNS)
			if code == 0 || !strings.Contains(errOut, "Forbidden") {
				t.Fatalf("reading secrets: exit %d, %s", code, errOut)
			}
			_, e := cacheEntry(t, cacheDir)
			if !strings.Contains(e.Session.Identity.Repository, "acme/app") || e.Session.Identity.RunID != runID {
				t.Fatalf("session identity %+v", e.Session.Identity)
			}
			out, _, code = agenttest.Run(t, agent, env, "whoami", "--broker", b.URL, "--cluster", "c1")
			if code != 0 || !strings.Contains(out, e.Session.ID) || !strings.Contains(out, appNS) {
				t.Fatalf("whoami: %s", out)
			}
		})
	}

	t.Run("refresh, broker down, logout", func(t *testing.T) {
		runID := fmt.Sprintf("run-%d-r", time.Now().UnixNano())
		kc := filepath.Join(t.TempDir(), "kubeconfig")
		cacheDir := t.TempDir()
		env := runEnv(iss, kc, cacheDir, runID)
		if out, errOut, code := agenttest.Run(t, agent, env, "kubeconfig", "--broker", b.URL, "--cluster", "c1", "--kubeconfig", kc, "--exec-command", agent); code != 0 {
			t.Fatalf("kubeconfig: %s %s", out, errOut)
		}
		if _, errOut, code := c.Kubectl(t, env, "get", "configmaps", "-n", appNS); code != 0 {
			t.Fatal(errOut)
		}
		// Make the cached credential nearly expired: the next call refreshes
		// it at the broker (POST /credential, DPoP) instead of exchanging.
		_, e := cacheEntry(t, cacheDir)
		oldToken := e.Credential.Token
		e.Credential.ExpiresAt = time.Now().Add(20 * time.Second)
		e.CredentialIssuedAt = time.Now().Add(-time.Hour)
		if err := (&session.Cache{Dir: filepath.Join(cacheDir, "kubectl-agent")}).Store(e); err != nil {
			t.Fatal(err)
		}
		newBefore, _ := exchanges(t, b)
		if _, errOut, code := c.Kubectl(t, env, "get", "configmaps", "-n", appNS); code != 0 {
			t.Fatalf("after refresh: %s", errOut)
		}
		_, e2 := cacheEntry(t, cacheDir)
		if e2.Credential.Token == oldToken || e2.Session.ID != e.Session.ID || !e2.Credential.ExpiresAt.After(time.Now().Add(5*time.Minute)) {
			t.Fatalf("not refreshed: session %s→%s, expiry %v", e.Session.ID, e2.Session.ID, e2.Credential.ExpiresAt)
		}
		if n, _ := exchanges(t, b); n != newBefore {
			t.Fatalf("the refresh made a new session")
		}

		// Logout: the broker ends the session; its cluster token stops working.
		out, errOut, code := agenttest.Run(t, agent, env, "logout", "--broker", b.URL, "--cluster", "c1")
		if code != 0 || !strings.Contains(out, "Ended session "+e.Session.ID) {
			t.Fatalf("logout: %s %s", out, errOut)
		}
		oldKC := c.Kubeconfig(t, e2.Credential.Token)
		deadline := time.Now().Add(40 * time.Second)
		for {
			_, errOut, code := c.Kubectl(t, []string{"KUBECONFIG=" + oldKC}, "get", "configmaps", "-n", appNS)
			if code != 0 && strings.Contains(errOut, "Unauthorized") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the logged-out token still works after 40s: exit %d %s", code, errOut)
			}
			time.Sleep(time.Second)
		}
		files, _ := filepath.Glob(filepath.Join(cacheDir, "kubectl-agent", "[0-9a-f]*.json"))
		if len(files) != 0 {
			t.Fatalf("cache entries left after logout: %v", files)
		}

		// A new session for the run, then the broker goes away: cached calls
		// keep working, and a call that needs the broker fails in one line.
		if _, errOut, code := c.Kubectl(t, env, "get", "configmaps", "-n", appNS); code != 0 {
			t.Fatalf("after logout: %s", errOut)
		}
		b.Kill()
		for range 3 {
			if _, errOut, code := c.Kubectl(t, env, "get", "configmaps", "-n", appNS); code != 0 {
				t.Fatalf("broker down, cached: %s", errOut)
			}
		}
		otherEnv := runEnv(iss, kc, cacheDir, runID+"-other")
		_, errOut, code = agenttest.Run(t, agent, otherEnv, "credential", "--broker", b.URL, "--cluster", "c1")
		if code == 0 || !strings.Contains(errOut, "cannot reach the broker") || strings.Count(errOut, "\n") != 1 {
			t.Fatalf("broker down, new run: exit %d %q", code, errOut)
		}
	})
}
