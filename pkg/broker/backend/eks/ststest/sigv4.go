package ststest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// This file verifies AWS Signature Version 4 independently of the SDK that
// signs: a stand-in that re-used the SDK's signer would accept whatever the
// SDK produced, mistakes included. It follows the published algorithm
// ("Create a signed AWS API request", AWS IAM User Guide, reference_sigv-create-signed-request).

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	amzDateFmt   = "20060102T150405Z"
	scopeDateFmt = "20060102"
	scopeTerm    = "aws4_request"
)

// sigRequest is the signature material of one request, from either the
// Authorization header or the presigned query.
type sigRequest struct {
	presigned     bool
	accessKeyID   string
	scopeDate     string
	region        string
	service       string
	signedHeaders []string
	signature     string
	amzDate       time.Time
	expires       time.Duration // presigned only
	securityToken string
}

// Credential scope, e.g. AKID/20250101/us-east-1/sts/aws4_request.
func parseCredential(v string) (akid, date, region, service string, err error) {
	p := strings.Split(v, "/")
	if len(p) != 5 || p[4] != scopeTerm || p[0] == "" {
		return "", "", "", "", fmt.Errorf("credential %q is not of the form AKID/DATE/REGION/SERVICE/aws4_request", v)
	}
	return p[0], p[1], p[2], p[3], nil
}

func parseSignedHeaders(v string) ([]string, error) {
	if v == "" {
		return nil, errors.New("no signed headers")
	}
	hs := strings.Split(v, ";")
	for i, h := range hs {
		if h == "" || h != strings.ToLower(h) {
			return nil, fmt.Errorf("signed header %q must be a lower-case name", h)
		}
		if i > 0 && hs[i-1] >= h {
			return nil, errors.New("signed headers must be sorted and unique")
		}
	}
	return hs, nil
}

// ParseAuthorization parses a SigV4 Authorization header value:
// "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...".
func ParseAuthorization(v string) (akid, scopeDate, region, service string, signedHeaders []string, signature string, err error) {
	alg, rest, ok := strings.Cut(v, " ")
	if !ok || alg != sigAlgorithm {
		return "", "", "", "", nil, "", fmt.Errorf("authorization algorithm must be %s", sigAlgorithm)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return "", "", "", "", nil, "", fmt.Errorf("authorization field %q has no value", part)
		}
		if _, dup := fields[k]; dup {
			return "", "", "", "", nil, "", fmt.Errorf("authorization field %q repeated", k)
		}
		fields[k] = val
	}
	if len(fields) != 3 {
		return "", "", "", "", nil, "", errors.New("authorization needs exactly Credential, SignedHeaders and Signature")
	}
	akid, scopeDate, region, service, err = parseCredential(fields["Credential"])
	if err != nil {
		return "", "", "", "", nil, "", err
	}
	signedHeaders, err = parseSignedHeaders(fields["SignedHeaders"])
	if err != nil {
		return "", "", "", "", nil, "", err
	}
	signature = fields["Signature"]
	if len(signature) != 64 {
		return "", "", "", "", nil, "", errors.New("signature must be 64 hex digits")
	}
	return akid, scopeDate, region, service, signedHeaders, signature, nil
}

