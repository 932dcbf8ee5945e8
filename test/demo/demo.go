package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/mask"
	"github.com/kubectl-agent/kubectl-agent/pkg/ui"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

// Options say where the demo runs and where it tells its story.
type Options struct {
	// Cluster is the control plane to use; nil starts (and stops) one.
	Cluster *cluster.Cluster
	// BinDir holds kubectl-agent and agent-broker.
	BinDir string
	// Out receives the story, styled when it is a terminal and NO_COLOR is
	// unset. It must be safe for concurrent writes, as an *os.File is.
	Out io.Writer

	// editConfig, for tests, changes the broker's config (to break a claim
	// and see the demo fail).
	editConfig func(string) string
}

// Names the demo gives things.
const (
	clusterName = "demo"
	repository  = "acme/app"
	reviewer    = "alice"
	podName     = "web"
)

// stepError is a step whose outcome was not the one it claimed.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// demo holds what the steps share.
type demo struct {
	u          *ui.UI
	out        *lockedWriter
	c          *cluster.Cluster
	cs         kubernetes.Interface
	binDir     string
	editConfig func(string) string
	work       string
	issuer     *oidcissuer.Issuer
	brokerURL  string
	stopBroker func()
	pipeline   []string // the pipeline job's environment
	reviewer   []string // the reviewer's environment (her own kubeconfig)
	runID      string
	secret     string   // the Secret value that must never show
	files      []string // the transcripts, one per exec, in step order
	// Namespaces: the broker's, the app's, and the one the run deletes.
	brokerNS, appNS, stagingNS string
}

func run(ctx context.Context, o Options) (err error) {
	start := time.Now()
	// The reviewer speaks while a step runs: Out must take concurrent writes
	// (an *os.File does), and each line is one write. pkg/ui gets Out itself,
	// so that it sees a terminal when there is one.
	out := &lockedWriter{w: o.Out}
	u := ui.New(o.Out)
	d := &demo{u: u, out: out, binDir: o.BinDir, editConfig: o.editConfig, brokerNS: "agent-broker", appNS: "shop", stagingNS: "staging"}
	if o.Cluster != nil {
		// A shared control plane may have seen the demo before (go test
		// -count=2), and staging stays Terminating forever there.
		sfx := "-" + randomHex(3)
		d.brokerNS, d.appNS, d.stagingNS = d.brokerNS+sfx, d.appNS+sfx, d.stagingNS+sfx
	}
	work, err := os.MkdirTemp("", "ka-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	d.work = work

	c := o.Cluster
	if c == nil {
		u.Step("starting a local control plane: etcd, kube-apiserver (RBAC on) and kwok, which runs Pods as local processes")
		if c, err = cluster.Start(ctx, cluster.Options{}); err != nil {
			return fmt.Errorf("starting the control plane: %w", err)
		}
		defer c.Stop()
		u.OK("kube-apiserver %s ready at %s in %s", c.Version, c.Server, time.Since(start).Round(100*time.Millisecond))
	}
	d.c, d.cs = c, c.Clientset()
	// Runs before the control plane stops and the work folder goes.
	defer func() {
		if d.stopBroker != nil {
			d.stopBroker()
		}
		if d.issuer != nil {
			_ = d.issuer.Close()
		}
	}()

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"platform setup", d.setup},
		{"broker", d.startBroker},
		{"pipeline identity", d.pipelineIdentity},
		{"1 deploy", d.deploy},
		{"2 delete kube-system", d.deleteKubeSystem},
		{"3 read a Secret", d.readSecret},
		{"4 delete staging", d.deleteStaging},
		{"5 exec into the pod", d.execIntoPod},
		{"6 verify the transcripts", d.verify},
		{"end of the run", d.logout},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.fn(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			u.Fail("%v", err)
			return &stepError{step: s.name, err: err}
		}
	}
	fmt.Fprintln(out)
	u.OK("demo passed in %s; everything it started is stopped and removed on exit", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// ---- the platform team's side

// setup is what a platform team does once: namespaces, the app's Secret, and
// RBAC that lets alice decide approvals.
func (d *demo) setup(ctx context.Context) error {
	d.u.Step("platform team: namespaces %s and %s, a Secret in %s, and RBAC that lets %s approve held requests", d.appNS, d.stagingNS, d.appNS, reviewer)
	for _, ns := range []string{d.brokerNS, d.appNS, d.stagingNS} {
		if err := d.ensureNamespace(ctx, ns); err != nil {
			return err
		}
	}
	d.secret = "hunter2-" + randomHex(6)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-credentials", Namespace: d.appNS},
		StringData: map[string]string{"username": "app", "password": d.secret}}
	if _, err := d.cs.CoreV1().Secrets(d.appNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating Secret %s/db-credentials: %w", d.appNS, err)
		}
		if _, err := d.cs.CoreV1().Secrets(d.appNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating Secret %s/db-credentials: %w", d.appNS, err)
		}
	}
	name := "kubectl-agent-approvers"
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{api.ApprovalAPIGroup}, Resources: []string{api.ApprovalResource}, Verbs: []string{"get", "list", api.ApprovalVerb}}}}
	if _, err := d.cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ClusterRole %s: %w", name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: rbacv1.GroupName, Name: reviewer}}}
	if _, err := d.cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ClusterRoleBinding %s: %w", name, err)
	}
	kc := filepath.Join(d.work, reviewer+".kubeconfig")
	if err := d.writeKubeconfig(kc, d.c.UserToken(reviewer)); err != nil {
		return err
	}
	d.reviewer = append(os.Environ(), "KUBECONFIG="+kc, "NO_COLOR=1", "GITHUB_ACTIONS=",
		"PATH="+d.binDir+string(os.PathListSeparator)+d.c.BinDir()+string(os.PathListSeparator)+os.Getenv("PATH"))
	d.u.OK("%s may %s %s.%s with her own cluster identity (a static token here, your SSO in real life)", reviewer, api.ApprovalVerb, api.ApprovalResource, api.ApprovalAPIGroup)
	return nil
}

