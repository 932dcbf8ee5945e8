package broker_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
)

func TestCheckConfigCommand(t *testing.T) {
	e := newEnv(t)
	_, bin := agenttest.Binaries(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(good, []byte(e.configYAML("http://127.0.0.1:8443", e.storeURL)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := agenttest.Run(t, bin, nil, "check-config", "--config", good); code != 0 || !strings.Contains(out, "ok (1 issuers, 1 clusters, 1 trust rules)") {
		t.Errorf("good config: exit %d %s%s", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.yaml")
	data := strings.Replace(e.configYAML("http://127.0.0.1:8443", e.storeURL), "  cluster: test", "  cluster: prod", 1)
	if err := os.WriteFile(bad, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := agenttest.Run(t, bin, nil, "check-config", "--config", bad)
	if code != 1 || !strings.Contains(errOut, bad+":27: trustRules[0].cluster: cluster \"prod\" is not defined in clusters") {
		t.Errorf("bad config: exit %d %q", code, errOut)
	}
	if _, errOut, code := agenttest.Run(t, bin, nil, "check-config"); code != 2 || !strings.Contains(errOut, "--config") {
		t.Errorf("no --config: exit %d %q", code, errOut)
	}
	if out, _, code := agenttest.Run(t, bin, nil, "version", "-o", "json"); code != 0 || !strings.Contains(out, `"version"`) {
		t.Errorf("version: %d %s", code, out)
	}
	if _, errOut, code := agenttest.Run(t, bin, nil, "serve", "--config", good, "--listen", "0.0.0.0:0"); code != 2 || !strings.Contains(errOut, "plain HTTP") {
		t.Errorf("serve on 0.0.0.0 without TLS: exit %d %q", code, errOut)
	}
}

// The agent-broker process serves; a new process on the same store keeps the
// sessions (tokens it signed verify, because keys live in the store).
func TestServeProcessRestart(t *testing.T) {
	e := newEnv(t)
	_, bin := agenttest.Binaries(t)
	addr := agenttest.FreeAddr(t)
	url := "http://" + addr
	b := agenttest.StartBroker(t, bin, addr, e.configYAML(url, e.storeURL))
	stop := func() {
		if err := b.Stop(); err != nil {
			t.Errorf("agent-broker exit after SIGTERM: %v", err)
		}
	}
	ctx := context.Background()
	// serve mounts the approvals API and page next to the broker's routes
	// (without AGENT_BROKER_OIDC_* the page says sign-in is off, with 503).
	if res, err := http.Get(url + "/approvals/"); err != nil {
		t.Error(err)
	} else {
		res.Body.Close()
		if res.StatusCode == http.StatusNotFound || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET /approvals/ on agent-broker serve: %d %s, want the approvals page", res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
	r := newRunner(t, url)
	resp, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "700", audience)))
	if err != nil {
		stop()
		t.Fatal(err)
	}
	stop()
	b.Restart(t)
	defer stop()
	sc := r.session(resp)
	cred, err := sc.Credential(ctx, resp.Session.ID)
	if err != nil {
		t.Fatalf("refresh after restart: %v", err)
	}
	if _, errOut, code := e.kubectlAs(t, cred.Token, "get", "configmaps", "-n", e.workNS); code != 0 {
		t.Errorf("credential after restart: %s", errOut)
	}
	if len(e.sessionObjects(t, resp.Session.ID)) != 3 {
		t.Errorf("the restarted broker's reconcile removed a live session's objects: %v", e.sessionObjects(t, resp.Session.ID))
	}
	if err := sc.End(ctx, resp.Session.ID); err != nil {
		t.Errorf("end after restart: %v", err)
	}
}