// extractSig finds the signature material of r. query is r's parsed query.
func extractSig(r *http.Request, query url.Values) (*sigRequest, error) {
	authz := r.Header.Get("Authorization")
	presigned := query.Get("X-Amz-Algorithm") != "" || query.Get("X-Amz-Signature") != ""
	switch {
	case authz != "" && presigned:
		return nil, errors.New("only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified")
	case authz == "" && !presigned:
		return nil, errMissingAuth
	}
	s := &sigRequest{presigned: presigned}
	var err error
	var date string
	if presigned {
		for _, k := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"} {
			if len(query[k]) != 1 {
				return nil, fmt.Errorf("presigned query needs exactly one %s", k)
			}
		}
		if query.Get("X-Amz-Algorithm") != sigAlgorithm {
			return nil, fmt.Errorf("X-Amz-Algorithm must be %s", sigAlgorithm)
		}
		s.accessKeyID, s.scopeDate, s.region, s.service, err = parseCredential(query.Get("X-Amz-Credential"))
		if err != nil {
			return nil, err
		}
		if s.signedHeaders, err = parseSignedHeaders(query.Get("X-Amz-SignedHeaders")); err != nil {
			return nil, err
		}
		s.signature = query.Get("X-Amz-Signature")
		exp, err := strconv.Atoi(query.Get("X-Amz-Expires"))
		if err != nil || exp < 1 || exp > 604800 {
			return nil, errors.New("X-Amz-Expires must be a number of seconds from 1 to 604800")
		}
		s.expires = time.Duration(exp) * time.Second
		date = query.Get("X-Amz-Date")
		s.securityToken = query.Get("X-Amz-Security-Token")
	} else {
		s.accessKeyID, s.scopeDate, s.region, s.service, s.signedHeaders, s.signature, err = ParseAuthorization(authz)
		if err != nil {
			return nil, err
		}
		date = r.Header.Get("X-Amz-Date")
		s.securityToken = r.Header.Get("X-Amz-Security-Token")
	}
	if s.amzDate, err = time.Parse(amzDateFmt, date); err != nil {
		return nil, fmt.Errorf("X-Amz-Date %q is not of the form %s", date, amzDateFmt)
	}
	if s.scopeDate != s.amzDate.Format(scopeDateFmt) {
		return nil, fmt.Errorf("credential scope date %s does not match X-Amz-Date %s", s.scopeDate, date)
	}
	if !contains(s.signedHeaders, "host") {
		return nil, errors.New("the host header must be signed")
	}
	if !s.presigned && !contains(s.signedHeaders, "x-amz-date") {
		return nil, errors.New("the x-amz-date header must be signed")
	}
	return s, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var errMissingAuth = errors.New("request is missing Authentication Token")

// uriEncode is SigV4's URI encoding: every byte except the RFC 3986
// unreserved characters is percent-encoded with upper-case hex.
func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func canonicalURI(r *http.Request) string {
	p := r.URL.EscapedPath()
	if p == "" {
		return "/"
	}
	// Services other than S3 encode the already-escaped path once more.
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = uriEncode(s)
	}
	return strings.Join(segs, "/")
}

func canonicalQuery(query url.Values, presigned bool) string {
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range query {
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, pair{uriEncode(k), uriEncode(v)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.k + "=" + p.v
	}
	return strings.Join(out, "&")
}

func canonicalHeaderValue(vs []string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(out, ",")
}

// canonicalRequest builds the canonical request of r; it fails when a signed
// header is absent, since no signature could cover it.
func canonicalRequest(r *http.Request, query url.Values, s *sigRequest, payloadHash string) (string, error) {
	var hb strings.Builder
	for _, h := range s.signedHeaders {
		var v string
		if h == "host" {
			v = r.Host
		} else {
			vs := r.Header.Values(h)
			if len(vs) == 0 {
				return "", fmt.Errorf("signed header %s is not in the request", h)
			}
			v = canonicalHeaderValue(vs)
		}
		hb.WriteString(h + ":" + v + "\n")
	}
	return strings.Join([]string{
		r.Method,
		canonicalURI(r),
		canonicalQuery(query, s.presigned),
		hb.String(),
		strings.Join(s.signedHeaders, ";"),
		payloadHash,
	}, "\n"), nil
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// verifySignature checks s's signature over r with secret; it compares in
// constant time.
func verifySignature(r *http.Request, query url.Values, s *sigRequest, secret string, payload []byte) error {
	payloadHash := sha256Hex(payload)
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != payloadHash {
		return errors.New("x-amz-content-sha256 does not match the payload")
	}
	creq, err := canonicalRequest(r, query, s, payloadHash)
	if err != nil {
		return err
	}
	scope := strings.Join([]string{s.scopeDate, s.region, s.service, scopeTerm}, "/")
	sts := strings.Join([]string{sigAlgorithm, s.amzDate.Format(amzDateFmt), scope, sha256Hex([]byte(creq))}, "\n")
	key := hmacSHA256([]byte("AWS4"+secret), s.scopeDate)
	key = hmacSHA256(key, s.region)
	key = hmacSHA256(key, s.service)
	key = hmacSHA256(key, scopeTerm)
	want := hex.EncodeToString(hmacSHA256(key, sts))
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(s.signature))) {
		return errors.New("the request signature we calculated does not match the signature you provided; check your AWS Secret Access Key and signing method")
	}
	return nil
}
