package eks_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

// brokerConfig gives repository acme/app the mapped CI role on the eks
// cluster, and acme/unmapped a role that STS lets the broker assume but that
// has no access entry in the cluster.
func brokerConfig(url, addr, dir, issuer, server, caFile string) string {
	return fmt.Sprintf(`apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: %[1]s
listen: %[2]s
store: {url: "sqlite://%[3]s/broker.db"}
issuers:
- issuer: %[4]s
  preset: github
clusters:
- name: eks
  server: %[5]s
  caFile: %[6]s
  backend:
    type: eks
    eks:
      clusterName: %[7]s
      region: %[8]s
      roleARN: %[9]s
      stsEndpoint: %[10]s
trustRules:
- name: app-on-eks
  issuer: %[4]s
  match: {repository: acme/app}
  cluster: eks
  ttl: 30m
  grant: {iamRole: %[9]s}
- name: unmapped-on-eks
  issuer: %[4]s
  match: {repository: acme/unmapped}
  cluster: eks
  ttl: 30m
  grant: {iamRole: %[11]s}
`, url, addr, dir, issuer, server, caFile, clusterID, region, ciRoleARN, standIns.sts.URL, unmappedRoleARN)
}

// startBroker runs agent-broker serve as its own process with the eks
// backend. Its AWS credentials are the stand-in's static keys in the
// environment, as on a host with an IAM user; AWS_CA_BUNDLE makes the SDK
// trust the stand-in's TLS; nothing else of the host's AWS setup leaks in.
func startBroker(t *testing.T, c *cluster.Cluster, iss *oidcissuer.Issuer, bin string) *agenttest.Broker {
	t.Helper()
	dir := t.TempDir()
	addr := agenttest.FreeAddr(t)
	url := "http://" + addr
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, c.CAData, 0o600); err != nil {
		t.Fatal(err)
	}
	// /readyz includes the backend's readiness: a GetCallerIdentity with the
	// broker's own credentials at the stand-in.
	return agenttest.StartBroker(t, bin, addr, brokerConfig(url, addr, dir, iss.URL, c.Server, caFile),
		"AWS_ACCESS_KEY_ID="+brokerKey,
		"AWS_SECRET_ACCESS_KEY="+brokerSecret,
		"AWS_SESSION_TOKEN=",
		"AWS_PROFILE=", "AWS_DEFAULT_PROFILE=",
		"AWS_REGION="+region,
		"AWS_CA_BUNDLE="+standIns.caFile,
		"AWS_CONFIG_FILE="+filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_USE_FIPS_ENDPOINT=", "AWS_USE_DUALSTACK_ENDPOINT=", "AWS_ENDPOINT_URL=", "AWS_ENDPOINT_URL_STS=",
	)
}

// jobEnv is the environment of one GitHub Actions job of repo, run runID,
// attempt attempt, whose kubectl uses kubeconfig.
func jobEnv(iss *oidcissuer.Issuer, repo, runID, attempt, kubeconfig, cacheDir string) []string {
	return []string{
		"KUBECONFIG=" + kubeconfig,
		"KUBECACHEDIR=" + cacheDir,
		"GITHUB_ACTIONS=true",
		"GITHUB_SERVER_URL=https://github.com",
		"GITHUB_REPOSITORY=" + repo,
		"GITHUB_RUN_ID=" + runID,
		"GITHUB_RUN_ATTEMPT=" + attempt,
		"ACTIONS_ID_TOKEN_REQUEST_URL=" + iss.URL + "/token?repository=" + repo + "&run_id=" + runID + "&run_attempt=" + attempt,
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN=request-token",
		"KUBECTL_AGENT_BROKER=", "KUBECTL_AGENT_CLUSTER=", "KUBECTL_AGENT_TOKEN_SOURCE=", "KUBECTL_AGENT_AUDIENCE=",
		"RUNNER_TEMP=",
	}
}

// whoami is `kubectl auth whoami -o json`: the user the apiserver made of
// the request's credential (SelfSubjectReview, which every authenticated
// user may create).
func whoami(t *testing.T, c *cluster.Cluster, env []string) (authnUser, string, int) {
	t.Helper()
	out, errOut, code := c.Kubectl(t, env, "auth", "whoami", "-o", "json")
	var r struct {
		Status struct {
			UserInfo authnUser `json:"userInfo"`
		} `json:"status"`
	}
	if code == 0 {
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("kubectl auth whoami: %v\n%s", err, out)
		}
	}
	return r.Status.UserInfo, errOut, code
}

type authnUser struct {
	Username string              `json:"username"`
	UID      string              `json:"uid"`
	Groups   []string            `json:"groups"`
	Extra    map[string][]string `json:"extra"`
}

// waitForGroupGrant waits until the apiserver's RBAC authorizer (an informer
// cache) has seen a binding that lets group do verb on resource in ns.
func waitForGroupGrant(t *testing.T, c *cluster.Cluster, group, ns, verb, resource string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: userPrefix + "probe", Groups: []string{group},
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: resource},
	}}
	for {
		got, err := c.Clientset().AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err == nil && got.Status.Allowed {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("RBAC never allowed group %s to %s %s in %s: %v", group, verb, resource, ns, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// auditEvents reads the apiserver's audit log (one audit.k8s.io/v1 Event per
// line).
func auditEvents(t *testing.T, c *cluster.Cluster) []auditEvent {
	t.Helper()
	f, err := os.Open(c.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev auditEvent
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			out = append(out, ev)
		}
	}
	return out
}

type auditEvent struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	User  struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// mustLogIn is how kubectl reports an HTTP 401 from the apiserver.
const mustLogIn = "You must be logged in to the server"

// expectUnauthorized checks that the apiserver refuses token as a credential:
// the real kubectl fails with its 401 message, and a plain request gets 401
// with a metav1.Status of reason Unauthorized.
func expectUnauthorized(t *testing.T, c *cluster.Cluster, name, token, ns string) {
	t.Helper()
	_, errOut, code := c.Kubectl(t, []string{"KUBECONFIG=" + c.Kubeconfig(t, token)}, "get", "configmaps", "-n", ns)
	if code == 0 || !strings.Contains(errOut, mustLogIn) {
		t.Errorf("%s: kubectl exit %d, want its 401 message\n%s", name, code, errOut)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAData)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, err := http.NewRequest(http.MethodGet, c.Server+"/api/v1/namespaces/"+ns+"/configmaps", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer resp.Body.Close()
	var st metav1.Status
	_ = json.NewDecoder(resp.Body).Decode(&st)
	if resp.StatusCode != http.StatusUnauthorized || st.Reason != metav1.StatusReasonUnauthorized {
		t.Errorf("%s: HTTP %d reason %q, want 401 Unauthorized", name, resp.StatusCode, st.Reason)
	}
}
