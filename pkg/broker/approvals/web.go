package approvals

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

// WebConfig configures the web page's sign-in through the organization's
// OIDC provider (authorization code flow with PKCE). Claims map to a
// Kubernetes user and groups the way the apiserver's --oidc-* flags do, so
// the SubjectAccessReview for a web reviewer is the one kubectl with OIDC
// would get.
type WebConfig struct {
	Issuer       string
	ClientID     string
	ClientSecret string // a secret: never logged; empty for a public client (PKCE alone)
	// Scopes requested; default openid, email, profile.
	Scopes []string
	// UsernameClaim (default "email") and UsernamePrefix make the reviewer's
	// Kubernetes user name; GroupsClaim (default "groups") and GroupsPrefix
	// the groups.
	UsernameClaim  string
	UsernamePrefix string
	GroupsClaim    string
	GroupsPrefix   string
	// CookieSecret signs session cookies (32+ bytes). Brokers behind one load
	// balancer need the same one; empty means a random one per process.
	CookieSecret []byte
	// SessionTTL is how long a sign-in lasts (default 8h).
	SessionTTL time.Duration
}

const (
	sessionCookie = "ka_approvals"
	loginCookie   = "ka_approvals_login"
	cookiePath    = "/approvals"
	maxGroups     = 100
)

type web struct {
	h      *Handler
	cfg    *WebConfig
	key    []byte
	secure bool
	base   string // PublicURL + "/approvals"

	mu       sync.Mutex
	provider *oidc.Provider
}

func newWeb(_ context.Context, h *Handler) (*web, error) {
	w := &web{h: h, cfg: h.cfg.Web, secure: strings.HasPrefix(h.cfg.PublicURL, "https://"), base: h.cfg.PublicURL + cookiePath}
	if w.cfg == nil {
		return w, nil
	}
	c := *w.cfg
	if c.Issuer == "" || c.ClientID == "" {
		return nil, errors.New("approvals web sign-in: issuer and client id are required")
	}
	if len(c.Scopes) == 0 {
		c.Scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	}
	if c.UsernameClaim == "" {
		c.UsernameClaim = "email"
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = "groups"
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 8 * time.Hour
	}
	w.cfg = &c
	w.key = c.CookieSecret
	if len(w.key) == 0 {
		w.key = make([]byte, 32)
		if _, err := rand.Read(w.key); err != nil {
			return nil, fmt.Errorf("approvals web sign-in: making a cookie key: %w", err)
		}
	} else if len(w.key) < 32 {
		return nil, errors.New("approvals web sign-in: the cookie secret must have at least 32 bytes")
	}
	return w, nil
}

func (w *web) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /approvals/{$}", w.page(w.handleList))
	mux.HandleFunc("GET /approvals/{id}", w.page(w.handleDetail))
	mux.HandleFunc("POST /approvals/{id}/decision", w.page(w.handleDecide))
	mux.HandleFunc("GET /approvals/login", w.handleLogin)
	mux.HandleFunc("GET /approvals/callback", w.handleCallback)
	mux.HandleFunc("POST /approvals/logout", w.handleLogout)
	mux.HandleFunc("GET /approvals/static/style.css", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/css; charset=utf-8")
		rw.Header().Set("Cache-Control", "public, max-age=3600")
		_, _ = rw.Write([]byte(styleCSS))
	})
	mux.HandleFunc("GET /approvals", func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, cookiePath+"/", http.StatusFound)
	})
}

// webSession is the signed content of the session cookie.
type webSession struct {
	Reviewer Reviewer `json:"r"`
	CSRF     string   `json:"c"`
	Expires  int64    `json:"x"`
}

type loginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Next     string `json:"p"`
	Expires  int64  `json:"x"`
}

func (w *web) sign(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	p := base64.RawURLEncoding.EncodeToString(b)
	m := hmac.New(sha256.New, w.key)
	m.Write([]byte(p))
	return p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
}

func (w *web) verify(s string, v any) bool {
	p, sig, ok := strings.Cut(s, ".")
	if !ok {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, w.key)
	m.Write([]byte(p))
	if !hmac.Equal(got, m.Sum(nil)) {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return false
	}
	return json.Unmarshal(b, v) == nil
}

