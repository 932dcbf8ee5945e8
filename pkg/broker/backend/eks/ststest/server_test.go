package ststest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks/ststest"
)

const (
	region    = "us-east-1"
	userARN   = "arn:aws:iam::111122223333:user/broker"
	userKey   = "AKIAIOSFODNN7EXAMPLE"
	userSec   = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	roleARN   = "arn:aws:iam::111122223333:role/ci"
	longRole  = "arn:aws:iam::111122223333:role/long"
	extRole   = "arn:aws:iam::111122223333:role/external"
	chainRole = "arn:aws:iam::111122223333:role/chained"
)

// clock is a settable clock for the stand-in.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.offset) }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

func start(t *testing.T) (*ststest.Server, *clock) {
	t.Helper()
	c := &clock{}
	s := ststest.New(t, ststest.Options{
		Region:     region,
		Now:        c.now,
		Principals: []ststest.Principal{{ARN: userARN, UserID: "AIDAEXAMPLE", AccessKeyID: userKey, SecretAccessKey: userSec}},
		Roles: []ststest.Role{
			{ARN: roleARN, RoleID: "AROACI", Trusted: []string{userARN}},
			{ARN: longRole, RoleID: "AROALONG", Trusted: []string{userARN}, MaxSessionDuration: 12 * time.Hour},
			{ARN: extRole, RoleID: "AROAEXT", Trusted: []string{userARN}, ExternalID: "the-external-id"},
			{ARN: chainRole, RoleID: "AROACHAIN", Trusted: []string{roleARN}, MaxSessionDuration: 4 * time.Hour},
		},
	})
	return s, c
}

func static(key, secret, token string) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: key, SecretAccessKey: secret, SessionToken: token}, nil
	})
}

func client(s *ststest.Server, creds aws.CredentialsProvider) *sts.Client {
	return sts.NewFromConfig(aws.Config{Region: region, Credentials: creds, HTTPClient: s.Client(), RetryMaxAttempts: 1})
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

var emptyHash = hex.EncodeToString(func() []byte { h := sha256.Sum256(nil); return h[:] }())

// presign builds a presigned GetCallerIdentity URL the way EKS tokens are
// made, with headers signed, using the SDK's SigV4 signer.
func presign(t *testing.T, creds aws.Credentials, at time.Time, headers map[string]string) string {
	t.Helper()
	r, _ := http.NewRequest(http.MethodGet, "https://sts."+region+".amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Expires=60", nil)
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	u, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, r, emptyHash, "sts", region, at)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

type result struct {
	status int
	body   string
}

func get(t *testing.T, s *ststest.Server, u string, headers map[string]string) result {
	t.Helper()
	r, _ := http.NewRequest(http.MethodGet, u, nil)
	r.Header.Set("Accept", "application/json")
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	resp, err := s.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, string(b)}
}

