// Package ststest is a local stand-in for AWS STS, for tests: a real HTTPS
// server on loopback that speaks the STS Query protocol (version 2011-06-15)
// for AssumeRole and GetCallerIdentity.
//
// It verifies every request's SigV4 signature (the Authorization header for
// calls, the presigned query for GetCallerIdentity URLs, which is what an EKS
// token is) against the credentials it knows: long-term keys of configured
// principals and the temporary credentials it issued. It applies AssumeRole's
// documented argument limits (session name, duration, tags, session policy) and
// the configured roles' trust, and answers GetCallerIdentity with the
// assumed-role ARN and session name, in XML or (with "Accept:
// application/json", as aws-iam-authenticator asks) JSON.
//
// Its session tokens model what matters to EKS tokens: like AWS's, they carry
// the session's tags and policy packed inside, so they grow with them. The
// packed-size limit is the stand-in's own (AWS does not publish its formula).
//
// The server's certificate names the public STS hostnames of its region, and
// Client routes every hostname to the server, so tokens carry the same
// https://sts.REGION.amazonaws.com URLs that real STS would accept.
package ststest

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// Principal is a long-term AWS identity (an IAM user) with an access key.
type Principal struct {
	ARN             string // arn:aws:iam::111122223333:user/broker
	UserID          string // AIDA...
	AccessKeyID     string // AKIA...
	SecretAccessKey string
}

// Role is an IAM role that principals may assume.
type Role struct {
	ARN    string // arn:aws:iam::111122223333:role/ci
	RoleID string // AROA...
	// Trusted lists the principal ARNs (IAM users, or roles for role
	// chaining) that the role's trust policy allows.
	Trusted []string
	// ExternalID, when set, must be passed by AssumeRole.
	ExternalID string
	// MaxSessionDuration defaults to one hour, as in IAM.
	MaxSessionDuration time.Duration
}

// Options configures the stand-in.
type Options struct {
	Region     string // default us-east-1
	Principals []Principal
	Roles      []Role
	// Now is the stand-in's clock; default time.Now.
	Now func() time.Time
	// PackedLimit is the largest packed size, in bytes, of a session's tags
	// and policy; default 2048.
	PackedLimit int
}

// AssumeRoleCall records one successful AssumeRole.
type AssumeRoleCall struct {
	Caller          string // the caller's ARN
	RoleARN         string
	RoleSessionName string
	SourceIdentity  string
	ExternalID      string
	Policy          string
	DurationSeconds int
	Tags            map[string]string
	AccessKeyID     string // of the issued credentials
	Expiration      time.Time
}

// CallerIdentityCall records one successful GetCallerIdentity.
type CallerIdentityCall struct {
	ARN       string
	Presigned bool
	// ClusterID is the x-k8s-aws-id header, when it was signed.
	ClusterID string
}

type session struct {
	secret, token  string
	expiration     time.Time
	arn, userID    string
	sourceIdentity string
}

// Server is a running stand-in.
type Server struct {
	// URL is the server's loopback address, https://127.0.0.1:PORT.
	URL string
	// CAPEM is the certificate authority that issued the server's
	// certificate.
	CAPEM []byte

	opts Options
	srv  *httptest.Server

	mu          sync.Mutex
	principals  map[string]Principal // by access key ID
	roles       map[string]Role      // by ARN
	sessions    map[string]*session  // by access key ID
	assumeCalls []AssumeRoleCall
	gciCalls    []CallerIdentityCall
}

