// Package trust verifies pipeline OIDC tokens and matches their claims against
// the broker's trust rules. Verification goes through go-oidc (discovery, or a
// configured JWKS URL) with the algorithms restricted per issuer; the broker
// adds what go-oidc leaves out: a size limit, its own nbf/iat skew, several
// accepted audiences, run identification per CI system, and errors that say
// which check failed without ever echoing the token.
package trust

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

// Limits and tolerances.
const (
	MaxTokenBytes = 16 << 10
	// Skew is how far nbf and iat may be in the future (clock drift).
	Skew = time.Minute
)

// Error codes (RFC 6749 §5.2, RFC 8693 §2.2.2).
const (
	CodeInvalidRequest     = "invalid_request"
	CodeInvalidGrant       = "invalid_grant"
	CodeInvalidTarget      = "invalid_target"
	CodeUnauthorizedClient = "unauthorized_client"
	CodeUnavailable        = "temporarily_unavailable"
	CodeServerError        = "server_error"
)

// Verified is a token that passed verification.
type Verified struct {
	Issuer   *config.Issuer
	Preset   config.Preset
	Claims   map[string]string // string forms of the top-level claims
	Identity api.Identity
	Run      store.RunKey
	// JTI is the token's jti, or "sha256:<hex>" of the token when it has none.
	JTI    string
	Expiry time.Time
}

// Verifier verifies tokens of the configured issuers.
type Verifier struct {
	cfg    *config.Config
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	byIss   map[string]*issuerState
	refresh time.Duration
}

type issuerState struct {
	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	failedAt time.Time
	err      error
}

// Options tune a Verifier.
type Options struct {
	// HTTPClient fetches discovery documents and JWKS (default: 10 s timeout).
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MinRefresh is the least time between JWKS refetches on unknown kids (default 10 s).
	MinRefresh time.Duration
}

// NewVerifier makes a verifier. It fetches nothing until the first token of
// an issuer arrives, so a broker starts while an issuer is down.
func NewVerifier(cfg *config.Config, o Options) *Verifier {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinRefresh == 0 {
		o.MinRefresh = 10 * time.Second
	}
	return &Verifier{cfg: cfg, client: o.HTTPClient, now: o.Now, byIss: map[string]*issuerState{}, refresh: o.MinRefresh}
}

