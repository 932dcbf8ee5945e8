package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

// request is one request's state as it moves through the proxy.
type request struct {
	auditID  string
	received time.Time
	attrs    policy.Attributes
	decision policy.Decision
	body     []byte
	object   map[string]any
	ev       transcript.RequestEvent
}

// ServeHTTP is the proxy's whole request path.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rq := &request{auditID: uuid.NewString(), received: time.Now()}
	rq.ev = transcript.RequestEvent{
		AuditID: rq.auditID, RequestURI: r.URL.RequestURI(), Verb: strings.ToLower(r.Method),
		UserAgent: r.UserAgent(), RequestReceivedTimestamp: rq.received,
	}
	if !p.authorized(r) {
		// Not recorded: anyone on the machine can knock; only the child holds the token.
		p.errs.Add(1)
		writeStatus(w, http.StatusUnauthorized, "Unauthorized", "kubectl-agent proxy: missing or wrong bearer token", nil)
		return
	}
	r.Header.Del("Authorization")

	// 1. The path must mean the same to us and to the apiserver.
	if err := policy.CanonicalPath(r.URL.EscapedPath()); err != nil {
		p.refuse(r, w, rq, http.StatusBadRequest, "BadRequest", "kubectl-agent proxy refused the request: "+err.Error())
		return
	}
	attrs, err := policy.ParsePath(r.Method, r.URL.Path, r.URL.Query())
	if err != nil {
		p.refuse(r, w, rq, http.StatusBadRequest, "BadRequest", "kubectl-agent proxy refused the request: "+err.Error())
		return
	}
	attrs.Impersonate = impersonation(r.Header)
	rq.attrs = attrs
	rq.ev.Verb = attrs.Verb
	rq.ev.DryRun = attrs.DryRun
	rq.ev.ImpersonatedUser = r.Header.Get("Impersonate-User")
	if attrs.ResourceRequest {
		rq.ev.ObjectRef = &transcript.ObjectRef{Resource: attrs.Resource, Subresource: attrs.Subresource, Namespace: attrs.Namespace,
			Name: attrs.Name, APIGroup: attrs.APIGroup, APIVersion: attrs.APIVersion}
	}

	// 2. The body: buffered (bounded), checked for a type we can read.
	if code, reason, msg := p.readBody(r, rq); code != 0 {
		p.refuse(r, w, rq, code, reason, msg)
		return
	}

	// 3. Decide.
	in := policy.Input{Attributes: attrs, Session: p.opts.Session}
	if p.policy.NeedsObject(attrs) {
		if len(rq.body) > 0 && rq.object == nil {
			p.refuse(r, w, rq, http.StatusBadRequest, "BadRequest",
				"kubectl-agent proxy refused the request: the policy needs the request body as a JSON or YAML object, and it is not one")
			return
		}
		in.Object = rq.object
	}
	d, err := p.policy.Evaluate(r.Context(), in)
	if err != nil {
		d = policy.Decision{Action: policy.Deny, Rule: d.Rule, Message: "policy evaluation failed: " + err.Error()}
	}
	rq.decision = d
	rq.ev.Decision, rq.ev.Rule, rq.ev.Message = string(d.Action), d.Rule, d.Message
	switch d.Action {
	case policy.Allow:
	case policy.Approve:
		final, reason := p.approve(r, rq)
		rq.ev.Decision, rq.ev.Message = string(final.Action), final.Message
		if final.Action != policy.Allow {
			p.deny(r, w, rq, reason)
			return
		}
	default:
		p.deny(r, w, rq, forbiddenReason(d))
		return
	}

	// 4. Forward.
	if p.opts.RequireRecording && p.opts.Sink != nil {
		pre := rq.ev
		pre.Stage = "RequestReceived"
		pre.StageTimestamp = time.Now()
		pre.RequestObject = p.recordRequestBody(rq, &pre)
		if err := p.opts.Sink.Append(r.Context(), transcript.Event{Type: transcript.TypeRequest, Request: &pre}); err != nil {
			rq.ev.Decision = "refused"
			p.errs.Add(1)
			writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable",
				"kubectl-agent proxy refused the request: it could not be recorded and recording is required", nil)
			p.notify(r, rq, http.StatusServiceUnavailable)
			return
		}
	}
	p.allowed.Add(1)
	if httpstream.IsUpgradeRequest(r) {
		p.serveUpgrade(w, r, rq)
		return
	}
	p.forward(w, r, rq)
}

