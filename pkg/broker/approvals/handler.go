// Package approvals is the broker's side of human approval for held
// requests: pipelines file a held request (a DPoP session call) and
// long-poll for its decision; reviewers, who are people, list, read and
// decide approvals with their own identity, either from the CLI (their
// Kubernetes bearer token, checked with a TokenReview and authorized with a
// SubjectAccessReview, so RBAC decides who may approve) or on a small web
// page signed in through the organization's OIDC provider (authorization
// code + PKCE; the same SubjectAccessReview with the OIDC user and groups).
//
// Every decision goes through the store's state machine (pkg/broker/store),
// which makes it atomic across brokers that share one PostgreSQL: long-polls
// read the store, so a decision made on one broker releases a client waiting
// on another. An approval covers exactly one request (method, path and body
// digest) once: the client consumes it before the request goes upstream.
//
// Refusals, whatever the path: a pipeline identity (a DPoP session caller, or
// any ServiceAccount) never decides; nobody decides their own run's request;
// when the rule names groups, the reviewer must be in one; the verdict is
// recorded once per reviewer, and an approval needs Required distinct
// approvers.
package approvals

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

// Limits.
const (
	MaxFilingBytes   = 2 << 20 // a filing with its preview
	MaxDecisionBytes = 16 << 10
	MaxReasonLen     = 2000
	// DefaultPollInterval is how often a long-poll reads the store; a
	// decision on this broker wakes it at once, one on another broker within
	// this interval.
	DefaultPollInterval = 250 * time.Millisecond
)

// ReviewerChecker authenticates and authorizes reviewers at clusters (Kube
// is the real one).
type ReviewerChecker interface {
	Authenticate(ctx context.Context, cluster, token string) (Reviewer, error)
	Allowed(ctx context.Context, cluster string, rv Reviewer, verb, namespace, name string) (bool, error)
	Clusters() []string
}

// Config configures the approvals handler.
type Config struct {
	Store store.Store
	// Sessions authenticates pipelines' session calls (DPoPSessions).
	Sessions SessionAuthenticator
	// Reviewers checks reviewers at the clusters (NewKube).
	Reviewers ReviewerChecker
	// Settings are the trust rules' approval settings (ParseSettings).
	Settings Settings
	// PublicURL is the broker's URL as people reach it: links in
	// notifications and the web page's OAuth redirect.
	PublicURL string
	// Web enables the web page's OIDC sign-in; nil serves the page with
	// sign-in disabled (the CLI still works).
	Web *WebConfig
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// HTTPClient sends webhooks and talks to the OIDC provider.
	HTTPClient   *http.Client
	PollInterval time.Duration
}

// Handler serves the approvals API and web page.
type Handler struct {
	cfg  Config
	now  func() time.Time
	log  *slog.Logger
	mux  *http.ServeMux
	web  *web
	poll time.Duration

	mu      sync.Mutex
	changed chan struct{}
}

