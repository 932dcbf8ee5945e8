package eks_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks/ststest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

// grantGroup gives the access entry's group what a deploy job needs in ns:
// read and create ConfigMaps, nothing else.
func grantGroup(t *testing.T, c *cluster.Cluster, ns string) {
	t.Helper()
	ctx := context.Background()
	rbac := c.Clientset().RbacV1()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "ci-configmaps", Namespace: ns},
		Rules:      []rbacv1.PolicyRule{{Verbs: []string{"get", "list", "create"}, APIGroups: []string{""}, Resources: []string{"configmaps"}}},
	}
	if _, err := rbac.Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ci-configmaps", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: ciGroup}},
	}
	if _, err := rbac.RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForGroupGrant(t, c, ciGroup, ns, "create", "configmaps")
}

// job is one CI job: its environment, with a kubeconfig written by `kubectl
// agent kubeconfig` whose user runs `kubectl agent credential`.
type job struct {
	env         []string
	sessionName string // the role session name the broker should use
}

func newJob(t *testing.T, iss *oidcissuer.Issuer, b *agenttest.Broker, agent, repo, runID, attempt string) job {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	env := jobEnv(iss, repo, runID, attempt, kc, t.TempDir())
	out, errOut, code := agenttest.Run(t, agent, env, "kubeconfig", "--broker", b.URL, "--cluster", "eks", "--kubeconfig", kc, "--exec-command", agent)
	if code != 0 {
		t.Fatalf("kubectl agent kubeconfig: exit %d\n%s%s", code, out, errOut)
	}
	return job{env: env, sessionName: "ka-" + strings.ReplaceAll(repo, "/", ".") + "-" + runID + "-" + attempt}
}

// token is the job's current EKS token, as the credential plugin prints it.
func (j job) token(t *testing.T, agent string, b *agenttest.Broker) string {
	t.Helper()
	out, errOut, code := agenttest.Run(t, agent, j.env, "credential", "--broker", b.URL, "--cluster", "eks")
	if code != 0 {
		t.Fatalf("kubectl agent credential: exit %d\n%s", code, errOut)
	}
	var ec struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &ec); err != nil || ec.Status.Token == "" {
		t.Fatalf("kubectl agent credential printed no token (%v): %s", err, out)
	}
	return ec.Status.Token
}

