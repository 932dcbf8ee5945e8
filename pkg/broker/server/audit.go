package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/approvals"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/trust"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

func summarize(ti store.TranscriptInfo) api.TranscriptSummary {
	sess := ti.Session
	out := api.TranscriptSummary{
		Session: ti.SessionID, Transcript: ti.TranscriptID, Cluster: sess.Cluster,
		Issuer: sess.Run.Issuer, Repository: sess.Run.Repository, Run: sess.Run.RunID, RunAttempt: sess.Run.RunAttempt,
		SessionCreatedAt: sess.CreatedAt, SessionEndedAt: sess.EndedAt,
		CreatedAt: ti.CreatedAt, UpdatedAt: ti.UpdatedAt, Lines: ti.NextSeq, Sealed: ti.Sealed,
		Unsealed: sess.Ended() && !ti.Sealed,
	}
	var id api.Identity
	if json.Unmarshal(sess.Identity, &id) == nil {
		out.Subject = id.Subject
	}
	if len(ti.Summary) > 0 {
		var end transcript.EndEvent
		if json.Unmarshal(ti.Summary, &end) == nil {
			out.ExitCode, out.Counts = &end.ExitCode, end.Counts
		}
	}
	return out
}

func transcriptList(ts []store.TranscriptInfo) api.TranscriptList {
	out := api.TranscriptList{Transcripts: make([]api.TranscriptSummary, 0, len(ts))}
	for _, ti := range ts {
		out.Transcripts = append(out.Transcripts, summarize(ti))
	}
	return out
}

// TranscriptReaders authenticates and authorizes people reading
// transcripts, at the clusters the broker serves: a bearer token checked
// with a TokenReview there, then a SubjectAccessReview for the verb on
// transcripts.kubectl-agent.io. Who may read is plain RBAC, as for
// approval reviewers.
type TranscriptReaders interface {
	Clusters() []string
	Authenticate(ctx context.Context, cluster, token string) (approvals.Reviewer, error)
	Allowed(ctx context.Context, cluster string, rv approvals.Reviewer, verb, name string) (bool, error)
}

// KubeReaders checks readers with each cluster's broker credential: the
// TokenReview (and its short cache) is approvals.Kube's, the
// SubjectAccessReview asks about transcripts instead of approvals.
type KubeReaders struct {
	*approvals.Kube
	clients map[string]kubernetes.Interface
}

// NewKubeReaders makes the reader checks from each cluster's credential
// (approvals.ClusterConfigs). The broker needs `create` on tokenreviews and
// subjectaccessreviews there, as for approvals.
func NewKubeReaders(clusters map[string]*rest.Config, now func() time.Time) (*KubeReaders, error) {
	k, err := approvals.NewKube(clusters, now)
	if err != nil {
		return nil, err
	}
	r := &KubeReaders{Kube: k, clients: map[string]kubernetes.Interface{}}
	for name, rc := range clusters {
		if r.clients[name], err = kubernetes.NewForConfig(rc); err != nil {
			return nil, fmt.Errorf("cluster %s: making a client for transcript reader checks: %w", name, err)
		}
	}
	return r, nil
}

// Allowed asks the cluster whether rv may do verb on transcripts (name: a
// session id, or "" for list).
func (k *KubeReaders) Allowed(ctx context.Context, cluster string, rv approvals.Reviewer, verb, name string) (bool, error) {
	cs, ok := k.clients[cluster]
	if !ok {
		return false, fmt.Errorf("no credentials for cluster %q to authorize transcript readers with", cluster)
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: rv.Name, UID: rv.UID, Groups: rv.Groups,
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Group: api.ApprovalAPIGroup, Resource: api.TranscriptResource, Name: name},
	}}
	if len(rv.Extra) > 0 {
		sar.Spec.Extra = map[string]authzv1.ExtraValue{}
		for k, v := range rv.Extra {
			sar.Spec.Extra[k] = v
		}
	}
	out, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("authorizing a transcript reader with a SubjectAccessReview at cluster %s: %w", cluster, err)
	}
	return out.Status.Allowed && !out.Status.Denied, nil
}

// lazyReaders holds the reader checks, made on first use from the broker's
// cluster credentials (a broker whose credentials do not load still serves
// everything else).
type lazyReaders struct {
	once sync.Once
	r    TranscriptReaders
	err  error
}

func (s *Server) transcriptReaders() (TranscriptReaders, error) {
	s.readers.once.Do(func() {
		if s.readers.r != nil {
			return
		}
		clusters, err := approvals.ClusterConfigs(s.cfg)
		if err != nil {
			s.readers.err = err
			return
		}
		s.readers.r, s.readers.err = NewKubeReaders(clusters, s.now)
	})
	return s.readers.r, s.readers.err
}

