// Package dpop creates and verifies RFC 9449 DPoP proofs with Ed25519 keys.
//
// The client holds a per-session ed25519 key; the broker binds the session
// token to the key's RFC 7638 thumbprint (cnf.jkt) and requires a fresh proof,
// signed by that key, on every session call. A stolen session token alone is
// therefore useless. Replay of a proof (its jti) is the verifier's caller's
// job, because only it knows how long to remember jtis and where.
package dpop

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// Type is the JOSE "typ" of a DPoP proof.
	Type = "dpop+jwt"
	// HeaderName is the HTTP header carrying the proof.
	HeaderName = "DPoP"
	// MaxSkew is how far in the future a proof's iat may be: clocks of CI
	// runners and the broker drift a little, and rejecting a run for a few
	// seconds of drift helps nobody.
	MaxSkew = 30 * time.Second
)

// Thumbprint returns the RFC 7638 JWK thumbprint of an Ed25519 public key
// (kty OKP, crv Ed25519), unpadded base64url of its SHA-256.
func Thumbprint(pub ed25519.PublicKey) string {
	// RFC 7638 §3.2: the required members in lexicographic order, no spaces.
	canon := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(canon))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// claims are the DPoP proof claims of RFC 9449 §4.2.
type claims struct {
	JTI string `json:"jti"`
	HTM string `json:"htm"`
	HTU string `json:"htu"`
	IAT int64  `json:"iat"`
	ATH string `json:"ath,omitempty"`
}

// AccessTokenHash is the "ath" value for an access token: unpadded base64url
// of its SHA-256.
func AccessTokenHash(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// NewProof signs a DPoP proof for one HTTP request. uri may carry a query or
// fragment; they are left out of htu as RFC 9449 requires. accessToken, when
// non-empty, is bound through the ath claim.
func NewProof(key ed25519.PrivateKey, method, uri, accessToken string, now time.Time) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", errors.New("dpop: the session key is not an ed25519 private key")
	}
	htu, err := NormalizeURI(uri)
	if err != nil {
		return "", err
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("dpop: reading random jti: %w", err)
	}
	c := claims{
		JTI: base64.RawURLEncoding.EncodeToString(jti[:]),
		HTM: method,
		HTU: htu,
		IAT: now.Unix(),
	}
	if accessToken != "" {
		c.ATH = AccessTokenHash(accessToken)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("dpop: encoding claims: %w", err)
	}
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithType(Type)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, opts)
	if err != nil {
		return "", fmt.Errorf("dpop: creating signer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("dpop: signing proof: %w", err)
	}
	return jws.CompactSerialize()
}

// Verified is what a valid proof proves: which key signed it (its
// thumbprint, to compare with the token's cnf.jkt), its jti (for replay
// checks) and when it was made.
type Verified struct {
	Thumbprint string
	JTI        string
	IssuedAt   time.Time
}

// Verify checks a DPoP proof for a request: typ, alg (EdDSA only), the
// signature with the embedded public jwk, htm, htu (normalized, without query
// and fragment), ath (when accessToken is non-empty), and that iat is no
// older than maxAge and no later than now plus MaxSkew. It does not check jti
// replay; the caller remembers jtis.
func Verify(proof, method, uri, accessToken string, now time.Time, maxAge time.Duration) (*Verified, error) {
	jws, err := jose.ParseSignedCompact(proof, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, fmt.Errorf("dpop: malformed proof: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("dpop: proof must have exactly one signature")
	}
	h := jws.Signatures[0].Protected
	if h.Algorithm != string(jose.EdDSA) {
		return nil, fmt.Errorf("dpop: alg %q is not allowed, only EdDSA", h.Algorithm)
	}
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != Type {
		return nil, fmt.Errorf("dpop: typ %q is not %q", typ, Type)
	}
	if h.JSONWebKey == nil {
		return nil, errors.New("dpop: proof has no jwk header")
	}
	if !h.JSONWebKey.IsPublic() {
		return nil, errors.New("dpop: jwk header holds a private key")
	}
	pub, ok := h.JSONWebKey.Key.(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("dpop: jwk header is not an Ed25519 public key")
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		return nil, errors.New("dpop: bad signature")
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("dpop: malformed claims: %w", err)
	}
	if c.JTI == "" {
		return nil, errors.New("dpop: proof has no jti")
	}
	if c.HTM != method {
		return nil, fmt.Errorf("dpop: htm %q does not match the request method %q", c.HTM, method)
	}
	want, err := NormalizeURI(uri)
	if err != nil {
		return nil, err
	}
	got, err := NormalizeURI(c.HTU)
	if err != nil {
		return nil, fmt.Errorf("dpop: htu: %w", err)
	}
	if got != want {
		return nil, fmt.Errorf("dpop: htu %q does not match the request URI %q", got, want)
	}
	if accessToken != "" {
		if c.ATH == "" {
			return nil, errors.New("dpop: proof has no ath for the access token")
		}
		if subtle.ConstantTimeCompare([]byte(c.ATH), []byte(AccessTokenHash(accessToken))) != 1 {
			return nil, errors.New("dpop: ath does not match the access token")
		}
	}
	if c.IAT == 0 {
		return nil, errors.New("dpop: proof has no iat")
	}
	iat := time.Unix(c.IAT, 0)
	if iat.After(now.Add(MaxSkew)) {
		return nil, errors.New("dpop: proof is issued in the future (check the client's clock)")
	}
	if now.Sub(iat) > maxAge {
		return nil, errors.New("dpop: proof is too old")
	}
	return &Verified{Thumbprint: Thumbprint(pub), JTI: c.JTI, IssuedAt: iat}, nil
}

// NormalizeURI reduces a request URI to the form compared as htu: scheme and
// host lower-cased, the default port dropped, an empty path made "/", and no
// user info, query or fragment (RFC 9449 §4.3, RFC 3986 §6.2.2–6.2.3).
func NormalizeURI(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("dpop: bad URI: %w", err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return "", fmt.Errorf("dpop: URI %q is not absolute http(s)", uri)
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return "", fmt.Errorf("dpop: URI %q has no host", uri)
	}
	port := u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, nil
}
