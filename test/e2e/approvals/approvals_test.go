package approvals_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/approval"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
)

// decideAs posts a decision with an arbitrary Authorization header and
// returns the HTTP status and the broker's error.
func decideAs(t *testing.T, b *broker, id, authz string) (int, api.Error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.URL+"/v1/approvals/"+id+"/decision", strings.NewReader(`{"verdict":"approve","reason":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", authz)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	_ = jsonDecode(resp.Body, &e)
	return resp.StatusCode, e
}

// A held namespace delete is refused to the pipeline itself, to a reviewer
// without the RBAC verb, and to the person who started the run; alice
// approves it through the CLI with her own identity and the namespace goes.
func TestCLIApprovalAndRefusals(t *testing.T) {
	w := newWorld(t)
	b := w.startBroker(t, "sqlite://"+t.TempDir()+"/broker.db")
	staging := w.c.Namespace(t)
	r := w.startRun(t, b, "101", "bob", "")

	done := r.kubectl("delete", "ns", staging, "--wait=false")
	a := r.pending(b)
	if a.Request.Method != http.MethodDelete || !strings.HasSuffix(a.Request.Path, "/namespaces/"+staging) {
		t.Fatalf("the approval is for %s %s", a.Request.Method, a.Request.Path)
	}
	select {
	case res := <-done:
		t.Fatalf("kubectl finished while the request was held: %+v", res)
	default:
	}
	if w.namespaceDeleting(t, staging) {
		t.Fatal("the namespace is being deleted before anyone approved")
	}

	// The reviewer sees what would go.
	out, errOut, code := agent("approvals", "show", a.ID, "--broker", b.URL, "--kubeconfig", w.c.Kubeconfig(t, w.c.UserToken("alice")), "-o", "json")
	if code != 0 {
		t.Fatalf("approvals show: %d %s", code, errOut)
	}
	for _, want := range []string{`"kind": "delete"`, `"dryRun": true`, `"serviceaccounts"`, `"actor": "bob"`, `"repository": "acme/app"`} {
		if !strings.Contains(out, want) {
			t.Errorf("approvals show lacks %s:\n%s", want, out)
		}
	}
	listOut, errOut, code := agent("approvals", "list", "--broker", b.URL, "--kubeconfig", w.c.Kubeconfig(t, w.c.UserToken("alice")))
	if code != 0 || !strings.Contains(listOut, a.ID) || !strings.Contains(listOut, "delete namespaces "+staging) {
		t.Fatalf("approvals list (%d): %s %s", code, listOut, errOut)
	}
	// The notification went out, with the link and the command.
	waitFor(t, "the webhook message", func() bool { _, ok := w.hooks.find(a.ID); return ok })
	msg, _ := w.hooks.find(a.ID)
	if !strings.Contains(msg.Text, b.URL+"/approvals/"+a.ID) || !strings.Contains(msg.Text, "kubectl agent approvals approve "+a.ID) || len(msg.Blocks) == 0 {
		t.Errorf("webhook message: %+v", msg)
	}
	// The GitHub annotation carries the link while waiting.
	if ui := r.ui.String(); !strings.Contains(ui, "::warning title=kubectl-agent%3A approval needed::") || !strings.Contains(ui, b.URL+"/approvals/"+a.ID) {
		t.Errorf("no GitHub warning annotation with the link:\n%s", ui)
	}

	// The pipeline's own identity: its session (DPoP) and its cluster credential.
	if status, e := decideAs(t, b, a.ID, "DPoP "+"whatever"); status != http.StatusForbidden || e.Code != "access_denied" {
		t.Errorf("a DPoP session caller deciding: %d %+v", status, e)
	}
	if status, e := decideAs(t, b, a.ID, "Bearer "+r.token); status != http.StatusForbidden || !strings.Contains(e.Description, "workload identity") {
		t.Errorf("the run's ServiceAccount deciding: %d %+v", status, e)
	}
	err := r.client.Do(context.Background(), http.MethodPost, "/v1/approvals/"+a.ID+"/decision", api.DecisionRequest{Verdict: "approve"}, nil)
	var se *session.Error
	if !errors.As(err, &se) || se.Status != http.StatusForbidden {
		t.Errorf("the run's session client deciding: %v", err)
	}
	// mallory has no RBAC verb.
	_, errOut, code = agent("approvals", "approve", a.ID, "--broker", b.URL, "--kubeconfig", w.c.Kubeconfig(t, w.c.UserToken("mallory")))
	if code == 0 || !strings.Contains(errOut, `may not approve approvals`) {
		t.Errorf("mallory approving: %d %s", code, errOut)
	}
	// bob started the run (GitHub actor); RBAC would let him, the broker does not.
	_, errOut, code = agent("approvals", "approve", a.ID, "--broker", b.URL, "--kubeconfig", w.c.Kubeconfig(t, w.c.UserToken("bob")))
	if code == 0 || !strings.Contains(errOut, "started the run") {
		t.Errorf("bob approving his own run's request: %d %s", code, errOut)
	}
	if w.namespaceDeleting(t, staging) {
		t.Fatal("a refused reviewer released the request")
	}

	// alice approves with her own identity.
	_, errOut, code = agent("approvals", "approve", a.ID, "--broker", b.URL, "--kubeconfig", w.c.Kubeconfig(t, w.c.UserToken("alice")), "--reason", "planned teardown")
	if code != 0 || !strings.Contains(errOut, "approved "+a.ID) {
		t.Fatalf("alice approving: %d %s", code, errOut)
	}
	res := wait(t, done, 60*time.Second)
	if res.code != 0 || !strings.Contains(res.stdout, `namespace "`+staging+`" deleted`) {
		t.Fatalf("kubectl after approval: %+v\napprover:\n%s", res, r.ui.String())
	}
	if !w.namespaceDeleting(t, staging) {
		t.Fatal("the approved delete did not reach the cluster")
	}
	if ui := r.ui.String(); !strings.Contains(ui, "approved after") || !strings.Contains(ui, "alice") {
		t.Errorf("waiting UI: %s", ui)
	}
	evs := r.sink.approvals()
	if len(evs) != 2 || evs[0].State != "filed" || evs[1].State != "approved" || !strings.Contains(evs[1].Reviewer, "alice") || !strings.Contains(evs[1].Reason, "planned teardown") {
		t.Errorf("transcript approval events: %+v", evs)
	}
	stored, err := b.Store.GetApproval(context.Background(), a.ID)
	if err != nil || stored.ConsumedAt.IsZero() || len(stored.Decisions) != 1 || stored.Decisions[0].Reviewer != "alice" {
		t.Errorf("stored approval: %+v %v", stored, err)
	}

	// Used once: the same request cannot ride on it again.
	err = r.client.Do(context.Background(), http.MethodPost, "/v1/approvals/"+a.ID+"/consume",
		api.ConsumeRequest{Method: a.Request.Method, Path: a.Request.Path, BodyDigest: a.Request.BodyDigest}, nil)
	if !errors.As(err, &se) || se.Body == nil || se.Body.Code != "approval_used" {
		t.Errorf("consuming twice: %v", err)
	}
}

// An approval given for one request body cannot be used for another.
func TestReplayForAnotherBodyFails(t *testing.T) {
	w := newWorld(t)
	b := w.startBroker(t, "sqlite://"+t.TempDir()+"/broker.db")
	r := w.startRun(t, b, "102", "octocat", "")
	ctx := context.Background()
	body := []byte(`{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background"}`)
	other := []byte(`{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Orphan"}`)
	var filed api.Approval
	err := r.client.Do(ctx, http.MethodPost, api.PathApprovals, api.ApprovalFiling{AuditID: "audit-1", Method: "DELETE",
		Path: "/api/v1/namespaces/prod", BodyDigest: approval.BodyDigest(body), Rule: "namespace-deletes-need-a-human",
		Attributes: api.ApprovalAttributes{Verb: "delete", Resource: "namespaces", Namespace: "prod", Name: "prod"}}, &filed)
	if err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := agent("approvals", "approve", filed.ID, "--broker", b.URL, "--kubeconfig", w.c.Kubeconfig(t, w.c.UserToken("alice"))); code != 0 {
		t.Fatalf("alice approving: %s", errOut)
	}
	var se *session.Error
	err = r.client.Do(ctx, http.MethodPost, "/v1/approvals/"+filed.ID+"/consume", api.ConsumeRequest{Method: "DELETE", Path: "/api/v1/namespaces/prod", BodyDigest: approval.BodyDigest(other)}, nil)
	if !errors.As(err, &se) || se.Status != http.StatusConflict || se.Body == nil || se.Body.Code != "request_mismatch" {
		t.Fatalf("consuming for another body: %v", err)
	}
	err = r.client.Do(ctx, http.MethodPost, "/v1/approvals/"+filed.ID+"/consume", api.ConsumeRequest{Method: "DELETE", Path: "/api/v1/namespaces/staging", BodyDigest: approval.BodyDigest(body)}, nil)
	if !errors.As(err, &se) || se.Body == nil || se.Body.Code != "request_mismatch" {
		t.Fatalf("consuming for another path: %v", err)
	}
	if err := r.client.Do(ctx, http.MethodPost, "/v1/approvals/"+filed.ID+"/consume", api.ConsumeRequest{Method: "DELETE", Path: "/api/v1/namespaces/prod", BodyDigest: approval.BodyDigest(body)}, nil); err != nil {
		t.Fatalf("consuming for the approved request: %v", err)
	}
	// Filing again for the same held request returns the same approval.
	var again api.Approval
	if err := r.client.Do(ctx, http.MethodPost, api.PathApprovals, api.ApprovalFiling{AuditID: "audit-1", Method: "DELETE",
		Path: "/api/v1/namespaces/prod", BodyDigest: approval.BodyDigest(body), Rule: "namespace-deletes-need-a-human"}, &again); err != nil || again.ID != filed.ID {
		t.Fatalf("refiling: %v %s != %s", err, again.ID, filed.ID)
	}
}

// Nobody decides: the approval expires, the request is denied, the namespace stays.
func TestTimeoutDenies(t *testing.T) {
	w := newWorld(t)
	b := w.startBroker(t, "sqlite://"+t.TempDir()+"/broker.db")
	ns := w.c.Namespace(t)
	r := w.startRun(t, b, "103", "octocat", quickPolicy)
	done := r.kubectl("delete", "ns", ns, "--wait=false")
	a := r.pending(b)
	if a.Rule != "quick" || a.ExpiresAt.Sub(a.CreatedAt) != 6*time.Second {
		t.Fatalf("approval rule %q, timeout %s", a.Rule, a.ExpiresAt.Sub(a.CreatedAt))
	}
	res := wait(t, done, 60*time.Second)
	if res.code == 0 || !strings.Contains(res.stderr, "Forbidden") || !strings.Contains(res.stderr, "expired") {
		t.Fatalf("kubectl after the timeout: %+v", res)
	}
	if w.namespaceDeleting(t, ns) {
		t.Fatal("an expired approval let the delete through")
	}
	stored, err := b.Store.GetApproval(context.Background(), a.ID)
	if err != nil || stored.State != "expired" {
		t.Fatalf("stored approval: %+v %v", stored.State, err)
	}
	// Too late to approve now.
	_, errOut, code := agent("approvals", "approve", a.ID, "--broker", b.URL, "--kubeconfig", w.c.Kubeconfig(t, w.c.UserToken("alice")))
	if code == 0 || !strings.Contains(errOut, "expired") {
		t.Errorf("approving after expiry: %d %s", code, errOut)
	}
}

// Two brokers on one PostgreSQL: filed and long-polled on one, decided on
// the other; the waiting client proceeds.
func TestTwoBrokersOnePostgres(t *testing.T) {
	w := newWorld(t)
	dsn := agenttest.PostgresURL(t)
	b1 := w.startBroker(t, dsn)
	b2 := w.startBroker(t, dsn)
	ns := w.c.Namespace(t)
	r := w.startRun(t, b1, "104", "octocat", "")
	done := r.kubectl("delete", "ns", ns, "--wait=false")
	a := r.pending(b1)
	start := time.Now()
	if _, errOut, code := agent("approvals", "approve", a.ID, "--broker", b2.URL, "--kubeconfig", w.c.Kubeconfig(t, w.c.UserToken("alice"))); code != 0 {
		t.Fatalf("alice approving on the second broker: %s", errOut)
	}
	res := wait(t, done, 60*time.Second)
	if res.code != 0 {
		t.Fatalf("kubectl after approval on the other broker: %+v\n%s", res, r.ui.String())
	}
	t.Logf("released %s after the decision on the other broker", time.Since(start).Round(time.Millisecond))
	if !w.namespaceDeleting(t, ns) {
		t.Fatal("the approved delete did not reach the cluster")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
