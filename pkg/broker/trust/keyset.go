package trust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Signature errors. go-oidc flattens KeySet errors into strings, so the
// verifier recognizes these by their text; keep them distinct.
var (
	errUnknownKID   = errors.New("no key with this kid in the issuer's JWKS")
	errBadSignature = errors.New("the signature does not verify with the issuer's key")
)

// keySet is an oidc.KeySet over a JWKS URL. It caches keys and refetches on an
// unknown kid at most once per minRefresh, so a flood of tokens with made-up
// kids does not turn the broker into a load generator against the issuer. It
// tells "unknown kid" apart from "bad signature", which go-oidc's
// RemoteKeySet does not.
type keySet struct {
	url        string
	client     *http.Client
	algs       []jose.SignatureAlgorithm
	minRefresh time.Duration

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	fetchedAt time.Time
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, k.algs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("token must have exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	cands, err := k.find(ctx, kid)
	if err != nil {
		return nil, err
	}
	for i := range cands {
		if payload, err := jws.Verify(&cands[i]); err == nil {
			return payload, nil
		}
	}
	return nil, errBadSignature
}

func (k *keySet) find(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	match := func() []jose.JSONWebKey {
		var out []jose.JSONWebKey
		for _, key := range k.keys {
			if kid == "" || key.KeyID == kid {
				out = append(out, key)
			}
		}
		return out
	}
	if c := match(); len(c) > 0 {
		return c, nil
	}
	if !k.fetchedAt.IsZero() && time.Since(k.fetchedAt) < k.minRefresh {
		return nil, errUnknownKID
	}
	// Holding the lock while fetching makes concurrent misses share one fetch.
	keys, err := k.fetch(ctx)
	k.fetchedAt = time.Now()
	if err != nil {
		return nil, err
	}
	k.keys = keys
	if c := match(); len(c) > 0 {
		return c, nil
	}
	return nil, errUnknownKID
}

// errFetch marks failures to reach the issuer: the broker's problem (or the
// issuer's), not the client's.
var errFetch = errors.New("fetching the issuer's keys")

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w from %s: %v", errFetch, k.url, err)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w from %s: %v", errFetch, k.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w from %s: HTTP %d", errFetch, k.url, resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("%w from %s: %v", errFetch, k.url, err)
	}
	var keys []jose.JSONWebKey
	for _, key := range set.Keys {
		// Only public signature keys; a JWKS that carries a symmetric key is
		// never a reason to accept HMAC tokens.
		if key.Valid() && key.IsPublic() && (key.Use == "" || key.Use == "sig") {
			keys = append(keys, key)
		}
	}
	return keys, nil
}