func TestPresignedGetCallerIdentity(t *testing.T) {
	s, clk := start(t)
	user := aws.Credentials{AccessKeyID: userKey, SecretAccessKey: userSec}
	cluster := map[string]string{"x-k8s-aws-id": "prod"}
	good := presign(t, user, time.Now(), cluster)

	r := get(t, s, good, cluster)
	if r.status != 200 {
		t.Fatalf("valid presigned URL: %d %s", r.status, r.body)
	}
	var out struct {
		GetCallerIdentityResponse struct {
			GetCallerIdentityResult struct{ Arn, UserId, Account string }
		}
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		t.Fatalf("JSON answer: %v: %s", err, r.body)
	}
	if res := out.GetCallerIdentityResponse.GetCallerIdentityResult; res.Arn != userARN || res.Account != "111122223333" || res.UserId != "AIDAEXAMPLE" {
		t.Errorf("result = %+v", res)
	}
	if calls := s.CallerIdentityCalls(); len(calls) != 1 || calls[0].ClusterID != "prod" || !calls[0].Presigned {
		t.Errorf("calls = %+v", calls)
	}

	tampered := strings.Replace(good, "X-Amz-Expires=60", "X-Amz-Expires=61", 1)
	added := good + "&Extra=1"
	wrongSecret := presign(t, aws.Credentials{AccessKeyID: userKey, SecretAccessKey: "not-the-secret"}, time.Now(), cluster)
	unknownKey := presign(t, aws.Credentials{AccessKeyID: "AKIAUNKNOWN000000000", SecretAccessKey: userSec}, time.Now(), cluster)
	old := presign(t, user, time.Now().Add(-16*time.Minute), cluster)
	future := presign(t, user, time.Now().Add(10*time.Minute), cluster)
	unsigned := presign(t, user, time.Now(), nil)
	cases := []struct {
		name    string
		url     string
		headers map[string]string
		status  int
		code    string
	}{
		{"tampered query", tampered, cluster, 403, "SignatureDoesNotMatch"},
		{"added parameter", added, cluster, 403, "SignatureDoesNotMatch"},
		{"wrong secret", wrongSecret, cluster, 403, "SignatureDoesNotMatch"},
		{"unknown key", unknownKey, cluster, 403, "InvalidClientTokenId"},
		{"expired", old, cluster, 403, "AccessDenied"},
		{"not yet valid", future, cluster, 403, "SignatureDoesNotMatch"},
		{"signed cluster id missing", good, nil, 403, "SignatureDoesNotMatch"},
		{"signed cluster id changed", good, map[string]string{"x-k8s-aws-id": "staging"}, 403, "SignatureDoesNotMatch"},
		{"no auth", "https://sts." + region + ".amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15", nil, 403, "MissingAuthenticationToken"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := get(t, s, c.url, c.headers)
			if r.status != c.status || !strings.Contains(r.body, `"`+c.code+`"`) {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
	// A URL with the cluster id unsigned is valid at STS (the authenticator,
	// not STS, insists on the header) and sending the header then changes
	// nothing.
	if r := get(t, s, unsigned, cluster); r.status != 200 {
		t.Errorf("unsigned-header URL: %d %s", r.status, r.body)
	}
	if calls := s.CallerIdentityCalls(); calls[len(calls)-1].ClusterID != "" {
		t.Errorf("an unsigned x-k8s-aws-id was recorded as signed: %+v", calls[len(calls)-1])
	}

	// The stand-in's clock decides expiry: 15 minutes after X-Amz-Date.
	clk.advance(14 * time.Minute)
	if r := get(t, s, good, cluster); r.status != 200 {
		t.Fatalf("at 14 min: %d %s", r.status, r.body)
	}
	clk.advance(2 * time.Minute)
	if r := get(t, s, good, cluster); r.status != 403 || !strings.Contains(r.body, "expired") {
		t.Fatalf("at 16 min: %d %s", r.status, r.body)
	}
}

func TestAssumeRoleAndTemporaryCredentials(t *testing.T) {
	s, clk := start(t)
	ctx := context.Background()
	out, err := client(s, static(userKey, userSec, "")).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(roleARN), RoleSessionName: aws.String("run-42"), DurationSeconds: aws.Int32(900),
		SourceIdentity: aws.String("acme.web"),
		Tags:           []ststypes.Tag{{Key: aws.String("repository"), Value: aws.String("acme/web")}},
	})
	if err != nil {
		t.Fatalf("AssumeRole: %v", err)
	}
	if *out.AssumedRoleUser.Arn != "arn:aws:sts::111122223333:assumed-role/ci/run-42" || *out.AssumedRoleUser.AssumedRoleId != "AROACI:run-42" {
		t.Errorf("assumed role user = %s %s", *out.AssumedRoleUser.Arn, *out.AssumedRoleUser.AssumedRoleId)
	}
	c := out.Credentials
	if !strings.HasPrefix(*c.AccessKeyId, "ASIA") || time.Until(*c.Expiration) > 15*time.Minute || time.Until(*c.Expiration) < 14*time.Minute {
		t.Errorf("credentials = %s expiring %s", *c.AccessKeyId, c.Expiration)
	}
	if *out.SourceIdentity != "acme.web" {
		t.Errorf("SourceIdentity = %q", *out.SourceIdentity)
	}

	temp := static(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken)
	id, err := client(s, temp).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatalf("GetCallerIdentity with the temporary credentials: %v", err)
	}
	if *id.Arn != "arn:aws:sts::111122223333:assumed-role/ci/run-42" || *id.UserId != "AROACI:run-42" {
		t.Errorf("identity = %s %s", *id.Arn, *id.UserId)
	}

	// Role chaining: limited to 1 h whatever the role allows, source
	// identity carried over and not changeable.
	_, err = client(s, temp).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(chainRole), RoleSessionName: aws.String("x2"), DurationSeconds: aws.Int32(7200)})
	if apiCode(err) != "ValidationError" {
		t.Errorf("chained AssumeRole for 2h: %v", err)
	}
	chained, err := client(s, temp).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(chainRole), RoleSessionName: aws.String("x2")})
	if err != nil {
		t.Fatalf("chained AssumeRole: %v", err)
	}
	if *chained.SourceIdentity != "acme.web" {
		t.Errorf("chained SourceIdentity = %q", *chained.SourceIdentity)
	}
	_, err = client(s, temp).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(chainRole), RoleSessionName: aws.String("x2"), SourceIdentity: aws.String("other")})
	if apiCode(err) != "AccessDenied" {
		t.Errorf("changing the source identity in a chain: %v", err)
	}

	// Tampered session token, missing session token.
	if _, err := client(s, static(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken+"x")).GetCallerIdentity(ctx, nil); apiCode(err) != "InvalidClientTokenId" {
		t.Errorf("tampered session token: %v", err)
	}
	if _, err := client(s, static(*c.AccessKeyId, *c.SecretAccessKey, "")).GetCallerIdentity(ctx, nil); apiCode(err) != "InvalidClientTokenId" {
		t.Errorf("missing session token: %v", err)
	}
	// Long-term key with a session token.
	if _, err := client(s, static(userKey, userSec, *c.SessionToken)).GetCallerIdentity(ctx, nil); apiCode(err) != "InvalidClientTokenId" {
		t.Errorf("long-term key with a session token: %v", err)
	}

	// After 15 minutes the temporary credentials are expired (a request
	// signed at that time, so that only the credentials' age matters).
	clk.advance(16 * time.Minute)
	late := presign(t, aws.Credentials{AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey, SessionToken: *c.SessionToken}, clk.now(), nil)
	if r := get(t, s, late, nil); r.status != 400 || !strings.Contains(r.body, "ExpiredToken") {
		t.Errorf("expired temporary credentials: %d %s", r.status, r.body)
	}
}

