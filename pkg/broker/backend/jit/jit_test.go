package jit_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/jit"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }

func newBackend(t *testing.T) (*jit.Backend, *cluster.Cluster, string) {
	t.Helper()
	c := cluster.Shared(t)
	ns := c.Namespace(t)
	b, err := jit.New(jit.Config{Client: c.Clientset(), Namespace: ns, Server: c.Server, CAData: c.CAData})
	if err != nil {
		t.Fatal(err)
	}
	return b, c, ns
}

func request(id string, ns string, verbs ...string) backend.Request {
	return backend.Request{
		SessionID: id, Cluster: "test", ExpiresAt: time.Now().Add(5 * time.Minute),
		Identity: api.Identity{Repository: "acme/app", RunID: "1", RunAttempt: "1"},
		Grant:    api.Grant{Rule: "r", Namespaces: []string{ns}, Rules: []api.PolicyRule{{Verbs: verbs, APIGroups: []string{""}, Resources: []string{"configmaps"}}}},
	}
}

// Issue is idempotent and converges on the grant; the token lives at least
// the apiserver's 10-minute minimum but reports the session's expiry.
func TestIssueIdempotentAndConverges(t *testing.T) {
	b, c, _ := newBackend(t)
	work := c.Namespace(t)
	ctx := context.Background()
	req := request("0123456789abcdef0123456789abcdef", work, "get", "list")
	cred, err := b.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !cred.ExpiresAt.Equal(req.ExpiresAt) || cred.Server != c.Server {
		t.Errorf("credential expires %s (want the session's %s), server %q", cred.ExpiresAt, req.ExpiresAt, cred.Server)
	}
	kc := c.Kubeconfig(t, cred.Token)
	if _, errOut, code := c.Kubectl(t, []string{"KUBECONFIG=" + kc}, "get", "configmaps", "-n", work); code != 0 {
		t.Fatalf("granted list: %s", errOut)
	}
	if _, _, code := c.Kubectl(t, []string{"KUBECONFIG=" + kc}, "create", "configmap", "x", "-n", work); code == 0 {
		t.Fatal("create was not granted")
	}
	// A second Issue with a wider grant updates the Role (same objects).
	req.Grant.Rules[0].Verbs = []string{"get", "list", "create"}
	cred2, err := b.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if cred2.Token == cred.Token {
		t.Error("a second Issue returned the same token, want a fresh one")
	}
	role, err := c.Clientset().RbacV1().Roles(work).Get(ctx, jit.Name(req.SessionID), metav1.GetOptions{})
	if err != nil || strings.Join(role.Rules[0].Verbs, ",") != "get,list,create" {
		t.Fatalf("role = %+v, %v", role, err)
	}
	if role.Labels[jit.LabelSession] != req.SessionID || role.Annotations[jit.AnnotationRepository] != "acme/app" {
		t.Errorf("role labels %v annotations %v", role.Labels, role.Annotations)
	}
}

// Reconcile deletes exactly the objects of sessions that are not live;
// Revoke of an unknown session is fine.
func TestReconcileAndRevoke(t *testing.T) {
	b, c, ns := newBackend(t)
	work := c.Namespace(t)
	ctx := context.Background()
	live, dead := "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	for _, id := range []string{live, dead} {
		if _, err := b.Issue(ctx, request(id, work, "get")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Reconcile(ctx, func(id string) bool { return id == live }); err != nil {
		t.Fatal(err)
	}
	sas := c.Clientset().CoreV1().ServiceAccounts(ns)
	if _, err := sas.Get(ctx, jit.Name(live), metav1.GetOptions{}); err != nil {
		t.Errorf("live session's ServiceAccount: %v", err)
	}
	if _, err := sas.Get(ctx, jit.Name(dead), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dead session's ServiceAccount: %v, want NotFound", err)
	}
	if _, err := c.Clientset().RbacV1().RoleBindings(work).Get(ctx, jit.Name(dead), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dead session's RoleBinding: %v, want NotFound", err)
	}
	if err := b.Revoke(ctx, "cccccccccccccccccccccccccccccccc"); err != nil {
		t.Errorf("revoking an unknown session: %v", err)
	}
	if err := b.Revoke(ctx, live); err != nil {
		t.Fatal(err)
	}
	if _, err := sas.Get(ctx, jit.Name(live), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("revoked session's ServiceAccount: %v, want NotFound", err)
	}
	if err := b.Ready(ctx); err != nil {
		t.Errorf("Ready: %v", err)
	}
	if _, err := b.Issue(ctx, backend.Request{SessionID: "x", ExpiresAt: time.Now().Add(-time.Second)}); err == nil {
		t.Error("Issue for an expired session succeeded")
	}
}
