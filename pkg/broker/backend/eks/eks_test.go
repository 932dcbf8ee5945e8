package eks

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks/iamauth"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks/ststest"
)

const (
	testCluster = "prod-eks"
	testRegion  = "us-east-1"
	brokerARN   = "arn:aws:iam::111122223333:user/agent-broker"
	brokerKey   = "AKIAIOSFODNN7EXAMPLE"
	brokerSec   = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	ciRoleARN   = "arn:aws:iam::111122223333:role/kubectl-agent-ci"
	ciRoleID    = "AROAEXAMPLEROLEID0001"
	prodRoleARN = "arn:aws:iam::111122223333:role/kubectl-agent-prod"
)

type fixture struct {
	b   *Backend
	sts *ststest.Server
	v   *iamauth.Verifier
}

func standIn(t *testing.T, mutate func(*ststest.Options)) *ststest.Server {
	t.Helper()
	o := ststest.Options{
		Region: testRegion,
		Principals: []ststest.Principal{{
			ARN: brokerARN, UserID: "AIDAEXAMPLEUSERID0001", AccessKeyID: brokerKey, SecretAccessKey: brokerSec,
		}},
		Roles: []ststest.Role{
			{ARN: ciRoleARN, RoleID: ciRoleID, Trusted: []string{brokerARN}},
			{ARN: prodRoleARN, RoleID: "AROAEXAMPLEROLEID0002", Trusted: []string{brokerARN}, ExternalID: "ext-1234"},
		},
	}
	if mutate != nil {
		mutate(&o)
	}
	return ststest.New(t, o)
}

func awsConfig(s *ststest.Server, key, secret string) *aws.Config {
	return &aws.Config{
		Region: testRegion,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: key, SecretAccessKey: secret, Source: "test"}, nil
		}),
		HTTPClient: s.Client(),
	}
}

func newFixture(t *testing.T, mutate func(*Config)) *fixture {
	t.Helper()
	s := standIn(t, nil)
	cfg := Config{ClusterName: testCluster, RoleARN: ciRoleARN, AWS: awsConfig(s, brokerKey, brokerSec)}
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &fixture{b: b, sts: s, v: &iamauth.Verifier{ClusterID: testCluster, Region: testRegion, Client: s.Client()}}
}

func testRequest() backend.Request {
	return backend.Request{
		SessionID: "sess-0123456789",
		Cluster:   testCluster,
		Identity: api.Identity{
			Issuer:      "https://token.actions.githubusercontent.com",
			Subject:     "repo:acme/web:environment:prod",
			Repository:  "acme/web",
			RunID:       "9876543210",
			RunAttempt:  "2",
			Ref:         "refs/heads/main",
			Workflow:    "deploy",
			Environment: "prod",
		},
		Grant:     api.Grant{Rule: "deploy", TTL: api.Duration{Duration: 30 * time.Minute}},
		ExpiresAt: time.Now().Add(30 * time.Minute),
	}
}