// New starts a stand-in and stops it at the end of the test.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := Start(opts)
	if err != nil {
		tb.Fatalf("starting the STS stand-in: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Start starts a stand-in; Close stops it.
func Start(opts Options) (*Server, error) {
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PackedLimit == 0 {
		opts.PackedLimit = 2048
	}
	s := &Server{
		opts:       opts,
		principals: map[string]Principal{},
		roles:      map[string]Role{},
		sessions:   map[string]*session{},
	}
	for _, p := range opts.Principals {
		s.principals[p.AccessKeyID] = p
	}
	for _, r := range opts.Roles {
		if r.MaxSessionDuration == 0 {
			r.MaxSessionDuration = time.Hour
		}
		s.roles[r.ARN] = r
	}
	hosts := []string{
		"sts.amazonaws.com",
		"sts." + opts.Region + ".amazonaws.com",
		"sts-fips." + opts.Region + ".amazonaws.com",
		"sts." + opts.Region + ".api.aws",
		"sts-fips." + opts.Region + ".api.aws",
		"localhost",
	}
	serverTLS, caPEM, err := NewTLS(hosts)
	if err != nil {
		return nil, err
	}
	s.CAPEM = caPEM
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.srv.TLS = serverTLS
	s.srv.StartTLS()
	s.URL = s.srv.URL
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Region is the region the stand-in serves.
func (s *Server) Region() string { return s.opts.Region }

// Client returns an HTTP client that trusts the stand-in's CA and connects to
// the stand-in whatever host a URL names (so https://sts.REGION.amazonaws.com
// reaches it), and does not follow redirects (as aws-iam-authenticator's).
func (s *Server) Client() *http.Client {
	addr := s.srv.Listener.Addr().String()
	tr := &http.Transport{
		TLSClientConfig: s.clientTLS(),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2: true,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// AssumeRoleCalls returns the successful AssumeRole calls so far.
func (s *Server) AssumeRoleCalls() []AssumeRoleCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]AssumeRoleCall(nil), s.assumeCalls...)
}

// CallerIdentityCalls returns the successful GetCallerIdentity calls so far.
func (s *Server) CallerIdentityCalls() []CallerIdentityCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CallerIdentityCall(nil), s.gciCalls...)
}

// apiError is an STS error response.
type apiError struct {
	status  int
	kind    string // Sender or Receiver
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func senderErr(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, kind: "Sender", code: code, message: fmt.Sprintf(format, args...)}
}

func validationErr(format string, args ...any) *apiError {
	return senderErr(http.StatusBadRequest, "ValidationError", format, args...)
}

const maxBody = 64 << 10

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newID(16)
	wantJSON := strings.Contains(r.Header.Get("Accept"), "application/json")
	body, params, query, aerr := readRequest(r)
	var resp any
	if aerr == nil {
		resp, aerr = s.handle(r, body, params, query, reqID)
	}
	if aerr != nil {
		writeError(w, aerr, reqID, wantJSON)
		return
	}
	if wantJSON {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amzn-Requestid", reqID)
		_ = json.NewEncoder(w).Encode(jsonResponse(resp))
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", reqID)
	_, _ = io.WriteString(w, xml.Header)
	_ = xml.NewEncoder(w).Encode(resp)
}

func readRequest(r *http.Request) (body []byte, params, query url.Values, aerr *apiError) {
	var err error
	query, err = url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, nil, nil, senderErr(http.StatusBadRequest, "MalformedQueryString", "malformed query string")
	}
	body, err = io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		return nil, nil, nil, senderErr(http.StatusBadRequest, "InvalidRequest", "request body unreadable or too large")
	}
	params = url.Values{}
	for k, v := range query {
		params[k] = append(params[k], v...)
	}
	switch r.Method {
	case http.MethodGet:
		if len(body) != 0 {
			return nil, nil, nil, senderErr(http.StatusBadRequest, "InvalidRequest", "GET with a body")
		}
	case http.MethodPost:
		ct := r.Header.Get("Content-Type")
		if len(body) > 0 && !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			return nil, nil, nil, senderErr(http.StatusBadRequest, "InvalidRequest", "unsupported content type %q", ct)
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, nil, nil, senderErr(http.StatusBadRequest, "MalformedQueryString", "malformed form body")
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
	default:
		return nil, nil, nil, senderErr(http.StatusMethodNotAllowed, "InvalidAction", "method %s not allowed", r.Method)
	}
	for k, v := range params {
		if len(v) != 1 {
			return nil, nil, nil, validationErr("parameter %s given %d times", k, len(v))
		}
	}
	return body, params, query, nil
}

// caller is an authenticated requester.
type caller struct {
	arn, userID, account string
	assumed              bool // a role session (role chaining limits apply)
	sourceIdentity       string
}