// NewHandler makes the approvals handler. It serves api.PathApprovals,
// api.PathApproval, api.PathApprovalDecision, api.PathApprovalConsume and
// the web page under /approvals/.
func NewHandler(ctx context.Context, cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Sessions == nil || cfg.Reviewers == nil {
		return nil, errors.New("approvals: store, session authenticator and reviewer checks are required")
	}
	if cfg.PublicURL == "" {
		return nil, errors.New("approvals: the broker's public URL is required")
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	h := &Handler{cfg: cfg, now: cfg.Now, log: cfg.Logger, poll: cfg.PollInterval, changed: make(chan struct{})}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.poll <= 0 {
		h.poll = DefaultPollInterval
	}
	if h.cfg.HTTPClient == nil {
		h.cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	w, err := newWeb(ctx, h)
	if err != nil {
		return nil, err
	}
	h.web = w
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathApprovals, h.handleFile)
	mux.HandleFunc("GET "+api.PathApprovals, h.handleList)
	mux.HandleFunc("GET "+api.PathApproval, h.handleGet)
	mux.HandleFunc("POST "+api.PathApprovalDecision, h.handleDecision)
	mux.HandleFunc("POST "+api.PathApprovalConsume, h.handleConsume)
	w.routes(mux)
	h.mux = mux
	return h, nil
}

// ServeHTTP serves the approvals routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Routes lists the patterns the handler serves, for mounting it on a mux.
func Routes() []string {
	return []string{
		"POST " + api.PathApprovals, "GET " + api.PathApprovals, "GET " + api.PathApproval,
		"POST " + api.PathApprovalDecision, "POST " + api.PathApprovalConsume, "/approvals/",
	}
}

// details is the approval's Details document in the store.
type details struct {
	AuditID    string                 `json:"auditID"`
	Attributes api.ApprovalAttributes `json:"attributes"`
	Message    string                 `json:"message,omitempty"`
	Preview    *api.Preview           `json:"preview,omitempty"`
	Command    []string               `json:"command,omitempty"`
	Requester  api.Identity           `json:"requester"`
	Cluster    string                 `json:"cluster"`
	TrustRule  string                 `json:"trustRule,omitempty"`
}

func readDetails(a store.Approval) details {
	var d details
	_ = json.Unmarshal(a.Details, &d) // written by us; a bad document shows as empty
	return d
}

// ApprovalID is the id of the approval a session files for a held request:
// stable, so that a retried filing finds the first.
func ApprovalID(sessionID, auditID string) string {
	sum := sha256.Sum256([]byte(sessionID + "\x00" + auditID))
	return "apr-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:20]
}

// toAPI renders a stored approval for clients.
func (h *Handler) toAPI(a store.Approval) api.Approval {
	d := readDetails(a)
	out := api.Approval{
		ID: a.ID, State: string(a.StateAt(h.now())), SessionID: a.SessionID, Cluster: d.Cluster,
		Method: a.Request.Method, Path: a.Request.Path, BodyDigest: a.Request.BodyDigest, AuditID: d.AuditID,
		Attributes: d.Attributes, Rule: a.Rule, Message: d.Message, Preview: d.Preview, Command: d.Command,
		Requester: d.Requester, Required: a.Required, Groups: a.Groups,
		CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt, DecidedAt: a.DecidedAt, ConsumedAt: a.ConsumedAt,
		URL:            h.cfg.PublicURL + "/approvals/" + url.PathEscape(a.ID),
		ApproveCommand: fmt.Sprintf("kubectl agent approvals approve %s --broker %s --reason '...'", a.ID, h.cfg.PublicURL),
	}
	for _, dc := range a.Decisions {
		out.Decisions = append(out.Decisions, api.ApprovalDecision{Reviewer: dc.Reviewer, Verdict: string(dc.Verdict), Reason: dc.Reason, Time: dc.Time})
	}
	return out
}

// ---- pipeline side ----

var (
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	methods  = map[string]bool{"GET": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "HEAD": true, "OPTIONS": true}
)

func (h *Handler) session(w http.ResponseWriter, r *http.Request) (store.Session, bool) {
	sess, err := h.cfg.Sessions(r)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`DPoP error=%q, algs="EdDSA"`, ae.Code))
			writeError(w, http.StatusUnauthorized, ae)
			return sess, false
		}
		h.log.Error("authenticating a session call", "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return sess, false
	}
	return sess, true
}

