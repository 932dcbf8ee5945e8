package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/trust"
	"github.com/kubectl-agent/kubectl-agent/pkg/dpop"
)

type sessionHandler func(w http.ResponseWriter, r *http.Request, sess store.Session)

// session authenticates a session call: "Authorization: DPoP <session
// token>" signed by the broker for this session, and one fresh DPoP proof by
// the session key (htm, htu, ath, iat) whose jti was never used before.
func (s *Server) session(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, api.TokenTypeDPoP) || tok == "" {
			unauthorized(w, "invalid_token", "session calls need Authorization: DPoP <session token>")
			return
		}
		claims, err := s.keys.VerifySession(r.Context(), tok)
		if err != nil {
			unauthorized(w, "invalid_token", err.Error())
			return
		}
		if claims.Subject != id {
			unauthorized(w, "invalid_token", "the session token is for another session")
			return
		}
		proofs := r.Header.Values(dpop.HeaderName)
		if len(proofs) != 1 {
			unauthorized(w, "invalid_dpop_proof", "session calls need exactly one DPoP proof header")
			return
		}
		now := s.now()
		v, err := dpop.Verify(proofs[0], r.Method, s.cfg.PublicURL+r.URL.Path, tok, now, ProofMaxAge)
		if err != nil {
			unauthorized(w, "invalid_dpop_proof", err.Error())
			return
		}
		if v.Thumbprint != claims.Cnf.JKT {
			unauthorized(w, "invalid_dpop_proof", "the DPoP proof is not signed by the session key")
			return
		}
		// A proof is good for ProofMaxAge after its iat (and up to
		// dpop.MaxSkew before); remember its jti at least that long.
		if err := s.st.UseProofJTI(r.Context(), v.Thumbprint+":"+v.JTI, v.IssuedAt.Add(ProofMaxAge+dpop.MaxSkew), now); err != nil {
			if errors.Is(err, store.ErrReplay) {
				unauthorized(w, "invalid_dpop_proof", "this DPoP proof was already used; make a new proof for every request")
				return
			}
			s.log.Error("recording a DPoP proof jti", "session", id, "err", err)
			writeError(w, http.StatusInternalServerError, serverError())
			return
		}
		sess, err := s.st.GetSession(r.Context(), id)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				unauthorized(w, "invalid_token", "the broker has no such session")
				return
			}
			s.log.Error("reading a session", "session", id, "err", err)
			writeError(w, http.StatusInternalServerError, serverError())
			return
		}
		if sess.KeyThumbprint != claims.Cnf.JKT {
			unauthorized(w, "invalid_token", "the session token is not bound to this session's key")
			return
		}
		h(w, r, sess)
	}
}

func unauthorized(w http.ResponseWriter, code, desc string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`DPoP error=%q, algs="EdDSA"`, code))
	writeError(w, http.StatusUnauthorized, &api.Error{Code: code, Description: desc})
}

func (s *Server) handleGetSession(w http.ResponseWriter, r *http.Request, sess store.Session) {
	out, err := s.apiSession(sess)
	if err != nil {
		s.log.Error("reading a session", "session", sess.ID, "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCredential(w http.ResponseWriter, r *http.Request, sess store.Session) {
	if !sess.LiveAt(s.now()) {
		what := "expired"
		if sess.Ended() {
			what = "ended"
		}
		unauthorized(w, "invalid_token", "the session has "+what+"; start a new one")
		return
	}
	log := s.log.With("session", sess.ID, "repository", sess.Run.Repository, "run", sess.Run.RunID)
	cred, aerr := s.issue(r.Context(), sess, log)
	if aerr != nil {
		writeError(w, httpStatus(aerr.Code), aerr)
		return
	}
	log.Info("credential refreshed", "expires", cred.ExpiresAt)
	writeJSON(w, http.StatusOK, cred)
}

// handleEndSession ends the session and removes its cluster access. It is
// idempotent; when the backend fails, the session stays ended (no new
// credentials), the answer is an error so the client retries, and the
// reconciler retries too.
func (s *Server) handleEndSession(w http.ResponseWriter, r *http.Request, sess store.Session) {
	log := s.log.With("session", sess.ID, "repository", sess.Run.Repository, "run", sess.Run.RunID)
	if _, err := s.st.EndSession(r.Context(), sess.ID, s.now()); err != nil {
		log.Error("ending the session", "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	if err := s.revoke(context.WithoutCancel(r.Context()), sess.Cluster, sess.ID); err != nil {
		log.Error("revoking the session's cluster access", "err", err)
		writeError(w, http.StatusServiceUnavailable, &api.Error{Code: trust.CodeUnavailable,
			Description: "the session has ended, but removing its cluster access failed; retry, and the broker's reconciler retries too"})
		return
	}
	log.Info("session ended")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) revoke(ctx context.Context, cluster, id string) error {
	b := s.backends[cluster]
	if b == nil {
		return nil
	}
	return s.timed(cluster, "revoke", func() error { return b.Revoke(ctx, id) })
}