// Verify checks a subject token. Errors are *api.Error with an RFC 6749 code.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Verified, error) {
	if len(raw) > MaxTokenBytes {
		return nil, fail(CodeInvalidRequest, "subject_token is %d bytes; the limit is %d", len(raw), MaxTokenBytes)
	}
	hdr, payload, err := peek(raw)
	if err != nil {
		return nil, fail(CodeInvalidGrant, "subject_token is not a JWT: %v", err)
	}
	alg, _ := hdr["alg"].(string)
	if alg == "none" || alg == "" || strings.HasPrefix(strings.ToUpper(alg), "HS") {
		return nil, fail(CodeInvalidGrant, "token algorithm %q is never accepted; CI issuers sign with RS256 or ES256", alg)
	}
	iss, _ := payload["iss"].(string)
	is, ok := v.cfg.IssuerByURL(iss)
	if !ok {
		return nil, fail(CodeInvalidGrant, "issuer %q is not trusted by this broker", truncate(iss, 200))
	}
	if !slices.Contains(is.SigningAlgs, alg) {
		return nil, fail(CodeInvalidGrant, "token algorithm %q is not accepted for issuer %s (accepted: %s)", alg, iss, strings.Join(is.SigningAlgs, ", "))
	}
	ov, err := v.verifierFor(ctx, is)
	if err != nil {
		return nil, fail(CodeUnavailable, "could not load the keys of issuer %s; try again shortly", iss)
	}
	tok, err := ov.Verify(ctx, raw)
	if err != nil {
		if nbf, ok := numClaim(payload, "nbf"); ok && strings.Contains(err.Error(), "before the nbf") {
			return nil, fail(CodeInvalidGrant, "the token is not valid before %s (broker time %s)", nbf.UTC().Format(time.RFC3339), v.now().UTC().Format(time.RFC3339))
		}
		return nil, classify(err, hdr)
	}
	if tok.Expiry.IsZero() {
		return nil, fail(CodeInvalidGrant, "the token has no exp claim")
	}
	now := v.now()
	if nbf, ok := numClaim(payload, "nbf"); ok && now.Add(Skew).Before(nbf) {
		return nil, fail(CodeInvalidGrant, "the token is not valid before %s (broker time %s)", nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if iat, ok := numClaim(payload, "iat"); ok && now.Add(Skew).Before(iat) {
		return nil, fail(CodeInvalidGrant, "the token was issued in the future (iat %s, broker time %s)", iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !audienceOK(tok.Audience, is.Audiences) {
		return nil, fail(CodeInvalidGrant, "token audience %q is not accepted; request the token with audience %q", truncate(strings.Join(tok.Audience, ","), 200), is.Audiences[0])
	}
	// Claims from the verified payload, not the peeked one.
	var verified map[string]any
	if err := tok.Claims(&verified); err != nil {
		return nil, fail(CodeInvalidGrant, "token claims are not a JSON object")
	}
	out := &Verified{Issuer: is, Preset: is.PresetFor(), Claims: stringClaims(verified), Expiry: tok.Expiry}
	for _, c := range out.Preset.RunClaims {
		if out.Claims[c] == "" {
			return nil, fail(CodeInvalidGrant, "the token has no %q claim, which identifies the run for %s tokens", c, out.Preset.Name)
		}
	}
	out.Identity = identity(iss, tok.Subject, out.Preset, out.Claims)
	out.Run = runKey(iss, out.Preset, out.Identity, out.Claims)
	if out.Run.Repository == "" {
		return nil, fail(CodeInvalidGrant, "the token has no %q claim, which names the repository for %s tokens", out.Preset.Identity["repository"], out.Preset.Name)
	}
	out.JTI = out.Claims["jti"]
	if out.JTI == "" {
		sum := sha256.Sum256([]byte(raw))
		out.JTI = "sha256:" + hex.EncodeToString(sum[:])
	}
	return out, nil
}

func (v *Verifier) verifierFor(ctx context.Context, is *config.Issuer) (*oidc.IDTokenVerifier, error) {
	v.mu.Lock()
	st, ok := v.byIss[is.Issuer]
	if !ok {
		st = &issuerState{}
		v.byIss[is.Issuer] = st
	}
	v.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.verifier != nil {
		return st.verifier, nil
	}
	// Retry a failed discovery only every few seconds.
	if st.err != nil && time.Since(st.failedAt) < 5*time.Second {
		return nil, st.err
	}
	jwksURL := is.JWKSURL
	if jwksURL == "" {
		dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, v.client), 10*time.Second)
		defer cancel()
		p, err := oidc.NewProvider(dctx, is.Issuer)
		if err != nil {
			st.err, st.failedAt = fmt.Errorf("discovering issuer %s: %w", is.Issuer, err), time.Now()
			return nil, st.err
		}
		var meta struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := p.Claims(&meta); err != nil || meta.JWKSURI == "" {
			st.err, st.failedAt = fmt.Errorf("issuer %s publishes no jwks_uri", is.Issuer), time.Now()
			return nil, st.err
		}
		jwksURL = meta.JWKSURI
	}
	algs := make([]jose.SignatureAlgorithm, len(is.SigningAlgs))
	for i, a := range is.SigningAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	ks := &keySet{url: jwksURL, client: v.client, algs: algs, minRefresh: v.refresh}
	st.verifier = oidc.NewVerifier(is.Issuer, ks, &oidc.Config{
		SkipClientIDCheck:    true, // several audiences may be accepted; checked after
		SupportedSigningAlgs: is.SigningAlgs,
		Now:                  v.now,
	})
	st.err = nil
	return st.verifier, nil
}

func classify(err error, hdr map[string]any) error {
	var exp *oidc.TokenExpiredError
	if errors.As(err, &exp) {
		return fail(CodeInvalidGrant, "the token expired at %s; get a fresh one from the CI system", exp.Expiry.UTC().Format(time.RFC3339))
	}
	msg := err.Error()
	kid, _ := hdr["kid"].(string)
	switch {
	case strings.Contains(msg, errUnknownKID.Error()):
		return fail(CodeInvalidGrant, "the issuer publishes no key with kid %q", truncate(kid, 100))
	case strings.Contains(msg, errBadSignature.Error()):
		return fail(CodeInvalidGrant, "the token's signature does not verify with the issuer's key %q (was it altered?)", truncate(kid, 100))
	case strings.Contains(msg, errFetch.Error()):
		return fail(CodeUnavailable, "could not fetch the issuer's keys; try again shortly")
	case strings.Contains(msg, "before the nbf"):
		return fail(CodeInvalidGrant, "the token is not valid before its nbf time yet; check the clocks")
	case strings.Contains(msg, "malformed"):
		return fail(CodeInvalidGrant, "the token is not a well-formed signed JWT")
	case strings.Contains(msg, "different provider"):
		return fail(CodeInvalidGrant, "the token's iss does not match the issuer")
	}
	return fail(CodeInvalidGrant, "the token did not verify")
}

// peek decodes a compact JWS's header and payload without verifying them,
// to pick the issuer and refuse bad algorithms early.
func peek(raw string) (hdr, payload map[string]any, err error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("it has %d dot-separated parts, a JWS has 3", len(parts))
	}
	for i, dst := range []*map[string]any{&hdr, &payload} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, nil, fmt.Errorf("part %d is not unpadded base64url", i+1)
		}
		if err := json.Unmarshal(b, dst); err != nil || *dst == nil {
			return nil, nil, fmt.Errorf("part %d is not a JSON object", i+1)
		}
	}
	return hdr, payload, nil
}