func (h *Handler) handleFile(w http.ResponseWriter, r *http.Request) {
	sess, ok := h.session(w, r)
	if !ok {
		return
	}
	var f api.ApprovalFiling
	if err := decodeJSON(w, r, MaxFilingBytes, &f); err != nil {
		writeError(w, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: err.Error()})
		return
	}
	f.Method = strings.ToUpper(f.Method)
	switch {
	case f.AuditID == "" || len(f.AuditID) > 128:
		writeError(w, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: "auditID: required, at most 128 characters"})
		return
	case !methods[f.Method]:
		writeError(w, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: fmt.Sprintf("method %q is not an HTTP method", f.Method)})
		return
	case !strings.HasPrefix(f.Path, "/") || len(f.Path) > 8192:
		writeError(w, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: "path: the request URI, starting with /"})
		return
	case !digestRE.MatchString(f.BodyDigest):
		writeError(w, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: "bodyDigest: sha256:<64 lower-case hex digits> of the request body"})
		return
	case f.Rule == "":
		writeError(w, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: "rule: the policy rule that held the request is required"})
		return
	}
	var id api.Identity
	_ = json.Unmarshal(sess.Identity, &id)
	var grant api.Grant
	_ = json.Unmarshal(sess.Grant, &grant)
	set := h.cfg.Settings.Resolve(grant.Rule, f.Rule)
	now := h.now()
	d := details{AuditID: f.AuditID, Attributes: f.Attributes, Message: f.Message, Preview: f.Preview, Command: f.Command,
		Requester: id, Cluster: sess.Cluster, TrustRule: grant.Rule}
	doc, err := json.Marshal(d)
	if err != nil {
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	a := store.Approval{
		ID: ApprovalID(sess.ID, f.AuditID), SessionID: sess.ID,
		Request: store.RequestDigest{Method: f.Method, Path: f.Path, BodyDigest: f.BodyDigest},
		Rule:    f.Rule, Details: doc, Required: set.Required, Groups: set.Groups,
		State: store.ApprovalPending, CreatedAt: now, ExpiresAt: now.Add(set.Timeout),
	}
	log := h.log.With("approval", a.ID, "session", sess.ID, "rule", f.Rule)
	err = h.cfg.Store.CreateApproval(r.Context(), a)
	switch {
	case errors.Is(err, store.ErrConflict):
		// A retried filing: the same session and held request.
		old, gerr := h.cfg.Store.GetApproval(r.Context(), a.ID)
		if gerr != nil {
			log.Error("reading an approval filed before", "err", gerr)
			writeError(w, http.StatusInternalServerError, serverError())
			return
		}
		if old.SessionID != sess.ID || old.Request != a.Request {
			writeError(w, http.StatusConflict, &api.Error{Code: "conflict", Description: "an approval for this audit id was filed for another request"})
			return
		}
		writeJSON(w, http.StatusOK, h.toAPI(old))
		return
	case err != nil:
		log.Error("filing an approval", "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	log.Info("approval filed", "method", f.Method, "path", f.Path, "expires", a.ExpiresAt, "required", a.Required)
	out := h.toAPI(a)
	if set.Webhook != "" {
		go h.notify(context.WithoutCancel(r.Context()), set.Webhook, out)
	}
	writeJSON(w, http.StatusCreated, out)
}

// handleGet is GET /v1/approvals/{id}: for the pipeline that filed it (DPoP)
// a long-poll for the decision; for reviewers (Bearer) the approval.
func (h *Handler) handleGet(w http.ResponseWriter, r *http.Request) {
	scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, api.TokenTypeDPoP) {
		h.handleShow(w, r)
		return
	}
	sess, ok := h.session(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	wait := time.Duration(0)
	if v := r.URL.Query().Get(api.ApprovalWaitParam); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: fmt.Sprintf("wait=%q: use a duration such as 30s", v)})
			return
		}
		wait = min(d, api.MaxApprovalWait)
	}
	a, err := h.waitDecided(r.Context(), id, wait)
	if errors.Is(err, store.ErrNotFound) || (err == nil && a.SessionID != sess.ID) {
		writeError(w, http.StatusNotFound, &api.Error{Code: "not_found", Description: "this session filed no approval " + id})
		return
	}
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		h.log.Error("reading an approval", "approval", id, "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	writeJSON(w, http.StatusOK, h.toAPI(a))
}

