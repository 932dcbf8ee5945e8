// Package transcript_test proves issue 6 end to end: runs through the real
// `kubectl agent exec --broker` (built binaries, the real agent-broker on
// SQLite, the pinned kube-apiserver with its audit log, kwok Pods, the real
// kubectl) yield transcripts that verify offline with the broker's JWKS,
// join 1:1 with the apiserver's audit log, never hold a secret value, and
// survive broker outages and a killed wrapper.
package transcript_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

func TestMain(m *testing.M) { os.Exit(agenttest.Main(m, cluster.Main)) }

const policyYAML = `apiVersion: kubectl-agent.io/v1alpha1
kind: Policy
defaultAction: allow
rules:
- name: keep-configmaps
  action: deny
  verbs: [delete]
  resources: [configmaps]
  message: configmaps stay
mask:
- kinds: [Secret]
`

type env struct {
	c               *cluster.Cluster
	iss             *oidcissuer.Issuer
	agent           string
	b               *broker
	appNS, brokerNS string
	policy          string
	secret          string
	reader          string // alice's kubeconfig: may list and get transcripts
}

func setup(t *testing.T) *env {
	t.Helper()
	c := cluster.Shared(t)
	agent, brokerBin := agenttest.Binaries(t)
	iss, err := oidcissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	iss.RequestToken = "request-token"
	t.Cleanup(func() { _ = iss.Close() })
	e := &env{c: c, iss: iss, agent: agent, brokerNS: c.Namespace(t), appNS: c.Namespace(t)}
	e.b = startBroker(t, c, iss, brokerBin, e.brokerNS, e.appNS)
	ctx := context.Background()
	cs := c.Clientset()
	e.secret = fmt.Sprintf("hunter2-%d-value", os.Getpid())
	if _, err := cs.CoreV1().Secrets(e.appNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		StringData: map[string]string{"password": e.secret}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps(e.appNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app-config"},
		Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.policy = filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(e.policy, []byte(policyYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	// alice reads transcripts: RBAC on transcripts.kubectl-agent.io.
	name := "transcript-reader-" + e.appNS
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"kubectl-agent.io"}, Resources: []string{"transcripts"}, Verbs: []string{"get", "list"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "alice"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	e.reader = c.Kubeconfig(t, c.UserToken("alice"))
	return e
}

func (e *env) exec(t *testing.T, j *job, extraEnv []string, args ...string) (string, string, int) {
	t.Helper()
	return agenttest.Run(t, e.agent, append(append([]string{}, j.env...), extraEnv...), append([]string{"exec"}, args...)...)
}

// list runs `transcript list` as alice.
func (e *env) list(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	out, errOut, code := agenttest.Run(t, e.agent, []string{"KUBECONFIG=" + e.reader, "KUBECTL_AGENT_BROKER=" + e.b.URL},
		append([]string{"transcript", "list", "-o", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("transcript list: exit %d: %s", code, errOut)
	}
	var l struct{ Transcripts []map[string]any }
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("transcript list output: %v\n%s", err, out)
	}
	return l.Transcripts
}

func readEvents(t *testing.T, path string) []transcript.Event {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []transcript.Event
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		var ev transcript.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, ev)
	}
	return out
}

func (e *env) verify(t *testing.T, file string) string {
	t.Helper()
	out, errOut, code := agenttest.Run(t, e.agent, nil, "transcript", "verify", file, "--jwks", e.b.URL+"/.well-known/jwks.json")
	if code != 0 {
		t.Fatalf("transcript verify %s: exit %d\n%s%s", file, code, out, errOut)
	}
	return out + errOut
}

// auditLog reads the apiserver's audit events by auditID.
func auditLog(t *testing.T, c *cluster.Cluster) map[string]map[string]any {
	t.Helper()
	f, err := os.Open(c.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string]any{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			if id, _ := ev["auditID"].(string); id != "" {
				out[id] = ev
			}
		}
	}
	return out
}

func TestRecordedRun(t *testing.T) {
	e := setup(t)
	e.c.RunningPod(t, e.appNS, "web")
	j := newJob(t, e.c, e.iss, e.b)
	file := filepath.Join(t.TempDir(), "run.transcript.jsonl")
	script := fmt.Sprintf(`set -x
kubectl get configmaps -n %[1]s
kubectl get secret db -n %[1]s -o yaml
kubectl delete configmap app-config -n %[1]s && exit 9
kubectl exec web -n %[1]s -- sh -c 'echo hello-from-pod'
`, e.appNS)
	out, errOut, code := e.exec(t, j, nil, "--policy", e.policy, "--transcript", file, "--", "sh", "-c", script)
	if code != 0 {
		t.Fatalf("exec: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "hello-from-pod") || strings.Contains(out, e.secret) {
		t.Fatalf("child output: %s", out)
	}
	if !strings.Contains(errOut, "Forbidden") {
		t.Fatalf("the delete was not refused with Forbidden:\n%s", errOut)
	}
	if !strings.Contains(errOut, "sealed and logged by the broker") {
		t.Errorf("exec did not report the broker's seal:\n%s", errOut)
	}
	if got := e.verify(t, file); !strings.Contains(strings.ToLower(got), "seal") {
		t.Errorf("verify output: %s", got)
	}

	events := readEvents(t, file)
	var (
		start                *transcript.StartEvent
		reqs                 = map[string]*transcript.RequestEvent{}
		allowed              []string
		denied, masked, exec bool
		stdout               strings.Builder
	)
	for _, ev := range events {
		switch ev.Type {
		case transcript.TypeStart:
			start = ev.Start
		case transcript.TypeRequest:
			q := ev.Request
			reqs[q.AuditID] = q
			if q.Decision == "allow" {
				allowed = append(allowed, q.AuditID)
			}
			if q.Decision == "deny" && q.Verb == "delete" && q.ObjectRef != nil && q.ObjectRef.Resource == "configmaps" {
				denied = true
			}
			if len(q.MaskedPaths) > 0 {
				masked = true
			}
			if q.ObjectRef != nil && q.ObjectRef.Subresource == "exec" {
				exec = true
			}
		case transcript.TypeStream:
			if ev.Stream.Channel == "stdout" {
				stdout.WriteString(ev.Stream.Data)
			}
		}
	}
	if start == nil || start.TranscriptID == "" || start.KeyBinding == "" {
		t.Fatalf("start event %+v", start)
	}
	if !denied || !masked || !exec || !strings.Contains(stdout.String(), "hello-from-pod") {
		t.Fatalf("transcript misses something: denied=%v masked=%v exec=%v stdout=%q", denied, masked, exec, stdout.String())
	}

	// show -o json and export --format audit list every request, with the Audit-IDs.
	showOut, errOut, code := agenttest.Run(t, e.agent, nil, "transcript", "show", file, "-o", "json")
	if code != 0 {
		t.Fatalf("show: %s", errOut)
	}
	var shown []transcript.Event
	if err := json.Unmarshal([]byte(showOut), &shown); err != nil {
		t.Fatal(err)
	}
	shownIDs := map[string]bool{}
	for _, ev := range shown {
		if ev.Request != nil {
			shownIDs[ev.Request.AuditID] = true
		}
	}
	auditOut, errOut, code := agenttest.Run(t, e.agent, nil, "transcript", "export", file, "--format", "audit")
	if code != 0 {
		t.Fatalf("export: %s", errOut)
	}
	exported := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(auditOut), "\n") {
		var ev struct {
			AuditID string `json:"auditID"`
			Kind    string `json:"kind"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Kind != "Event" {
			t.Fatalf("export line %q: %v", l, err)
		}
		exported[ev.AuditID] = true
	}
	for id := range reqs {
		if !shownIDs[id] || !exported[id] {
			t.Errorf("request %s: in show %v, in export %v", id, shownIDs[id], exported[id])
		}
	}
	if len(exported) != len(reqs) || len(shownIDs) != len(reqs) {
		t.Errorf("%d requests recorded, %d shown, %d exported", len(reqs), len(shownIDs), len(exported))
	}

	// The apiserver saw every allowed request under the same Audit-ID, and
	// nothing else from the run's identity.
	seen := auditLog(t, e.c)
	user := ""
	for _, id := range allowed {
		ev, ok := seen[id]
		if !ok {
			t.Errorf("allowed request %s (%s) is not in the apiserver's audit log", id, reqs[id].RequestURI)
			continue
		}
		u, _ := ev["user"].(map[string]any)
		name, _ := u["username"].(string)
		if user == "" {
			user = name
		} else if name != user {
			t.Errorf("request %s was made as %s, others as %s", id, name, user)
		}
		if uri, _ := ev["requestURI"].(string); uri != reqs[id].RequestURI {
			t.Errorf("request %s: transcript URI %q, apiserver %q", id, reqs[id].RequestURI, uri)
		}
	}
	if !strings.HasPrefix(user, "system:serviceaccount:"+e.brokerNS+":") {
		t.Fatalf("the run's requests were made as %q, not the broker's per-run ServiceAccount", user)
	}
	var extra []string
	for id, ev := range seen {
		u, _ := ev["user"].(map[string]any)
		if name, _ := u["username"].(string); name == user && reqs[id] == nil {
			extra = append(extra, fmt.Sprint(ev["verb"], " ", ev["requestURI"]))
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		t.Errorf("the apiserver saw requests of the run that the transcript lacks: %v", extra)
	}
	for id, q := range reqs {
		if q.Decision == "deny" && seen[id] != nil {
			t.Errorf("denied request %s reached the apiserver", id)
		}
	}

	// The secret value is nowhere: not in the transcript, the spool
	// folder, or the broker's store.
	needles := [][]byte{[]byte(e.secret), []byte(base64.StdEncoding.EncodeToString([]byte(e.secret)))}
	var files []string
	files = append(files, file)
	_ = filepath.Walk(filepath.Join(j.cacheDir, "kubectl-agent"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	dbFiles, _ := filepath.Glob(e.b.db + "*")
	files = append(files, dbFiles...)
	if len(dbFiles) == 0 {
		t.Fatal("no broker store files")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range needles {
			if bytes.Contains(data, n) {
				t.Errorf("%s holds the secret value (%q)", f, n)
			}
		}
	}

	// A second command of the same run: same session, its own transcript.
	file2 := filepath.Join(t.TempDir(), "second.transcript.jsonl")
	if out, errOut, code := e.exec(t, j, nil, "--transcript", file2, "--", "kubectl", "get", "pods", "-n", e.appNS); code != 0 {
		t.Fatalf("second exec: %d %s %s", code, out, errOut)
	}
	e.verify(t, file2)
	start2 := readEvents(t, file2)[0].Start
	if start2.SessionID != start.SessionID || start2.TranscriptID == start.TranscriptID {
		t.Fatalf("second exec: session %s transcript %s; first: %s %s", start2.SessionID, start2.TranscriptID, start.SessionID, start.TranscriptID)
	}
	list := e.list(t, "--session", start.SessionID)
	if len(list) != 2 {
		t.Fatalf("transcript list --session: %v", list)
	}
	for _, ti := range list {
		if ti["sealed"] != true || ti["repository"] != "acme/app" || ti["run"] != j.runID {
			t.Errorf("listed %v", ti)
		}
	}
	if l := e.list(t, "--run", j.runID, "--decision", "deny"); len(l) != 1 || l[0]["transcript"] != start.TranscriptID {
		t.Errorf("list --decision deny = %v, want the first transcript only", l)
	}
	// get returns the bytes the run spooled.
	got := filepath.Join(t.TempDir(), "got.jsonl")
	if _, errOut, code := agenttest.Run(t, e.agent, []string{"KUBECONFIG=" + e.reader, "KUBECTL_AGENT_BROKER=" + e.b.URL},
		"transcript", "get", start.SessionID+"/"+start.TranscriptID, "--out", got); code != 0 {
		t.Fatalf("transcript get: %s", errOut)
	}
	want, _ := os.ReadFile(file)
	if g, _ := os.ReadFile(got); !bytes.Equal(g, want) {
		t.Fatalf("transcript get returned %d bytes, the run wrote %d", len(g), len(want))
	}
	// Not for mallory (no RBAC), not for the pipeline's own identity.
	if _, errOut, code := agenttest.Run(t, e.agent, []string{"KUBECONFIG=" + e.c.Kubeconfig(t, e.c.UserToken("mallory")), "KUBECTL_AGENT_BROKER=" + e.b.URL},
		"transcript", "get", start.SessionID+"/"+start.TranscriptID); code == 0 || !strings.Contains(errOut, "may not read") {
		t.Errorf("mallory: exit %d %s", code, errOut)
	}
	sa := e.c.Kubeconfig(t, e.c.ServiceAccountToken(t, e.appNS, "ci"))
	if _, errOut, code := agenttest.Run(t, e.agent, []string{"KUBECONFIG=" + sa, "KUBECTL_AGENT_BROKER=" + e.b.URL}, "transcript", "list"); code == 0 || !strings.Contains(errOut, "workload") {
		t.Errorf("a ServiceAccount listing transcripts: exit %d %s", code, errOut)
	}
}
