// Package approval is the client side of human approval: the proxy's
// Approver that previews a held request with a server-side dry run, files it
// with the broker, shows the wait (and a GitHub Actions annotation with the
// link), long-polls for the decision, and uses an approved approval exactly
// once for exactly the request it was given for. Decisions go into the
// run's transcript as approval events.
//
// Without a broker (local mode) there is nobody to ask: Local denies every
// held request, saying that approvals need a broker.
package approval

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/proxy"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

// Caller makes DPoP session calls to the broker (*session.Client made with
// WithSession).
type Caller interface {
	Do(ctx context.Context, method, path string, body, out any) error
}

// Options configure an Approver.
type Options struct {
	// Broker makes the session calls.
	Broker Caller
	// Previewer dry-runs held requests; nil files them without a preview.
	Previewer *Previewer
	// Sink records approval events (filed, then the decision); nil records none.
	Sink transcript.Sink
	// Out is where the waiting UI writes (stderr); nil writes nothing.
	Out io.Writer
	// Getenv reads the environment for the UI (NO_COLOR, GITHUB_ACTIONS).
	Getenv func(string) string
	// Command is the wrapped command line, shown to reviewers.
	Command []string
	// Wait is the long-poll duration of each GET (default 30s).
	Wait time.Duration
	// Now is the clock for the waiting display (default time.Now).
	Now func() time.Time
}

// Approver implements proxy.Approver with the broker.
type Approver struct {
	o Options
}

var _ proxy.Approver = (*Approver)(nil)