func TestAssumeRoleArgumentChecks(t *testing.T) {
	s, _ := start(t)
	c := client(s, static(userKey, userSec, ""))
	tags := func(n int, key func(int) string, val string) []ststypes.Tag {
		out := make([]ststypes.Tag, n)
		for i := range out {
			out[i] = ststypes.Tag{Key: aws.String(key(i)), Value: aws.String(val)}
		}
		return out
	}
	num := func(i int) string { return "k" + strings.Repeat("x", i) }
	cases := []struct {
		name string
		in   sts.AssumeRoleInput
		code string
	}{
		{"ok", sts.AssumeRoleInput{}, ""},
		{"session name too short", sts.AssumeRoleInput{RoleSessionName: aws.String("a")}, "ValidationError"},
		{"session name 64 ok", sts.AssumeRoleInput{RoleSessionName: aws.String(strings.Repeat("a", 64))}, ""},
		{"session name too long", sts.AssumeRoleInput{RoleSessionName: aws.String(strings.Repeat("a", 65))}, "ValidationError"},
		{"session name bad character", sts.AssumeRoleInput{RoleSessionName: aws.String("a b")}, "ValidationError"},
		{"session name colon", sts.AssumeRoleInput{RoleSessionName: aws.String("repo:x")}, "ValidationError"},
		{"duration too short", sts.AssumeRoleInput{DurationSeconds: aws.Int32(899)}, "ValidationError"},
		{"duration over role max", sts.AssumeRoleInput{DurationSeconds: aws.Int32(3601)}, "ValidationError"},
		{"duration 12h on a 12h role", sts.AssumeRoleInput{RoleArn: aws.String(longRole), DurationSeconds: aws.Int32(43200)}, ""},
		{"duration over 12h", sts.AssumeRoleInput{RoleArn: aws.String(longRole), DurationSeconds: aws.Int32(43201)}, "ValidationError"},
		{"50 tags ok", sts.AssumeRoleInput{Tags: tags(50, num, "v")}, ""},
		{"51 tags", sts.AssumeRoleInput{Tags: tags(51, num, "v")}, "ValidationError"},
		{"tag key 128 ok", sts.AssumeRoleInput{Tags: tags(1, func(int) string { return strings.Repeat("k", 128) }, "v")}, ""},
		{"tag key too long", sts.AssumeRoleInput{Tags: tags(1, func(int) string { return strings.Repeat("k", 129) }, "v")}, "ValidationError"},
		{"tag value 256 ok", sts.AssumeRoleInput{Tags: tags(1, num, strings.Repeat("v", 256))}, ""},
		{"tag value too long", sts.AssumeRoleInput{Tags: tags(1, num, strings.Repeat("v", 257))}, "ValidationError"},
		{"tag value bad character", sts.AssumeRoleInput{Tags: tags(1, num, "a<b")}, "ValidationError"},
		{"tag value unicode ok", sts.AssumeRoleInput{Tags: tags(1, num, "refs/heads/ü-1 x@y")}, ""},
		{"tag key aws:", sts.AssumeRoleInput{Tags: tags(1, func(int) string { return "aws:x" }, "v")}, "ValidationError"},
		{"duplicate tag keys", sts.AssumeRoleInput{Tags: []ststypes.Tag{{Key: aws.String("Env"), Value: aws.String("a")}, {Key: aws.String("env"), Value: aws.String("b")}}}, "InvalidParameterValue"},
		{"policy 2048 ok", sts.AssumeRoleInput{Policy: aws.String(`"` + strings.Repeat("a", 2046) + `"`)}, ""},
		{"policy too long", sts.AssumeRoleInput{Policy: aws.String(`"` + strings.Repeat("a", 2047) + `"`)}, "ValidationError"},
		{"policy not JSON", sts.AssumeRoleInput{Policy: aws.String(`{"Version":`)}, "MalformedPolicyDocument"},
		{"policy bad character", sts.AssumeRoleInput{Policy: aws.String("\"\u20ac\"")}, "ValidationError"},
		{"source identity bad", sts.AssumeRoleInput{SourceIdentity: aws.String("a/b")}, "ValidationError"},
		{"source identity aws:", sts.AssumeRoleInput{SourceIdentity: aws.String("aws:x")}, "ValidationError"},
		{"untrusted role", sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::111122223333:role/nobody")}, "AccessDenied"},
		{"role needs external id", sts.AssumeRoleInput{RoleArn: aws.String(extRole)}, "AccessDenied"},
		{"wrong external id", sts.AssumeRoleInput{RoleArn: aws.String(extRole), ExternalId: aws.String("guess")}, "AccessDenied"},
		{"right external id", sts.AssumeRoleInput{RoleArn: aws.String(extRole), ExternalId: aws.String("the-external-id")}, ""},
		{"role chain from a user to a role that trusts only a role", sts.AssumeRoleInput{RoleArn: aws.String(chainRole)}, "AccessDenied"},
		{"packed tags too large", sts.AssumeRoleInput{Tags: distinctTags(50, 256)}, "PackedPolicyTooLarge"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if in.RoleArn == nil {
				in.RoleArn = aws.String(roleARN)
			}
			if in.RoleSessionName == nil {
				in.RoleSessionName = aws.String("session")
			}
			_, err := c.AssumeRole(context.Background(), &in)
			if got := apiCode(err); got != tc.code {
				t.Fatalf("error code %q (%v), want %q", got, err, tc.code)
			}
		})
	}
}

