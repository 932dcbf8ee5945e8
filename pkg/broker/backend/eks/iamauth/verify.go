// Package iamauth verifies EKS bearer tokens the way the EKS control plane
// does: it mirrors, check for check, the token verifier of
// aws-iam-authenticator (repository kubernetes-sigs/aws-iam-authenticator,
// file pkg/token/token.go: tokenVerifier.Verify, verifyHost,
// verifySTSHostnameFormat, getStsRegion, validateDuplicateParameters,
// hasSignedClusterIDHeader, getIdentityFromSTSResponse). Two revisions were
// read: commit e1dff7d667b0a8b22f816633ae180cde236de1fe (aws-sdk-go v1, host
// regexp) and the later aws-sdk-go-v2 revision with verifySTSHostnameFormat
// and the duplicate-parameter check (the index we read it from gave no commit
// id); this mirror follows the later one. Also mirrored: pkg/arn/arn.go
// (Canonicalize, commit b5102389e266132ded3d4e6eea1a470e7828c708) and
// pkg/endpoints/partitions.go (partition domains).
//
// It exists so that tests can prove that the tokens kubectl-agent's broker
// mints would be accepted by EKS: every check, including the final call that
// sends the presigned GetCallerIdentity request to STS with the x-k8s-aws-id
// header, which tests point at the local STS stand-in (package ststest) or, in
// the opt-in test, at real AWS.
package iamauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	awsarn "github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// The authenticator's constants (pkg/token/token.go).
const (
	// V1Prefix starts every EKS token.
	V1Prefix = "k8s-aws-v1."
	// MaxTokenLenBytes is the longest token the authenticator accepts.
	MaxTokenLenBytes = 1024 * 4
	// ClusterIDHeader carries the cluster name and must be signed.
	ClusterIDHeader = "x-k8s-aws-id"
	// PresignedURLExpiration: STS accepts a presigned GetCallerIdentity
	// request for 15 minutes after its X-Amz-Date, whatever X-Amz-Expires says.
	PresignedURLExpiration = 15 * time.Minute
	dateHeaderFormat       = "20060102T150405Z"
)

var parameterWhitelist = map[string]bool{
	"action":               true,
	"version":              true,
	"x-amz-algorithm":      true,
	"x-amz-credential":     true,
	"x-amz-date":           true,
	"x-amz-expires":        true,
	"x-amz-security-token": true,
	"x-amz-signature":      true,
	"x-amz-signedheaders":  true,
}

// FormatError is a token that is malformed (no STS call was made).
type FormatError struct{ Message string }

func (e FormatError) Error() string { return "input token was not properly formatted: " + e.Message }

// STSError is a failed STS call or an unusable STS answer.
type STSError struct{ Message string }

func (e STSError) Error() string { return "sts getCallerIdentity failed: " + e.Message }

// Identity is what a verified token says about its signer.
type Identity struct {
	ARN          string
	CanonicalARN string
	AccountID    string
	UserID       string
	SessionName  string
	AccessKeyID  string
	STSEndpoint  string
}

// Verifier verifies tokens for one cluster.
type Verifier struct {
	ClusterID string
	// Partition is the AWS partition of the cluster ("aws" when empty).
	Partition string
	// Region is the cluster's region, for hostnames the SDK does not know.
	Region string
	// Client sends the GetCallerIdentity request; nil means one like the
	// authenticator's (10 s timeout, redirects not followed).
	Client *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu         sync.RWMutex
	validHosts map[string]bool
}

func (v *Verifier) partition() string {
	if v.Partition == "" {
		return "aws"
	}
	return v.Partition
}