func (w *web) setCookie(rw http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(rw, &http.Cookie{Name: name, Value: value, Path: cookiePath, MaxAge: maxAge,
		HttpOnly: true, Secure: w.secure, SameSite: http.SameSiteLaxMode})
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// current returns the signed-in reviewer's session.
func (w *web) current(r *http.Request) (*webSession, bool) {
	if w.cfg == nil {
		return nil, false
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false
	}
	var s webSession
	if !w.verify(c.Value, &s) || time.Now().Unix() >= s.Expires || s.Reviewer.Name == "" {
		return nil, false
	}
	return &s, true
}

func securityHeaders(rw http.ResponseWriter) {
	h := rw.Header()
	// No script at all: request data is escaped by html/template, and even
	// markup that got through could not run.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin") // "no-referrer" would make form posts send Origin: null
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
}

type pageHandler func(rw http.ResponseWriter, r *http.Request, s *webSession)

// page requires a signed-in reviewer; others are sent to sign in.
func (w *web) page(next pageHandler) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		securityHeaders(rw)
		if w.cfg == nil {
			w.render(rw, http.StatusServiceUnavailable, "message", pageData{Title: "Sign-in not configured",
				Message: "This broker has no OIDC sign-in configured for the web page. Reviewers can decide from a terminal: kubectl agent approvals list --broker " + w.h.cfg.PublicURL})
			return
		}
		s, ok := w.current(r)
		if !ok {
			if r.Method != http.MethodGet {
				w.render(rw, http.StatusUnauthorized, "message", pageData{Title: "Signed out", Message: "Your sign-in expired. Sign in again and repeat your decision."})
				return
			}
			http.Redirect(rw, r, cookiePath+"/login?next="+url.QueryEscape(r.URL.Path), http.StatusFound)
			return
		}
		next(rw, r, s)
	}
}

func (w *web) oidcProvider(ctx context.Context) (*oidc.Provider, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.provider != nil {
		return w.provider, nil
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, w.h.cfg.HTTPClient), w.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	w.provider = p
	return p, nil
}

func (w *web) oauth(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: w.cfg.ClientID, ClientSecret: w.cfg.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: w.base + "/callback", Scopes: w.cfg.Scopes}
}

// safeNext keeps post-login redirects on this page.
func safeNext(next string) string {
	if !strings.HasPrefix(next, cookiePath+"/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") || strings.Contains(next, "://") {
		return cookiePath + "/"
	}
	return next
}

func (w *web) handleLogin(rw http.ResponseWriter, r *http.Request) {
	securityHeaders(rw)
	if w.cfg == nil {
		w.render(rw, http.StatusServiceUnavailable, "message", pageData{Title: "Sign-in not configured", Message: "This broker has no OIDC sign-in configured."})
		return
	}
	p, err := w.oidcProvider(r.Context())
	if err != nil {
		w.h.log.Error("approvals web: OIDC discovery", "issuer", w.cfg.Issuer, "err", err)
		w.render(rw, http.StatusBadGateway, "message", pageData{Title: "Sign-in unavailable", Message: "The sign-in provider did not answer; try again in a minute."})
		return
	}
	st := loginState{State: randomString(24), Nonce: randomString(24), Verifier: oauth2.GenerateVerifier(),
		Next: safeNext(r.URL.Query().Get("next")), Expires: time.Now().Add(10 * time.Minute).Unix()}
	v, err := w.sign(st)
	if err != nil {
		w.render(rw, http.StatusInternalServerError, "message", pageData{Title: "Error", Message: "internal error"})
		return
	}
	w.setCookie(rw, loginCookie, v, 600)
	http.Redirect(rw, r, w.oauth(p).AuthCodeURL(st.State, oidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier)), http.StatusFound)
}