// distinctTags is n tags with distinct values of size characters that
// deflate cannot shrink much.
func distinctTags(n, size int) []ststypes.Tag {
	out := make([]ststypes.Tag, n)
	for i := range out {
		out[i] = ststypes.Tag{Key: aws.String("k" + strings.Repeat("x", i)), Value: aws.String(randomish(uint32(i+1), size))}
	}
	return out
}

// randomish is n characters that deflate cannot shrink much.
func randomish(seed uint32, n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	x := seed * 2463534242
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = alphabet[x%uint32(len(alphabet))]
	}
	return string(b)
}

// The protocol answers XML to SDK callers and keeps errors in the Query
// protocol's shape, which the SDK turns into typed API errors.
func TestXMLAndErrors(t *testing.T) {
	s, _ := start(t)
	_, err := client(s, static(userKey, "bad", "")).GetCallerIdentity(context.Background(), nil)
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
	// Unsupported action and version.
	r := get(t, s, presignQuery(t, "Action=GetSessionToken&Version=2011-06-15"), nil)
	if r.status != 400 || !strings.Contains(r.body, "InvalidAction") {
		t.Errorf("unsupported action: %d %s", r.status, r.body)
	}
	r = get(t, s, presignQuery(t, "Action=GetCallerIdentity&Version=2020-01-01"), nil)
	if r.status != 400 || !strings.Contains(r.body, "InvalidAction") {
		t.Errorf("wrong version: %d %s", r.status, r.body)
	}
}