func (v *Verifier) client() *http.Client {
	if v.Client != nil {
		return v.Client
	}
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Verify checks token as aws-iam-authenticator does and returns the identity
// STS reports for it.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	if len(token) > MaxTokenLenBytes {
		return nil, FormatError{"token is too large"}
	}
	if !strings.HasPrefix(token, V1Prefix) {
		return nil, FormatError{fmt.Sprintf("token is missing expected %q prefix", V1Prefix)}
	}
	tokenBytes, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, V1Prefix))
	if err != nil {
		return nil, FormatError{err.Error()}
	}
	parsedURL, err := url.Parse(string(tokenBytes))
	if err != nil {
		return nil, FormatError{err.Error()}
	}
	if parsedURL.Scheme != "https" {
		return nil, FormatError{fmt.Sprintf("unexpected scheme %q in pre-signed URL", parsedURL.Scheme)}
	}
	if err := v.verifyHost(parsedURL.Host); err != nil {
		return nil, err
	}
	stsRegion, err := getStsRegion(parsedURL.Host)
	if err != nil {
		return nil, err
	}
	if parsedURL.Path != "/" {
		return nil, FormatError{"unexpected path in pre-signed URL"}
	}
	queryParams, err := url.ParseQuery(parsedURL.RawQuery)
	if err != nil {
		return nil, FormatError{"malformed query parameter"}
	}
	if err := validateDuplicateParameters(queryParams); err != nil {
		return nil, err
	}
	queryParamsLower := make(url.Values)
	for key, values := range queryParams {
		if !parameterWhitelist[strings.ToLower(key)] {
			return nil, FormatError{fmt.Sprintf("non-whitelisted query parameter %q", key)}
		}
		if len(values) != 1 {
			return nil, FormatError{"query parameter with multiple values not supported"}
		}
		queryParamsLower.Set(strings.ToLower(key), values[0])
	}
	if queryParamsLower.Get("action") != "GetCallerIdentity" {
		return nil, FormatError{"unexpected action parameter in pre-signed URL"}
	}
	if !hasSignedClusterIDHeader(queryParamsLower) {
		return nil, FormatError{fmt.Sprintf("client did not sign the %s header in the pre-signed URL", ClusterIDHeader)}
	}
	expires, err := strconv.Atoi(queryParamsLower.Get("x-amz-expires"))
	if err != nil || expires < 0 || expires > 900 {
		return nil, FormatError{fmt.Sprintf("invalid X-Amz-Expires parameter in pre-signed URL: %d", expires)}
	}
	date := queryParamsLower.Get("x-amz-date")
	if date == "" {
		return nil, FormatError{"X-Amz-Date parameter must be present in pre-signed URL"}
	}
	accessKeyID := strings.Split(queryParamsLower.Get("x-amz-credential"), "/")[0]
	dateParam, err := time.Parse(dateHeaderFormat, date)
	if err != nil {
		return nil, FormatError{fmt.Sprintf("error parsing X-Amz-Date parameter %s into format %s: %s", date, dateHeaderFormat, err.Error())}
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	if now().After(dateParam.Add(PresignedURLExpiration)) {
		return nil, FormatError{fmt.Sprintf("X-Amz-Date parameter is expired (%.f minute expiration) %s", PresignedURLExpiration.Minutes(), dateParam)}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, parsedURL.String(), nil)
	if err != nil {
		return nil, FormatError{fmt.Sprintf("error creating HTTP request: %s", err.Error())}
	}
	req.Header.Set(ClusterIDHeader, v.ClusterID)
	req.Header.Set("accept", "application/json")
	response, err := v.client().Do(req)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			// The authenticator avoids printing the URL: it holds credentials.
			return nil, STSError{fmt.Sprintf("error during GET: %v on %s endpoint", urlErr.Err, stsRegion)}
		}
		return nil, STSError{fmt.Sprintf("error during GET: %v on %s endpoint", err, stsRegion)}
	}
	defer func() { _ = response.Body.Close() }()
	responseBody, err := io.ReadAll(response.Body)
	if err != nil {
		return nil, STSError{fmt.Sprintf("error reading HTTP result: %v", err)}
	}
	if response.StatusCode != http.StatusOK {
		return nil, STSError{fmt.Sprintf("error from AWS (expected 200, got %d) on %s endpoint. Body: %s", response.StatusCode, stsRegion, responseBody)}
	}
	var callerIdentity getCallerIdentityWrapper
	if err := json.Unmarshal(responseBody, &callerIdentity); err != nil {
		return nil, STSError{err.Error()}
	}
	return getIdentityFromSTSResponse(&Identity{AccessKeyID: accessKeyID, STSEndpoint: parsedURL.Host}, callerIdentity)
}

