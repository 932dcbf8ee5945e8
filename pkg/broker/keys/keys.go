// Package keys holds the broker's signing keys: Ed25519 keys kept in the store
// (so every broker of one store signs and verifies with the same set),
// rotated after a period, and published as a JWKS. It signs and verifies
// session tokens (DPoP-bound, cnf.jkt) and signs key-binding JWTs that tie a
// session key to a run's identity for transcript verification.
//
// Every key ever made stays in the JWKS: binding JWTs have no expiry, and a
// transcript sealed years ago must still verify offline. A retired key never
// signs again, so keeping its public half published costs nothing.
package keys

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

// BindingType is the typ of key-binding JWTs.
const BindingType = "kubectl-agent-binding+jwt"

// SessionTokenType is the typ of session tokens.
const SessionTokenType = "at+jwt"

// Store is the part of the broker store keys need.
type Store interface {
	ListSigningKeys(ctx context.Context) ([]store.SigningKey, error)
	InsertSigningKey(ctx context.Context, k store.SigningKey) error
}

// Manager signs with the current key and verifies with any key.
type Manager struct {
	st       Store
	issuer   string // the broker's public URL
	rotation time.Duration
	now      func() time.Time

	mu      sync.RWMutex
	keys    map[string]ed25519.PrivateKey
	order   []store.SigningKey // oldest first, Private cleared
	current string
	loaded  time.Time
}

// New makes a manager. issuer is the broker's public URL.
func New(st Store, issuer string, rotation time.Duration, now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	return &Manager{st: st, issuer: issuer, rotation: rotation, now: now, keys: map[string]ed25519.PrivateKey{}}
}

// Load reads the keys from the store and makes a new one when there is none or
// the newest is older than the rotation period. Two brokers rotating at once
// both insert a key; each signs with the newest it sees and both keys are
// published, so nothing breaks.
func (m *Manager) Load(ctx context.Context) error {
	if err := m.reload(ctx); err != nil {
		return err
	}
	m.mu.RLock()
	need := m.current == "" || m.now().After(m.createdOf(m.current).Add(m.rotation))
	m.mu.RUnlock()
	if !need {
		return nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generating a broker signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("encoding the broker signing key: %w", err)
	}
	now := m.now()
	kid := newKID(priv.Public().(ed25519.PublicKey))
	if err := m.st.InsertSigningKey(ctx, store.SigningKey{KID: kid, Algorithm: "EdDSA", Private: der, CreatedAt: now, RetireAfter: now.Add(m.rotation)}); err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("storing the broker signing key: %w", err)
	}
	return m.reload(ctx)
}

func (m *Manager) createdOf(kid string) time.Time {
	for _, k := range m.order {
		if k.KID == kid {
			return k.CreatedAt
		}
	}
	return time.Time{}
}

func (m *Manager) reload(ctx context.Context) error {
	list, err := m.st.ListSigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("loading the broker signing keys: %w", err)
	}
	keys := map[string]ed25519.PrivateKey{}
	var order []store.SigningKey
	for _, k := range list {
		if k.Algorithm != "EdDSA" {
			continue
		}
		p, err := x509.ParsePKCS8PrivateKey(k.Private)
		if err != nil {
			return fmt.Errorf("decoding broker signing key %s: %w", k.KID, err)
		}
		ek, ok := p.(ed25519.PrivateKey)
		if !ok {
			return fmt.Errorf("broker signing key %s is not Ed25519", k.KID)
		}
		keys[k.KID] = ek
		k.Private = nil
		order = append(order, k)
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].CreatedAt.Before(order[j].CreatedAt) })
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys, m.order, m.loaded = keys, order, m.now()
	m.current = ""
	if len(order) > 0 {
		m.current = order[len(order)-1].KID
	}
	return nil
}

// Maintain reloads keys (picking up keys other brokers made) and rotates when due.
func (m *Manager) Maintain(ctx context.Context) error { return m.Load(ctx) }

func (m *Manager) sign(typ string, claims any) (string, error) {
	m.mu.RLock()
	kid := m.current
	k, ok := m.keys[kid]
	m.mu.RUnlock()
	if !ok {
		return "", errors.New("no broker signing key loaded")
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: k},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader(jose.HeaderKey("kid"), kid))
	if err != nil {
		return "", fmt.Errorf("making a signer: %w", err)
	}
	return jwt.Signed(s).Claims(claims).Serialize()
}

// JWKS is the public key set: every key the store holds.
func (m *Manager) JWKS() jose.JSONWebKeySet {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var set jose.JSONWebKeySet
	for _, k := range m.order {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: m.keys[k.KID].Public(), KeyID: k.KID, Algorithm: "EdDSA", Use: "sig"})
	}
	return set
}

