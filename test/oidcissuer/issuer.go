// Package oidcissuer is a local stand-in for a CI system's OIDC issuer (GitHub
// Actions shaped): it serves OpenID discovery and a JWKS over loopback HTTP and
// mints ID tokens. Tests use it to drive the broker's token exchange with real
// signatures, and to craft the bad tokens a broker must refuse (alg none, HS256
// keyed with the public key, unknown kid, tampered parts). `go run
// ./test/oidcissuer/cmd` serves it standalone for demos.
package oidcissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Issuer is a running OIDC issuer stand-in.
type Issuer struct {
	// URL is the issuer URL (the `iss` of minted tokens), http://127.0.0.1:PORT.
	URL string

	rsaKey *rsa.PrivateKey
	rsaKID string
	ecKey  *ecdsa.PrivateKey
	ecKID  string

	// RequestToken, when set, is the bearer token that GET /token requires
	// (ACTIONS_ID_TOKEN_REQUEST_TOKEN in GitHub's protocol).
	RequestToken string

	mu       sync.Mutex
	defaults map[string]any // claims /token puts in every token

	srv      *http.Server
	ln       net.Listener
	jwksHits atomic.Int64
	seq      atomic.Int64
}

// New starts an issuer on a loopback port.
func New() (*Issuer, error) { return Listen("127.0.0.1:0", "") }

// Listen starts an issuer on addr. issuerURL is the URL tokens name as `iss`
// (and that discovery reports); empty means http://<listen address>.
func Listen(addr, issuerURL string) (*Issuer, error) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating the RSA signing key: %w", err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the EC signing key: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	if issuerURL == "" {
		issuerURL = "http://" + ln.Addr().String()
	}
	i := &Issuer{
		URL:    strings.TrimSuffix(issuerURL, "/"),
		rsaKey: rk, rsaKID: randomID(8),
		ecKey: ek, ecKID: randomID(8),
		ln:       ln,
		defaults: map[string]any{},
	}
	i.srv = &http.Server{Handler: i.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = i.srv.Serve(ln) }()
	return i, nil
}

// Addr is the listening address.
func (i *Issuer) Addr() string { return i.ln.Addr().String() }

// Close stops the server.
func (i *Issuer) Close() error { return i.srv.Close() }

// JWKSHits counts JWKS fetches, so tests can see caching at work.
func (i *Issuer) JWKSHits() int64 { return i.jwksHits.Load() }

// SetDefaults sets claims that GET /token adds to every token it mints.
func (i *Issuer) SetDefaults(claims map[string]any) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.defaults = claims
}

// RSAPublicKeyPEM is the RSA public key as PEM, the bytes an HS256
// key-confusion attack uses as its HMAC secret.
func (i *Issuer) RSAPublicKeyPEM() []byte {
	der, _ := x509.MarshalPKIXPublicKey(&i.rsaKey.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Handler serves discovery, the JWKS and GET /token.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{
			"issuer":                                i.URL,
			"jwks_uri":                              i.URL + "/.well-known/jwks",
			"subject_types_supported":               []string{"public"},
			"response_types_supported":              []string{"id_token"},
			"claims_supported":                      []string{"sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository", "repository_id", "run_id", "run_attempt"},
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
			"scopes_supported":                      []string{"openid"},
		})
	})
	mux.HandleFunc("GET /.well-known/jwks", func(w http.ResponseWriter, r *http.Request) {
		i.jwksHits.Add(1)
		writeJSON(w, i.JWKS())
	})
	// /token mimics ACTIONS_ID_TOKEN_REQUEST_URL: GET with a bearer token and
	// ?audience=, answering {"value": "<jwt>"}. Query parameters other than
	// audience become claims, so a demo can pick the repository or run.
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		if i.RequestToken != "" {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(i.RequestToken)) != 1 {
				http.Error(w, "bad request token", http.StatusUnauthorized)
				return
			}
		}
		q := r.URL.Query()
		aud := q.Get("audience")
		if aud == "" {
			aud = "https://github.com/kubectl-agent"
		}
		claims := i.GitHubClaims("acme/app", "1", aud)
		i.mu.Lock()
		for k, v := range i.defaults {
			claims[k] = v
		}
		i.mu.Unlock()
		for k, vs := range q {
			if k != "audience" && len(vs) > 0 {
				claims[k] = vs[0]
			}
		}
		writeJSON(w, map[string]string{"value": i.Mint(claims)})
	})
	return mux
}