type getCallerIdentityWrapper struct {
	GetCallerIdentityResponse struct {
		GetCallerIdentityResult struct {
			Account string `json:"Account"`
			Arn     string `json:"Arn"`
			UserID  string `json:"UserId"`
		} `json:"GetCallerIdentityResult"`
		ResponseMetadata struct {
			RequestID string `json:"RequestId"`
		} `json:"ResponseMetadata"`
	} `json:"GetCallerIdentityResponse"`
}

func getIdentityFromSTSResponse(id *Identity, w getCallerIdentityWrapper) (*Identity, error) {
	result := w.GetCallerIdentityResponse.GetCallerIdentityResult
	id.ARN = result.Arn
	id.AccountID = result.Account
	kind, canonical, err := Canonicalize(id.ARN)
	if err != nil {
		return nil, STSError{err.Error()}
	}
	id.CanonicalARN = canonical
	// UserID is UserID:SessionName for assumed roles; whole for users, the
	// root and federated users.
	if kind == "federated-user" || kind == "user" || kind == "root" {
		id.UserID = result.UserID
		return id, nil
	}
	parts := strings.Split(result.UserID, ":")
	if len(parts) != 2 {
		return nil, STSError{fmt.Sprintf("malformed UserID %q", result.UserID)}
	}
	id.UserID, id.SessionName = parts[0], parts[1]
	return id, nil
}

// Canonicalize mirrors pkg/arn.Canonicalize: it accepts account roots, IAM
// users and roles, assumed roles (turned into their IAM role ARN) and
// federated users, and returns the principal's kind and canonical ARN.
func Canonicalize(a string) (kind, canonical string, err error) {
	parsed, err := awsarn.Parse(a)
	if err != nil {
		return "", "", fmt.Errorf("arn '%s' is invalid: '%v'", a, err)
	}
	if !slices.Contains(partitions, parsed.Partition) {
		return "", "", fmt.Errorf("arn '%s' does not have a recognized partition", a)
	}
	parts := strings.Split(parsed.Resource, "/")
	resource := parts[0]
	switch parsed.Service {
	case "sts":
		switch resource {
		case "federated-user":
			return resource, a, nil
		case "assumed-role":
			if len(parts) < 3 {
				return "", "", fmt.Errorf("assumed-role arn '%s' does not have a role", a)
			}
			role := strings.Join(parts[1:len(parts)-1], "/")
			return resource, fmt.Sprintf("arn:%s:iam::%s:role/%s", parsed.Partition, parsed.AccountID, role), nil
		default:
			return "", "", fmt.Errorf("unrecognized resource %s for service sts", parsed.Resource)
		}
	case "iam":
		switch resource {
		case "role", "user", "root":
			return resource, a, nil
		default:
			return "", "", fmt.Errorf("unrecognized resource %s for service iam", parsed.Resource)
		}
	}
	return "", "", fmt.Errorf("service %s in arn %s is not a valid service for identities", parsed.Service, a)
}

var partitions = []string{"aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f"}

// stsPartitionDomain and stsDualStackPartitionDomain mirror pkg/endpoints.
func stsPartitionDomain(partition string) (string, error) {
	switch partition {
	case "aws", "aws-us-gov":
		return "amazonaws.com", nil
	case "aws-cn":
		return "amazonaws.com.cn", nil
	case "aws-iso":
		return "c2s.ic.gov", nil
	case "aws-iso-b":
		return "sc2s.sgov.gov", nil
	case "aws-iso-e":
		return "cloud.adc-e.uk", nil
	case "aws-iso-f":
		return "csp.hci.ic.gov", nil
	}
	return "", fmt.Errorf("partition %s not valid", partition)
}

func stsDualStackPartitionDomain(partition string) string {
	switch partition {
	case "aws", "aws-us-gov":
		return "api.aws"
	case "aws-cn":
		return "api.amazonwebservices.com.cn"
	}
	return ""
}