// waitDecided reads the approval until it is no longer pending or wait has
// passed. It reads the store (another broker may decide), and wakes early
// when this broker records a decision.
func (h *Handler) waitDecided(ctx context.Context, id string, wait time.Duration) (store.Approval, error) {
	deadline := time.Now().Add(wait)
	for {
		h.mu.Lock()
		changed := h.changed
		h.mu.Unlock()
		a, err := h.cfg.Store.GetApproval(ctx, id)
		if err != nil {
			return a, err
		}
		now := h.now()
		if a.State == store.ApprovalPending && a.StateAt(now) == store.ApprovalExpired {
			// Store the expiry, so that every reader sees the same final state.
			if _, err := h.cfg.Store.ExpireApprovals(ctx, now); err != nil {
				return a, err
			}
			continue
		}
		left := time.Until(deadline)
		if a.State != store.ApprovalPending || left <= 0 {
			return a, nil
		}
		step := min(left, h.poll, max(a.ExpiresAt.Sub(now), time.Millisecond))
		t := time.NewTimer(step)
		select {
		case <-ctx.Done():
			t.Stop()
			return a, ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

func (h *Handler) broadcast() {
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

func (h *Handler) handleConsume(w http.ResponseWriter, r *http.Request) {
	sess, ok := h.session(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	var c api.ConsumeRequest
	if err := decodeJSON(w, r, MaxDecisionBytes, &c); err != nil {
		writeError(w, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: err.Error()})
		return
	}
	a, err := h.cfg.Store.GetApproval(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && a.SessionID != sess.ID) {
		writeError(w, http.StatusNotFound, &api.Error{Code: "not_found", Description: "this session filed no approval " + id})
		return
	}
	if err != nil {
		h.log.Error("reading an approval", "approval", id, "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	err = h.cfg.Store.Consume(r.Context(), id, store.RequestDigest{Method: strings.ToUpper(c.Method), Path: c.Path, BodyDigest: c.BodyDigest}, h.now())
	switch {
	case err == nil:
		h.log.Info("approval used", "approval", id, "session", sess.ID)
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, store.ErrMismatch):
		h.log.Warn("approval used for another request", "approval", id, "session", sess.ID)
		writeError(w, http.StatusConflict, &api.Error{Code: "request_mismatch", Description: "the approval was given for another request (method, path or body differ); file this one for approval"})
	case errors.Is(err, store.ErrConsumed):
		writeError(w, http.StatusConflict, &api.Error{Code: "approval_used", Description: "the approval was already used; an approval covers one request once"})
	case errors.Is(err, store.ErrNotApproved):
		writeError(w, http.StatusConflict, &api.Error{Code: "not_approved", Description: "the approval is " + string(a.StateAt(h.now())) + ", not approved"})
	default:
		h.log.Error("using an approval", "approval", id, "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
	}
}

// ---- reviewer side (CLI) ----

// bearer authenticates a CLI reviewer at cluster: their own Kubernetes
// token, checked with a TokenReview.
func (h *Handler) bearer(w http.ResponseWriter, r *http.Request, cluster string) (Reviewer, bool) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, api.TokenTypeDPoP) {
		writeError(w, http.StatusForbidden, &api.Error{Code: "access_denied",
			Description: "a pipeline session cannot review approvals; reviewers use their own identity (kubectl agent approvals with their kubeconfig)"})
		return Reviewer{}, false
	}
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kubectl-agent approvals"`)
		writeError(w, http.StatusUnauthorized, &api.Error{Code: "invalid_token",
			Description: "reviewers send their own Kubernetes bearer token (Authorization: Bearer ...); kubectl agent approvals does this from the kubeconfig"})
		return Reviewer{}, false
	}
	rv, err := h.cfg.Reviewers.Authenticate(r.Context(), cluster, tok)
	if errors.Is(err, errUnauthenticated) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kubectl-agent approvals", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, &api.Error{Code: "invalid_token",
			Description: fmt.Sprintf("cluster %s does not accept your token (TokenReview); use a kubeconfig for that cluster", cluster)})
		return Reviewer{}, false
	}
	if err != nil {
		h.log.Error("authenticating a reviewer", "cluster", cluster, "err", err)
		writeError(w, http.StatusServiceUnavailable, &api.Error{Code: "temporarily_unavailable", Description: "the cluster could not check your token; try again"})
		return Reviewer{}, false
	}
	return rv, true
}

