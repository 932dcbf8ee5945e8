package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/trust"
	"github.com/kubectl-agent/kubectl-agent/pkg/dpop"
)

// TokenRequest is a parsed token exchange request.
type TokenRequest struct {
	SubjectToken string
	Cluster      string
	SessionKey   ed25519.PublicKey
}

// ParseTokenRequest checks the form of a token exchange (RFC 8693 §2.1 plus
// session_key). Every field must appear exactly once: a repeated field is
// refused rather than guessed at.
func ParseTokenRequest(form url.Values) (*TokenRequest, *api.Error) {
	bad := func(format string, args ...any) *api.Error {
		return &api.Error{Code: trust.CodeInvalidRequest, Description: fmt.Sprintf(format, args...)}
	}
	one := func(k string) (string, *api.Error) {
		vs := form[k]
		switch {
		case len(vs) == 0 || vs[0] == "":
			return "", bad("the %s field is missing", k)
		case len(vs) > 1:
			return "", bad("the %s field appears %d times; send it once", k, len(vs))
		}
		return vs[0], nil
	}
	gt, e := one("grant_type")
	if e != nil {
		return nil, e
	}
	if gt != api.GrantTypeTokenExchange {
		return nil, &api.Error{Code: "unsupported_grant_type", Description: fmt.Sprintf("grant_type must be %s", api.GrantTypeTokenExchange)}
	}
	tt, e := one("subject_token_type")
	if e != nil {
		return nil, e
	}
	if tt != api.TokenTypeIDToken && tt != "urn:ietf:params:oauth:token-type:jwt" {
		return nil, bad("subject_token_type must be %s", api.TokenTypeIDToken)
	}
	tok, e := one("subject_token")
	if e != nil {
		return nil, e
	}
	if len(tok) > trust.MaxTokenBytes {
		return nil, bad("subject_token is %d bytes; the limit is %d", len(tok), trust.MaxTokenBytes)
	}
	aud, e := one("audience")
	if e != nil {
		return nil, e
	}
	if len(aud) > 253 {
		return nil, bad("audience is too long to be a cluster name")
	}
	sk, e := one(api.FormSessionKey)
	if e != nil {
		return nil, e
	}
	pub, err := base64.RawURLEncoding.DecodeString(sk)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, bad("%s must be a raw 32-byte ed25519 public key in unpadded base64url", api.FormSessionKey)
	}
	if len(form["actor_token"]) > 0 {
		return nil, bad("delegation (actor_token) is not supported")
	}
	return &TokenRequest{SubjectToken: tok, Cluster: aud, SessionKey: ed25519.PublicKey(pub)}, nil
}

// httpStatus maps an RFC 6749 error code to its HTTP status.
func httpStatus(code string) int {
	switch code {
	case trust.CodeUnavailable:
		return http.StatusServiceUnavailable
	case trust.CodeServerError:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxFormBytes)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		s.refuse(w, &api.Error{Code: trust.CodeInvalidRequest, Description: "the token request must be application/x-www-form-urlencoded"})
		return
	}
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.refuse(w, &api.Error{Code: trust.CodeInvalidRequest, Description: fmt.Sprintf("the request body exceeds %d bytes", MaxFormBytes)})
			return
		}
		s.refuse(w, &api.Error{Code: trust.CodeInvalidRequest, Description: "the request body is not a valid form"})
		return
	}
	if len(r.URL.Query()) > 0 {
		s.refuse(w, &api.Error{Code: trust.CodeInvalidRequest, Description: "send the token request's fields in the body, not the URL"})
		return
	}
	req, aerr := ParseTokenRequest(r.PostForm)
	if aerr != nil {
		s.refuse(w, aerr)
		return
	}
	resp, result, aerr := s.Exchange(r.Context(), req)
	if aerr != nil {
		s.refuse(w, aerr)
		return
	}
	s.m.exchanges.WithLabelValues(result).Inc()
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) refuse(w http.ResponseWriter, e *api.Error) {
	s.m.exchanges.WithLabelValues(e.Code).Inc()
	s.log.Info("token exchange refused", "error", e.Code, "reason", e.Description)
	writeError(w, httpStatus(e.Code), e)
}