// JWKS is the public key set.
func (i *Issuer) JWKS() map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	pt, _ := i.ecKey.PublicKey.Bytes() // 0x04 || X || Y
	ecx, ecy := pt[1:33], pt[33:65]
	return map[string]any{"keys": []map[string]any{
		{"kty": "RSA", "kid": i.rsaKID, "use": "sig", "alg": "RS256",
			"n": b64(i.rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(i.rsaKey.E)).Bytes())},
		{"kty": "EC", "kid": i.ecKID, "use": "sig", "alg": "ES256", "crv": "P-256",
			"x": b64(ecx), "y": b64(ecy)},
	}}
}

// GitHubClaims returns the claims of a GitHub Actions ID token for repo's run
// runID (attempt 1), valid for 10 minutes from now.
func (i *Issuer) GitHubClaims(repo, runID, audience string) map[string]any {
	now := time.Now()
	owner, _, _ := strings.Cut(repo, "/")
	return map[string]any{
		"iss":                   i.URL,
		"aud":                   audience,
		"sub":                   "repo:" + repo + ":ref:refs/heads/main",
		"jti":                   randomID(16),
		"iat":                   now.Unix(),
		"nbf":                   now.Add(-5 * time.Second).Unix(),
		"exp":                   now.Add(10 * time.Minute).Unix(),
		"ref":                   "refs/heads/main",
		"ref_type":              "branch",
		"sha":                   "0123456789abcdef0123456789abcdef01234567",
		"repository":            repo,
		"repository_id":         strconv.Itoa(100000 + len(repo)),
		"repository_owner":      owner,
		"repository_owner_id":   "4242",
		"repository_visibility": "private",
		"run_id":                runID,
		"run_number":            "7",
		"run_attempt":           "1",
		"actor":                 "octocat",
		"actor_id":              "1",
		"workflow":              "deploy",
		"workflow_ref":          repo + "/.github/workflows/deploy.yml@refs/heads/main",
		"job_workflow_ref":      repo + "/.github/workflows/deploy.yml@refs/heads/main",
		"event_name":            "push",
		"runner_environment":    "github-hosted",
	}
}

// Mint signs claims with the RS256 key.
func (i *Issuer) Mint(claims map[string]any) string {
	return i.Sign("RS256", i.rsaKID, claims)
}

// MintES256 signs claims with the ES256 key.
func (i *Issuer) MintES256(claims map[string]any) string {
	return i.Sign("ES256", i.ecKID, claims)
}

// Sign builds a compact JWS over claims with the given alg and kid header.
// alg is one of RS256, ES256 (the issuer's keys), "none" (no signature) and
// HS256 (keyed with the RSA public key PEM: the classic key-confusion attack).
func (i *Issuer) Sign(alg, kid string, claims map[string]any) string {
	hdr := map[string]any{"alg": alg, "typ": "JWT"}
	if kid != "" {
		hdr["kid"] = kid
	}
	return i.SignRaw(hdr, claims)
}

// SignRaw signs any header and payload; the header's alg picks the key.
func (i *Issuer) SignRaw(header, claims map[string]any) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(claims)
	input := b64(h) + "." + b64(p)
	digest := sha256.Sum256([]byte(input))
	var sig []byte
	switch header["alg"] {
	case "RS256":
		sig, _ = rsa.SignPKCS1v15(rand.Reader, i.rsaKey, crypto.SHA256, digest[:])
	case "ES256":
		r, s, _ := ecdsa.Sign(rand.Reader, i.ecKey, digest[:])
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case "HS256":
		m := hmac.New(sha256.New, i.RSAPublicKeyPEM())
		m.Write([]byte(input))
		sig = m.Sum(nil)
	case "none":
		return input + "."
	}
	return input + "." + b64(sig)
}

// RSAKeyID is the kid of the RS256 key.
func (i *Issuer) RSAKeyID() string { return i.rsaKID }

// Seq returns a fresh number, handy for unique run ids in tests.
func (i *Issuer) Seq() int64 { return i.seq.Add(1) }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