func decodeTokenURL(t *testing.T, token string) *url.URL {
	t.Helper()
	if !strings.HasPrefix(token, TokenPrefix) {
		t.Fatalf("token %q lacks the %s prefix", token[:min(len(token), 20)], TokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, TokenPrefix))
	if err != nil {
		t.Fatalf("token is not unpadded base64url: %v", err)
	}
	u, err := url.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// The token passes every check of aws-iam-authenticator's verifier, and the
// verifier's STS call (to the stand-in, which checks the presigned signature
// including x-k8s-aws-id) names the assumed role and the run's session name.
func TestIssueTokenPassesAuthenticator(t *testing.T) {
	f := newFixture(t, nil)
	req := testRequest()
	before := time.Now().Truncate(time.Second)
	cred, err := f.b.Issue(context.Background(), req)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	id, err := f.v.Verify(context.Background(), cred.Token)
	if err != nil {
		t.Fatalf("authenticator rejects the token: %v", err)
	}
	wantName := "ka-acme.web-9876543210-2"
	if id.ARN != "arn:aws:sts::111122223333:assumed-role/kubectl-agent-ci/"+wantName {
		t.Errorf("ARN = %q", id.ARN)
	}
	if id.CanonicalARN != ciRoleARN || id.SessionName != wantName || id.UserID != ciRoleID || id.AccountID != "111122223333" {
		t.Errorf("identity = %+v", id)
	}
	if id.STSEndpoint != "sts.us-east-1.amazonaws.com" {
		t.Errorf("token names STS host %q, want the public regional host", id.STSEndpoint)
	}
	if !strings.HasPrefix(id.AccessKeyID, "ASIA") {
		t.Errorf("token signed with %q, want the assumed (temporary) credentials", id.AccessKeyID)
	}

	// Expiry: 14 minutes after the signing time that X-Amz-Date records.
	u := decodeTokenURL(t, cred.Token)
	q := u.Query()
	signed, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil {
		t.Fatal(err)
	}
	if signed.Before(before) || !cred.ExpiresAt.Equal(signed.Add(14*time.Minute)) {
		t.Errorf("ExpiresAt = %s, signed at %s: want signed+14m", cred.ExpiresAt, signed)
	}
	if q.Get("X-Amz-Expires") != "60" {
		t.Errorf("X-Amz-Expires = %q, want 60", q.Get("X-Amz-Expires"))
	}
	if got := q.Get("X-Amz-SignedHeaders"); got != "host;x-k8s-aws-id" {
		t.Errorf("signed headers = %q", got)
	}

	calls := f.sts.AssumeRoleCalls()
	if len(calls) != 1 {
		t.Fatalf("%d AssumeRole calls, want 1", len(calls))
	}
	c := calls[0]
	if c.Caller != brokerARN || c.RoleARN != ciRoleARN || c.RoleSessionName != wantName || c.SourceIdentity != "acme.web" {
		t.Errorf("AssumeRole call = %+v", c)
	}
	// 30 minutes left in the session: the credentials last that long.
	if c.DurationSeconds < 1795 || c.DurationSeconds > 1800 {
		t.Errorf("DurationSeconds = %d, want the session's remaining ~1800", c.DurationSeconds)
	}
	wantTags := map[string]string{"repository": "acme/web", "ref": "refs/heads/main", "environment": "prod", "run-id": "9876543210", "run-attempt": "2"}
	if len(c.Tags) != len(wantTags) {
		t.Errorf("tags = %v, want %v", c.Tags, wantTags)
	}
	for k, v := range wantTags {
		if c.Tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, c.Tags[k], v)
		}
	}
	gci := f.sts.CallerIdentityCalls()
	if len(gci) != 1 || !gci[0].Presigned || gci[0].ClusterID != testCluster {
		t.Errorf("GetCallerIdentity calls = %+v, want one presigned with the cluster id signed", gci)
	}
}

// A token is bound to its cluster: the verifier of another cluster sends its
// own x-k8s-aws-id, which breaks the signature.
func TestTokenBoundToCluster(t *testing.T) {
	f := newFixture(t, nil)
	cred, err := f.b.Issue(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	other := &iamauth.Verifier{ClusterID: "staging-eks", Region: testRegion, Client: f.sts.Client()}
	_, err = other.Verify(context.Background(), cred.Token)
	var se iamauth.STSError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "403") {
		t.Fatalf("token verified for another cluster: err = %v", err)
	}
}

