package broker_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/keys"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"

	jose "github.com/go-jose/go-jose/v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The exchange yields a session whose credential does exactly what the rule
// grants: reads and configmap creation in the granted namespace, nothing in
// another namespace, nothing else in the granted one.
func TestCredentialDoesExactlyTheGrant(t *testing.T) {
	e := newEnv(t)
	b := e.startBroker(t, e.storeURL, nil)
	ctx := context.Background()
	r := newRunner(t, b.URL)
	resp, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "100", audience)))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	s := resp.Session
	if s.Credential == nil || s.Credential.Token == "" {
		t.Fatal("the session has no credential")
	}
	if s.Grant.Rule != "deploy-main" || !slices.Equal(s.Grant.Namespaces, []string{e.workNS}) {
		t.Errorf("grant = %+v, want rule deploy-main in %s", s.Grant, e.workNS)
	}
	if s.Identity.Repository != "acme/app" || s.Identity.RunID != "100" || s.Policy == "" || s.KeyBinding == "" {
		t.Errorf("session = %+v: want identity acme/app run 100, a policy and a key binding", s)
	}
	tok := s.Credential.Token

	allowed := [][]string{
		{"get", "pods", "-n", e.workNS},
		{"get", "configmaps", "-n", e.workNS},
		{"create", "configmap", "made-by-run", "-n", e.workNS},
	}
	for _, args := range allowed {
		if out, errOut, code := e.kubectlAs(t, tok, args...); code != 0 {
			t.Errorf("kubectl %v: exit %d, want success\n%s%s", args, code, out, errOut)
		}
	}
	forbidden := [][]string{
		{"get", "pods", "-n", e.otherNS},
		{"get", "secrets", "-n", e.workNS},
		{"delete", "configmap", "made-by-run", "-n", e.workNS},
		{"create", "configmap", "x", "-n", e.otherNS},
		{"get", "namespaces"},
		{"get", "pods", "-n", e.brokerNS},
	}
	for _, args := range forbidden {
		_, errOut, code := e.kubectlAs(t, tok, args...)
		if code == 0 || !strings.Contains(strings.ToLower(errOut), "forbidden") {
			t.Errorf("kubectl %v: exit %d, stderr %q; want Forbidden", args, code, errOut)
		}
	}
	// The credential authenticates as the session's own ServiceAccount.
	out, _, _ := e.kubectlAs(t, tok, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if want := "system:serviceaccount:" + e.brokerNS + ":ka-" + s.ID; out != want {
		t.Errorf("whoami = %q, want %q", out, want)
	}

	// The key binding verifies with the published JWKS and names the session key.
	res, err := http.Get(b.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(res.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	bc, pub, err := keys.VerifyBinding(s.KeyBinding, set)
	if err != nil {
		t.Fatalf("key binding: %v", err)
	}
	if bc.Subject != s.ID || !pub.Equal(r.key.Public()) || bc.Identity.Repository != "acme/app" {
		t.Errorf("binding = %+v: want session %s and the runner's key", bc, s.ID)
	}
}

// A second exchange of the same run with the same key is the same session;
// with another key it is refused (a key never takes over a run's session).
func TestOneRunOneSession(t *testing.T) {
	e := newEnv(t)
	b := e.startBroker(t, e.storeURL, nil)
	ctx := context.Background()
	r := newRunner(t, b.URL)
	tok := e.iss.Mint(e.iss.GitHubClaims("acme/app", "200", audience))
	first, err := r.exchange(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	// The same token again with the same key (a retry) is the same session.
	retry, err := r.exchange(ctx, tok)
	if err != nil || retry.Session.ID != first.Session.ID {
		t.Fatalf("retry = %v, %v; want session %s", retry, err, first.Session.ID)
	}
	again, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "200", audience)))
	if err != nil {
		t.Fatal(err)
	}
	if again.Session.ID != first.Session.ID {
		t.Errorf("second token of the run got session %s, want %s", again.Session.ID, first.Session.ID)
	}
	other := newRunner(t, b.URL)
	_, err = other.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "200", audience)))
	if ae := apiError(err); ae == nil || ae.Code != "invalid_grant" || !strings.Contains(ae.Description, "another session key") {
		t.Errorf("another key for the run: err = %v, want invalid_grant about another session key", err)
	}
	// The session calls work with the session token and its key.
	sc := r.session(first)
	got, err := sc.Get(ctx, first.Session.ID)
	if err != nil || got.ID != first.Session.ID || got.Ended {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	cred, err := sc.Credential(ctx, first.Session.ID)
	if err != nil || cred.Token == "" {
		t.Fatalf("Credential = %v, %v", cred, err)
	}
	// The other runner's key cannot use the first runner's session token.
	stolen := other.client.WithSession(first.AccessToken, other.key)
	_, err = stolen.Get(ctx, first.Session.ID)
	if ae := apiError(err); ae == nil || ae.Code != "invalid_dpop_proof" {
		t.Errorf("session token with a foreign DPoP key: err = %v, want invalid_dpop_proof", err)
	}
}