func (d *demo) ensureNamespace(ctx context.Context, name string) error {
	_, err := d.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	// No controller-manager runs here to create it; Pods need it.
	_, err = d.cs.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the default ServiceAccount of %s: %w", name, err)
	}
	return nil
}

// writeKubeconfig writes a kubeconfig for the control plane with a bearer token.
func (d *demo) writeKubeconfig(path, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: d.c.Server, CertificateAuthorityData: d.c.CAData}
	cfg.AuthInfos["me"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "me"}
	cfg.CurrentContext = "local"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}

// brokerConfig grants acme/app's runs namespaces shop and staging, and a
// policy that keeps system namespaces,
// holds every other namespace delete for a person, and masks Secrets.
const brokerConfig = `apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: {{url}}
listen: {{addr}}
store: {url: "sqlite://{{dir}}/broker.db"}
reconcileInterval: 1m
issuers:
- issuer: {{issuer}}
  preset: github
  audiences: [{{url}}]
clusters:
- name: ` + clusterName + `
  server: {{server}}
  caFile: {{dir}}/cluster-ca.pem
  backend:
    type: kubernetes
    kubernetes: {kubeconfig: {{kubeconfig}}, namespace: {{brokerns}}}
trustRules:
- name: app-deploys-from-main
  issuer: {{issuer}}
  match: {repository: ` + repository + `, ref: refs/heads/main}
  cluster: ` + clusterName + `
  ttl: 30m
  grant:
    namespaces: [{{app}}, {{staging}}]
    rules:
    - verbs: [get, list, watch, create, update, patch, delete]
      apiGroups: ["", apps]
      resources: [deployments, replicasets, services, pods, configmaps, secrets]
    - verbs: [get, create]
      apiGroups: [""]
      resources: [pods/exec, pods/log]
    # A Role in a namespace that grants verbs on namespaces covers that
    # namespace itself: this is what lets the run delete staging.
    - verbs: [get, delete]
      apiGroups: [""]
      resources: [namespaces]
  approvals: {timeout: 2m}
  policy: |
    apiVersion: kubectl-agent.io/v1alpha1
    kind: Policy
    defaultAction: allow
    rules:
    - name: system-namespaces-stay
      action: deny
      verbs: [delete, deletecollection]
      apiGroups: [""]
      resources: [namespaces]
      names: [default, "kube-*"]
      message: system namespaces are never deleted from pipelines
    - name: namespace-deletes-need-a-human
      action: approve
      verbs: [delete, deletecollection]
      apiGroups: [""]
      resources: [namespaces]
      message: deleting a namespace deletes everything in it
    mask:
    - kinds: [Secret]
`