// isWorkload: ServiceAccounts (every per-run credential the broker issues is
// one) and nodes are pipelines, not people; they never read transcripts.
func isWorkload(rv approvals.Reviewer) bool {
	if strings.HasPrefix(rv.Name, "system:serviceaccount:") || strings.HasPrefix(rv.Name, "system:node:") {
		return true
	}
	return slices.Contains(rv.Groups, "system:serviceaccounts") || slices.Contains(rv.Groups, "system:nodes")
}

// reader authenticates the request's person at every cluster, returning
// who they are at each cluster that accepts the token. It answers the
// request itself (and returns nil) when nobody is authenticated.
func (s *Server) reader(w http.ResponseWriter, r *http.Request) map[string]approvals.Reviewer {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	if strings.EqualFold(scheme, api.TokenTypeDPoP) {
		writeError(w, http.StatusForbidden, &api.Error{Code: "access_denied",
			Description: "a pipeline session cannot read the broker's transcripts; people use their own identity (kubectl agent transcript list with their kubeconfig)"})
		return nil
	}
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kubectl-agent transcripts"`)
		writeError(w, http.StatusUnauthorized, &api.Error{Code: "invalid_token",
			Description: "send your own Kubernetes bearer token (Authorization: Bearer ...); kubectl agent transcript list|get does this from the kubeconfig"})
		return nil
	}
	rs, err := s.transcriptReaders()
	if err != nil {
		s.log.Error("loading the cluster credentials for transcript readers", "err", err)
		writeError(w, http.StatusServiceUnavailable, &api.Error{Code: "temporarily_unavailable", Description: "the broker cannot check readers at its clusters"})
		return nil
	}
	out := map[string]approvals.Reviewer{}
	unavailable := false
	for _, cl := range rs.Clusters() {
		rv, err := rs.Authenticate(r.Context(), cl, tok)
		switch {
		case err == nil:
			out[cl] = rv
		case strings.Contains(err.Error(), "TokenReview"):
			// The cluster could not be asked (not: it said no; approvals
			// does not export its "not valid" sentinel, so tell by text).
			s.log.Warn("authenticating a transcript reader", "cluster", cl, "err", err)
			unavailable = true
		}
	}
	for cl, rv := range out {
		if isWorkload(rv) {
			writeError(w, http.StatusForbidden, &api.Error{Code: "access_denied",
				Description: fmt.Sprintf("%s is a workload identity at cluster %s; transcripts are read by people", rv.Name, cl)})
			return nil
		}
	}
	if len(out) == 0 {
		if unavailable {
			writeError(w, http.StatusServiceUnavailable, &api.Error{Code: "temporarily_unavailable", Description: "the clusters could not check your token; try again"})
			return nil
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="kubectl-agent transcripts", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, &api.Error{Code: "invalid_token",
			Description: "none of the broker's clusters accepts your token (TokenReview); use a kubeconfig for one of them"})
		return nil
	}
	return out
}

// auditFilter parses the list query. Times are RFC 3339 or a duration back
// from now ("24h").
func (s *Server) auditFilter(r *http.Request) (store.TranscriptFilter, string, error) {
	q := r.URL.Query()
	f := store.TranscriptFilter{SessionFilter: store.SessionFilter{
		Repository: q.Get("repository"), RunID: q.Get("run"), Cluster: q.Get("cluster"), Issuer: q.Get("issuer"),
	}, SessionID: q.Get("session")}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := parseAuditTime(v, s.now())
		if err != nil {
			return f, "", fmt.Errorf("%s=%q: use RFC 3339 (2026-11-25T12:00:00Z) or a duration back from now (24h)", p.name, v)
		}
		*p.dst = t
	}
	if v := q.Get("limit"); v != "" {
		n := 0
		if _, err := fmt.Sscan(v, &n); err != nil || n < 1 || n > 1000 {
			return f, "", fmt.Errorf("limit=%q: use a number from 1 to 1000", v)
		}
		f.Limit = n
	}
	decision := q.Get("decision")
	switch decision {
	case "", "allow", "deny", "approve":
	default:
		return f, "", fmt.Errorf("decision=%q: use allow, deny or approve", decision)
	}
	return f, decision, nil
}

func parseAuditTime(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Parse(time.RFC3339, v)
}