// impersonation lists the Impersonate-* headers as policy.Attributes wants
// them.
func impersonation(h http.Header) []string {
	var out []string
	for _, u := range h.Values("Impersonate-User") {
		out = append(out, "user:"+u)
	}
	for _, g := range h.Values("Impersonate-Group") {
		out = append(out, "group:"+g)
	}
	for _, u := range h.Values("Impersonate-Uid") {
		out = append(out, "uid:"+u)
	}
	for k, vs := range h {
		key, ok := strings.CutPrefix(k, "Impersonate-Extra-")
		if !ok {
			continue
		}
		for _, v := range vs {
			out = append(out, "extra:"+strings.ToLower(key)+"="+v)
		}
	}
	return out
}

// Request body content types the proxy can read.
var bodyTypes = map[string]bool{
	"application/json":                       true,
	"application/yaml":                       true,
	"application/json-patch+json":            true,
	"application/merge-patch+json":           true,
	"application/strategic-merge-patch+json": true,
	"application/apply-patch+yaml":           true,
}

const protobufType = "application/vnd.kubernetes.protobuf"

// readBody buffers the request body (up to MaxRequestBody) and decodes it
// when it is a JSON or YAML object. It returns a refusal (code != 0) for a
// body that is too large or of a type the proxy cannot read.
func (p *Proxy) readBody(r *http.Request, rq *request) (int, string, string) {
	if r.Body == nil || r.Body == http.NoBody || httpstream.IsUpgradeRequest(r) {
		return 0, "", ""
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, p.opts.MaxRequestBody+1))
	if err != nil {
		return http.StatusBadRequest, "BadRequest", "kubectl-agent proxy: reading the request body: " + err.Error()
	}
	if int64(len(b)) > p.opts.MaxRequestBody {
		return http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("kubectl-agent proxy refused the request: the body is larger than %d bytes", p.opts.MaxRequestBody)
	}
	rq.body = b
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	if len(b) == 0 {
		return 0, "", ""
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && mt == protobufType {
		// kubectl and client-go send built-in types as protobuf (kubectl
		// create namespace does): convert to JSON, which the proxy can read
		// and the apiserver takes just as well.
		js, cerr := p.protobuf.toJSON(b)
		if cerr != nil {
			return http.StatusUnsupportedMediaType, "UnsupportedMediaType",
				"kubectl-agent proxy refused the request: the protobuf body cannot be converted to JSON: " + cerr.Error()
		}
		b, mt = js, "application/json"
		rq.body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		r.Header.Set("Content-Type", "application/json")
	}
	if err != nil || !bodyTypes[mt] {
		return http.StatusUnsupportedMediaType, "UnsupportedMediaType",
			fmt.Sprintf("kubectl-agent proxy refused the request: body content type %q cannot be inspected; send JSON or YAML (client-go: ContentType \"application/json\")", ct)
	}
	js := b
	if strings.HasSuffix(mt, "yaml") {
		if js, err = yaml.YAMLToJSON(b); err != nil {
			return 0, "", "" // not an object we can read; NeedsObject decides whether that matters
		}
	}
	var obj map[string]any
	if err := json.Unmarshal(js, &obj); err == nil {
		rq.object = obj
	}
	return 0, "", ""
}

// approve asks the Approver about a held request. It returns the final
// decision and, when that is not allow, the reason for the 403.
func (p *Proxy) approve(r *http.Request, rq *request) (policy.Decision, string) {
	d := rq.decision
	if p.opts.Approver == nil {
		msg := fmt.Sprintf("approval required by rule %q (no approver available)", d.Rule)
		return policy.Decision{Action: policy.Deny, Rule: d.Rule, Message: msg}, "held by kubectl-agent policy: " + msg
	}
	held := &HeldRequest{AuditID: rq.auditID, Method: r.Method, RequestURI: r.URL.RequestURI(), Header: r.Header.Clone(),
		Attributes: rq.attrs, Decision: d, Body: rq.body, Object: rq.object}
	fd, err := p.opts.Approver.Approve(r.Context(), held)
	if err != nil {
		msg := fmt.Sprintf("approval required by rule %q failed: %v", d.Rule, err)
		return policy.Decision{Action: policy.Deny, Rule: d.Rule, Message: msg}, "held by kubectl-agent policy: " + msg
	}
	if fd.Action != policy.Allow {
		msg := fd.Message
		if msg == "" {
			msg = "not approved"
		}
		msg = fmt.Sprintf("approval required by rule %q: %s", d.Rule, msg)
		return policy.Decision{Action: policy.Deny, Rule: d.Rule, Message: msg}, "held by kubectl-agent policy: " + msg
	}
	return fd, ""
}

