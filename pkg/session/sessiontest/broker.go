// Package sessiontest is a minimal broker for tests of the client side: real
// HTTP on loopback, speaking the api types, counting exchanges and checking
// DPoP proofs. It is not the broker (pkg/broker/server); it exists so the
// client's tests need neither it nor a control plane.
package sessiontest

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/dpop"
)

// Broker counts exchanges and credential refreshes, binds sessions to the
// DPoP key, and checks proofs (and jti replay) on session calls. Subject
// tokens containing "refuse" are refused with invalid_grant; the only
// cluster is "c1".
type Broker struct {
	*httptest.Server
	Exchanges atomic.Int32
	Refreshes atomic.Int32
	// CredTTL is the lifetime of issued cluster credentials.
	CredTTL time.Duration
	// FailNext answers this many requests with 503.
	FailNext    atomic.Int32
	mu          sync.Mutex
	sessions    map[string]*tbSession // by session token
	jtis        map[string]bool
	lastSubject string
}

type tbSession struct {
	api.Session
	token string
	jkt   string
}

// New starts a Broker on loopback, closed at test cleanup.
func New(t testing.TB) *Broker {
	b := &Broker{sessions: map[string]*tbSession{}, jtis: map[string]bool{}, CredTTL: time.Hour}
	b.Server = httptest.NewServer(b)
	t.Cleanup(b.Close)
	return b
}

// LastSubject is the subject token of the last exchange.
func (b *Broker) LastSubject() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastSubject
}

func writeErr(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.Error{Code: code, Description: desc})
}

// ServeHTTP serves the broker API subset.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if b.FailNext.Load() > 0 {
		b.FailNext.Add(-1)
		writeErr(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try later")
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == api.PathToken:
		b.token(w, r)
	case r.Method == http.MethodGet && r.URL.Path == api.PathClusters:
		_ = json.NewEncoder(w).Encode(api.ClusterList{Clusters: []api.Cluster{{Name: "c1", Server: "https://c1.example"}}})
	case strings.HasPrefix(r.URL.Path, "/v1/sessions/"):
		b.session(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (b *Broker) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeErr(w, 400, "invalid_request", err.Error())
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != api.GrantTypeTokenExchange || f.Get("subject_token_type") != api.TokenTypeIDToken {
		writeErr(w, 400, "unsupported_grant_type", "bad grant")
		return
	}
	if f.Get("subject_token") == "refuse-me" || strings.Contains(f.Get("subject_token"), "refuse") {
		writeErr(w, 400, "invalid_grant", "no trust rule matches repository o/evil")
		return
	}
	if f.Get("audience") != "c1" {
		writeErr(w, 400, "invalid_target", "unknown cluster "+f.Get("audience"))
		return
	}
	pub, err := base64.RawURLEncoding.DecodeString(f.Get(api.FormSessionKey))
	if err != nil || len(pub) != ed25519.PublicKeySize {
		writeErr(w, 400, "invalid_request", "bad session_key")
		return
	}
	n := b.Exchanges.Add(1)
	now := time.Now()
	s := &tbSession{
		Session: api.Session{
			ID: fmt.Sprintf("s%d", n), Cluster: "c1", ExpiresAt: now.Add(time.Hour),
			Identity:   api.Identity{Issuer: "iss", Repository: "o/r", RunID: "42"},
			Grant:      api.Grant{Rule: "r1", Namespaces: []string{"ns"}, TTL: api.Duration{Duration: time.Hour}},
			Credential: &api.Credential{Token: fmt.Sprintf("cluster-%d-0", n), ExpiresAt: now.Add(b.CredTTL)},
		},
		token: fmt.Sprintf("session-token-%d", n),
		jkt:   dpop.Thumbprint(ed25519.PublicKey(pub)),
	}
	b.mu.Lock()
	b.sessions[s.token] = s
	b.lastSubject = f.Get("subject_token")
	b.mu.Unlock()
	_ = json.NewEncoder(w).Encode(api.TokenResponse{
		AccessToken: s.token, IssuedTokenType: api.TokenTypeAccessToken, TokenType: api.TokenTypeDPoP,
		ExpiresIn: 3600, Session: s.Session,
	})
}

func (b *Broker) session(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "DPoP ")
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[tok]
	if !ok || s == nil || s.Ended {
		writeErr(w, 401, "invalid_token", "unknown or ended session")
		return
	}
	v, err := dpop.Verify(r.Header.Get("DPoP"), r.Method, "http://"+r.Host+r.URL.Path, tok, time.Now(), time.Minute)
	if err != nil || v.Thumbprint != s.jkt || b.jtis[v.JTI] {
		writeErr(w, 401, "invalid_dpop_proof", fmt.Sprintf("bad proof: %v", err))
		return
	}
	b.jtis[v.JTI] = true
	rest := strings.TrimPrefix(r.URL.Path, "/v1/sessions/"+s.ID)
	switch {
	case rest == "" && r.Method == http.MethodGet:
		_ = json.NewEncoder(w).Encode(s.Session)
	case rest == "" && r.Method == http.MethodDelete:
		s.Ended = true
		w.WriteHeader(http.StatusNoContent)
	case rest == "/credential" && r.Method == http.MethodPost:
		n := b.Refreshes.Add(1)
		c := api.Credential{Token: fmt.Sprintf("cluster-refreshed-%d", n), ExpiresAt: time.Now().Add(b.CredTTL)}
		s.Credential = &c
		_ = json.NewEncoder(w).Encode(c)
	case rest == "/transcript" && r.Method == http.MethodPost:
		var ch api.TranscriptChunk
		if err := json.NewDecoder(r.Body).Decode(&ch); err != nil {
			writeErr(w, 400, "invalid_request", err.Error())
			return
		}
		_ = json.NewEncoder(w).Encode(api.TranscriptAck{NextSeq: ch.FirstSeq + int64(len(ch.Lines))})
	default:
		writeErr(w, 404, "not_found", "no such session call")
	}
}
