package approvals

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/keys"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/dpop"
)

// ProofMaxAge is how old a DPoP proof may be (as the broker's session calls).
const ProofMaxAge = time.Minute

// SessionAuthenticator authenticates a pipeline's session call and returns
// its session. Errors are *api.Error with the RFC 6749 code to answer (401
// for invalid_token and invalid_dpop_proof, 500 for server_error).
type SessionAuthenticator func(r *http.Request) (store.Session, error)

// SessionVerifier checks session tokens (the broker's keys.Manager).
type SessionVerifier interface {
	VerifySession(ctx context.Context, raw string) (*keys.SessionClaims, error)
}

// DPoPSessions authenticates session calls the way the broker's own session
// endpoints do, for paths that do not carry the session id: "Authorization:
// DPoP <session token>" signed by the broker, one fresh DPoP proof by the
// session key whose jti was never used, and a session that exists, is bound
// to that key and is live.
func DPoPSessions(v SessionVerifier, st store.Store, publicURL string, now func() time.Time) SessionAuthenticator {
	if now == nil {
		now = time.Now
	}
	publicURL = strings.TrimRight(publicURL, "/")
	return func(r *http.Request) (store.Session, error) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, api.TokenTypeDPoP) || tok == "" {
			return store.Session{}, &api.Error{Code: "invalid_token", Description: "approval filing needs Authorization: DPoP <session token>"}
		}
		claims, err := v.VerifySession(r.Context(), tok)
		if err != nil {
			return store.Session{}, &api.Error{Code: "invalid_token", Description: err.Error()}
		}
		proofs := r.Header.Values(dpop.HeaderName)
		if len(proofs) != 1 {
			return store.Session{}, &api.Error{Code: "invalid_dpop_proof", Description: "session calls need exactly one DPoP proof header"}
		}
		t := now()
		pv, err := dpop.Verify(proofs[0], r.Method, publicURL+r.URL.Path, tok, t, ProofMaxAge)
		if err != nil {
			return store.Session{}, &api.Error{Code: "invalid_dpop_proof", Description: err.Error()}
		}
		if pv.Thumbprint != claims.Cnf.JKT {
			return store.Session{}, &api.Error{Code: "invalid_dpop_proof", Description: "the DPoP proof is not signed by the session key"}
		}
		if err := st.UseProofJTI(r.Context(), pv.Thumbprint+":"+pv.JTI, pv.IssuedAt.Add(ProofMaxAge+dpop.MaxSkew), t); err != nil {
			if errors.Is(err, store.ErrReplay) {
				return store.Session{}, &api.Error{Code: "invalid_dpop_proof", Description: "this DPoP proof was already used; make a new proof for every request"}
			}
			return store.Session{}, err
		}
		sess, err := st.GetSession(r.Context(), claims.Subject)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return store.Session{}, &api.Error{Code: "invalid_token", Description: "the broker has no such session"}
			}
			return store.Session{}, err
		}
		if sess.KeyThumbprint != claims.Cnf.JKT {
			return store.Session{}, &api.Error{Code: "invalid_token", Description: "the session token is not bound to this session's key"}
		}
		if !sess.LiveAt(t) {
			return store.Session{}, &api.Error{Code: "invalid_token", Description: "the session has ended or expired; start a new one"}
		}
		return sess, nil
	}
}