// startBroker runs agent-broker serve on SQLite and waits until it is ready.
func (d *demo) startBroker(ctx context.Context) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	d.brokerURL = "http://" + addr
	iss, err := oidcissuer.New()
	if err != nil {
		return fmt.Errorf("starting the OIDC issuer stand-in: %w", err)
	}
	d.issuer = iss
	d.u.Step("agent-broker on SQLite at %s trusts GitHub-shaped tokens from the issuer stand-in at %s", d.brokerURL, iss.URL)
	dir := filepath.Join(d.work, "broker")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cluster-ca.pem"), d.c.CAData, 0o600); err != nil {
		return err
	}
	cfg := strings.NewReplacer("{{url}}", d.brokerURL, "{{addr}}", addr, "{{dir}}", dir, "{{issuer}}", iss.URL,
		"{{server}}", d.c.Server, "{{app}}", d.appNS, "{{staging}}", d.stagingNS, "{{brokerns}}", d.brokerNS, "{{kubeconfig}}", d.c.AdminKubeconfig).Replace(brokerConfig)
	if d.editConfig != nil {
		cfg = d.editConfig(cfg)
	}
	cfgFile := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return err
	}
	logFile := filepath.Join(dir, "broker.log")
	logf, err := os.Create(logFile)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(d.binDir, "agent-broker"), "serve", "--config", cfgFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group (Ctrl-C reaches the demo, which stops it in
	// order), and killed with the demo should the demo die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting agent-broker: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	d.stopBroker = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	tail := func() string { b, _ := os.ReadFile(logFile); return lastLines(string(b), 20) }
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(d.brokerURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("agent-broker exited:\n%s", tail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent-broker not ready after 30s:\n%s", tail())
		}
	}
	d.u.OK("broker ready: trust rule app-deploys-from-main grants %s's runs on main namespaces %s and %s for 30m, with its policy", repository, d.appNS, d.stagingNS)
	return nil
}

// pipelineIdentity mints the fake run's OIDC token and builds the job's
// environment: no kubeconfig of its own, only the broker, the cluster name
// and the token.
func (d *demo) pipelineIdentity(ctx context.Context) error {
	d.runID = strconv.FormatInt(time.Now().Unix(), 10) // any number; GitHub uses a counter
	claims := d.issuer.GitHubClaims(repository, d.runID, d.brokerURL)
	tokenFile := filepath.Join(d.work, "id-token")
	if err := os.WriteFile(tokenFile, []byte(d.issuer.Mint(claims)), 0o600); err != nil {
		return err
	}
	d.u.Step("the pipeline: run %s of %s on refs/heads/main (actor %s), holding only its OIDC token", d.runID, repository, claims["actor"])
	var env []string
	for _, kv := range os.Environ() {
		// Nothing of the machine's own Kubernetes or CI settings leaks in.
		if strings.HasPrefix(kv, "KUBECONFIG=") || strings.HasPrefix(kv, "KUBECTL_AGENT_") || strings.HasPrefix(kv, "GITHUB_") ||
			strings.HasPrefix(kv, "KUBECACHEDIR=") || strings.HasPrefix(kv, "RUNNER_") || strings.HasPrefix(kv, "PATH=") {
			continue
		}
		env = append(env, kv)
	}
	d.pipeline = append(env,
		"PATH="+d.binDir+string(os.PathListSeparator)+d.c.BinDir()+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KUBECONFIG="+filepath.Join(d.work, "no-kubeconfig"), // the job has no cluster credential
		"KUBECTL_AGENT_BROKER="+d.brokerURL,
		"KUBECTL_AGENT_CLUSTER="+clusterName,
		"KUBECTL_AGENT_TOKEN_SOURCE=file:"+tokenFile,
		"KUBECACHEDIR="+filepath.Join(d.work, "cache"),
		"NO_COLOR=1",
	)
	d.u.OK("KUBECTL_AGENT_BROKER=%s KUBECTL_AGENT_CLUSTER=%s KUBECTL_AGENT_TOKEN_SOURCE=file:id-token, no kubeconfig", d.brokerURL, clusterName)
	return nil
}