// publicKey finds a key by kid, reloading from the store once when it is
// unknown (another broker may have just made it).
func (m *Manager) publicKey(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	m.mu.RLock()
	k, ok := m.keys[kid]
	m.mu.RUnlock()
	if ok {
		return k.Public().(ed25519.PublicKey), nil
	}
	if err := m.reload(ctx); err != nil {
		return nil, err
	}
	m.mu.RLock()
	k, ok = m.keys[kid]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown signing key %q", kid)
	}
	return k.Public().(ed25519.PublicKey), nil
}

// Confirmation is the cnf claim.
type Confirmation struct {
	JKT string           `json:"jkt,omitempty"`
	JWK *jose.JSONWebKey `json:"jwk,omitempty"`
}

// SessionClaims are the claims of a session token.
type SessionClaims struct {
	jwt.Claims
	Cluster string       `json:"cluster"`
	Cnf     Confirmation `json:"cnf"`
}

// SignSession makes the session token for a session bound to a key thumbprint.
func (m *Manager) SignSession(sessionID, cluster, jkt string, expires time.Time) (string, error) {
	now := m.now()
	return m.sign(SessionTokenType, SessionClaims{
		Claims: jwt.Claims{
			Issuer: m.issuer, Subject: sessionID, Audience: jwt.Audience{m.issuer},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-30 * time.Second)),
			Expiry: jwt.NewNumericDate(expires), ID: randomID(),
		},
		Cluster: cluster,
		Cnf:     Confirmation{JKT: jkt},
	})
}

// VerifySession checks a session token's signature, typ, issuer, audience and
// time, and returns its claims.
func (m *Manager) VerifySession(ctx context.Context, raw string) (*SessionClaims, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, errors.New("the session token is not a signed JWT")
	}
	if len(tok.Headers) != 1 {
		return nil, errors.New("the session token must have one signature")
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != SessionTokenType {
		return nil, errors.New("the token is not a session token")
	}
	pub, err := m.publicKey(ctx, h.KeyID)
	if err != nil {
		return nil, errors.New("the session token is signed by a key this broker does not have")
	}
	var c SessionClaims
	if err := tok.Claims(pub, &c); err != nil {
		return nil, errors.New("the session token's signature does not verify")
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: m.issuer, AnyAudience: jwt.Audience{m.issuer}, Time: m.now()}, 30*time.Second); err != nil {
		if errors.Is(err, jwt.ErrExpired) {
			return nil, errors.New("the session token expired; start a new session")
		}
		return nil, fmt.Errorf("the session token is not valid here: %v", err)
	}
	if c.Subject == "" || c.Cnf.JKT == "" {
		return nil, errors.New("the session token lacks sub or cnf.jkt")
	}
	return &c, nil
}

// BindingClaims are the claims of a key-binding JWT.
type BindingClaims struct {
	Issuer   string       `json:"iss"`
	Subject  string       `json:"sub"`
	IssuedAt int64        `json:"iat"`
	Cnf      Confirmation `json:"cnf"`
	Cluster  string       `json:"cluster"`
	Identity api.Identity `json:"identity"`
}

// SignBinding binds a session key to a run's identity. It has no exp: it is
// evidence about the past, checked with the JWKS long after the session.
func (m *Manager) SignBinding(sessionID, cluster string, pub ed25519.PublicKey, id api.Identity) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	return m.sign(BindingType, BindingClaims{
		Issuer: m.issuer, Subject: sessionID, IssuedAt: m.now().Unix(),
		Cnf: Confirmation{JWK: &jwk}, Cluster: cluster, Identity: id,
	})
}

// VerifyBinding checks a binding JWT against a JWKS (offline verifiers use this
// with the broker's published keys).
func VerifyBinding(raw string, set jose.JSONWebKeySet) (*BindingClaims, ed25519.PublicKey, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil || len(tok.Headers) != 1 {
		return nil, nil, errors.New("the key binding is not a signed JWT")
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != BindingType {
		return nil, nil, fmt.Errorf("the key binding's typ is not %s", BindingType)
	}
	ks := set.Key(h.KeyID)
	if len(ks) == 0 {
		return nil, nil, fmt.Errorf("no key %q in the broker's JWKS", h.KeyID)
	}
	var c BindingClaims
	if err := tok.Claims(ks[0].Key, &c); err != nil {
		return nil, nil, errors.New("the key binding's signature does not verify")
	}
	if c.Cnf.JWK == nil {
		return nil, nil, errors.New("the key binding has no cnf.jwk")
	}
	pub, ok := c.Cnf.JWK.Key.(ed25519.PublicKey)
	if !ok {
		return nil, nil, errors.New("the key binding's cnf.jwk is not Ed25519")
	}
	return &c, pub, nil
}

func newKID(pub ed25519.PublicKey) string {
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return randomID()
	}
	// The full RFC 7638 thumbprint, as transcript verifiers expect.
	return base64.RawURLEncoding.EncodeToString(tp)
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