func presignQuery(t *testing.T, q string) string {
	t.Helper()
	r, _ := http.NewRequest(http.MethodGet, "https://sts."+region+".amazonaws.com/?"+q+"&X-Amz-Expires=60", nil)
	u, _, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: userKey, SecretAccessKey: userSec}, r, emptyHash, "sts", region, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Signatures scoped to another region or service fail.
func TestScope(t *testing.T) {
	s, _ := start(t)
	for _, sc := range []struct{ region, service string }{{"eu-west-1", "sts"}, {region, "s3"}} {
		r, _ := http.NewRequest(http.MethodGet, "https://sts."+region+".amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Expires=60", nil)
		u, _, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: userKey, SecretAccessKey: userSec}, r, emptyHash, sc.service, sc.region, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if res := get(t, s, u, nil); res.status != 403 || !strings.Contains(res.body, "SignatureDoesNotMatch") {
			t.Errorf("scope %s/%s: %d %s", sc.region, sc.service, res.status, res.body)
		}
	}
	// A query string that is not valid.
	if res := get(t, s, "https://sts."+region+".amazonaws.com/?a=%zz", nil); res.status != 400 {
		t.Errorf("bad query: %d %s", res.status, res.body)
	}
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("a", 64))
	f.Add("AWS4-HMAC-SHA256 Credential=/a/b/c/d, SignedHeaders=, Signature=")
	f.Add("AWS4-HMAC-SHA256 ,,,")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		akid, date, reg, svc, hs, sig, err := ststest.ParseAuthorization(v)
		if err != nil {
			return
		}
		if akid == "" || len(sig) != 64 || len(hs) == 0 || strings.Contains(akid+date+reg+svc, "/") {
			t.Fatalf("accepted %q as %q %q %q %q %v %q", v, akid, date, reg, svc, hs, sig)
		}
		for i := 1; i < len(hs); i++ {
			if hs[i-1] >= hs[i] {
				t.Fatalf("signed headers %v not sorted", hs)
			}
		}
	})
}
