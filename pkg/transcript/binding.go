package transcript

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// KeyBindingType is the JOSE "typ" of a key binding JWT.
const KeyBindingType = "kubectl-agent-binding+jwt"

// KeyBindingClaims are the claims of the broker-signed JWT that binds a
// session key to the run's verified identity. Binding JWTs carry no exp: a
// transcript is verified long after the run ended.
type KeyBindingClaims struct {
	Issuer   string       `json:"iss"`
	Subject  string       `json:"sub"` // the session id
	IssuedAt int64        `json:"iat"`
	Cnf      Confirmation `json:"cnf"`
	Cluster  string       `json:"cluster"`
	Identity api.Identity `json:"identity"`
}

// Confirmation is RFC 7800's cnf claim holding the session key.
type Confirmation struct {
	JWK OKPKey `json:"jwk"`
}

// OKPKey is an ed25519 public JWK (RFC 8037).
type OKPKey struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
}

// NewOKPKey is the JWK of an ed25519 public key.
func NewOKPKey(pub ed25519.PublicKey) OKPKey {
	return OKPKey{Kty: "OKP", Crv: "Ed25519", X: EncodePublicKey(pub)}
}

// SignKeyBinding makes a key binding JWT with the broker's ed25519 key. The
// broker calls it when it creates a session; tests use it too. kid is the
// RFC 7638 thumbprint of the broker key, as in the broker's JWKS.
func SignKeyBinding(brokerKey ed25519.PrivateKey, claims KeyBindingClaims) (string, error) {
	pub, ok := brokerKey.Public().(ed25519.PublicKey)
	if !ok {
		return "", errors.New("signing key binding: broker key is not ed25519")
	}
	opts := (&jose.SignerOptions{}).WithType(KeyBindingType).WithHeader("kid", Thumbprint(pub))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: brokerKey}, opts)
	if err != nil {
		return "", fmt.Errorf("signing key binding: %w", err)
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("signing key binding: %w", err)
	}
	return s, nil
}

// BrokerJWK is the public JWK of a broker key as the JWKS publishes it.
func BrokerJWK(pub ed25519.PublicKey) jose.JSONWebKey {
	return jose.JSONWebKey{Key: pub, KeyID: Thumbprint(pub), Algorithm: string(jose.EdDSA), Use: "sig"}
}

// ParseKeyBinding checks a key binding JWT. With a JWKS it verifies the
// signature (alg EdDSA, the key named by kid) and returns verified=true;
// without one it only decodes the claims, which then prove nothing by
// themselves. In both cases the typ header must be KeyBindingType.
func ParseKeyBinding(token string, jwks *jose.JSONWebKeySet) (claims *KeyBindingClaims, verified bool, err error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, false, fmt.Errorf("key binding is not a signed JWT: %w", err)
	}
	if len(tok.Headers) != 1 {
		return nil, false, errors.New("key binding must have exactly one signature")
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != KeyBindingType {
		return nil, false, fmt.Errorf("key binding has typ %q, want %q", typ, KeyBindingType)
	}
	var c KeyBindingClaims
	if jwks == nil {
		if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
			return nil, false, fmt.Errorf("decoding key binding claims: %w", err)
		}
		return &c, false, nil
	}
	keys := jwks.Key(h.KeyID)
	if len(keys) == 0 {
		return nil, false, fmt.Errorf("key binding is signed by key %q, which is not in the JWKS (wrong broker, or a rotated key: use the JWKS from when the run happened)", h.KeyID)
	}
	var lastErr error
	for _, k := range keys {
		if lastErr = tok.Claims(k.Key, &c); lastErr == nil {
			return &c, true, nil
		}
	}
	return nil, false, fmt.Errorf("key binding signature does not verify with JWKS key %q: %w", h.KeyID, lastErr)
}

// LoadJWKS reads a JWKS from a file or an http(s) URL (the broker's
// /.well-known/jwks.json). client may be nil.
func LoadJWKS(ctx context.Context, src string, client *http.Client) (*jose.JSONWebKeySet, error) {
	var data []byte
	if strings.HasPrefix(src, "https://") || strings.HasPrefix(src, "http://") {
		if client == nil {
			client = &http.Client{Timeout: 30 * time.Second}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, fmt.Errorf("fetching JWKS %s: %w", src, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetching JWKS %s: %w", src, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetching JWKS %s: HTTP %d", src, resp.StatusCode)
		}
		data, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("fetching JWKS %s: %w", src, err)
		}
	} else {
		var err error
		data, err = os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("reading JWKS: %w", err)
		}
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("JWKS %s is not a JSON Web Key Set: %w", src, err)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("JWKS %s has no keys", src)
	}
	return &set, nil
}