// Ending the session revokes the credential: kubectl gets Unauthorized
// within 15 s (the apiserver caches tokens ~10 s).
func TestEndRevokes(t *testing.T) {
	e := newEnv(t)
	b := e.startBroker(t, e.storeURL, nil)
	ctx := context.Background()
	r := newRunner(t, b.URL)
	pipelineToken := e.iss.Mint(e.iss.GitHubClaims("acme/app", "300", audience))
	resp, err := r.exchange(ctx, pipelineToken)
	if err != nil {
		t.Fatal(err)
	}
	tok := resp.Session.Credential.Token
	if _, errOut, code := e.kubectlAs(t, tok, "get", "pods", "-n", e.workNS); code != 0 {
		t.Fatalf("before end: %s", errOut)
	}
	sc := r.session(resp)
	if err := sc.End(ctx, resp.Session.ID); err != nil {
		t.Fatalf("End: %v", err)
	}
	ended := time.Now()
	if objs := e.sessionObjects(t, resp.Session.ID); len(objs) != 0 {
		t.Errorf("objects left after end: %v", objs)
	}
	deadline := ended.Add(15 * time.Second)
	for {
		_, errOut, code := e.kubectlAs(t, tok, "get", "pods", "-n", e.workNS)
		if code != 0 && strings.Contains(errOut, "Unauthorized") {
			t.Logf("token refused %s after end", time.Since(ended).Round(100*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the token still works 15 s after the session ended (last: exit %d %s)", code, errOut)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The ended session gives no new credential, and says it ended.
	if _, err := sc.Credential(ctx, resp.Session.ID); !session.SessionGone(err) {
		t.Errorf("credential after end: %v, want the session gone", err)
	}
	if got, err := sc.Get(ctx, resp.Session.ID); err != nil || !got.Ended {
		t.Errorf("Get after end = %+v, %v; want ended", got, err)
	}
	// Ending twice is fine.
	if err := sc.End(ctx, resp.Session.ID); err != nil {
		t.Errorf("second End: %v", err)
	}
	// No secret reached the log: not the pipeline token, the session
	// token, the credential or a DPoP proof's signature.
	logs := b.Logs()
	if !strings.Contains(logs, resp.Session.ID) {
		t.Fatal("the log does not even name the session; the check below would prove nothing")
	}
	for name, secret := range map[string]string{"pipeline token": pipelineToken, "session token": resp.AccessToken, "credential": tok} {
		if strings.Contains(logs, secret) || strings.Contains(logs, secret[len(secret)-24:]) {
			t.Errorf("the broker logged the %s", name)
		}
	}
}

// The reconciler removes a session's objects after it expires, also when a
// new broker instance on the same store does it, and when the store is new
// (empty): nothing leaks.
func TestReconcilerRemovesDeadSessions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	t.Run("after expiry, on a new instance with the same store", func(t *testing.T) {
		clk := &clock{}
		b1 := e.startBroker(t, e.storeURL, clk)
		r := newRunner(t, b1.URL)
		resp, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "400", audience)))
		if err != nil {
			t.Fatal(err)
		}
		id := resp.Session.ID
		if len(e.sessionObjects(t, id)) != 3 {
			t.Fatalf("objects = %v, want SA, Role, RoleBinding", e.sessionObjects(t, id))
		}
		// Still live: a reconcile keeps it.
		if err := b1.Server.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if len(e.sessionObjects(t, id)) != 3 {
			t.Fatalf("reconcile removed a live session's objects: %v", e.sessionObjects(t, id))
		}
		b1.Stop()
		clk.Advance(31 * time.Minute) // past the 30m TTL
		b2 := e.startBroker(t, e.storeURL, clk)
		if err := b2.Server.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if objs := e.sessionObjects(t, id); len(objs) != 0 {
			t.Errorf("objects left after expiry: %v", objs)
		}
	})

	t.Run("with an empty store", func(t *testing.T) {
		b1 := e.startBroker(t, e.storeURL, nil)
		r := newRunner(t, b1.URL)
		resp, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "401", audience)))
		if err != nil {
			t.Fatal(err)
		}
		id := resp.Session.ID
		b1.Stop()
		b2 := e.startBroker(t, "sqlite://"+t.TempDir()+"/fresh.db", nil)
		// Serve runs a reconcile at start; wait for it rather than call it.
		deadline := time.Now().Add(15 * time.Second)
		for len(e.sessionObjects(t, id)) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("a broker with an empty store left %v", e.sessionObjects(t, id))
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = b2
	})
}