func (w *web) handleCallback(rw http.ResponseWriter, r *http.Request) {
	securityHeaders(rw)
	fail := func(status int, msg string) {
		w.render(rw, status, "message", pageData{Title: "Sign-in failed", Message: msg, Login: true})
	}
	if w.cfg == nil {
		fail(http.StatusServiceUnavailable, "This broker has no OIDC sign-in configured.")
		return
	}
	c, err := r.Cookie(loginCookie)
	var st loginState
	if err != nil || !w.verify(c.Value, &st) || time.Now().Unix() >= st.Expires {
		fail(http.StatusBadRequest, "The sign-in took too long or started elsewhere; start again.")
		return
	}
	w.setCookie(rw, loginCookie, "", -1)
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		fail(http.StatusUnauthorized, "The sign-in provider refused: "+e+" "+q.Get("error_description"))
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
		fail(http.StatusBadRequest, "The sign-in answer does not belong to this browser's sign-in (state mismatch); start again.")
		return
	}
	p, err := w.oidcProvider(r.Context())
	if err != nil {
		fail(http.StatusBadGateway, "The sign-in provider did not answer; try again in a minute.")
		return
	}
	ctx := oidc.ClientContext(r.Context(), w.h.cfg.HTTPClient)
	tok, err := w.oauth(p).Exchange(ctx, q.Get("code"), oauth2.VerifierOption(st.Verifier))
	if err != nil {
		w.h.log.Warn("approvals web: code exchange failed", "err", err)
		fail(http.StatusUnauthorized, "The sign-in provider did not accept the sign-in code; start again.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		fail(http.StatusUnauthorized, "The sign-in provider sent no ID token.")
		return
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: w.cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		w.h.log.Warn("approvals web: ID token refused", "err", err)
		fail(http.StatusUnauthorized, "The ID token did not verify.")
		return
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		fail(http.StatusUnauthorized, "The ID token's nonce does not match this sign-in.")
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		fail(http.StatusUnauthorized, "The ID token's claims do not parse.")
		return
	}
	rv, err := w.reviewer(claims)
	if err != nil {
		fail(http.StatusForbidden, err.Error())
		return
	}
	s := webSession{Reviewer: rv, CSRF: randomString(24), Expires: time.Now().Add(w.cfg.SessionTTL).Unix()}
	if exp := idt.Expiry; !exp.IsZero() && exp.Before(time.Unix(s.Expires, 0)) && w.cfg.SessionTTL > time.Hour {
		// A sign-in never outlives the provider's own answer by much.
		s.Expires = max(exp.Unix(), time.Now().Add(time.Hour).Unix())
	}
	v, err := w.sign(s)
	if err != nil {
		fail(http.StatusInternalServerError, "internal error")
		return
	}
	w.setCookie(rw, sessionCookie, v, int(time.Until(time.Unix(s.Expires, 0)).Seconds()))
	w.h.log.Info("approvals web: reviewer signed in", "reviewer", rv.Name)
	http.Redirect(rw, r, st.Next, http.StatusSeeOther)
}

// reviewer maps ID token claims to a Kubernetes user and groups.
func (w *web) reviewer(claims map[string]any) (Reviewer, error) {
	name, _ := claims[w.cfg.UsernameClaim].(string)
	if name == "" {
		return Reviewer{}, fmt.Errorf("the ID token has no %q claim to name you by", w.cfg.UsernameClaim)
	}
	if w.cfg.UsernameClaim == "email" {
		if v, ok := claims["email_verified"].(bool); ok && !v {
			return Reviewer{}, errors.New("your email address is not verified at the sign-in provider")
		}
	}
	rv := Reviewer{Name: w.cfg.UsernamePrefix + name, Via: "web"}
	rv.Email, _ = claims["email"].(string)
	switch g := claims[w.cfg.GroupsClaim].(type) {
	case []any:
		for _, x := range g {
			if s, ok := x.(string); ok && s != "" && len(rv.Groups) < maxGroups {
				rv.Groups = append(rv.Groups, w.cfg.GroupsPrefix+s)
			}
		}
	case string:
		if g != "" {
			rv.Groups = []string{w.cfg.GroupsPrefix + g}
		}
	}
	return rv, nil
}

func (w *web) handleLogout(rw http.ResponseWriter, r *http.Request) {
	securityHeaders(rw)
	if s, ok := w.current(r); ok {
		if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.CSRF)) != 1 {
			w.render(rw, http.StatusForbidden, "message", pageData{Title: "Refused", Message: "The form is stale (CSRF check failed); reload the page."})
			return
		}
	}
	w.setCookie(rw, sessionCookie, "", -1)
	w.render(rw, http.StatusOK, "message", pageData{Title: "Signed out", Message: "You are signed out.", Login: true})
}