var regionRe = regexp.MustCompile(`^[[:alnum:]]([[:alnum:]\-]*[[:alnum:]])?$`)

func (v *Verifier) verifyHost(host string) error {
	v.mu.RLock()
	ok := v.validHosts[host]
	v.mu.RUnlock()
	if ok {
		return nil
	}
	if err := v.verifySTSHostnameFormat(host); err != nil {
		return err
	}
	v.mu.Lock()
	if v.validHosts == nil {
		v.validHosts = map[string]bool{}
	}
	v.validHosts[host] = true
	v.mu.Unlock()
	return nil
}

func (v *Verifier) verifySTSHostnameFormat(host string) error {
	hostRegion, err := getStsRegion(host)
	if err != nil {
		return FormatError{fmt.Sprintf("could not parse region for pre-signed URL %s, %v", host, err)}
	}
	if hostRegion == "global" {
		if v.partition() == "aws" {
			return nil
		}
		return FormatError{fmt.Sprintf("global endpoint unsupported in partition %s", v.partition())}
	}
	if !regionRe.MatchString(hostRegion) {
		return FormatError{fmt.Sprintf("invalid region identifier format provided: %s", hostRegion)}
	}
	resolver := sts.NewDefaultEndpointResolverV2()
	var resolved []string
	for _, fips := range []bool{true, false} {
		for _, dual := range []bool{true, false} {
			ep, err := resolver.ResolveEndpoint(context.Background(), sts.EndpointParameters{
				Region: &hostRegion, UseFIPS: &fips, UseDualStack: &dual,
			})
			if err != nil {
				continue
			}
			resolved = append(resolved, ep.URI.Host)
		}
	}
	if !slices.Contains(resolved, host) {
		// Regions the SDK does not know yet: the hostname the partition
		// would give the verifier's own region.
		if !regionRe.MatchString(v.Region) {
			return FormatError{fmt.Sprintf("unexpected hostname %q in pre-signed URL", host)}
		}
		domain, err := stsPartitionDomain(v.partition())
		if err != nil {
			return FormatError{fmt.Sprintf("unexpected hostname %q in pre-signed URL", host)}
		}
		defaults := []string{"sts." + v.Region + "." + domain}
		if d := stsDualStackPartitionDomain(v.partition()); d != "" {
			defaults = append(defaults, "sts."+v.Region+"."+d)
		}
		if slices.Contains(defaults, host) {
			return nil
		}
		return FormatError{fmt.Sprintf("unexpected hostname %q in pre-signed URL", host)}
	}
	parts := strings.Split(host, ".")
	if len(parts) < 4 {
		return fmt.Errorf("invalid host format, too few labels: %v", host)
	}
	actual := strings.Join(parts[2:], ".")
	expected, err := stsPartitionDomain(v.partition())
	if err != nil {
		return err
	}
	if actual != expected && actual != stsDualStackPartitionDomain(v.partition()) {
		return FormatError{fmt.Sprintf("partition {%s} does not support hostname %s", v.partition(), host)}
	}
	return nil
}

func getStsRegion(host string) (string, error) {
	if host == "" {
		return "", fmt.Errorf("host is empty")
	}
	parts := strings.Split(host, ".")
	if len(parts) < 3 {
		return "", fmt.Errorf("invalid host format: %v", host)
	}
	if host == "sts.amazonaws.com" {
		return "global", nil
	}
	return parts[1], nil
}

func validateDuplicateParameters(q url.Values) error {
	seen := map[string]bool{}
	for key := range q {
		if seen[strings.ToLower(key)] {
			return FormatError{fmt.Sprintf("duplicate query parameter found: %q", key)}
		}
		seen[strings.ToLower(key)] = true
	}
	return nil
}

func hasSignedClusterIDHeader(paramsLower url.Values) bool {
	for _, hdr := range strings.Split(paramsLower.Get("x-amz-signedheaders"), ";") {
		if strings.EqualFold(hdr, ClusterIDHeader) {
			return true
		}
	}
	return false
}