// ---- the pipeline's steps

const appManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
# No controller-manager runs on the demo's control plane, so the manifest
# carries the Pod the Deployment would make, placed on kwok's node.
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: ` + cluster.NodeName + `
  tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
  containers: [{name: web, image: busybox, ports: [{containerPort: 8080}]}]
`

func (d *demo) deploy(ctx context.Context) error {
	d.section("1. deploy the app: allowed, since the grant covers namespace %s", d.appNS)
	if err := os.WriteFile(filepath.Join(d.work, "app.yaml"), []byte(appManifest), 0o600); err != nil {
		return err
	}
	r, err := d.agentExec(ctx, "1-deploy", "kubectl", "apply", "-n", d.appNS, "-f", "app.yaml")
	if err != nil {
		return err
	}
	if r.code != 0 {
		return fmt.Errorf("kubectl apply exited %d, want 0", r.code)
	}
	if _, err := d.cs.AppsV1().Deployments(d.appNS).Get(ctx, "web", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("the Deployment is not in the cluster: %w", err)
	}
	if _, err := d.cs.CoreV1().Services(d.appNS).Get(ctx, "web", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("the Service is not in the cluster: %w", err)
	}
	if err := d.waitPodRunning(ctx); err != nil {
		return err
	}
	d.u.OK("Deployment, Service and Pod %s/web are in the cluster; kwok runs the Pod", d.appNS)
	return nil
}

func (d *demo) deleteKubeSystem(ctx context.Context) error {
	d.section("2. delete namespace kube-system: denied by policy rule system-namespaces-stay before it leaves the runner")
	r, err := d.agentExec(ctx, "2-kube-system", "kubectl", "delete", "ns", "kube-system")
	if err != nil {
		return err
	}
	if r.code == 0 {
		return errors.New("kubectl delete ns kube-system succeeded")
	}
	if !strings.Contains(r.out, "Error from server (Forbidden)") || !strings.Contains(r.out, "system-namespaces-stay") {
		return errors.New("kubectl did not print the Forbidden line naming rule system-namespaces-stay")
	}
	ns, err := d.cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading namespace kube-system: %w", err)
	}
	if ns.DeletionTimestamp != nil {
		return errors.New("kube-system is being deleted")
	}
	d.u.OK("kubectl exited %d with its usual Forbidden line; kube-system is untouched (status %s)", r.code, ns.Status.Phase)
	return nil
}

func (d *demo) readSecret(ctx context.Context) error {
	d.section("3. read Secret db-credentials: RBAC allows it, the proxy masks every value before kubectl sees it")
	r, err := d.agentExec(ctx, "3-secret", "kubectl", "get", "secret", "db-credentials", "-n", d.appNS, "-o", "yaml")
	if err != nil {
		return err
	}
	if r.code != 0 {
		return fmt.Errorf("kubectl get secret exited %d, want 0", r.code)
	}
	for _, leak := range []string{d.secret, base64.StdEncoding.EncodeToString([]byte(d.secret))} {
		if strings.Contains(r.out, leak) {
			return errors.New("the Secret's value is in kubectl's output")
		}
	}
	if !strings.Contains(r.out, "password: "+mask.PlaceholderB64) {
		return fmt.Errorf("data.password is not the masked placeholder (%s)", mask.PlaceholderB64)
	}
	for _, f := range d.files {
		b, err := os.ReadFile(f)
		if err == nil && bytes.Contains(b, []byte(d.secret)) {
			return fmt.Errorf("the Secret's value is in transcript %s", filepath.Base(f))
		}
	}
	d.u.OK("data.password decodes to %q; the real value is in neither the output nor the transcript", mask.Placeholder)
	return nil
}

func (d *demo) deleteStaging(ctx context.Context) error {
	d.section("4. delete namespace %s: held by rule namespace-deletes-need-a-human until a person approves", d.stagingNS)
	type decided struct {
		id  string
		err error
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan decided, 1)
	go func() {
		id, err := d.review(rctx)
		done <- decided{id, err}
	}()
	r, err := d.agentExec(ctx, "4-staging", "kubectl", "delete", "ns", d.stagingNS, "--wait=false")
	cancel()
	rev := <-done
	if err != nil {
		return err
	}
	if rev.err != nil {
		return fmt.Errorf("the reviewer: %w", rev.err)
	}
	if r.code != 0 {
		return fmt.Errorf("kubectl delete ns %s exited %d after approval, want 0", d.stagingNS, r.code)
	}
	ns, err := d.cs.CoreV1().Namespaces().Get(ctx, d.stagingNS, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading namespace %s: %w", d.stagingNS, err)
	}
	if err == nil && ns.DeletionTimestamp == nil {
		return fmt.Errorf("namespace %s is not being deleted", d.stagingNS)
	}
	a, err := d.approval(ctx, rev.id)
	if err != nil {
		return err
	}
	if a.State != api.ApprovalApproved || len(a.Decisions) == 0 || !strings.Contains(a.Decisions[0].Reviewer, reviewer) || a.ConsumedAt.IsZero() {
		return fmt.Errorf("approval %s: state %s, decisions %+v, used %v; want approved by %s and used", a.ID, a.State, a.Decisions, !a.ConsumedAt.IsZero(), reviewer)
	}
	d.u.OK("approval %s recorded (approved by %s, used once); %s is Terminating (no controller-manager here to finish it)", a.ID, a.Decisions[0].Reviewer, d.stagingNS)
	return nil
}

// review is the reviewer at her own terminal: she lists what waits for her
// and approves the pipeline's held request.
func (d *demo) review(ctx context.Context) (string, error) {
	var id string
	for id == "" {
		out, _, code, err := d.capture(ctx, d.reviewer, "kubectl", "agent", "approvals", "list", "--broker", d.brokerURL, "-o", "json")
		if err != nil {
			return "", err
		}
		if code == 0 {
			var list api.ApprovalList
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				return "", fmt.Errorf("reading approvals list -o json: %w", err)
			}
			for _, a := range list.Approvals {
				if a.Requester.RunID == d.runID && a.Attributes.Name == d.stagingNS {
					id = a.ID
				}
			}
		}
		if id != "" {
			break
		}
		select {
		case <-ctx.Done():
			return "", errors.New("no approval was filed for the delete")
		case <-time.After(200 * time.Millisecond):
		}
	}
	d.u.Step("%s, at her own terminal, finds it with `kubectl agent approvals list -o json` and approves it", reviewer)
	r, err := d.show(ctx, d.reviewer, "kubectl", "agent", "approvals", "approve", id, "--broker", d.brokerURL, "--reason", "planned teardown of staging")
	if err != nil {
		return id, err
	}
	if r.code != 0 {
		return id, fmt.Errorf("kubectl agent approvals approve exited %d", r.code)
	}
	return id, nil
}

func (d *demo) approval(ctx context.Context, id string) (*api.Approval, error) {
	out, errOut, code, err := d.capture(ctx, d.reviewer, "kubectl", "agent", "approvals", "show", id, "--broker", d.brokerURL, "-o", "json")
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("kubectl agent approvals show %s exited %d: %s", id, code, errOut)
	}
	var a api.Approval
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		return nil, fmt.Errorf("reading approvals show -o json: %w", err)
	}
	return &a, nil
}

const execScript = `echo "hello from the web pod"; echo "running as uid $(id -u) on $(uname -sr)"`

func (d *demo) execIntoPod(ctx context.Context) error {
	d.section("5. exec into Pod web (kwok runs it as a local process): the stream is recorded byte for byte")
	r, err := d.agentExec(ctx, "5-exec", "kubectl", "exec", "-n", d.appNS, podName, "--", "sh", "-c", execScript)
	if err != nil {
		return err
	}
	if r.code != 0 || !strings.Contains(r.out, "hello from the web pod") {
		return fmt.Errorf("kubectl exec exited %d without the expected greeting", r.code)
	}
	b, err := os.ReadFile(d.files[len(d.files)-1])
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte(`"channel":"stdout","data":"hello from the web pod`)) {
		return errors.New("the transcript has no stdout stream event with the greeting")
	}
	d.u.OK("what the command printed is in the transcript as stream events (stdout, exit)")
	return nil
}