func forbiddenReason(d policy.Decision) string {
	var s string
	if d.Rule == "" {
		s = "denied by kubectl-agent policy (default action)"
	} else {
		s = fmt.Sprintf("denied by kubectl-agent policy rule %q", d.Rule)
	}
	if d.Message != "" {
		s += ": " + d.Message
	}
	return s
}

// deny answers 403 the way the apiserver does, so that kubectl prints
// `Error from server (Forbidden): ...`, and records the denial first.
func (p *Proxy) deny(r *http.Request, w http.ResponseWriter, rq *request, reason string) {
	p.denied.Add(1)
	a := rq.attrs
	what := a.Verb + " " + a.Path
	var details *statusDetails
	if a.ResourceRequest {
		res := a.Resource
		if a.Subresource != "" {
			res += "/" + a.Subresource
		}
		qualified := res
		if a.APIGroup != "" {
			qualified = a.Resource + "." + a.APIGroup
			if a.Subresource != "" {
				qualified += "/" + a.Subresource
			}
		}
		what = a.Verb + " " + qualified
		if a.Name != "" {
			what += fmt.Sprintf(" %q", a.Name)
		}
		details = &statusDetails{Name: a.Name, Group: a.APIGroup, Kind: a.Resource}
	}
	msg := what + " is forbidden: " + reason
	p.finish(r.Context(), rq, http.StatusForbidden, "Forbidden", msg)
	writeStatus(w, http.StatusForbidden, "Forbidden", msg, details)
	p.notify(r, rq, http.StatusForbidden)
}

// refuse answers a request the proxy will not even decide on, and records it.
func (p *Proxy) refuse(r *http.Request, w http.ResponseWriter, rq *request, code int, reason, msg string) {
	p.errs.Add(1)
	rq.ev.Decision = "refused"
	p.finish(r.Context(), rq, code, reason, msg)
	writeStatus(w, code, reason, msg, nil)
	p.notify(r, rq, code)
}

// finish records the request's event at its last stage.
func (p *Proxy) finish(ctx context.Context, rq *request, code int, reason, msg string) {
	rq.ev.Stage = "ResponseComplete"
	rq.ev.StageTimestamp = time.Now()
	rq.ev.ResponseStatus = &transcript.ResponseStatus{Code: code, Reason: reason, Message: msg}
	if code >= 400 {
		rq.ev.ResponseStatus.Status = "Failure"
	} else {
		rq.ev.ResponseStatus.Status = "Success"
	}
	if rq.ev.RequestObject == nil {
		rq.ev.RequestObject = p.recordRequestBody(rq, &rq.ev)
	}
	p.record(ctx, &rq.ev)
}

func (p *Proxy) record(ctx context.Context, ev *transcript.RequestEvent) {
	if p.opts.Sink == nil {
		return
	}
	// A client that went away must not cost the transcript its event.
	ctx = context.WithoutCancel(ctx)
	if err := p.opts.Sink.Append(ctx, transcript.Event{Type: transcript.TypeRequest, Request: ev}); err != nil {
		p.errs.Add(1)
	}
}

func (p *Proxy) notify(r *http.Request, rq *request, code int) {
	if p.opts.Notify == nil {
		return
	}
	p.opts.Notify(Outcome{AuditID: rq.auditID, Method: r.Method, Path: r.URL.Path, Attributes: rq.attrs, Decision: policy.Decision{
		Action: policy.Action(rq.ev.Decision), Rule: rq.ev.Rule, Message: rq.ev.Message}, Code: code})
}

// statusDetails is metav1.StatusDetails' part that Forbidden uses.
type statusDetails struct {
	Name  string `json:"name,omitempty"`
	Group string `json:"group,omitempty"`
	Kind  string `json:"kind,omitempty"`
}

type status struct {
	Kind       string         `json:"kind"`
	APIVersion string         `json:"apiVersion"`
	Metadata   struct{}       `json:"metadata"`
	Status     string         `json:"status"`
	Message    string         `json:"message"`
	Reason     string         `json:"reason"`
	Details    *statusDetails `json:"details,omitempty"`
	Code       int            `json:"code"`
}

// writeStatus writes a metav1.Status, which every Kubernetes client
// understands and shows as `Error from server (Reason): message`.
func writeStatus(w http.ResponseWriter, code int, reason, msg string, details *statusDetails) {
	b, _ := json.Marshal(status{Kind: "Status", APIVersion: "v1", Status: "Failure", Message: msg, Reason: reason, Details: details, Code: code})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