func TestEKSTokensThroughTheAPIServer(t *testing.T) {
	c := cluster.Shared(t)
	agent, brokerBin := agenttest.Binaries(t)
	iss, err := oidcissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	iss.RequestToken = "request-token"
	t.Cleanup(func() { _ = iss.Close() })
	appNS, otherNS := c.Namespace(t), c.Namespace(t)
	grantGroup(t, c, appNS)
	b := startBroker(t, c, iss, brokerBin)

	runID := fmt.Sprint(time.Now().UnixNano())
	j := newJob(t, iss, b, agent, "acme/app", runID, "1")
	wantUser := userPrefix + j.sessionName
	var issued []string // tokens the test saw, to look for in the logs

	t.Run("the run is its own Kubernetes user", func(t *testing.T) {
		u, errOut, code := whoami(t, c, j.env)
		if code != 0 {
			t.Fatalf("kubectl auth whoami: exit %d\n%s", code, errOut)
		}
		if u.Username != wantUser {
			t.Errorf("username %q, want %q", u.Username, wantUser)
		}
		if !slices.Contains(u.Groups, ciGroup) || !slices.Contains(u.Groups, "system:authenticated") {
			t.Errorf("groups %v, want %s and system:authenticated", u.Groups, ciGroup)
		}
		if got := u.Extra["canonicalArn"]; len(got) != 1 || got[0] != ciRoleARN {
			t.Errorf("extra canonicalArn %v, want %s (extra: %v)", got, ciRoleARN, u.Extra)
		}
		if got := u.Extra["sessionName"]; len(got) != 1 || got[0] != j.sessionName {
			t.Errorf("extra sessionName %v, want %s", got, j.sessionName)
		}

		// The broker assumed the role at STS as itself, with the run's
		// session name, source identity and tags.
		var call *ststest.AssumeRoleCall
		for _, a := range standIns.sts.AssumeRoleCalls() {
			if a.RoleSessionName == j.sessionName {
				call = &a
			}
		}
		if call == nil {
			t.Fatalf("no AssumeRole with session name %s at the stand-in: %+v", j.sessionName, standIns.sts.AssumeRoleCalls())
		}
		if call.Caller != brokerARN || call.RoleARN != ciRoleARN || call.SourceIdentity != "acme.app" ||
			call.Tags["repository"] != "acme/app" || call.Tags["run-id"] != runID || call.Tags["run-attempt"] != "1" {
			t.Errorf("AssumeRole call %+v", *call)
		}
		// The apiserver had the token checked: by the webhook, which sent
		// the presigned GetCallerIdentity, with the cluster's signed id, to
		// STS.
		if standIns.reviews.Load() == 0 {
			t.Error("the apiserver never called the token-review webhook")
		}
		presigned := 0
		for _, g := range standIns.sts.CallerIdentityCalls() {
			if g.Presigned && strings.HasSuffix(g.ARN, "/"+j.sessionName) {
				presigned++
				if g.ClusterID != clusterID {
					t.Errorf("GetCallerIdentity signed x-k8s-aws-id %q, want %q", g.ClusterID, clusterID)
				}
			}
		}
		if presigned == 0 {
			t.Error("STS never saw the run's presigned GetCallerIdentity")
		}
	})

	t.Run("within the grant", func(t *testing.T) {
		out, errOut, code := c.Kubectl(t, j.env, "create", "configmap", "made-by-ci", "-n", appNS, "--from-literal=k=v")
		if code != 0 {
			t.Fatalf("kubectl create configmap: exit %d\n%s%s", code, out, errOut)
		}
		out, errOut, code = c.Kubectl(t, j.env, "get", "configmaps", "-n", appNS, "-o", "name")
		if code != 0 || !strings.Contains(out, "configmap/made-by-ci") {
			t.Fatalf("kubectl get configmaps: exit %d\n%s%s", code, out, errOut)
		}
		cm, err := c.Clientset().CoreV1().ConfigMaps(appNS).Get(context.Background(), "made-by-ci", metav1.GetOptions{})
		if err != nil || cm.Data["k"] != "v" {
			t.Fatalf("the ConfigMap the run made: %v %v", cm, err)
		}
		// The cluster's own audit log names the run.
		var created bool
		for _, ev := range auditEvents(t, c) {
			if ev.Stage == "ResponseComplete" && ev.User.Username == wantUser && ev.Verb == "create" &&
				ev.ObjectRef != nil && ev.ObjectRef.Resource == "configmaps" && ev.ObjectRef.Namespace == appNS &&
				ev.ResponseStatus != nil && ev.ResponseStatus.Code == 201 {
				created = true
			}
		}
		if !created {
			t.Errorf("the audit log has no create of configmaps in %s by %s", appNS, wantUser)
		}
	})

	t.Run("outside the grant is Forbidden", func(t *testing.T) {
		for _, args := range [][]string{
			{"get", "secrets", "-n", appNS},
			{"delete", "configmap", "made-by-ci", "-n", appNS},
			{"get", "configmaps", "-n", otherNS},
			{"create", "configmap", "elsewhere", "-n", otherNS},
			{"get", "namespaces"},
		} {
			_, errOut, code := c.Kubectl(t, j.env, args...)
			// kubectl names the user RBAC refused: the run's, not some
			// other identity's.
			if code == 0 || !strings.Contains(strings.ToLower(errOut), "forbidden") || !strings.Contains(errOut, `User "`+wantUser+`"`) {
				t.Errorf("kubectl %s: exit %d, want Forbidden for %s\n%s", strings.Join(args, " "), code, wantUser, errOut)
			}
		}
		if _, err := c.Clientset().CoreV1().ConfigMaps(appNS).Get(context.Background(), "made-by-ci", metav1.GetOptions{}); err != nil {
			t.Errorf("the refused delete deleted anyway: %v", err)
		}
	})

	t.Run("a tampered token is Unauthorized", func(t *testing.T) {
		tok := j.token(t, agent, b)
		issued = append(issued, tok)
		if !strings.HasPrefix(tok, "k8s-aws-v1.") {
			t.Fatalf("token %q... is not an EKS token", tok[:min(len(tok), 16)])
		}
		// Control: the untampered token, alone in a plain kubeconfig (no
		// plugin), works as the run's user.
		u, errOut, code := whoami(t, c, []string{"KUBECONFIG=" + c.Kubeconfig(t, tok)})
		if code != 0 || u.Username != wantUser {
			t.Fatalf("the untampered token: exit %d, user %q\n%s", code, u.Username, errOut)
		}
		if v, ok := verdict(tok); !ok || !v.Authenticated || v.User.Username != wantUser {
			t.Fatalf("the webhook's verdict on the untampered token: %+v (asked: %v)", v, ok)
		}
		const formatErr = "input token was not properly formatted"
		for _, tc := range []struct {
			name, token string
			// why is what the webhook's verifier must have said: which
			// check refused the token.
			why string
		}{
			{"one character flipped", flipChar(tok, len(tok)/2), ""},
			{"signature changed", changeSignature(t, tok), "sts getCallerIdentity failed"},
			{"cluster id not signed", unsignClusterID(t, tok), "did not sign the x-k8s-aws-id header"},
			{"another STS host", changeHost(t, tok, "sts.us-east-1.amazonaws.com.attacker.example"), formatErr},
			{"prefix only", "k8s-aws-v1.", formatErr},
			{"no prefix", strings.TrimPrefix(tok, "k8s-aws-v1."), `missing expected "k8s-aws-v1." prefix`},
		} {
			if tc.token == tok {
				t.Fatalf("%s: the tampered token equals the original", tc.name)
			}
			expectUnauthorized(t, c, tc.name, tc.token, appNS)
			v, ok := verdict(tc.token)
			switch {
			case !ok:
				t.Errorf("%s: the apiserver never asked the webhook", tc.name)
			case v.Authenticated || v.Error == "" || !strings.Contains(v.Error, tc.why):
				t.Errorf("%s: webhook verdict %+v, want a refusal saying %q", tc.name, v, tc.why)
			}
		}
	})

	t.Run("each run and attempt is its own user", func(t *testing.T) {
		j2 := newJob(t, iss, b, agent, "acme/app", runID, "2")
		u, errOut, code := whoami(t, c, j2.env)
		if code != 0 || u.Username != userPrefix+j2.sessionName || u.Username == wantUser {
			t.Fatalf("attempt 2: exit %d, user %q, want %q\n%s", code, u.Username, userPrefix+j2.sessionName, errOut)
		}
		if !strings.HasSuffix(u.Username, "-"+runID+"-2") {
			t.Errorf("attempt 2's username %q does not end in the run and attempt", u.Username)
		}
	})

	t.Run("through kubectl agent exec", func(t *testing.T) {
		// The wrapper's proxy holds the EKS token; the child's kubectl only
		// knows the proxy. The apiserver still sees the run's user.
		runID := fmt.Sprint(time.Now().UnixNano())
		sessionName := "ka-acme.app-" + runID + "-1"
		env := append(jobEnv(iss, "acme/app", runID, "1", filepath.Join(t.TempDir(), "unused-kubeconfig"), t.TempDir()),
			"PATH="+c.BinDir()+string(os.PathListSeparator)+os.Getenv("PATH"), "NO_COLOR=1")
		script := fmt.Sprintf(`set -e
kubectl auth whoami -o jsonpath='{.status.userInfo.username}{"\n"}'
kubectl create configmap made-through-exec -n %[1]s --from-literal=k=v
if kubectl get secrets -n %[1]s; then exit 9; fi
`, appNS)
		out, errOut, code := agenttest.Run(t, agent, env, "exec", "--broker", b.URL, "--cluster", "eks", "--", "sh", "-c", script)
		if code != 0 {
			t.Fatalf("exec: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		if !strings.Contains(out, userPrefix+sessionName+"\n") {
			t.Errorf("the child's whoami did not name the run's user %s:\n%s", userPrefix+sessionName, out)
		}
		if !strings.Contains(errOut, `User "`+userPrefix+sessionName+`" cannot list resource "secrets"`) {
			t.Errorf("reading secrets was not refused by RBAC for the run's user:\n%s", errOut)
		}
		if _, err := c.Clientset().CoreV1().ConfigMaps(appNS).Get(context.Background(), "made-through-exec", metav1.GetOptions{}); err != nil {
			t.Errorf("the ConfigMap made through exec: %v", err)
		}
	})

	t.Run("a role without an access entry is Unauthorized", func(t *testing.T) {
		// STS verifies this token (the broker assumed a real, trusted role),
		// but no mapping gives the role a Kubernetes user.
		ju := newJob(t, iss, b, agent, "acme/unmapped", runID, "1")
		_, errOut, code := c.Kubectl(t, ju.env, "get", "configmaps", "-n", appNS)
		if code == 0 || !strings.Contains(errOut, mustLogIn) {
			t.Fatalf("unmapped role through the plugin: exit %d, want kubectl's 401 message\n%s", code, errOut)
		}
		tok := ju.token(t, agent, b)
		issued = append(issued, tok)
		expectUnauthorized(t, c, "unmapped role", tok, appNS)
		if v, ok := verdict(tok); !ok || v.Authenticated || !strings.Contains(v.Error, "ARN is not mapped: "+unmappedRoleARN) {
			t.Errorf("webhook verdict %+v (asked: %v), want: ARN is not mapped", v, ok)
		}
		assumed := false
		for _, a := range standIns.sts.AssumeRoleCalls() {
			if a.RoleARN == unmappedRoleARN && a.RoleSessionName == ju.sessionName {
				assumed = true
			}
		}
		if !assumed {
			t.Errorf("the broker never assumed %s for %s", unmappedRoleARN, ju.sessionName)
		}
	})

	t.Run("no secret in the broker's logs", func(t *testing.T) {
		logs := b.Logs()
		if len(issued) == 0 || !strings.Contains(logs, "session issued") {
			t.Fatalf("nothing to check: %d tokens, logs:\n%s", len(issued), logs)
		}
		for i, tok := range issued {
			u := presignedURL(t, tok)
			for what, secret := range map[string]string{
				"token":                   tok,
				"presigned URL":           u.String(),
				"signature":               u.Query().Get("X-Amz-Signature"),
				"STS session token":       u.Query().Get("X-Amz-Security-Token"),
				"the broker's secret key": brokerSecret,
			} {
				if secret == "" {
					t.Fatalf("token %d has no %s", i, what)
				}
				if strings.Contains(logs, secret) {
					t.Errorf("the broker's logs hold %s of token %d", what, i)
				}
			}
		}
	})
}

// flipChar replaces the character at i with another base64url character.
func flipChar(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// presignedURL decodes an EKS token into its presigned URL.
func presignedURL(t *testing.T, tok string) *url.URL {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "k8s-aws-v1."))
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func encodeToken(u *url.URL) string {
	return "k8s-aws-v1." + base64.RawURLEncoding.EncodeToString([]byte(u.String()))
}

// changeSignature alters the last hex digit of X-Amz-Signature: well formed,
// so only STS's signature check can catch it.
func changeSignature(t *testing.T, tok string) string {
	u := presignedURL(t, tok)
	q := u.Query()
	sig := q.Get("X-Amz-Signature")
	if sig == "" {
		t.Fatalf("no X-Amz-Signature in %s", u.Redacted())
	}
	last := "0"
	if strings.HasSuffix(sig, "0") {
		last = "1"
	}
	q.Set("X-Amz-Signature", sig[:len(sig)-1]+last)
	u.RawQuery = q.Encode()
	return encodeToken(u)
}

// unsignClusterID drops x-k8s-aws-id from the signed headers, as a token
// minted for no cluster in particular would have.
func unsignClusterID(t *testing.T, tok string) string {
	u := presignedURL(t, tok)
	q := u.Query()
	hs := strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	hs = slices.DeleteFunc(hs, func(h string) bool { return h == "x-k8s-aws-id" })
	if len(hs) == 0 {
		hs = []string{"host"}
	}
	q.Set("X-Amz-SignedHeaders", strings.Join(hs, ";"))
	u.RawQuery = q.Encode()
	return encodeToken(u)
}

func changeHost(t *testing.T, tok, host string) string {
	u := presignedURL(t, tok)
	u.Host = host
	return encodeToken(u)
}