// handleAuditList lists the transcripts the reader may list: those of
// clusters where their token is valid and RBAC allows `list` on
// transcripts.
func (s *Server) handleAuditList(w http.ResponseWriter, r *http.Request) {
	who := s.reader(w, r)
	if who == nil {
		return
	}
	f, decision, err := s.auditFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, &api.Error{Code: trust.CodeInvalidRequest, Description: err.Error()})
		return
	}
	rs, _ := s.transcriptReaders()
	ctx := r.Context()
	mayList := map[string]bool{}
	for cl, rv := range who {
		ok, err := rs.Allowed(ctx, cl, rv, "list", "")
		if err != nil {
			s.log.Warn("authorizing a transcript reader", "cluster", cl, "err", err)
		}
		mayList[cl] = ok
	}
	if f.Cluster != "" && !mayList[f.Cluster] {
		writeError(w, http.StatusForbidden, &api.Error{Code: "access_denied",
			Description: fmt.Sprintf("you may not list transcripts of cluster %s (RBAC: list on transcripts.%s)", f.Cluster, api.ApprovalAPIGroup)})
		return
	}
	ts, err := s.st.ListTranscripts(ctx, f)
	if err != nil {
		s.log.Error("listing transcripts", "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	out := api.TranscriptList{Transcripts: []api.TranscriptSummary{}}
	for _, ti := range ts {
		if !mayList[ti.Session.Cluster] {
			continue
		}
		sum := summarize(ti)
		if decision != "" {
			has, err := s.hasDecision(ctx, ti, sum, decision)
			if err != nil {
				s.log.Error("reading a transcript for a decision filter", "session", ti.SessionID, "err", err)
				writeError(w, http.StatusInternalServerError, serverError())
				return
			}
			if !has {
				continue
			}
		}
		out.Transcripts = append(out.Transcripts, sum)
	}
	writeJSON(w, http.StatusOK, out)
}

// hasDecision reports whether a transcript holds a request with the
// decision: from the end event's counts when sealed (allow, deny), from its
// request events otherwise.
func (s *Server) hasDecision(ctx context.Context, ti store.TranscriptInfo, sum api.TranscriptSummary, decision string) (bool, error) {
	if sum.Counts != nil {
		switch decision {
		case "allow":
			return sum.Counts["allowed"] > 0, nil
		case "deny":
			return sum.Counts["denied"] > 0, nil
		}
	}
	lines, err := s.st.ReadTranscript(ctx, ti.SessionID, ti.TranscriptID, 0, 0)
	if err != nil {
		return false, err
	}
	for _, l := range lines {
		var ev struct {
			Type    string `json:"type"`
			Request *struct {
				Decision string `json:"decision"`
			} `json:"request"`
		}
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Type == transcript.TypeRequest && ev.Request != nil && ev.Request.Decision == decision {
			return true, nil
		}
	}
	return false, nil
}

// handleAuditGet returns one transcript's JSON lines to a reader allowed to
// `get` transcripts (resourceNames: the session id) at its cluster.
func (s *Server) handleAuditGet(w http.ResponseWriter, r *http.Request) {
	who := s.reader(w, r)
	if who == nil {
		return
	}
	sessionID, tid := r.PathValue("session"), r.PathValue("transcript")
	if tid == "-" {
		tid = ""
	}
	notFound := func() {
		writeError(w, http.StatusNotFound, &api.Error{Code: "not_found",
			Description: fmt.Sprintf("no transcript %s/%s you may read; `kubectl agent transcript list` shows them", sessionID, r.PathValue("transcript"))})
	}
	sess, err := s.st.GetSession(r.Context(), sessionID)
	if errors.Is(err, store.ErrNotFound) {
		notFound()
		return
	}
	if err != nil {
		s.log.Error("reading a session", "session", sessionID, "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	rv, ok := who[sess.Cluster]
	if !ok {
		notFound() // do not tell who may not read whether it exists
		return
	}
	rs, _ := s.transcriptReaders()
	allowed, err := rs.Allowed(r.Context(), sess.Cluster, rv, "get", sess.ID)
	if err != nil {
		s.log.Warn("authorizing a transcript reader", "cluster", sess.Cluster, "err", err)
		writeError(w, http.StatusServiceUnavailable, &api.Error{Code: "temporarily_unavailable", Description: "the cluster could not authorize you; try again"})
		return
	}
	if !allowed {
		writeError(w, http.StatusForbidden, &api.Error{Code: "access_denied",
			Description: fmt.Sprintf("%s may not read transcripts of cluster %s (RBAC: get on transcripts.%s)", rv.Name, sess.Cluster, api.ApprovalAPIGroup)})
		return
	}
	s.writeLines(w, r, sess.ID, tid)
}