// New makes an Approver.
func New(o Options) (*Approver, error) {
	if o.Broker == nil {
		return nil, errors.New("approval: a broker session is required")
	}
	if o.Wait <= 0 {
		o.Wait = api.MaxApprovalWait
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Approver{o: o}, nil
}

// BodyDigest is the digest an approval covers: "sha256:<hex>" of the exact
// body bytes (of nothing, for a request without a body).
func BodyDigest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func path(p, id string) string { return strings.Replace(p, "{id}", url.PathEscape(id), 1) }

// Approve previews, files and waits for a held request. It returns Allow only
// for an approval that the broker let this request consume.
func (a *Approver) Approve(ctx context.Context, req *proxy.HeldRequest) (policy.Decision, error) {
	rule := req.Decision.Rule
	deny := func(msg string) (policy.Decision, error) {
		return policy.Decision{Action: policy.Deny, Rule: rule, Message: msg}, nil
	}
	at := req.Attributes
	f := api.ApprovalFiling{
		AuditID: req.AuditID, Method: req.Method, Path: req.RequestURI, BodyDigest: BodyDigest(req.Body),
		Attributes: api.ApprovalAttributes{Verb: at.Verb, APIGroup: at.APIGroup, APIVersion: at.APIVersion, Resource: at.Resource,
			Subresource: at.Subresource, Namespace: at.Namespace, Name: at.Name, Path: at.Path},
		Rule: rule, Message: req.Decision.Message, Command: a.o.Command,
	}
	if a.o.Previewer != nil {
		ct := ""
		if req.Header != nil {
			ct = req.Header.Get("Content-Type")
		}
		f.Preview = a.o.Previewer.Preview(ctx, Request{Method: req.Method, RequestURI: req.RequestURI, ContentType: ct, Body: req.Body, Attributes: at})
	}
	var filed api.Approval
	if err := a.o.Broker.Do(ctx, http.MethodPost, api.PathApprovals, f, &filed); err != nil {
		return policy.Decision{}, fmt.Errorf("filing the request for approval: %w", err)
	}
	a.record(ctx, filed, req.AuditID, "filed")
	w := newWaiter(a.o.Out, a.o.Getenv, a.o.Now, filed)
	w.start()

	final, err := a.poll(ctx, filed)
	if err != nil {
		w.stop(nil, err)
		a.record(ctx, api.Approval{ID: filed.ID, Rule: filed.Rule, State: "error"}, req.AuditID, "error")
		return policy.Decision{}, err
	}
	if final.State == api.ApprovalApproved {
		// Use it: the broker checks that this is the approved request and
		// that nobody used the approval before.
		err := a.o.Broker.Do(ctx, http.MethodPost, path(api.PathApprovalConsume, final.ID),
			api.ConsumeRequest{Method: req.Method, Path: req.RequestURI, BodyDigest: BodyDigest(req.Body)}, nil)
		if err != nil {
			final.State = "refused"
			w.stop(&final, err)
			a.record(ctx, final, req.AuditID, "refused")
			return deny(fmt.Sprintf("approval %s could not be used: %v", final.ID, err))
		}
	}
	w.stop(&final, nil)
	a.record(ctx, final, req.AuditID, final.State)
	switch final.State {
	case api.ApprovalApproved:
		return policy.Decision{Action: policy.Allow, Rule: rule, Message: "approved by " + reviewers(final, api.VerdictApprove)}, nil
	case api.ApprovalDenied:
		msg := "denied by " + reviewers(final, api.VerdictDeny)
		if r := reasons(final, api.VerdictDeny); r != "" {
			msg += ": " + r
		}
		return deny(msg)
	case api.ApprovalExpired:
		return deny(fmt.Sprintf("nobody decided within %s (approval %s expired)", final.ExpiresAt.Sub(final.CreatedAt).Round(time.Second), final.ID))
	}
	return deny("approval " + final.ID + " ended " + final.State)
}

// poll long-polls until the approval is decided. Broker errors are retried
// (the approval lives in the broker's store, so a restart loses nothing)
// until a while past its deadline.
func (a *Approver) poll(ctx context.Context, filed api.Approval) (api.Approval, error) {
	p := path(api.PathApproval, filed.ID) + "?" + api.ApprovalWaitParam + "=" + a.o.Wait.String()
	giveUp := filed.ExpiresAt.Add(2 * time.Minute)
	backoff := time.Second
	for {
		var cur api.Approval
		err := a.o.Broker.Do(ctx, http.MethodGet, p, nil, &cur)
		switch {
		case err == nil:
			backoff = time.Second
			if cur.State != api.ApprovalPending {
				return cur, nil
			}
			continue
		case ctx.Err() != nil:
			return api.Approval{}, fmt.Errorf("waiting for approval %s: %w", filed.ID, ctx.Err())
		case session.SessionGone(err):
			return api.Approval{}, fmt.Errorf("waiting for approval %s: %w", filed.ID, err)
		case a.o.Now().After(giveUp):
			return api.Approval{}, fmt.Errorf("waiting for approval %s: the broker did not answer: %w", filed.ID, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return api.Approval{}, fmt.Errorf("waiting for approval %s: %w", filed.ID, ctx.Err())
		case <-t.C:
		}
		backoff = min(backoff*2, 15*time.Second)
	}
}

func reviewers(a api.Approval, verdict string) string {
	var names []string
	for _, d := range a.Decisions {
		if d.Verdict == verdict {
			names = append(names, d.Reviewer)
		}
	}
	if len(names) == 0 {
		return "a reviewer"
	}
	return strings.Join(names, ", ")
}

func reasons(a api.Approval, verdict string) string {
	var rs []string
	for _, d := range a.Decisions {
		if d.Verdict == verdict && d.Reason != "" {
			rs = append(rs, d.Reason)
		}
	}
	return strings.Join(rs, "; ")
}

// record appends an approval event. A failure is not fatal here: the proxy
// records the request's own event (and refuses it when recording is
// required).
func (a *Approver) record(ctx context.Context, ap api.Approval, auditID, state string) {
	if a.o.Sink == nil {
		return
	}
	ev := &transcript.ApprovalEvent{ID: ap.ID, AuditID: auditID, State: state, Rule: ap.Rule, At: a.o.Now()}
	if state != "filed" {
		var who, why []string
		for _, d := range ap.Decisions {
			who = append(who, d.Reviewer+" ("+d.Verdict+")")
			if d.Reason != "" {
				why = append(why, d.Reviewer+": "+d.Reason)
			}
		}
		ev.Reviewer, ev.Reason = strings.Join(who, ", "), strings.Join(why, "; ")
	}
	_ = a.o.Sink.Append(context.WithoutCancel(ctx), transcript.Event{Type: transcript.TypeApproval, Approval: ev})
}

// Local is the Approver of local mode: with no broker there is nobody to
// ask, so every held request is denied, saying why.
type Local struct{}

var _ proxy.Approver = Local{}

// LocalMessage is the reason a held request is denied in local mode.
const LocalMessage = "approvals need a broker: run kubectl agent exec with --broker (or KUBECTL_AGENT_BROKER) so a reviewer can decide"

// Approve denies.
func (Local) Approve(_ context.Context, req *proxy.HeldRequest) (policy.Decision, error) {
	return policy.Decision{Action: policy.Deny, Rule: req.Decision.Rule, Message: LocalMessage}, nil
}