func (s *Server) handle(r *http.Request, body []byte, params, query url.Values, reqID string) (any, *apiError) {
	sig, err := extractSig(r, query)
	if errors.Is(err, errMissingAuth) {
		return nil, senderErr(http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token")
	}
	if err != nil {
		return nil, senderErr(http.StatusBadRequest, "IncompleteSignature", "%v", err)
	}
	c, aerr := s.authenticate(r, query, sig, body)
	if aerr != nil {
		return nil, aerr
	}
	if v := params.Get("Version"); v != "2011-06-15" {
		return nil, senderErr(http.StatusBadRequest, "InvalidAction", "Could not find operation %s for version %s", params.Get("Action"), v)
	}
	switch params.Get("Action") {
	case "GetCallerIdentity":
		if sig.presigned && r.Method != http.MethodGet {
			return nil, senderErr(http.StatusBadRequest, "InvalidRequest", "a presigned request must be a GET")
		}
		call := CallerIdentityCall{ARN: c.arn, Presigned: sig.presigned}
		if contains(sig.signedHeaders, "x-k8s-aws-id") {
			call.ClusterID = r.Header.Get("x-k8s-aws-id")
		}
		s.mu.Lock()
		s.gciCalls = append(s.gciCalls, call)
		s.mu.Unlock()
		return &getCallerIdentityResponse{
			Result:   getCallerIdentityResult{Arn: c.arn, UserID: c.userID, Account: c.account},
			Metadata: responseMetadata{RequestID: reqID},
		}, nil
	case "AssumeRole":
		if sig.presigned {
			return nil, senderErr(http.StatusBadRequest, "InvalidRequest", "the stand-in takes AssumeRole only header-signed")
		}
		return s.assumeRole(c, params, reqID)
	default:
		return nil, senderErr(http.StatusBadRequest, "InvalidAction", "Could not find operation %s for version 2011-06-15", params.Get("Action"))
	}
}

const (
	presignedValidity = 15 * time.Minute // STS: 15 min after X-Amz-Date, whatever X-Amz-Expires says
	clockSkew         = 5 * time.Minute
)

func (s *Server) authenticate(r *http.Request, query url.Values, sig *sigRequest, body []byte) (*caller, *apiError) {
	now := s.opts.Now()
	if sig.service != "sts" {
		return nil, senderErr(http.StatusForbidden, "SignatureDoesNotMatch", "Credential should be scoped to correct service: 'sts'.")
	}
	if sig.region != s.opts.Region {
		return nil, senderErr(http.StatusForbidden, "SignatureDoesNotMatch", "Credential should be scoped to a valid region, not '%s'.", sig.region)
	}
	if sig.presigned {
		if now.After(sig.amzDate.Add(presignedValidity)) {
			return nil, senderErr(http.StatusForbidden, "AccessDenied", "Request has expired")
		}
	} else if now.Sub(sig.amzDate) > clockSkew {
		return nil, senderErr(http.StatusForbidden, "SignatureDoesNotMatch", "Signature expired: %s is now earlier than %s", sig.amzDate.Format(amzDateFmt), now.Add(-clockSkew).UTC().Format(amzDateFmt))
	}
	if sig.amzDate.Sub(now) > clockSkew {
		return nil, senderErr(http.StatusForbidden, "SignatureDoesNotMatch", "Signature not yet current: %s is still later than %s", sig.amzDate.Format(amzDateFmt), now.Add(clockSkew).UTC().Format(amzDateFmt))
	}

	s.mu.Lock()
	p, isPrincipal := s.principals[sig.accessKeyID]
	sess, isSession := s.sessions[sig.accessKeyID]
	s.mu.Unlock()
	var secret string
	var c *caller
	switch {
	case isPrincipal:
		if sig.securityToken != "" {
			return nil, senderErr(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
		}
		secret = p.SecretAccessKey
		c = &caller{arn: p.ARN, userID: p.UserID, account: arnAccount(p.ARN)}
	case isSession:
		if subtle.ConstantTimeCompare([]byte(sig.securityToken), []byte(sess.token)) != 1 {
			return nil, senderErr(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
		}
		if !now.Before(sess.expiration) {
			return nil, senderErr(http.StatusBadRequest, "ExpiredToken", "The security token included in the request is expired")
		}
		secret = sess.secret
		c = &caller{arn: sess.arn, userID: sess.userID, account: arnAccount(sess.arn), assumed: true, sourceIdentity: sess.sourceIdentity}
	default:
		return nil, senderErr(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	if err := verifySignature(r, query, sig, secret, body); err != nil {
		return nil, senderErr(http.StatusForbidden, "SignatureDoesNotMatch", "%v", err)
	}
	return c, nil
}

var (
	sessionNameRe    = regexp.MustCompile(`^[\w+=,.@-]*$`)
	externalIDRe     = regexp.MustCompile(`^[\w+=,.@:/-]*$`)
	tagKeyRe         = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$`)
	tagValueRe       = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	policyCharsRe    = regexp.MustCompile(`^[\x{0009}\x{000A}\x{000D}\x{0020}-\x{00FF}]+$`)
	tagMemberParamRe = regexp.MustCompile(`^Tags\.member\.([0-9]+)\.(Key|Value)$`)
)

const (
	maxTags         = 50
	maxPolicyLength = 2048
)

// assumeRole applies AssumeRole's documented constraints (STS API reference,
// AssumeRole "Request Parameters") and the role's trust.
func (s *Server) assumeRole(c *caller, params url.Values, reqID string) (any, *apiError) {
	roleARN := params.Get("RoleArn")
	if l := utf8.RuneCountInString(roleARN); l < 20 || l > 2048 {
		return nil, validationErr("1 validation error detected: Value '%s' at 'roleArn' failed to satisfy constraint: Member must have length between 20 and 2048", roleARN)
	}
	name := params.Get("RoleSessionName")
	if l := utf8.RuneCountInString(name); l < 2 || l > 64 {
		return nil, validationErr("1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must have length between 2 and 64", name)
	}
	if !sessionNameRe.MatchString(name) {
		return nil, validationErr(`1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\w+=,.@-]*`, name)
	}
	duration := 3600
	if v := params.Get("DurationSeconds"); v != "" {
		d, err := strconv.Atoi(v)
		if err != nil || d < 900 || d > 43200 {
			return nil, validationErr("1 validation error detected: Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200", v)
		}
		duration = d
	}
	srcID := params.Get("SourceIdentity")
	if _, set := params["SourceIdentity"]; set {
		if l := utf8.RuneCountInString(srcID); l < 2 || l > 64 || !sessionNameRe.MatchString(srcID) {
			return nil, validationErr(`1 validation error detected: Value '%s' at 'sourceIdentity' failed to satisfy constraint: Member must have length between 2 and 64 and satisfy regular expression pattern: [\w+=,.@-]*`, srcID)
		}
		if strings.HasPrefix(strings.ToLower(srcID), "aws:") {
			return nil, validationErr("SourceIdentity must not begin with aws:")
		}
	}
	extID := params.Get("ExternalId")
	if _, set := params["ExternalId"]; set {
		if l := utf8.RuneCountInString(extID); l < 2 || l > 1224 || !externalIDRe.MatchString(extID) {
			return nil, validationErr("1 validation error detected: Value at 'externalId' failed to satisfy constraint: Member must have length between 2 and 1224 and satisfy regular expression pattern: [\\w+=,.@:\\/-]*")
		}
	}
	policy := params.Get("Policy")
	if _, set := params["Policy"]; set {
		if l := utf8.RuneCountInString(policy); l < 1 || l > maxPolicyLength {
			return nil, validationErr("1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to %d", maxPolicyLength)
		}
		if !policyCharsRe.MatchString(policy) {
			return nil, validationErr(`1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must satisfy regular expression pattern: [\u0009\u000A\u000D\u0020-\u00FF]+`)
		}
		if !json.Valid([]byte(policy)) {
			return nil, senderErr(http.StatusBadRequest, "MalformedPolicyDocument", "The policy is not in the valid JSON format.")
		}
	}
	tags, aerr := parseTags(params)
	if aerr != nil {
		return nil, aerr
	}

	// Trust.
	role, ok := s.roles[roleARN]
	if !ok || !contains(role.Trusted, canonicalCaller(c.arn)) {
		return nil, senderErr(http.StatusForbidden, "AccessDenied", "User: %s is not authorized to perform: sts:AssumeRole on resource: %s", c.arn, roleARN)
	}
	if role.ExternalID != "" && subtle.ConstantTimeCompare([]byte(role.ExternalID), []byte(extID)) != 1 {
		return nil, senderErr(http.StatusForbidden, "AccessDenied", "User: %s is not authorized to perform: sts:AssumeRole on resource: %s", c.arn, roleARN)
	}
	maxDur := int(role.MaxSessionDuration / time.Second)
	if c.assumed && maxDur > 3600 {
		maxDur = 3600 // role chaining
	}
	if duration > maxDur {
		return nil, validationErr("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	if c.sourceIdentity != "" {
		if srcID != "" && srcID != c.sourceIdentity {
			return nil, senderErr(http.StatusForbidden, "AccessDenied", "SourceIdentity cannot be changed in a role chain")
		}
		srcID = c.sourceIdentity
	}

	packed := packSession(policy, tags)
	if len(packed) > s.opts.PackedLimit {
		return nil, senderErr(http.StatusBadRequest, "PackedPolicyTooLarge", "Packed size of the session policy and session tags consumes %d%% of the allotted space.", len(packed)*100/s.opts.PackedLimit)
	}

	now := s.opts.Now()
	roleName := role.ARN[strings.LastIndex(role.ARN, "/")+1:]
	sess := &session{
		secret:         newSecret(),
		token:          newSessionToken(packed),
		expiration:     now.Add(time.Duration(duration) * time.Second).UTC().Truncate(time.Second),
		arn:            fmt.Sprintf("arn:%s:sts::%s:assumed-role/%s/%s", arnPartition(role.ARN), arnAccount(role.ARN), roleName, name),
		userID:         role.RoleID + ":" + name,
		sourceIdentity: srcID,
	}
	akid := "ASIA" + newKeyID()
	s.mu.Lock()
	s.sessions[akid] = sess
	s.assumeCalls = append(s.assumeCalls, AssumeRoleCall{
		Caller: c.arn, RoleARN: roleARN, RoleSessionName: name, SourceIdentity: srcID, ExternalID: extID,
		Policy: policy, DurationSeconds: duration, Tags: tags, AccessKeyID: akid, Expiration: sess.expiration,
	})
	s.mu.Unlock()

	return &assumeRoleResponse{
		Result: assumeRoleResult{
			Credentials: credentialsXML{
				AccessKeyID: akid, SecretAccessKey: sess.secret, SessionToken: sess.token,
				Expiration: sess.expiration.Format(time.RFC3339),
			},
			AssumedRoleUser:  assumedRoleUser{Arn: sess.arn, AssumedRoleID: sess.userID},
			PackedPolicySize: len(packed) * 100 / s.opts.PackedLimit,
			SourceIdentity:   srcID,
		},
		Metadata: responseMetadata{RequestID: reqID},
	}, nil
}

func parseTags(params url.Values) (map[string]string, *apiError) {
	keys := map[int]string{}
	values := map[int]string{}
	for k, v := range params {
		m := tagMemberParamRe.FindStringSubmatch(k)
		if m == nil {
			if strings.HasPrefix(k, "Tags.") {
				return nil, validationErr("unknown parameter %s", k)
			}
			continue
		}
		i, err := strconv.Atoi(m[1])
		if err != nil || i < 1 {
			return nil, validationErr("bad tag index in %s", k)
		}
		if m[2] == "Key" {
			keys[i] = v[0]
		} else {
			values[i] = v[0]
		}
	}
	if len(keys) > maxTags {
		return nil, validationErr("1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to %d", maxTags)
	}
	tags := map[string]string{}
	seen := map[string]bool{}
	for i, k := range keys {
		v, ok := values[i]
		if !ok {
			return nil, validationErr("1 validation error detected: Value null at 'tags.%d.member.value' failed to satisfy constraint: Member must not be null", i)
		}
		if l := utf8.RuneCountInString(k); l < 1 || l > 128 || !tagKeyRe.MatchString(k) {
			return nil, validationErr(`1 validation error detected: Value '%s' at 'tags.%d.member.key' failed to satisfy constraint: Member must have length between 1 and 128 and satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]+`, k, i)
		}
		if l := utf8.RuneCountInString(v); l > 256 || !tagValueRe.MatchString(v) {
			return nil, validationErr(`1 validation error detected: Value '%s' at 'tags.%d.member.value' failed to satisfy constraint: Member must have length less than or equal to 256 and satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]*`, v, i)
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return nil, validationErr("Tag keys beginning with aws: are reserved")
		}
		if seen[strings.ToLower(k)] {
			return nil, senderErr(http.StatusBadRequest, "InvalidParameterValue", "Duplicate tag keys found. Please note that Tag keys are case insensitive.")
		}
		seen[strings.ToLower(k)] = true
		tags[k] = v
	}
	for i := range values {
		if _, ok := keys[i]; !ok {
			return nil, validationErr("1 validation error detected: Value null at 'tags.%d.member.key' failed to satisfy constraint: Member must not be null", i)
		}
	}
	return tags, nil
}

// canonicalCaller turns an assumed-role session ARN into its role's ARN, the
// form trust policies name.
func canonicalCaller(a string) string {
	parts := strings.SplitN(a, ":", 6)
	if len(parts) != 6 || parts[2] != "sts" || !strings.HasPrefix(parts[5], "assumed-role/") {
		return a
	}
	res := strings.Split(parts[5], "/")
	return fmt.Sprintf("arn:%s:iam::%s:role/%s", parts[1], parts[4], strings.Join(res[1:len(res)-1], "/"))
}

func arnAccount(a string) string {
	if p := strings.SplitN(a, ":", 6); len(p) == 6 {
		return p[4]
	}
	return ""
}

func arnPartition(a string) string {
	if p := strings.SplitN(a, ":", 6); len(p) == 6 {
		return p[1]
	}
	return "aws"
}

// packSession compresses the session's policy and tags, as STS packs them
// into the session token.
func packSession(policy string, tags map[string]string) []byte {
	var raw bytes.Buffer
	raw.WriteString(policy)
	for k, v := range tags {
		raw.WriteString("\x00" + k + "\x00" + v)
	}
	if raw.Len() == 0 {
		return nil
	}
	var out bytes.Buffer
	zw, _ := flate.NewWriter(&out, flate.BestCompression)
	_, _ = zw.Write(raw.Bytes())
	_ = zw.Close()
	return out.Bytes()
}

// sessionTokenBase is the size of a session token's opaque part; real STS
// tokens of assumed-role sessions without tags are around 800 characters.
const sessionTokenBase = 600

func newSessionToken(packed []byte) string {
	b := make([]byte, sessionTokenBase, sessionTokenBase+len(packed))
	_, _ = rand.Read(b)
	return "IQoJb3JpZ2luX2Vj" + base64.StdEncoding.EncodeToString(append(b, packed...))
}

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func newKeyID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = keyAlphabet[int(b[i])%len(keyAlphabet)]
	}
	return string(b)
}

func newSecret() string {
	b := make([]byte, 30)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func newID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Wire shapes of the Query protocol (XML) and of STS's JSON rendering.

type responseMetadata struct {
	RequestID string `xml:"RequestId" json:"RequestId"`
}

type getCallerIdentityResult struct {
	Arn     string `xml:"Arn" json:"Arn"`
	UserID  string `xml:"UserId" json:"UserId"`
	Account string `xml:"Account" json:"Account"`
}

type getCallerIdentityResponse struct {
	XMLName  xml.Name                `xml:"https://sts.amazonaws.com/doc/2011-06-15/ GetCallerIdentityResponse" json:"-"`
	Result   getCallerIdentityResult `xml:"GetCallerIdentityResult" json:"GetCallerIdentityResult"`
	Metadata responseMetadata        `xml:"ResponseMetadata" json:"ResponseMetadata"`
}

type credentialsXML struct {
	AccessKeyID     string `xml:"AccessKeyId" json:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey" json:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken" json:"SessionToken"`
	Expiration      string `xml:"Expiration" json:"Expiration"`
}

type assumedRoleUser struct {
	Arn           string `xml:"Arn" json:"Arn"`
	AssumedRoleID string `xml:"AssumedRoleId" json:"AssumedRoleId"`
}

type assumeRoleResult struct {
	Credentials      credentialsXML  `xml:"Credentials" json:"Credentials"`
	AssumedRoleUser  assumedRoleUser `xml:"AssumedRoleUser" json:"AssumedRoleUser"`
	PackedPolicySize int             `xml:"PackedPolicySize" json:"PackedPolicySize"`
	SourceIdentity   string          `xml:"SourceIdentity,omitempty" json:"SourceIdentity,omitempty"`
}

type assumeRoleResponse struct {
	XMLName  xml.Name         `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleResponse" json:"-"`
	Result   assumeRoleResult `xml:"AssumeRoleResult" json:"AssumeRoleResult"`
	Metadata responseMetadata `xml:"ResponseMetadata" json:"ResponseMetadata"`
}

func jsonResponse(v any) any {
	switch r := v.(type) {
	case *getCallerIdentityResponse:
		return map[string]any{"GetCallerIdentityResponse": r}
	case *assumeRoleResponse:
		return map[string]any{"AssumeRoleResponse": r}
	}
	return v
}

type errorResponse struct {
	XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

func writeError(w http.ResponseWriter, e *apiError, reqID string, wantJSON bool) {
	w.Header().Set("X-Amzn-Requestid", reqID)
	if wantJSON {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(e.status)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"Error":     map[string]string{"Type": e.kind, "Code": e.code, "Message": e.message},
			"RequestId": reqID,
		})
		return
	}
	var er errorResponse
	er.Error.Type, er.Error.Code, er.Error.Message = e.kind, e.code, e.message
	er.RequestID = reqID
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.status)
	_, _ = io.WriteString(w, xml.Header)
	_ = xml.NewEncoder(w).Encode(&er)
}