func (w *web) handleList(rw http.ResponseWriter, r *http.Request, s *webSession) {
	pending, err := w.h.cfg.Store.ListPendingApprovals(r.Context(), w.h.now())
	if err != nil {
		w.h.log.Error("approvals web: listing", "err", err)
		w.render(rw, http.StatusInternalServerError, "message", pageData{Title: "Error", Message: "The approvals could not be read; try again.", Session: s})
		return
	}
	var rows []api.Approval
	for _, a := range pending {
		d := readDetails(a)
		if ok, err := w.h.cfg.Reviewers.Allowed(r.Context(), d.Cluster, s.Reviewer, "get", d.Attributes.Namespace, a.ID); err != nil || !ok {
			continue
		}
		rows = append(rows, w.h.toAPI(a))
	}
	w.render(rw, http.StatusOK, "list", pageData{Title: "Pending approvals", Session: s, Approvals: rows})
}

func (w *web) detail(r *http.Request, s *webSession, id string) (store.Approval, int, string) {
	a, err := w.h.cfg.Store.GetApproval(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return a, http.StatusNotFound, "There is no approval " + id + "."
	}
	if err != nil {
		w.h.log.Error("approvals web: reading", "approval", id, "err", err)
		return a, http.StatusInternalServerError, "The approval could not be read; try again."
	}
	d := readDetails(a)
	ok, err := w.h.cfg.Reviewers.Allowed(r.Context(), d.Cluster, s.Reviewer, "get", d.Attributes.Namespace, a.ID)
	if err != nil {
		return a, http.StatusServiceUnavailable, "The cluster could not authorize you; try again."
	}
	if !ok {
		return a, http.StatusForbidden, forbidden(s.Reviewer, "get", d).Description
	}
	return a, 0, ""
}

func (w *web) handleDetail(rw http.ResponseWriter, r *http.Request, s *webSession) {
	a, status, msg := w.detail(r, s, r.PathValue("id"))
	if status != 0 {
		w.render(rw, status, "message", pageData{Title: "Approval", Message: msg, Session: s})
		return
	}
	notice := r.URL.Query().Get("done")
	switch notice {
	case api.ApprovalPending, api.ApprovalApproved, api.ApprovalDenied:
	default:
		notice = ""
	}
	w.render(rw, http.StatusOK, "detail", pageData{Title: "Approval " + a.ID, Session: s, Approval: ptr(w.h.toAPI(a)), Notice: notice})
}

func ptr[T any](v T) *T { return &v }

// sameOrigin refuses form posts whose Origin is another site (SameSite=Lax
// cookies and the CSRF token already stop them; this is a third lock).
func (w *web) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return o == ""
	}
	u, err := url.Parse(w.h.cfg.PublicURL)
	if err != nil {
		return false
	}
	return strings.EqualFold(o, u.Scheme+"://"+u.Host)
}

func (w *web) handleDecide(rw http.ResponseWriter, r *http.Request, s *webSession) {
	r.Body = http.MaxBytesReader(rw, r.Body, MaxDecisionBytes)
	if err := r.ParseForm(); err != nil {
		w.render(rw, http.StatusBadRequest, "message", pageData{Title: "Refused", Message: "The form could not be read.", Session: s})
		return
	}
	if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.CSRF)) != 1 || !w.sameOrigin(r) {
		w.render(rw, http.StatusForbidden, "message", pageData{Title: "Refused", Message: "The form is stale or came from another site (CSRF check failed); reload the page and decide again.", Session: s})
		return
	}
	a, status, msg := w.detail(r, s, r.PathValue("id"))
	if status != 0 {
		w.render(rw, status, "message", pageData{Title: "Approval", Message: msg, Session: s})
		return
	}
	out, status, aerr := w.h.decide(r.Context(), a, s.Reviewer, r.PostFormValue("verdict"), r.PostFormValue("reason"))
	if aerr != nil {
		fresh, _ := w.h.cfg.Store.GetApproval(r.Context(), a.ID)
		w.render(rw, status, "detail", pageData{Title: "Approval " + a.ID, Session: s, Approval: ptr(w.h.toAPI(fresh)), Error: aerr.Description})
		return
	}
	http.Redirect(rw, r, cookiePath+"/"+url.PathEscape(out.ID)+"?done="+url.QueryEscape(out.State), http.StatusSeeOther)
}
