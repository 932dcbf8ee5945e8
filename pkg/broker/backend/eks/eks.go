// Package eks is the broker backend for Amazon EKS: for each session it
// assumes an IAM role with AWS STS (role session name from the run, session
// tags from the run's claims, an optional session policy) and presigns
// sts:GetCallerIdentity with those temporary credentials and the cluster's
// name in the signed x-k8s-aws-id header, which is the "k8s-aws-v1." bearer
// token that EKS (aws-iam-authenticator) accepts.
//
// Lifetimes: STS accepts a presigned GetCallerIdentity for 15 minutes after
// its signing time, so a token is reported as expiring 14 minutes after it was
// signed (never after the session or the assumed credentials end); a caller
// asks Issue again for a fresh one. The assumed-role credentials last
// DurationSeconds (the session's remaining time, clamped to 15 min..1 h); they
// are cached per session and re-used for fresh tokens until less than a
// token's lifetime is left. Neither can be revoked at STS: Revoke only drops
// the cache, so a leaked token dies within 15 minutes and leaked credentials
// at their expiry.
package eks

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsarn "github.com/aws/aws-sdk-go-v2/aws/arn"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"k8s.io/client-go/rest"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend"
)

// Facts of EKS tokens, from aws-iam-authenticator (pkg/token/token.go).
const (
	// TokenPrefix starts every EKS token.
	TokenPrefix = "k8s-aws-v1."
	// MaxTokenBytes is the longest token EKS accepts.
	MaxTokenBytes = 4096
	// ClusterIDHeader carries the cluster name, signed into the token.
	ClusterIDHeader = "x-k8s-aws-id"
	// TokenValidity is how long STS accepts a presigned GetCallerIdentity.
	TokenValidity = 15 * time.Minute
	// TokenReportedValidity is the lifetime reported to clients: a minute
	// short, so that clocks and transit never make them use a dead token.
	TokenReportedValidity = 14 * time.Minute

	// presignExpires is X-Amz-Expires. STS ignores it (the URL is valid for 15
	// minutes regardless) and old authenticators want a value up to 60.
	presignExpires = "60"

	minDuration = 15 * time.Minute // STS's smallest DurationSeconds
	maxDuration = time.Hour        // role chaining caps sessions at 1 h
	maxTags     = 50
	maxPolicy   = 2048
)

// Config configures the backend.
type Config struct {
	// ClusterName is the EKS cluster's name, signed into every token as the
	// x-k8s-aws-id header. Required.
	ClusterName string `json:"clusterName"`
	// Region is the AWS region of the cluster and of STS (default: the AWS
	// configuration's region, e.g. AWS_REGION).
	Region string `json:"region,omitempty"`
	// RoleARN is the IAM role assumed for sessions whose grant names none
	// (api.Grant.IAMRole overrides it).
	RoleARN string `json:"roleARN,omitempty"`
	// SessionPolicy is an optional IAM policy (JSON) that narrows the assumed
	// role for every session.
	SessionPolicy string `json:"sessionPolicy,omitempty"`
	// Tags maps session tag keys to claim names (issuer, subject, repository,
	// ref, workflow, environment, job, runID, runAttempt, or any other claim
	// of the run). Nil means DefaultTags; an empty map means no tags. Claims
	// that are empty are left out; values are cut to 256 characters and
	// characters that tags cannot hold become "_".
	Tags map[string]string `json:"tags,omitempty"`
	// ExternalID is passed to AssumeRole when set (for roles whose trust
	// policy requires sts:ExternalId).
	ExternalID string `json:"externalID,omitempty"`
	// STSEndpoint overrides the endpoint of the broker's own STS calls
	// (AssumeRole, the readiness check), e.g. a VPC interface endpoint
	// without private DNS. Tokens always name STS's public regional hostname,
	// the only kind EKS accepts.
	STSEndpoint string `json:"stsEndpoint,omitempty"`
	// Server and CAData, when set, are returned with every credential.
	Server string `json:"server,omitempty"`
	CAData []byte `json:"caData,omitempty"`

	// AWS is the AWS configuration (base credentials, HTTP client, FIPS and
	// dual-stack settings). Nil means config.LoadDefaultConfig: credentials
	// from the environment, the shared files, IRSA / EKS Pod Identity or the
	// instance role.
	AWS *aws.Config `json:"-"`
	// Now is the clock for signing; nil means time.Now.
	Now func() time.Time `json:"-"`
}