// Two brokers share one PostgreSQL: exchange on one, refresh and end on the
// other (signing keys, sessions and proof jtis are shared).
func TestTwoBrokersOnePostgres(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pg := agenttest.PostgresURL(t)
	// Both brokers sit behind one public URL, as behind a load balancer; the
	// test picks which one gets each request.
	var target atomic.Pointer[url.URL]
	lb := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target.Load())
		pr.Out.Host = pr.In.Host
	}})
	t.Cleanup(lb.Close)
	a := e.startBrokerAt(t, pg, nil, lb.URL)
	b := e.startBrokerAt(t, pg, nil, lb.URL)
	to := func(br *broker) {
		u, _ := url.Parse(br.URL)
		target.Store(u)
	}
	to(a)
	r := newRunner(t, lb.URL)
	resp, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "500", audience)))
	if err != nil {
		t.Fatal(err)
	}
	to(b)
	sb := r.session(resp)
	cred, err := sb.Credential(ctx, resp.Session.ID)
	if err != nil || cred.Token == "" {
		t.Fatalf("refresh on the other broker: %v", err)
	}
	if _, errOut, code := e.kubectlAs(t, cred.Token, "get", "pods", "-n", e.workNS); code != 0 {
		t.Errorf("refreshed credential: %s", errOut)
	}
	if err := sb.End(ctx, resp.Session.ID); err != nil {
		t.Fatalf("end on the other broker: %v", err)
	}
	got, err := a.Store.GetSession(ctx, resp.Session.ID)
	if err != nil || !got.Ended() {
		t.Errorf("broker a sees session %+v, %v; want ended", got, err)
	}
	if objs := e.sessionObjects(t, resp.Session.ID); len(objs) != 0 {
		t.Errorf("objects left after end on broker b: %v", objs)
	}
	// The same run after the end is a new session, on either broker.
	to(a)
	again, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "500", audience)))
	if err != nil || again.Session.ID == resp.Session.ID {
		t.Errorf("exchange after end = %v, %v; want a new session", again, err)
	}
}

// A clusterRules grant becomes a ClusterRole and ClusterRoleBinding, which
// ending the session removes.
func TestClusterWideGrant(t *testing.T) {
	e := newEnv(t)
	b := e.startBrokerWith(t, e.storeURL, func(cfg string) string {
		i := strings.Index(cfg, "  grant:")
		j := strings.Index(cfg, "  policy:")
		return cfg[:i] + `  grant:
    clusterRules:
    - verbs: [get, list]
      apiGroups: [""]
      resources: [namespaces]
    - verbs: [get]
      nonResourceURLs: ["/version"]
` + cfg[j:]
	})
	ctx := context.Background()
	r := newRunner(t, b.URL)
	resp, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "250", audience)))
	if err != nil {
		t.Fatal(err)
	}
	tok := resp.Session.Credential.Token
	if _, errOut, code := e.kubectlAs(t, tok, "get", "namespaces"); code != 0 {
		t.Errorf("granted get namespaces: %s", errOut)
	}
	if _, errOut, code := e.kubectlAs(t, tok, "get", "pods", "-n", e.workNS); code == 0 || !strings.Contains(strings.ToLower(errOut), "forbidden") {
		t.Errorf("pods were not granted: exit %d %s", code, errOut)
	}
	name := "ka-" + resp.Session.ID
	cs := e.c.Clientset()
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("ClusterRoleBinding: %v", err)
	}
	if err := r.session(resp).End(ctx, resp.Session.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ClusterRole after end: %v, want NotFound", err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ClusterRoleBinding after end: %v, want NotFound", err)
	}
}

// The operational endpoints answer.
func TestOperationalEndpoints(t *testing.T) {
	e := newEnv(t)
	b := e.startBroker(t, e.storeURL, nil)
	for path, want := range map[string]string{
		"/healthz":     "ok",
		"/readyz":      `"ready":true`,
		"/v1/clusters": `"name":"test"`,
		"/metrics":     "agent_broker_exchanges_total",
	} {
		if path == "/metrics" {
			// A refused exchange, so the counter has a sample.
			_, _ = http.PostForm(b.URL+"/v1/token", map[string][]string{"grant_type": {"x"}})
		}
		res, err := http.Get(b.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %.300s; want 200 with %q", path, res.StatusCode, body, want)
		}
	}
	_ = store.ErrNotFound
}