func (h *Handler) handleList(w http.ResponseWriter, r *http.Request) {
	if bearerToken(r) == "" {
		h.bearer(w, r, "") // answers the missing or pipeline credential
		return
	}
	pending, err := h.cfg.Store.ListPendingApprovals(r.Context(), h.now())
	if err != nil {
		h.log.Error("listing approvals", "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	reviewers := map[string]*Reviewer{}
	authenticated := false
	out := api.ApprovalList{Approvals: []api.Approval{}}
	for _, cl := range h.cfg.Reviewers.Clusters() {
		rv, err := h.cfg.Reviewers.Authenticate(r.Context(), cl, bearerToken(r))
		if err == nil {
			authenticated = true
			reviewers[cl] = &rv
		}
	}
	if !authenticated {
		h.bearer(w, r, firstOr(h.cfg.Reviewers.Clusters(), ""))
		return
	}
	for _, a := range pending {
		d := readDetails(a)
		rv := reviewers[d.Cluster]
		if rv == nil {
			continue
		}
		if ok, err := h.cfg.Reviewers.Allowed(r.Context(), d.Cluster, *rv, "get", d.Attributes.Namespace, a.ID); err != nil || !ok {
			continue
		}
		out.Approvals = append(out.Approvals, h.toAPI(a))
	}
	writeJSON(w, http.StatusOK, out)
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

func bearerToken(r *http.Request) string {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// load reads an approval for a reviewer: 404 when it does not exist.
func (h *Handler) load(w http.ResponseWriter, r *http.Request, id string) (store.Approval, bool) {
	a, err := h.cfg.Store.GetApproval(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, &api.Error{Code: "not_found", Description: "no approval " + id + "; `kubectl agent approvals list` shows pending ones"})
		return a, false
	}
	if err != nil {
		h.log.Error("reading an approval", "approval", id, "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return a, false
	}
	return a, true
}

func (h *Handler) handleShow(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a, ok := h.load(w, r, id)
	if !ok {
		return
	}
	d := readDetails(a)
	rv, ok := h.bearer(w, r, d.Cluster)
	if !ok {
		return
	}
	allowed, err := h.cfg.Reviewers.Allowed(r.Context(), d.Cluster, rv, "get", d.Attributes.Namespace, a.ID)
	if err != nil {
		h.log.Error("authorizing a reviewer", "approval", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, &api.Error{Code: "temporarily_unavailable", Description: "the cluster could not authorize you; try again"})
		return
	}
	if !allowed {
		writeError(w, http.StatusForbidden, forbidden(rv, "get", d))
		return
	}
	writeJSON(w, http.StatusOK, h.toAPI(a))
}

func forbidden(rv Reviewer, verb string, d details) *api.Error {
	where := "cluster-wide"
	if d.Attributes.Namespace != "" {
		where = "in namespace " + d.Attributes.Namespace
	}
	return &api.Error{Code: "access_denied", Description: fmt.Sprintf(
		"%s may not %s approvals %s at cluster %s; RBAC must grant the verb %q on %s.%s",
		rv.Name, verb, where, d.Cluster, verb, api.ApprovalResource, api.ApprovalAPIGroup)}
}

func (h *Handler) handleDecision(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a, ok := h.load(w, r, id)
	if !ok {
		return
	}
	rv, ok := h.bearer(w, r, readDetails(a).Cluster)
	if !ok {
		return
	}
	var req api.DecisionRequest
	if err := decodeJSON(w, r, MaxDecisionBytes, &req); err != nil {
		writeError(w, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: err.Error()})
		return
	}
	out, status, aerr := h.decide(r.Context(), a, rv, req.Verdict, req.Reason)
	if aerr != nil {
		writeError(w, status, aerr)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// decide checks a reviewer and records their verdict. It returns the
// approval after the decision, or the HTTP status and error to answer.
func (h *Handler) decide(ctx context.Context, a store.Approval, rv Reviewer, verdict, reason string) (api.Approval, int, *api.Error) {
	d := readDetails(a)
	log := h.log.With("approval", a.ID, "reviewer", rv.Name, "via", rv.Via, "verdict", verdict)
	if verdict != api.VerdictApprove && verdict != api.VerdictDeny {
		return api.Approval{}, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: fmt.Sprintf("verdict %q: use approve or deny", verdict)}
	}
	reason = strings.TrimSpace(reason)
	if len(reason) > MaxReasonLen {
		return api.Approval{}, http.StatusBadRequest, &api.Error{Code: "invalid_request", Description: fmt.Sprintf("the reason is longer than %d characters", MaxReasonLen)}
	}
	if rv.Name == "" {
		return api.Approval{}, http.StatusForbidden, &api.Error{Code: "access_denied", Description: "the reviewer has no name"}
	}
	if isPipeline(rv) {
		log.Warn("refused: a pipeline identity tried to decide")
		return api.Approval{}, http.StatusForbidden, &api.Error{Code: "access_denied",
			Description: fmt.Sprintf("%s is a workload identity (ServiceAccount or node); only people review approvals", rv.Name)}
	}
	if sameperson(rv, d.Requester) {
		log.Warn("refused: the requester tried to decide their own request")
		return api.Approval{}, http.StatusForbidden, &api.Error{Code: "access_denied",
			Description: fmt.Sprintf("%s started the run that made this request; another reviewer must decide", rv.Name)}
	}
	if !inGroups(rv, a.Groups) {
		return api.Approval{}, http.StatusForbidden, &api.Error{Code: "access_denied",
			Description: fmt.Sprintf("the rule needs a reviewer in one of the groups %s; %s is in none", strings.Join(a.Groups, ", "), rv.Name)}
	}
	allowed, err := h.cfg.Reviewers.Allowed(ctx, d.Cluster, rv, api.ApprovalVerb, d.Attributes.Namespace, a.ID)
	if err != nil {
		log.Error("authorizing a reviewer", "err", err)
		return api.Approval{}, http.StatusServiceUnavailable, &api.Error{Code: "temporarily_unavailable", Description: "the cluster could not authorize you; try again"}
	}
	if !allowed {
		log.Warn("refused: RBAC does not allow the reviewer to decide")
		return api.Approval{}, http.StatusForbidden, forbidden(rv, api.ApprovalVerb, d)
	}
	after, err := h.cfg.Store.Decide(ctx, a.ID, store.Decision{Reviewer: rv.Name, Verdict: store.Verdict(verdict), Reason: reason, Time: h.now()})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrDecided):
		return h.toAPI(after), http.StatusConflict, &api.Error{Code: "already_decided", Description: "the approval is already " + string(after.State)}
	case errors.Is(err, store.ErrExpired):
		h.broadcast()
		return h.toAPI(after), http.StatusConflict, &api.Error{Code: "expired", Description: "the approval expired before your decision; the request was denied"}
	case errors.Is(err, store.ErrConflict):
		return h.toAPI(after), http.StatusConflict, &api.Error{Code: "already_voted", Description: rv.Name + " already decided on this approval"}
	default:
		log.Error("recording a decision", "err", err)
		return api.Approval{}, http.StatusInternalServerError, serverError()
	}
	log.Info("decision recorded", "state", after.State)
	h.broadcast()
	return h.toAPI(after), 0, nil
}

// ---- helpers ----

func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("the request body is empty; send JSON")
		}
		return fmt.Errorf("the request body is not the expected JSON: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, e *api.Error) { writeJSON(w, status, e) }

func serverError() *api.Error {
	return &api.Error{Code: "server_error", Description: "internal error; the broker's log has the details"}
}