// Exchange runs a parsed token exchange. result is "new" or "repeat".
func (s *Server) Exchange(ctx context.Context, req *TokenRequest) (_ *api.TokenResponse, result string, _ *api.Error) {
	v, err := s.verifier.Verify(ctx, req.SubjectToken)
	if err != nil {
		return nil, "", asAPIError(err)
	}
	log := s.log.With("issuer", v.Run.Issuer, "repository", v.Run.Repository, "run", v.Run.RunID, "attempt", v.Run.RunAttempt, "cluster", req.Cluster)
	rule, err := trust.Match(s.cfg, v, req.Cluster)
	if err != nil {
		log.Info("no trust rule matched", "reason", asAPIError(err).Description)
		return nil, "", asAPIError(err)
	}
	now := s.now()
	thumb := dpop.Thumbprint(req.SessionKey)
	bound, err := s.st.BindToken(ctx, store.TokenBinding{Issuer: v.Run.Issuer, JTI: v.JTI, Thumbprint: thumb, ExpiresAt: v.Expiry}, now)
	if err != nil {
		log.Error("binding the token to the session key", "err", err)
		return nil, "", serverError()
	}
	if bound != thumb {
		log.Warn("token replayed with another session key", "jti", v.JTI)
		return nil, "", &api.Error{Code: trust.CodeInvalidGrant, Description: "this token was already exchanged with a different session key; a token works only with the key it was first presented with"}
	}

	ttl := rule.RuleTTL()
	grant := rule.Grant.API(rule.Name, ttl)
	id := newSessionID()
	binding, err := s.keys.SignBinding(id, req.Cluster, req.SessionKey, v.Identity)
	if err != nil {
		log.Error("signing the key binding", "err", err)
		return nil, "", serverError()
	}
	idJSON, _ := json.Marshal(v.Identity)
	grantJSON, _ := json.Marshal(grant)
	sess, created, err := s.st.CreateOrGetSession(ctx, store.Session{
		ID: id, Run: v.Run, Cluster: req.Cluster, Identity: idJSON, Grant: grantJSON, Policy: rule.Policy,
		KeyThumbprint: thumb, PublicKey: req.SessionKey, KeyBinding: binding,
		CreatedAt: now, ExpiresAt: now.Add(ttl),
	})
	if err != nil {
		log.Error("creating the session", "err", err)
		return nil, "", serverError()
	}
	log = log.With("session", sess.ID)
	if !created {
		// One run, one session: a second key must not take over the run's
		// session (see docs/broker.md, "One run, one session").
		if sess.KeyThumbprint != thumb {
			log.Warn("run already has a session bound to another key")
			return nil, "", &api.Error{Code: trust.CodeInvalidGrant, Description: fmt.Sprintf(
				"run %s of %s already has a live session bound to another session key; reuse that key (the client caches it) or end that session first", v.Run.RunID, v.Run.Repository)}
		}
		if sess.Cluster != req.Cluster {
			return nil, "", &api.Error{Code: trust.CodeInvalidTarget, Description: fmt.Sprintf(
				"this run's session is for cluster %q; a run has one session, for one cluster", sess.Cluster)}
		}
	}
	result = "repeat"
	if created {
		result = "new"
	}
	cred, aerr := s.issue(ctx, sess, log)
	if aerr != nil {
		if created {
			// Fail closed: a session without a working credential must not
			// linger with half-made cluster objects.
			if _, err := s.st.EndSession(context.WithoutCancel(ctx), sess.ID, s.now()); err != nil {
				log.Error("ending the failed session", "err", err)
			}
			if b := s.backends[sess.Cluster]; b != nil {
				if err := b.Revoke(context.WithoutCancel(ctx), sess.ID); err != nil {
					log.Error("revoking the failed session", "err", err)
				}
			}
		}
		return nil, "", aerr
	}
	token, err := s.keys.SignSession(sess.ID, sess.Cluster, thumb, sess.ExpiresAt)
	if err != nil {
		log.Error("signing the session token", "err", err)
		return nil, "", serverError()
	}
	out, err := s.apiSession(sess)
	if err != nil {
		log.Error("reading the session", "err", err)
		return nil, "", serverError()
	}
	out.Credential = cred
	log.Info("session issued", "result", result, "rule", rule.Name, "expires", sess.ExpiresAt)
	return &api.TokenResponse{
		AccessToken: token, IssuedTokenType: api.TokenTypeAccessToken, TokenType: api.TokenTypeDPoP,
		ExpiresIn: int64(sess.ExpiresAt.Sub(now) / time.Second), Session: *out,
	}, result, nil
}