// Credentials are cached per session: a second Issue presigns again with the
// same assumed credentials; a session near its credentials' end, a revoked
// session and another session each assume the role anew.
func TestCredentialCache(t *testing.T) {
	now := time.Now()
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	f := newFixture(t, func(c *Config) { c.Now = clock })
	ctx := context.Background()
	req := testRequest()
	req.ExpiresAt = now.Add(2 * time.Hour)

	first, err := f.b.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	clockMu.Lock()
	now = now.Add(2 * time.Second)
	clockMu.Unlock()
	second, err := f.b.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Token == second.Token {
		t.Error("second Issue returned the same token; want a fresh presign")
	}
	if decodeTokenURL(t, first.Token).Query().Get("X-Amz-Credential") != decodeTokenURL(t, second.Token).Query().Get("X-Amz-Credential") {
		t.Error("second Issue used new credentials; want the cached ones")
	}
	if n := len(f.sts.AssumeRoleCalls()); n != 1 {
		t.Fatalf("%d AssumeRole calls after two Issues, want 1", n)
	}
	if got := f.sts.AssumeRoleCalls()[0].DurationSeconds; got != 3600 {
		t.Errorf("DurationSeconds = %d for a 2h session, want 3600 (the role-chaining cap)", got)
	}

	// 50 minutes on, the 1 h credentials cannot cover a 15 min token.
	clockMu.Lock()
	now = now.Add(50 * time.Minute)
	clockMu.Unlock()
	if _, err := f.b.Issue(ctx, req); err != nil {
		t.Fatal(err)
	}
	if n := len(f.sts.AssumeRoleCalls()); n != 2 {
		t.Fatalf("%d AssumeRole calls after credentials neared expiry, want 2", n)
	}

	other := req
	other.SessionID = "sess-other"
	other.Identity.RunID = "111"
	if _, err := f.b.Issue(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Revoke(ctx, req.SessionID); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Revoke(ctx, "never-seen"); err != nil {
		t.Fatalf("revoking an unknown session: %v", err)
	}
	if _, err := f.b.Issue(ctx, req); err != nil {
		t.Fatal(err)
	}
	if n := len(f.sts.AssumeRoleCalls()); n != 4 {
		t.Fatalf("%d AssumeRole calls, want 4 (a new session and a revoked one assume anew)", n)
	}

	if err := f.b.Reconcile(ctx, func(id string) bool { return id == other.SessionID }); err != nil {
		t.Fatal(err)
	}
	if n := f.b.cachedSessions(); n != 1 {
		t.Errorf("%d cached sessions after Reconcile kept one live session, want 1", n)
	}
}

// The grant's IAM role overrides the configured one; the external id is
// passed; the session policy is passed.
func TestGrantRoleExternalIDAndPolicy(t *testing.T) {
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"eks:DescribeCluster","Resource":"*"}]}`
	f := newFixture(t, func(c *Config) { c.ExternalID = "ext-1234"; c.SessionPolicy = policy })
	req := testRequest()
	req.Grant.IAMRole = prodRoleARN
	cred, err := f.b.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	id, err := f.v.Verify(context.Background(), cred.Token)
	if err != nil {
		t.Fatal(err)
	}
	if id.CanonicalARN != prodRoleARN {
		t.Errorf("token is for %s, want the grant's role %s", id.CanonicalARN, prodRoleARN)
	}
	c := f.sts.AssumeRoleCalls()[0]
	if c.ExternalID != "ext-1234" || c.Policy != policy {
		t.Errorf("AssumeRole call = %+v", c)
	}

	// Without the external id the prod role's trust refuses, and the error
	// says where to look.
	f2 := newFixture(t, nil)
	_, err = f2.b.Issue(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") || !strings.Contains(err.Error(), "trust policy") {
		t.Fatalf("Issue without the external id: err = %v", err)
	}
}

// Many long session tags make the STS session token, and so the EKS token,
// too long: Issue refuses with a message that names what to trim.
func TestOversizeTokenRefused(t *testing.T) {
	tags := map[string]string{}
	claims := map[string]string{}
	for i := range 16 {
		k := "claim-" + string(rune('a'+i))
		tags[k] = k
		// High-entropy values: compression cannot hide them.
		claims[k] = randomTagValue(t, 120)
	}
	f := newFixture(t, func(c *Config) { c.Tags = tags })
	req := testRequest()
	req.Identity.Claims = claims
	_, bigErr := f.b.Issue(context.Background(), req)
	if bigErr == nil {
		t.Fatal("Issue made a token over 4096 bytes")
	}
	for _, want := range []string{"over the 4096 bytes", "16 tags", "tags mapping", "sessionPolicy"} {
		if !strings.Contains(bigErr.Error(), want) {
			t.Errorf("error %q does not say %q", bigErr, want)
		}
	}
	// The same run without tags fits.
	f2 := newFixture(t, func(c *Config) { c.Tags = map[string]string{} })
	cred, err := f2.b.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(cred.Token) > MaxTokenBytes {
		t.Fatalf("token of %d bytes", len(cred.Token))
	}
	t.Logf("token without tags: %d bytes; error with 16 tags: %v", len(cred.Token), bigErr)
	if _, err := f2.v.Verify(context.Background(), cred.Token); err != nil {
		t.Fatal(err)
	}
	if n := len(f2.sts.AssumeRoleCalls()[0].Tags); n != 0 {
		t.Errorf("%d tags sent with an empty tags mapping", n)
	}
}

// randomTagValue is n random characters that tags can hold.
func randomTagValue(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

var stsNameRe = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

func TestSessionName(t *testing.T) {
	long := strings.Repeat("very-long-repository-name", 4)
	cases := []struct {
		name string
		req  backend.Request
		want string
	}{
		{"github run", backend.Request{SessionID: "s1", Identity: api.Identity{Repository: "acme/web", RunID: "42", RunAttempt: "1"}}, "ka-acme.web-42-1"},
		{"no run id uses the session", backend.Request{SessionID: "sess-9", Identity: api.Identity{Repository: "acme/web"}}, "ka-acme.web-sess-9"},
		{"nothing", backend.Request{SessionID: "x"}, "ka-x"},
		{"disallowed characters", backend.Request{SessionID: "s", Identity: api.Identity{Repository: "grp/sub grp/prj:ü", RunID: "7"}}, "ka-grp.sub-grp.prj---7"},
		{"allowed punctuation kept", backend.Request{SessionID: "s", Identity: api.Identity{Repository: "a+b=c,d.e@f_g", RunID: "1"}}, "ka-a+b=c,d.e@f_g-1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := SessionName(c.req); got != c.want {
				t.Errorf("SessionName = %q, want %q", got, c.want)
			}
		})
	}
	t.Run("too long gets a hash suffix", func(t *testing.T) {
		a := SessionName(backend.Request{SessionID: "s", Identity: api.Identity{Repository: long, RunID: "1"}})
		b := SessionName(backend.Request{SessionID: "s", Identity: api.Identity{Repository: long, RunID: "2"}})
		if len(a) != 64 || !stsNameRe.MatchString(a) {
			t.Errorf("SessionName = %q (%d chars)", a, len(a))
		}
		if a == b {
			t.Errorf("two runs share the shortened name %q", a)
		}
		if !strings.HasPrefix(a, "ka-very-long-repository-name") {
			t.Errorf("shortened name %q lost its readable prefix", a)
		}
	})
	t.Run("source identity", func(t *testing.T) {
		if got := SourceIdentity(api.Identity{Repository: "acme/web"}); got != "acme.web" {
			t.Errorf("SourceIdentity = %q", got)
		}
		if got := SourceIdentity(api.Identity{Subject: "repo:acme/web:ref:refs/heads/main"}); got != "repo-acme.web-ref-refs.heads.main" {
			t.Errorf("SourceIdentity from subject = %q", got)
		}
		if got := SourceIdentity(api.Identity{Subject: "aws:x"}); strings.HasPrefix(got, "aws:") {
			t.Errorf("SourceIdentity = %q keeps the reserved prefix", got)
		}
	})
}

func FuzzSessionName(f *testing.F) {
	f.Add("acme/web", "42", "1", "sess")
	f.Add("", "", "", "")
	f.Add(strings.Repeat("ü/", 80), "9", "", "s")
	f.Add("aws:x", "\x00", "\xff", "s")
	f.Fuzz(func(t *testing.T, repo, run, attempt, sess string) {
		got := SessionName(backend.Request{SessionID: sess, Identity: api.Identity{Repository: repo, RunID: run, RunAttempt: attempt}})
		if !stsNameRe.MatchString(got) {
			t.Fatalf("SessionName = %q, not a valid RoleSessionName", got)
		}
		si := SourceIdentity(api.Identity{Repository: repo, Subject: sess})
		if !stsNameRe.MatchString(si) || strings.HasPrefix(si, "aws:") {
			t.Fatalf("SourceIdentity = %q, not valid", si)
		}
	})
}

func FuzzTagValue(f *testing.F) {
	f.Add("refs/heads/main")
	f.Add(strings.Repeat("é", 300))
	f.Add("a\x00b\xffc<>")
	valid := regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	f.Fuzz(func(t *testing.T, s string) {
		v := TagValue(s)
		if !valid.MatchString(v) || len([]rune(v)) > 256 {
			t.Fatalf("TagValue(%q) = %q, not a valid tag value", s, v)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	s := standIn(t, nil)
	base := func() Config {
		return Config{ClusterName: testCluster, RoleARN: ciRoleARN, AWS: awsConfig(s, brokerKey, brokerSec)}
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no cluster", func(c *Config) { c.ClusterName = "" }, "clusterName"},
		{"bad role", func(c *Config) { c.RoleARN = "arn:aws:iam::1:user/x" }, "not an IAM role ARN"},
		{"policy not json", func(c *Config) { c.SessionPolicy = "{" }, "not valid JSON"},
		{"policy too long", func(c *Config) { c.SessionPolicy = `"` + strings.Repeat("a", 2100) + `"` }, "at most 2048"},
		{"bad tag key", func(c *Config) { c.Tags = map[string]string{"a<b": "ref"} }, "not allowed"},
		{"aws tag key", func(c *Config) { c.Tags = map[string]string{"aws:x": "ref"} }, "not allowed"},
		{"duplicate tag key", func(c *Config) { c.Tags = map[string]string{"Ref": "ref", "ref": "ref"} }, "repeated"},
		{"tag without claim", func(c *Config) { c.Tags = map[string]string{"ref": ""} }, "maps no claim"},
		{"too many tags", func(c *Config) {
			c.Tags = map[string]string{}
			for i := range 51 {
				c.Tags[strings.Repeat("k", i+1)] = "ref"
			}
		}, "at most 50"},
		{"bad external id", func(c *Config) { c.ExternalID = "x" }, "externalID"},
		{"no region", func(c *Config) { c.AWS.Region = "" }, "no AWS region"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			c.mutate(&cfg)
			_, err := New(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: err = %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

func TestIssueErrors(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RoleARN = "" })
	ctx := context.Background()
	req := testRequest()
	if _, err := f.b.Issue(ctx, req); err == nil || !strings.Contains(err.Error(), "no IAM role") {
		t.Errorf("Issue without any role: %v", err)
	}
	req.Grant.IAMRole = ciRoleARN
	req.ExpiresAt = time.Now().Add(-time.Second)
	if _, err := f.b.Issue(ctx, req); err == nil || !strings.Contains(err.Error(), "ended") {
		t.Errorf("Issue for an ended session: %v", err)
	}
	req = testRequest()
	req.Grant.IAMRole = "arn:aws:iam::111122223333:role/unknown"
	if _, err := f.b.Issue(ctx, req); err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Errorf("Issue for an untrusted role: %v", err)
	}
	if len(f.sts.AssumeRoleCalls()) != 0 {
		t.Error("a refused AssumeRole was recorded as a success")
	}
}

// A session that ends in 5 minutes gets credentials of STS's minimum (15
// min) and a token reported to expire with the session.
func TestShortSession(t *testing.T) {
	f := newFixture(t, nil)
	req := testRequest()
	req.ExpiresAt = time.Now().Add(5 * time.Minute)
	cred, err := f.b.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !cred.ExpiresAt.Equal(req.ExpiresAt) {
		t.Errorf("ExpiresAt = %s, want the session's end %s", cred.ExpiresAt, req.ExpiresAt)
	}
	if got := f.sts.AssumeRoleCalls()[0].DurationSeconds; got != 900 {
		t.Errorf("DurationSeconds = %d, want 900", got)
	}
}

func TestReady(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.b.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	s := standIn(t, nil)
	bad, err := New(context.Background(), Config{ClusterName: testCluster, AWS: awsConfig(s, brokerKey, "wrong-secret")})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") {
		t.Fatalf("Ready with a wrong secret: %v", err)
	}
}

// STSEndpoint sends the broker's own calls to another endpoint (here the
// stand-in's loopback address), while tokens keep the public hostname.
func TestSTSEndpointOverride(t *testing.T) {
	s := standIn(t, nil)
	cfg := awsConfig(s, brokerKey, brokerSec)
	// The stand-in's client reaches it under any name, so a recording
	// transport shows which URL each call was sent to.
	var mu sync.Mutex
	hosts := map[string]int{}
	base := s.Client()
	cfg.HTTPClient = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		hosts[r.URL.Host]++
		mu.Unlock()
		return base.Transport.RoundTrip(r)
	})}
	b, err := New(context.Background(), Config{ClusterName: testCluster, RoleARN: ciRoleARN, STSEndpoint: s.URL, AWS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := b.Issue(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(s.URL)
	mu.Lock()
	defer mu.Unlock()
	if hosts[u.Host] != 2 || len(hosts) != 1 {
		t.Errorf("requests by host = %v, want AssumeRole and GetCallerIdentity at %s only", hosts, u.Host)
	}
	if got := decodeTokenURL(t, cred.Token).Host; got != "sts.us-east-1.amazonaws.com" {
		t.Errorf("token names %s, want the public regional STS host", got)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// RESTConfig authenticates the broker's own calls to the cluster with a
// token for its base identity, which passes the authenticator's checks.
func TestRESTConfigBrokerToken(t *testing.T) {
	f := newFixture(t, nil)
	var mu sync.Mutex
	var seen []string
	apiserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"NamespaceList","apiVersion":"v1","metadata":{},"items":[]}`))
	}))
	defer apiserver.Close()
	cs, err := kubernetes.NewForConfig(f.b.RESTConfig(apiserver.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := cs.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != seen[1] || !strings.HasPrefix(seen[0], "Bearer "+TokenPrefix) {
		t.Fatalf("Authorization headers = %q, want the same cached EKS token twice", seen)
	}
	id, err := f.v.Verify(context.Background(), strings.TrimPrefix(seen[0], "Bearer "))
	if err != nil {
		t.Fatal(err)
	}
	if id.ARN != brokerARN || id.CanonicalARN != brokerARN || id.SessionName != "" {
		t.Errorf("broker token identity = %+v, want the broker's IAM user", id)
	}
	if len(f.sts.AssumeRoleCalls()) != 0 {
		t.Error("the broker's own token assumed a role")
	}
}

// BenchmarkIssueCached measures Issue for a session whose assumed-role
// credentials are cached: a presign, no STS call.
func BenchmarkIssueCached(b *testing.B) {
	s := ststest.New(b, ststest.Options{
		Region:     testRegion,
		Principals: []ststest.Principal{{ARN: brokerARN, UserID: "AIDAEXAMPLEUSERID0001", AccessKeyID: brokerKey, SecretAccessKey: brokerSec}},
		Roles:      []ststest.Role{{ARN: ciRoleARN, RoleID: ciRoleID, Trusted: []string{brokerARN}}},
	})
	be, err := New(context.Background(), Config{ClusterName: testCluster, RoleARN: ciRoleARN, AWS: awsConfig(s, brokerKey, brokerSec)})
	if err != nil {
		b.Fatal(err)
	}
	req := testRequest()
	if _, err := be.Issue(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := be.Issue(context.Background(), req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	if n := len(s.AssumeRoleCalls()); n != 1 {
		b.Fatalf("%d AssumeRole calls, want 1", n)
	}
}

// The token-review webhook authenticates the backend's tokens as EKS does:
// the assumed role maps to a Kubernetes user named after the run.
func TestTokenReviewWebhook(t *testing.T) {
	f := newFixture(t, nil)
	hook := httptest.NewServer(&iamauth.Webhook{Verifier: f.v, Roles: []iamauth.RoleMapping{{
		RoleARN: ciRoleARN, Username: "kubectl-agent:{{SessionName}}", Groups: []string{"kubectl-agent-ci"},
	}}})
	defer hook.Close()
	review := func(token string) authnv1.TokenReview {
		t.Helper()
		body, _ := json.Marshal(authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}})
		resp, err := http.Post(hook.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var out authnv1.TokenReview
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		if out.Spec.Token != "" {
			t.Error("the webhook echoed the token")
		}
		return out
	}
	cred, err := f.b.Issue(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	got := review(cred.Token)
	if !got.Status.Authenticated || got.Status.User.Username != "kubectl-agent:ka-acme.web-9876543210-2" ||
		len(got.Status.User.Groups) != 1 || got.Status.User.Groups[0] != "kubectl-agent-ci" {
		t.Fatalf("review = %+v", got.Status)
	}
	if bad := review(cred.Token[:len(cred.Token)-4] + "AAAA"); bad.Status.Authenticated || bad.Status.Error == "" {
		t.Errorf("tampered token: %+v", bad.Status)
	}
	// The broker's own identity is not mapped.
	own, _, err := f.b.ClusterToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := review(own); r.Status.Authenticated || !strings.Contains(r.Status.Error, "not mapped") {
		t.Errorf("unmapped identity: %+v", r.Status)
	}
}

// Concurrent Issues for one session assume the role once.
func TestConcurrentIssue(t *testing.T) {
	f := newFixture(t, nil)
	req := testRequest()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cred, err := f.b.Issue(context.Background(), req)
			if err == nil {
				_, err = f.v.Verify(context.Background(), cred.Token)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.sts.AssumeRoleCalls()); n != 1 {
		t.Errorf("%d AssumeRole calls for one session, want 1", n)
	}
}