func numClaim(m map[string]any, k string) (time.Time, bool) {
	f, ok := m[k].(float64)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

func audienceOK(got, allowed []string) bool {
	for _, a := range got {
		if slices.Contains(allowed, a) {
			return true
		}
	}
	return false
}

// stringClaims flattens top-level scalar claims to strings (numbers without
// exponent, booleans as true/false); objects and lists are left out.
func stringClaims(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case string:
			out[k] = x
		case float64:
			out[k] = strconv.FormatFloat(x, 'f', -1, 64)
		case bool:
			out[k] = strconv.FormatBool(x)
		}
	}
	return out
}

// resolve evaluates an identity mapping: a claim name, or a template with
// {claim} parts (empty if any part is missing).
func resolve(spec string, claims map[string]string) string {
	if !strings.Contains(spec, "{") {
		return claims[spec]
	}
	var b strings.Builder
	for spec != "" {
		i := strings.IndexByte(spec, '{')
		if i < 0 {
			b.WriteString(spec)
			break
		}
		b.WriteString(spec[:i])
		j := strings.IndexByte(spec[i:], '}')
		if j < 0 {
			return ""
		}
		v := claims[spec[i+1:i+j]]
		if v == "" {
			return ""
		}
		b.WriteString(v)
		spec = spec[i+j+1:]
	}
	return b.String()
}

// referenced lists the claims an identity mapping reads.
func referenced(spec string) []string {
	if !strings.Contains(spec, "{") {
		return []string{spec}
	}
	var out []string
	for {
		i := strings.IndexByte(spec, '{')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(spec[i:], '}')
		if j < 0 {
			return out
		}
		out = append(out, spec[i+1:i+j])
		spec = spec[i+j+1:]
	}
}

func identity(iss, sub string, p config.Preset, claims map[string]string) api.Identity {
	id := api.Identity{
		Issuer:      iss,
		Subject:     sub,
		Repository:  resolve(p.Identity["repository"], claims),
		RunID:       resolve(p.Identity["runID"], claims),
		RunAttempt:  resolve(p.Identity["runAttempt"], claims),
		Ref:         resolve(p.Identity["ref"], claims),
		Workflow:    resolve(p.Identity["workflow"], claims),
		Environment: resolve(p.Identity["environment"], claims),
		Job:         resolve(p.Identity["job"], claims),
		Claims:      map[string]string{},
	}
	skip := map[string]bool{"iss": true, "sub": true, "aud": true, "exp": true, "iat": true, "nbf": true}
	for k, v := range claims {
		if !skip[k] {
			id.Claims[k] = v
		}
	}
	return id
}

// runKey: the repository and attempt come from the identity; RunID joins the
// values of the other run claims, so any configured run claim separates runs.
func runKey(iss string, p config.Preset, id api.Identity, claims map[string]string) store.RunKey {
	used := map[string]bool{}
	for _, f := range []string{"repository", "runAttempt"} {
		if spec := p.Identity[f]; spec != "" {
			for _, c := range referenced(spec) {
				used[c] = true
			}
		}
	}
	var parts []string
	for _, c := range p.RunClaims {
		if !used[c] {
			parts = append(parts, claims[c])
		}
	}
	return store.RunKey{Issuer: iss, Repository: id.Repository, RunID: strings.Join(parts, "/"), RunAttempt: id.RunAttempt}
}

// Match returns the first trust rule (in file order) of the token's issuer
// for cluster whose claim patterns all match. When none does, the error says,
// per rule considered, the first claim that did not match (with the token's
// value, never the rule's pattern).
func Match(cfg *config.Config, v *Verified, cluster string) (*config.TrustRule, error) {
	if _, ok := cfg.ClusterByName(cluster); !ok {
		return nil, fail(CodeInvalidTarget, "this broker has no cluster %q (GET %s lists them)", truncate(cluster, 100), api.PathClusters)
	}
	var why []string
	for i := range cfg.TrustRules {
		r := &cfg.TrustRules[i]
		if r.Issuer != v.Issuer.Issuer || r.Cluster != cluster {
			continue
		}
		miss := mismatch(r, v.Claims)
		if miss == "" {
			return r, nil
		}
		why = append(why, fmt.Sprintf("rule %q: %s", r.Name, miss))
	}
	if len(why) == 0 {
		return nil, fail(CodeUnauthorizedClient, "no trust rule gives tokens of %s access to cluster %q", v.Issuer.Issuer, cluster)
	}
	return nil, fail(CodeUnauthorizedClient, "no trust rule for cluster %q matches this token: %s", cluster, strings.Join(why, "; "))
}

func mismatch(r *config.TrustRule, claims map[string]string) string {
	keys := make([]string, 0, len(r.Match))
	for k := range r.Match {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		val, ok := claims[k]
		if !ok {
			return fmt.Sprintf("the token has no %q claim", k)
		}
		if !anyMatch(r.Match[k], val) {
			return fmt.Sprintf("claim %q (%q) does not match", k, truncate(val, 100))
		}
	}
	return ""
}

func anyMatch(pats []string, val string) bool {
	for _, p := range pats {
		if ok, _ := path.Match(p, val); ok {
			return true
		}
	}
	return false
}

func fail(code, format string, args ...any) *api.Error {
	return &api.Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
