package broker_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// examples/broker-rbac.yaml is enough for the broker: with a token of the
// ServiceAccount it defines (not admin), exchanges create working
// credentials, ending revokes, and the reconciler cleans up.
func TestBrokerRBACExampleSuffices(t *testing.T) {
	e := newEnv(t)
	if out, errOut, code := e.c.Kubectl(t, nil, "apply", "-f", "../../../examples/broker-rbac.yaml"); code != 0 {
		t.Fatalf("applying the example: %s%s", out, errOut)
	}
	e.brokerNS = "agent-broker"
	tok := e.c.ServiceAccountToken(t, "agent-broker", "agent-broker")
	kubeconfig := e.c.Kubeconfig(t, tok)
	b := e.startBrokerWith(t, e.storeURL, func(cfg string) string {
		return strings.Replace(cfg, e.c.AdminKubeconfig, kubeconfig, 1)
	})
	ctx := context.Background()
	r := newRunner(t, b.URL)
	resp, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "800", audience)))
	if err != nil {
		t.Fatalf("exchange with the example RBAC: %v", err)
	}
	cred := resp.Session.Credential.Token
	if _, errOut, code := e.kubectlAs(t, cred, "create", "configmap", "rbac-example", "-n", e.workNS); code != 0 {
		t.Errorf("granted create: %s", errOut)
	}
	if err := r.session(resp).End(ctx, resp.Session.ID); err != nil {
		t.Fatalf("end with the example RBAC: %v", err)
	}
	if objs := e.sessionObjects(t, resp.Session.ID); len(objs) != 0 {
		t.Errorf("left after end: %v", objs)
	}
	// A live session survives a reconcile; an unknown one does not.
	resp2, err := newRunner(t, b.URL).exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "801", audience)))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Server.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile with the example RBAC: %v", err)
	}
	if len(e.sessionObjects(t, resp2.Session.ID)) != 3 {
		t.Errorf("reconcile removed a live session's objects")
	}
	b.Stop()
	fresh := e.startBrokerWith(t, "sqlite://"+filepath.Join(t.TempDir(), "empty.db"), func(cfg string) string {
		return strings.Replace(cfg, e.c.AdminKubeconfig, kubeconfig, 1)
	})
	if err := fresh.Server.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if objs := e.sessionObjects(t, resp2.Session.ID); len(objs) != 0 {
		t.Errorf("an unknown session's objects survived: %v", objs)
	}
}
