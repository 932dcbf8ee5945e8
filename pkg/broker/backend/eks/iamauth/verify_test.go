package iamauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks/ststest"
)

const (
	region  = "us-east-1"
	userARN = "arn:aws:iam::111122223333:user/broker"
	userKey = "AKIAIOSFODNN7EXAMPLE"
	userSec = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	cluster = "prod"
)

var emptyHash = hex.EncodeToString(func() []byte { h := sha256.Sum256(nil); return h[:] }())

func standIn(t *testing.T) *ststest.Server {
	return ststest.New(t, ststest.Options{
		Region:     region,
		Principals: []ststest.Principal{{ARN: userARN, UserID: "AIDAEXAMPLE", AccessKeyID: userKey, SecretAccessKey: userSec}},
	})
}

// presignedURL signs a GetCallerIdentity URL for host with extra query
// parameters and the given signed headers.
func presignedURL(t *testing.T, host, query string, headers map[string]string, at time.Time) string {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, "https://"+host+"/?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	u, _, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: userKey, SecretAccessKey: userSec}, r, emptyHash, "sts", region, at)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func tokenOf(u string) string { return V1Prefix + base64.RawURLEncoding.EncodeToString([]byte(u)) }

const baseQuery = "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Expires=60"

var signedCluster = map[string]string{ClusterIDHeader: cluster}

func TestVerifyAccepts(t *testing.T) {
	s := standIn(t)
	v := &Verifier{ClusterID: cluster, Region: region, Client: s.Client()}
	for _, host := range []string{"sts.us-east-1.amazonaws.com", "sts.amazonaws.com", "sts-fips.us-east-1.amazonaws.com", "sts.us-east-1.api.aws"} {
		t.Run(host, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tokenOf(presignedURL(t, host, baseQuery, signedCluster, time.Now())))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.ARN != userARN || id.CanonicalARN != userARN || id.UserID != "AIDAEXAMPLE" || id.AccountID != "111122223333" || id.AccessKeyID != userKey || id.STSEndpoint != host {
				t.Errorf("identity = %+v", id)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	s := standIn(t)
	v := &Verifier{ClusterID: cluster, Region: region, Client: s.Client()}
	now := time.Now()
	good := presignedURL(t, "sts.us-east-1.amazonaws.com", baseQuery, signedCluster, now)
	swap := func(old, new string) string { return tokenOf(strings.Replace(good, old, new, 1)) }
	cases := []struct {
		name, token, want string
		sts               bool // an STSError (the format checks passed)
	}{
		{"too large", V1Prefix + strings.Repeat("A", MaxTokenLenBytes), "token is too large", false},
		{"no prefix", strings.TrimPrefix(tokenOf(good), V1Prefix), "missing expected", false},
		{"padded base64", tokenOf(good) + "==", "illegal base64", false},
		{"std base64", V1Prefix + base64.StdEncoding.EncodeToString([]byte(good+"??>>")), "illegal base64", false},
		{"bad url", tokenOf("https://sts.us-east-1.amazonaws.com/%zz"), "invalid URL escape", false},
		{"http", swap("https://", "http://"), `unexpected scheme "http"`, false},
		{"foreign host", swap("sts.us-east-1.amazonaws.com", "sts.us-east-1.evil.com"), "unexpected hostname", false},
		{"suffix host", swap("sts.us-east-1.amazonaws.com", "sts.us-east-1.amazonaws.com.evil.com"), "", false},
		{"other partition", swap("sts.us-east-1.amazonaws.com", "sts.cn-north-1.amazonaws.com.cn"), "does not support hostname", false},
		{"two labels", swap("sts.us-east-1.amazonaws.com", "amazonaws.com"), "could not parse region", false},
		{"bad region", swap("sts.us-east-1.amazonaws.com", "sts.-x.amazonaws.com"), "invalid region", false},
		{"path", swap(".com/?", ".com/x?"), "unexpected path", false},
		{"extra parameter", swap("Action=", "Foo=1&Action="), `non-whitelisted query parameter "Foo"`, false},
		{"duplicate parameter", swap("Action=GetCallerIdentity", "Action=GetCallerIdentity&action=GetCallerIdentity"), "duplicate query parameter", false},
		{"repeated parameter", swap("Action=GetCallerIdentity", "Action=GetCallerIdentity&Action=GetCallerIdentity"), "multiple values", false},
		{"malformed query", swap("Action=", "%zz&Action="), "malformed query parameter", false},
		{"action", tokenOf(presignedURL(t, "sts.us-east-1.amazonaws.com", strings.Replace(baseQuery, "GetCallerIdentity", "GetSessionToken", 1), signedCluster, now)), "unexpected action", false},
		{"cluster id not signed", tokenOf(presignedURL(t, "sts.us-east-1.amazonaws.com", baseQuery, nil, now)), "did not sign the x-k8s-aws-id header", false},
		{"expires too long", tokenOf(presignedURL(t, "sts.us-east-1.amazonaws.com", strings.Replace(baseQuery, "=60", "=901", 1), signedCluster, now)), "invalid X-Amz-Expires", false},
		{"expires negative", swap("X-Amz-Expires=60", "X-Amz-Expires=-1"), "invalid X-Amz-Expires", false},
		{"expires missing", swap("&X-Amz-Expires=60", ""), "invalid X-Amz-Expires", false},
		{"date missing", tokenOf(dropParam(t, good, "X-Amz-Date")), "X-Amz-Date parameter must be present", false},
		{"date malformed", tokenOf(setParam(t, good, "X-Amz-Date", "2025-01-01")), "error parsing X-Amz-Date", false},
		{"expired", tokenOf(presignedURL(t, "sts.us-east-1.amazonaws.com", baseQuery, signedCluster, now.Add(-15*time.Minute-time.Second))), "X-Amz-Date parameter is expired", false},
		// Format checks pass; STS (the stand-in) refuses the signature.
		{"tampered signature", tokenOf(setParam(t, good, "X-Amz-Signature", strings.Repeat("0", 64))), "expected 200, got 403", true},
		{"tampered expires", swap("X-Amz-Expires=60", "X-Amz-Expires=59"), "expected 200, got 403", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), c.token)
			if err == nil {
				t.Fatal("Verify accepted the token")
			}
			var fe FormatError
			var se STSError
			if c.sts != errors.As(err, &se) || !c.sts && !errors.As(err, &fe) && !strings.Contains(err.Error(), "invalid host") {
				t.Fatalf("error %T %v: want an STS error: %v", err, err, c.sts)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

// The verifier sends its own cluster id: a token for another cluster fails
// at STS, because the signed header's value differs.
func TestVerifyOtherCluster(t *testing.T) {
	s := standIn(t)
	v := &Verifier{ClusterID: "staging", Region: region, Client: s.Client()}
	_, err := v.Verify(context.Background(), tokenOf(presignedURL(t, "sts.us-east-1.amazonaws.com", baseQuery, signedCluster, time.Now())))
	var se STSError
	if !errors.As(err, &se) {
		t.Fatalf("Verify: %v", err)
	}
}

func TestGlobalEndpointOutsideAWSPartition(t *testing.T) {
	v := &Verifier{ClusterID: cluster, Partition: "aws-cn", Region: "cn-north-1"}
	_, err := v.Verify(context.Background(), tokenOf(presignedURL(t, "sts.amazonaws.com", baseQuery, signedCluster, time.Now())))
	if err == nil || !strings.Contains(err.Error(), "global endpoint unsupported") {
		t.Fatalf("Verify: %v", err)
	}
}

func dropParam(t *testing.T, raw, key string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Del(key)
	u.RawQuery = q.Encode()
	return u.String()
}

func setParam(t *testing.T, raw, key, val string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, val)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestIdentityFromSTSResponse(t *testing.T) {
	wrap := func(arn, userID string) getCallerIdentityWrapper {
		var w getCallerIdentityWrapper
		w.GetCallerIdentityResponse.GetCallerIdentityResult.Arn = arn
		w.GetCallerIdentityResponse.GetCallerIdentityResult.UserID = userID
		w.GetCallerIdentityResponse.GetCallerIdentityResult.Account = "111122223333"
		return w
	}
	cases := []struct {
		arn, userID                      string
		canonical, wantUser, wantSession string
		err                              bool
	}{
		{"arn:aws:sts::111122223333:assumed-role/ci/run-1", "AROAX:run-1", "arn:aws:iam::111122223333:role/ci", "AROAX", "run-1", false},
		{"arn:aws:sts::111122223333:assumed-role/path/to/ci/run-1", "AROAX:run-1", "arn:aws:iam::111122223333:role/path/to/ci", "AROAX", "run-1", false},
		{"arn:aws:iam::111122223333:user/bob", "AIDAX", "arn:aws:iam::111122223333:user/bob", "AIDAX", "", false},
		{"arn:aws:iam::111122223333:root", "111122223333", "arn:aws:iam::111122223333:root", "111122223333", "", false},
		{"arn:aws:sts::111122223333:federated-user/bob", "111122223333:bob", "arn:aws:sts::111122223333:federated-user/bob", "111122223333:bob", "", false},
		{"arn:aws:sts::111122223333:assumed-role/ci/run-1", "AROAX", "", "", "", true},
		{"arn:aws:sts::111122223333:assumed-role/ci", "AROAX:x", "", "", "", true},
		{"arn:aws:s3:::bucket", "x", "", "", "", true},
		{"arn:nope:iam::111122223333:user/bob", "x", "", "", "", true},
		{"not-an-arn", "x", "", "", "", true},
	}
	for _, c := range cases {
		id, err := getIdentityFromSTSResponse(&Identity{}, wrap(c.arn, c.userID))
		if c.err {
			if err == nil {
				t.Errorf("%s %s: accepted as %+v", c.arn, c.userID, id)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.arn, err)
			continue
		}
		if id.CanonicalARN != c.canonical || id.UserID != c.wantUser || id.SessionName != c.wantSession {
			t.Errorf("%s: %+v", c.arn, id)
		}
	}
}

// Whatever a token holds, the verifier either refuses it or sends a request
// that passed every format check.
func FuzzVerify(f *testing.F) {
	good := "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20250101%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=" + time.Now().UTC().Format(dateHeaderFormat) + "&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=00"
	f.Add(tokenOf(good))
	f.Add(tokenOf("https://sts.amazonaws.com/"))
	f.Add(V1Prefix + "%%%")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		var sent *http.Request
		v := &Verifier{ClusterID: cluster, Region: region, Client: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			sent = r
			return nil, errors.New("no network in fuzzing")
		})}}
		_, err := v.Verify(context.Background(), token)
		if err == nil {
			t.Fatal("verified without STS")
		}
		if sent == nil {
			return
		}
		q := sent.URL.Query()
		if sent.URL.Scheme != "https" || sent.URL.Path != "/" || q.Get("Action") != "GetCallerIdentity" ||
			!strings.Contains(strings.ToLower(q.Get("X-Amz-SignedHeaders")), ClusterIDHeader) || sent.Header.Get(ClusterIDHeader) != cluster ||
			len(token) > MaxTokenLenBytes {
			t.Fatalf("sent %s for token %q", sent.URL, token)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