func (d *demo) verify(ctx context.Context) error {
	jwks := d.brokerURL + api.PathJWKS
	d.section("6. verify the transcripts offline: hash chain, DSSE seal by the session key, and the broker's binding of that key to the run")
	for _, f := range d.files {
		r, err := d.show(ctx, d.pipeline, "kubectl", "agent", "transcript", "verify", filepath.Base(f), "--jwks", jwks)
		if err != nil {
			return err
		}
		if r.code != 0 || !strings.Contains(r.out, "run "+d.runID) {
			return fmt.Errorf("transcript verify %s exited %d, want 0 and bound to run %s", filepath.Base(f), r.code, d.runID)
		}
	}
	d.u.OK("all %d transcripts verify and are bound to %s run %s", len(d.files), repository, d.runID)

	d.u.Step("the timeline of step 4, with the hold and alice's approval")
	held := d.files[3]
	r, err := d.show(ctx, d.pipeline, "kubectl", "agent", "transcript", "show", filepath.Base(held))
	if err != nil {
		return err
	}
	if r.code != 0 || !strings.Contains(r.out, "approved") || !strings.Contains(r.out, reviewer) {
		return fmt.Errorf("transcript show exited %d or lacks alice's approval", r.code)
	}

	d.u.Step("someone edits a copy: what the exec printed, \"hello\" becomes \"HELLO\"")
	line, err := tamper(d.files[4], filepath.Join(d.work, "tampered.transcript.jsonl"))
	if err != nil {
		return err
	}
	r, err = d.show(ctx, d.pipeline, "kubectl", "agent", "transcript", "verify", "tampered.transcript.jsonl", "--jwks", jwks)
	if err != nil {
		return err
	}
	if r.code == 0 {
		return errors.New("the tampered transcript verified")
	}
	if !strings.Contains(r.out, fmt.Sprintf("sha256 of line %d ", line)) {
		return fmt.Errorf("verify did not name line %d, the edited one", line)
	}
	d.u.OK("verification fails (exit %d) naming line %d, the edited one: the next line's prev no longer matches its hash", r.code, line)
	return nil
}