// DefaultTags is the session tag mapping used when Config.Tags is nil. Keys
// stay short: every tag makes the session token, and so the EKS token, longer.
func DefaultTags() map[string]string {
	return map[string]string{
		"repository":  "repository",
		"ref":         "ref",
		"environment": "environment",
		"run-id":      "runID",
		"run-attempt": "runAttempt",
	}
}

// Backend issues EKS tokens for sessions. It is safe for concurrent use.
type Backend struct {
	cfg      Config
	tagKeys  []string // sorted keys of cfg.Tags
	awsCfg   aws.Config
	sts      *sts.Client // the broker's own calls (STSEndpoint applies)
	tokenSTS *sts.Client // presigning (public hostnames)
	now      func() time.Time

	mu       sync.Mutex
	sessions map[string]*entry

	brokerMu    sync.Mutex
	brokerToken string
	brokerExp   time.Time
}

var _ backend.Backend = (*Backend)(nil)

type entry struct {
	mu    sync.Mutex
	role  string
	creds aws.Credentials
	valid bool
}

var (
	tagKeyRe = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`)
	extIDRe  = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

// New checks cfg and prepares the backend. It makes no network calls (Ready
// does); AWS credentials are resolved on first use.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.ClusterName == "" {
		return nil, errors.New("eks backend: clusterName is empty: set it to the EKS cluster's name")
	}
	if cfg.RoleARN != "" {
		if err := checkRoleARN(cfg.RoleARN); err != nil {
			return nil, fmt.Errorf("eks backend: roleARN: %w", err)
		}
	}
	if cfg.SessionPolicy != "" {
		if !json.Valid([]byte(cfg.SessionPolicy)) {
			return nil, errors.New("eks backend: sessionPolicy is not valid JSON: give an IAM policy document")
		}
		if n := utf8.RuneCountInString(cfg.SessionPolicy); n > maxPolicy {
			return nil, fmt.Errorf("eks backend: sessionPolicy is %d characters, STS takes at most %d: shorten it", n, maxPolicy)
		}
	}
	if n := len(cfg.ExternalID); n > 0 && (n < 2 || n > 1224 || !extIDRe.MatchString(cfg.ExternalID)) {
		return nil, errors.New(`eks backend: externalID must be 2 to 1224 characters of [\w+=,.@:/-]`)
	}
	if cfg.Tags == nil {
		cfg.Tags = DefaultTags()
	}
	if len(cfg.Tags) > maxTags {
		return nil, fmt.Errorf("eks backend: %d session tags, STS takes at most %d: remove some from tags", len(cfg.Tags), maxTags)
	}
	keys := make([]string, 0, len(cfg.Tags))
	seen := map[string]bool{}
	for k, claim := range cfg.Tags {
		if !tagKeyRe.MatchString(k) || strings.HasPrefix(strings.ToLower(k), "aws:") {
			return nil, fmt.Errorf("eks backend: session tag key %q is not allowed: use 1 to 128 letters, digits, spaces or _.:/=+-@, and no aws: prefix", k)
		}
		if seen[strings.ToLower(k)] {
			return nil, fmt.Errorf("eks backend: session tag key %q is repeated (tag keys ignore case)", k)
		}
		seen[strings.ToLower(k)] = true
		if claim == "" {
			return nil, fmt.Errorf("eks backend: session tag %q maps no claim: name one, e.g. repository", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)

	var awsCfg aws.Config
	if cfg.AWS != nil {
		awsCfg = cfg.AWS.Copy()
	} else {
		var opts []func(*config.LoadOptions) error
		if cfg.Region != "" {
			opts = append(opts, config.WithRegion(cfg.Region))
		}
		var err error
		if awsCfg, err = config.LoadDefaultConfig(ctx, opts...); err != nil {
			return nil, fmt.Errorf("eks backend: loading the AWS configuration: %w", err)
		}
	}
	if cfg.Region != "" {
		awsCfg.Region = cfg.Region
	}
	if awsCfg.Region == "" {
		return nil, errors.New("eks backend: no AWS region: set region in the eks backend config, or AWS_REGION")
	}
	cfg.Region = awsCfg.Region
	b := &Backend{
		cfg:      cfg,
		tagKeys:  keys,
		awsCfg:   awsCfg,
		tokenSTS: sts.NewFromConfig(awsCfg),
		now:      cfg.Now,
		sessions: map[string]*entry{},
	}
	b.sts = sts.NewFromConfig(awsCfg, func(o *sts.Options) {
		if cfg.STSEndpoint != "" {
			o.BaseEndpoint = aws.String(cfg.STSEndpoint)
		}
	})
	if b.now == nil {
		b.now = time.Now
	}
	return b, nil
}

func checkRoleARN(s string) error {
	a, err := awsarn.Parse(s)
	if err != nil || a.Service != "iam" || !strings.HasPrefix(a.Resource, "role/") {
		return fmt.Errorf("%q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", s)
	}
	return nil
}

// Issue returns a fresh EKS token for the session, assuming its IAM role
// when no cached credentials of the session last long enough.
func (b *Backend) Issue(ctx context.Context, req backend.Request) (*api.Credential, error) {
	if req.SessionID == "" {
		return nil, errors.New("eks: issuing a credential: the request has no session id")
	}
	now := b.now()
	if !req.ExpiresAt.After(now) {
		return nil, fmt.Errorf("eks: issuing a credential for session %s: the session ended at %s", req.SessionID, req.ExpiresAt.UTC().Format(time.RFC3339))
	}
	role := req.Grant.IAMRole
	if role == "" {
		role = b.cfg.RoleARN
	}
	if role == "" {
		return nil, fmt.Errorf("eks: issuing a credential for session %s: no IAM role: set roleARN in the eks backend config or iamRole in the trust rule's grant", req.SessionID)
	}
	if err := checkRoleARN(role); err != nil {
		return nil, fmt.Errorf("eks: issuing a credential for session %s: %w", req.SessionID, err)
	}
	creds, err := b.sessionCredentials(ctx, req, role, now)
	if err != nil {
		return nil, err
	}
	token, signedAt, err := b.presign(ctx, creds, now)
	if err != nil {
		return nil, fmt.Errorf("eks: presigning the token of session %s: %w", req.SessionID, err)
	}
	if len(token) > MaxTokenBytes {
		return nil, b.oversize(req.SessionID, len(token), req.Identity)
	}
	exp := signedAt.Add(TokenReportedValidity)
	if creds.CanExpire && creds.Expires.Before(exp) {
		exp = creds.Expires
	}
	if req.ExpiresAt.Before(exp) {
		exp = req.ExpiresAt
	}
	return &api.Credential{Token: token, ExpiresAt: exp, Server: b.cfg.Server, CAData: b.cfg.CAData}, nil
}

func (b *Backend) oversize(sessionID string, n int, id api.Identity) error {
	tags := b.sessionTags(id)
	tagBytes := 0
	for _, t := range tags {
		tagBytes += len(*t.Key) + len(*t.Value)
	}
	return fmt.Errorf("eks: the token of session %s is %d bytes, over the %d bytes EKS accepts: "+
		"the STS session token inside it grows with the session tags (%d tags, %d bytes) and the session policy (%d bytes); "+
		"remove tags from the eks backend's tags mapping (an empty mapping sends none) or shorten its sessionPolicy",
		sessionID, n, MaxTokenBytes, len(tags), tagBytes, len(b.cfg.SessionPolicy))
}

// sessionCredentials returns the session's cached credentials when they last
// long enough for a full token, and assumes the role otherwise.
func (b *Backend) sessionCredentials(ctx context.Context, req backend.Request, role string, now time.Time) (aws.Credentials, error) {
	b.mu.Lock()
	e := b.sessions[req.SessionID]
	if e == nil {
		e = &entry{}
		b.sessions[req.SessionID] = e
	}
	b.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	remaining := req.ExpiresAt.Sub(now)
	need := min(TokenValidity, remaining) + time.Minute
	if e.valid && e.role == role && e.creds.Expires.Sub(now) >= need {
		return e.creds, nil
	}
	creds, err := b.assumeRole(ctx, req, role, remaining)
	if err != nil {
		return aws.Credentials{}, err
	}
	e.role, e.creds, e.valid = role, creds, true
	return creds, nil
}

func (b *Backend) assumeRole(ctx context.Context, req backend.Request, role string, remaining time.Duration) (aws.Credentials, error) {
	// Credentials should not outlive the session, but STS grants no less than
	// 15 minutes, and a role chain no more than one hour.
	dur := min(max((remaining+time.Second-1).Truncate(time.Second), minDuration), maxDuration)
	in := &sts.AssumeRoleInput{
		RoleArn:         aws.String(role),
		RoleSessionName: aws.String(SessionName(req)),
		DurationSeconds: aws.Int32(int32(dur / time.Second)),
		SourceIdentity:  aws.String(SourceIdentity(req.Identity)),
		Tags:            b.sessionTags(req.Identity),
	}
	if b.cfg.SessionPolicy != "" {
		in.Policy = aws.String(b.cfg.SessionPolicy)
	}
	if b.cfg.ExternalID != "" {
		in.ExternalId = aws.String(b.cfg.ExternalID)
	}
	out, err := b.sts.AssumeRole(ctx, in)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("eks: assuming IAM role %s for session %s: %w%s", role, req.SessionID, err, assumeRoleHint(err))
	}
	c := out.Credentials
	if c == nil || c.AccessKeyId == nil || c.SecretAccessKey == nil || c.SessionToken == nil || c.Expiration == nil {
		return aws.Credentials{}, fmt.Errorf("eks: assuming IAM role %s for session %s: STS answered without credentials", role, req.SessionID)
	}
	return aws.Credentials{
		AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey, SessionToken: *c.SessionToken,
		Source: "kubectl-agent eks backend", CanExpire: true, Expires: *c.Expiration,
	}, nil
}

// assumeRoleHint says what to do about the STS errors a configuration causes.
func assumeRoleHint(err error) string {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return ""
	}
	switch ae.ErrorCode() {
	case "AccessDenied":
		return " (the role's trust policy must allow the broker's AWS identity sts:AssumeRole, sts:TagSession and sts:SetSourceIdentity; see docs/eks.md)"
	case "PackedPolicyTooLarge":
		return " (remove session tags from the eks backend's tags mapping or shorten its sessionPolicy)"
	case "ValidationError":
		if strings.Contains(ae.ErrorMessage(), "DurationSeconds") {
			return " (raise the role's maximum session duration to 1 hour)"
		}
	}
	return ""
}

// sessionTags maps the run's claims to STS session tags.
func (b *Backend) sessionTags(id api.Identity) []ststypes.Tag {
	var tags []ststypes.Tag
	for _, k := range b.tagKeys {
		v := TagValue(claimValue(id, b.cfg.Tags[k]))
		if v == "" {
			continue
		}
		tags = append(tags, ststypes.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return tags
}

func claimValue(id api.Identity, name string) string {
	switch name {
	case "issuer", "iss":
		return id.Issuer
	case "subject", "sub":
		return id.Subject
	case "repository":
		return id.Repository
	case "runID", "run_id":
		return id.RunID
	case "runAttempt", "run_attempt":
		return id.RunAttempt
	case "ref":
		return id.Ref
	case "workflow":
		return id.Workflow
	case "environment":
		return id.Environment
	case "job":
		return id.Job
	}
	return id.Claims[name]
}

// isTagRune reports whether r is in [\p{L}\p{Z}\p{N}_.:/=+\-@].
func isTagRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.Is(unicode.Z, r) || unicode.IsNumber(r) || strings.ContainsRune("_.:/=+-@", r)
}

// TagValue makes s a valid session tag value: characters tags cannot hold
// become "_", and it is cut to 256 characters.
func TagValue(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == 256 {
			break
		}
		if r == utf8.RuneError || !isTagRune(r) {
			r = '_'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// SessionName derives the role session name of a session,
// "ka-<repository>-<run id>-<attempt>" (the session id stands in for a
// missing run id), sanitized to STS's [\w+=,.@-] and at most 64 characters:
// a longer name is cut and ends in a hash of the whole, so distinct runs keep
// distinct names. It is what CloudTrail and the EKS audit log show.
func SessionName(req backend.Request) string {
	run := req.Identity.RunID
	if run == "" {
		run = req.SessionID
	}
	parts := []string{"ka"}
	for _, p := range []string{req.Identity.Repository, run, req.Identity.RunAttempt} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return fitName(strings.Join(parts, "-"))
}

// SourceIdentity derives the source identity of a session: the repository
// (or, without one, the token's subject), which STS keeps on every role
// assumed from the session and CloudTrail records.
func SourceIdentity(id api.Identity) string {
	s := id.Repository
	if s == "" {
		s = id.Subject
	}
	if s == "" {
		s = "kubectl-agent"
	}
	return fitName(s)
}

const maxNameLen = 64

// fitName sanitizes s to [\w+=,.@-]{2,64}; "/" becomes ".", other characters
// "-".
func fitName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf && (r == '_' || r == '+' || r == '=' || r == ',' || r == '.' || r == '@' || r == '-' ||
			('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')):
			b.WriteRune(r)
		case r == '/':
			b.WriteByte('.')
		default:
			b.WriteByte('-')
		}
	}
	out := b.String()
	if len(out) > maxNameLen {
		sum := sha256.Sum256([]byte(s))
		suffix := hex.EncodeToString(sum[:])[:12]
		out = out[:maxNameLen-len(suffix)-1] + "-" + suffix
	}
	for len(out) < 2 {
		out += "-"
	}
	return out
}

// fixedTimePresigner signs at a time the backend chose, so the token's
// reported expiry is exact.
type fixedTimePresigner struct {
	next sts.HTTPPresignerV4
	at   time.Time
}

func (p fixedTimePresigner) PresignHTTP(ctx context.Context, creds aws.Credentials, r *http.Request, payloadHash, service, region string, _ time.Time, optFns ...func(*v4.SignerOptions)) (string, http.Header, error) {
	return p.next.PresignHTTP(ctx, creds, r, payloadHash, service, region, p.at, optFns...)
}

// presign makes the EKS token: a presigned GetCallerIdentity URL with the
// x-k8s-aws-id header signed, base64url without padding, prefixed.
func (b *Backend) presign(ctx context.Context, creds aws.Credentials, now time.Time) (string, time.Time, error) {
	signedAt := now.UTC().Truncate(time.Second)
	pc := sts.NewPresignClient(b.tokenSTS)
	out, err := pc.PresignGetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}, func(po *sts.PresignOptions) {
		po.Presigner = fixedTimePresigner{next: po.Presigner, at: signedAt}
		po.ClientOptions = append(po.ClientOptions, func(o *sts.Options) {
			o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil })
			o.APIOptions = append(o.APIOptions,
				smithyhttp.SetHeaderValue(ClusterIDHeader, b.cfg.ClusterName),
				smithyhttp.SetHeaderValue("X-Amz-Expires", presignExpires))
		})
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(out.URL)), signedAt, nil
}

// Revoke forgets the session's assumed-role credentials. STS cannot revoke
// them or the tokens made from them: tokens die within 15 minutes, the
// credentials at their DurationSeconds (at most one hour).
func (b *Backend) Revoke(_ context.Context, sessionID string) error {
	b.mu.Lock()
	delete(b.sessions, sessionID)
	b.mu.Unlock()
	return nil
}

// Reconcile forgets the credentials of sessions that are no longer live, and
// of any session whose credentials have expired.
func (b *Backend) Reconcile(_ context.Context, live func(sessionID string) bool) error {
	now := b.now()
	b.mu.Lock()
	ids := make([]string, 0, len(b.sessions))
	for id := range b.sessions {
		ids = append(ids, id)
	}
	b.mu.Unlock()
	for _, id := range ids {
		drop := !live(id)
		if !drop {
			b.mu.Lock()
			e := b.sessions[id]
			b.mu.Unlock()
			if e != nil && e.mu.TryLock() {
				drop = !e.valid || !e.creds.Expires.After(now)
				e.mu.Unlock()
			}
		}
		if drop {
			b.mu.Lock()
			delete(b.sessions, id)
			b.mu.Unlock()
		}
	}
	return nil
}

// Ready calls STS GetCallerIdentity with the broker's base AWS credentials.
func (b *Backend) Ready(ctx context.Context) error {
	if _, err := b.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		return fmt.Errorf("eks: STS GetCallerIdentity with the broker's AWS credentials failed: %w", err)
	}
	return nil
}

// cachedSessions reports how many sessions have cached credentials.
func (b *Backend) cachedSessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// ClusterToken returns an EKS token for the broker's own AWS identity (its
// base credentials, no role assumed), for the broker's own calls to the
// cluster, e.g. creating per-session ServiceAccounts there. It is cached
// until a minute before it expires.
func (b *Backend) ClusterToken(ctx context.Context) (string, time.Time, error) {
	b.brokerMu.Lock()
	defer b.brokerMu.Unlock()
	now := b.now()
	if b.brokerToken != "" && b.brokerExp.Sub(now) > time.Minute {
		return b.brokerToken, b.brokerExp, nil
	}
	if b.awsCfg.Credentials == nil {
		return "", time.Time{}, errors.New("eks: the broker has no AWS credentials: set them in the environment or give the broker an IAM role")
	}
	creds, err := b.awsCfg.Credentials.Retrieve(ctx)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("eks: getting the broker's AWS credentials: %w", err)
	}
	token, signedAt, err := b.presign(ctx, creds, now)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("eks: presigning the broker's own token: %w", err)
	}
	exp := signedAt.Add(TokenReportedValidity)
	if creds.CanExpire && creds.Expires.Before(exp) {
		exp = creds.Expires
	}
	b.brokerToken, b.brokerExp = token, exp
	return token, exp, nil
}

// RESTConfig returns a client configuration for the EKS API server at server
// that authenticates as the broker's own AWS identity (ClusterToken),
// refreshing the token as it goes. The JIT backend can run on it to give
// sessions per-run RBAC on EKS.
func (b *Backend) RESTConfig(server string, caData []byte) *rest.Config {
	return &rest.Config{
		Host:            server,
		TLSClientConfig: rest.TLSClientConfig{CAData: caData},
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return &tokenTransport{b: b, next: rt}
		},
	}
}

type tokenTransport struct {
	b    *Backend
	next http.RoundTripper
}

func (t *tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	token, _, err := t.b.ClusterToken(r.Context())
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+token)
	return t.next.RoundTrip(r)
}