// issue gets a fresh credential for a session from its backend and records it.
func (s *Server) issue(ctx context.Context, sess store.Session, log interface {
	Error(string, ...any)
}) (*api.Credential, *api.Error) {
	b := s.backends[sess.Cluster]
	if b == nil {
		return nil, &api.Error{Code: trust.CodeInvalidTarget, Description: fmt.Sprintf("this broker no longer serves cluster %q", sess.Cluster)}
	}
	var id api.Identity
	var grant api.Grant
	if err := json.Unmarshal(sess.Identity, &id); err != nil {
		return nil, serverError()
	}
	if err := json.Unmarshal(sess.Grant, &grant); err != nil {
		return nil, serverError()
	}
	var cred *api.Credential
	err := s.timed(sess.Cluster, "issue", func() error {
		var err error
		cred, err = b.Issue(ctx, backend.Request{SessionID: sess.ID, Cluster: sess.Cluster, Identity: id, Grant: grant, ExpiresAt: sess.ExpiresAt})
		return err
	})
	if err != nil {
		log.Error("issuing a cluster credential", "err", err)
		return nil, &api.Error{Code: trust.CodeUnavailable, Description: fmt.Sprintf("could not issue a credential for cluster %q; the broker logged why (session %s)", sess.Cluster, sess.ID)}
	}
	kind := "kubernetes"
	if cl, ok := s.cfg.ClusterByName(sess.Cluster); ok {
		kind = cl.Backend.Type
	}
	if err := s.st.RecordCredential(ctx, store.CredentialRecord{SessionID: sess.ID, Kind: kind, IssuedAt: s.now(), ExpiresAt: cred.ExpiresAt}); err != nil {
		log.Error("recording the credential", "err", err)
		return nil, serverError()
	}
	return cred, nil
}

func (s *Server) apiSession(sess store.Session) (*api.Session, error) {
	out := &api.Session{ID: sess.ID, Cluster: sess.Cluster, ExpiresAt: sess.ExpiresAt, Policy: sess.Policy,
		KeyBinding: sess.KeyBinding, Ended: !sess.LiveAt(s.now())}
	if err := json.Unmarshal(sess.Identity, &out.Identity); err != nil {
		return nil, fmt.Errorf("decoding the session identity: %w", err)
	}
	if err := json.Unmarshal(sess.Grant, &out.Grant); err != nil {
		return nil, fmt.Errorf("decoding the session grant: %w", err)
	}
	return out, nil
}

func asAPIError(err error) *api.Error {
	var e *api.Error
	if errors.As(err, &e) {
		return e
	}
	return serverError()
}

func serverError() *api.Error {
	return &api.Error{Code: trust.CodeServerError, Description: "the broker failed; it logged why"}
}

// newSessionID is 16 random bytes in lowercase hex: unguessable, and usable
// in Kubernetes object names.
func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