// tamper copies a transcript, changing "hello" to "HELLO" in its first stdout
// stream event, and returns that line's number (1-based).
func tamper(from, to string) (int, error) {
	b, err := os.ReadFile(from)
	if err != nil {
		return 0, err
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	for i, l := range lines {
		if bytes.Contains(l, []byte(`"channel":"stdout","data":"hello from the web pod`)) {
			lines[i] = bytes.Replace(l, []byte("hello"), []byte("HELLO"), 1)
			return i + 1, os.WriteFile(to, bytes.Join(lines, nil), 0o600)
		}
	}
	return 0, errors.New("no stdout stream event to tamper with")
}

// logout ends the run: the broker deletes its ServiceAccount.
func (d *demo) logout(ctx context.Context) error {
	d.section("the job ends: `kubectl agent logout` ends the session and the broker deletes the run's ServiceAccount")
	before, err := d.serviceAccounts(ctx)
	if err != nil {
		return err
	}
	r, err := d.show(ctx, d.pipeline, "kubectl", "agent", "logout")
	if err != nil {
		return err
	}
	if r.code != 0 {
		return fmt.Errorf("kubectl agent logout exited %d", r.code)
	}
	after, err := d.serviceAccounts(ctx)
	if err != nil {
		return err
	}
	var gone []string
	for name := range before {
		if !after[name] {
			gone = append(gone, name)
		}
	}
	if len(gone) != 1 {
		return fmt.Errorf("logout removed ServiceAccounts %v from %s, want exactly the run's one", gone, d.brokerNS)
	}
	d.u.OK("ServiceAccount %s/%s is gone; its token stops working within seconds (the apiserver caches tokens ~10s)", d.brokerNS, gone[0])
	return nil
}

func (d *demo) serviceAccounts(ctx context.Context) (map[string]bool, error) {
	list, err := d.cs.CoreV1().ServiceAccounts(d.brokerNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing ServiceAccounts in %s: %w", d.brokerNS, err)
	}
	names := map[string]bool{}
	for _, sa := range list.Items {
		names[sa.Name] = true
	}
	return names, nil
}

// ---- helpers

func (d *demo) waitPodRunning(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		p, err := d.cs.CoreV1().Pods(d.appNS).Get(ctx, podName, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s is not Running after 60s", d.appNS, podName)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// section starts a pipeline step: a blank line, then the step line.
func (d *demo) section(format string, args ...any) {
	fmt.Fprintln(d.out)
	d.u.Step(format, args...)
}

// dim de-emphasizes command lines on a terminal. (pkg/ui's Dim styles even
// plain output: its renderer's profile 0 is termenv's TrueColor, not Ascii.)
func (d *demo) dim(s string) string {
	if !d.u.Color() {
		return s
	}
	return d.u.Dim(s)
}

type result struct {
	out  string // stdout and stderr, interleaved
	code int
}

// agentExec runs `kubectl agent exec --transcript NAME.transcript.jsonl --
// ARGS...` as the pipeline, showing its output.
func (d *demo) agentExec(ctx context.Context, name string, args ...string) (result, error) {
	file := name + ".transcript.jsonl"
	d.files = append(d.files, filepath.Join(d.work, file))
	return d.show(ctx, d.pipeline, "kubectl", append([]string{"agent", "exec", "--transcript", file, "--"}, args...)...)
}

// show runs a command, printing the command line and its output indented as
// it comes, and returns the output and exit code. err is for commands that
// could not run at all.
func (d *demo) show(ctx context.Context, env []string, name string, args ...string) (result, error) {
	fmt.Fprintf(d.out, "    %s\n", d.dim("$ "+shellLine(name, args)))
	var buf bytes.Buffer
	iw := &indentWriter{w: d.out, capture: &buf}
	cmd := d.command(ctx, env, name, args...)
	cmd.Stdout, cmd.Stderr = iw, iw
	err := cmd.Run()
	iw.Flush()
	code, err := exitCode(err)
	return result{out: buf.String(), code: code}, err
}

// capture runs a command quietly.
func (d *demo) capture(ctx context.Context, env []string, name string, args ...string) (stdout, stderr string, code int, err error) {
	var so, se bytes.Buffer
	cmd := d.command(ctx, env, name, args...)
	cmd.Stdout, cmd.Stderr = &so, &se
	code, err = exitCode(cmd.Run())
	return so.String(), se.String(), code, err
}

func (d *demo) command(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	if name == "kubectl" {
		name = d.c.KubectlPath() // kubectl finds kubectl-agent on PATH for `kubectl agent`
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = env, d.work
	// On Ctrl-C, let kubectl-agent stop its child and seal its transcript.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

func exitCode(err error) (int, error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	default:
		return -1, err
	}
}

// shellLine renders a command line as a person would type it.
func shellLine(name string, args []string) string {
	parts := []string{filepath.Base(name)}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$;|&()<>*?") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// lockedWriter serializes whole writes from the steps and the reviewer's
// goroutine.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// indentWriter writes complete lines indented, and keeps a copy.
type indentWriter struct {
	mu      sync.Mutex
	w       io.Writer
	capture *bytes.Buffer
	partial []byte
}

func (iw *indentWriter) Write(p []byte) (int, error) {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	iw.capture.Write(p)
	iw.partial = append(iw.partial, p...)
	for {
		i := bytes.IndexByte(iw.partial, '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(iw.w, "    %s\n", iw.partial[:i])
		iw.partial = iw.partial[i+1:]
	}
	return len(p), nil
}

// Flush writes a last line without a newline.
func (iw *indentWriter) Flush() {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	if len(iw.partial) > 0 {
		fmt.Fprintf(iw.w, "    %s\n", iw.partial)
		iw.partial = nil
	}
}

func lastLines(s string, n int) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
