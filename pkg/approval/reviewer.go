package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// ReviewerClient is a reviewer's client of the broker's approvals API. It
// authenticates with the reviewer's own Kubernetes bearer token, which the
// broker checks with a TokenReview at the approval's cluster.
type ReviewerClient struct {
	base  *url.URL
	token string
	HTTP  *http.Client
}

// NewReviewerClient makes a reviewer client for the broker at brokerURL
// (https, or http to a loopback address).
func NewReviewerClient(brokerURL, token string) (*ReviewerClient, error) {
	u, err := url.Parse(strings.TrimRight(brokerURL, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("broker URL %q is not an http(s) URL; set --broker (or KUBECTL_AGENT_BROKER) to e.g. https://broker.example.com", brokerURL)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		return nil, fmt.Errorf("broker URL %q uses plain http to a host that is not loopback; use https (your token would travel in clear)", brokerURL)
	}
	if token == "" {
		return nil, errors.New("no reviewer token")
	}
	return &ReviewerClient{base: u, token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Error is a refused reviewer call.
type Error struct {
	Status int
	Body   api.Error
}

func (e *Error) Error() string {
	if e.Body.Description != "" {
		return e.Body.Description
	}
	if e.Body.Code != "" {
		return e.Body.Code
	}
	return fmt.Sprintf("the broker answered HTTP %d", e.Status)
}

func (c *ReviewerClient) do(ctx context.Context, method, p string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+p, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach the broker at %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("reading the broker's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		_ = json.Unmarshal(data, &e.Body)
		return e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("the broker's answer is not the expected JSON: %w", err)
		}
	}
	return nil
}

// List returns the pending approvals the reviewer may read.
func (c *ReviewerClient) List(ctx context.Context) ([]api.Approval, error) {
	var out api.ApprovalList
	if err := c.do(ctx, http.MethodGet, api.PathApprovals, nil, &out); err != nil {
		return nil, fmt.Errorf("listing approvals: %w", err)
	}
	return out.Approvals, nil
}

// Get returns one approval.
func (c *ReviewerClient) Get(ctx context.Context, id string) (*api.Approval, error) {
	var out api.Approval
	if err := c.do(ctx, http.MethodGet, path(api.PathApproval, id), nil, &out); err != nil {
		return nil, fmt.Errorf("reading approval %s: %w", id, err)
	}
	return &out, nil
}

// Decide records the reviewer's verdict (api.VerdictApprove or
// api.VerdictDeny) and returns the approval after it.
func (c *ReviewerClient) Decide(ctx context.Context, id, verdict, reason string) (*api.Approval, error) {
	var out api.Approval
	if err := c.do(ctx, http.MethodPost, path(api.PathApprovalDecision, id), api.DecisionRequest{Verdict: verdict, Reason: reason}, &out); err != nil {
		what := "approving"
		if verdict == api.VerdictDeny {
			what = "denying"
		}
		return nil, fmt.Errorf("%s %s: %w", what, id, err)
	}
	return &out, nil
}

// BearerToken returns the bearer token a kubeconfig's credentials send: a
// token, a token file, or what an exec or auth-provider plugin produces (it
// runs the plugin through client-go's transport). Client-certificate
// credentials have no token; the broker's TokenReview cannot check them.
func BearerToken(cfg *rest.Config) (string, error) {
	if cfg.BearerToken != "" {
		return cfg.BearerToken, nil
	}
	tc, err := cfg.TransportConfig()
	if err != nil {
		return "", fmt.Errorf("reading the kubeconfig credentials: %w", err)
	}
	var got string
	capture := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.Header.Get("Authorization")
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
	})
	rt, err := transport.HTTPWrappersForConfig(tc, capture)
	if err != nil {
		return "", fmt.Errorf("reading the kubeconfig credentials: %w", err)
	}
	host := cfg.Host
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	req, err := http.NewRequest(http.MethodGet, strings.TrimRight(host, "/")+"/version", nil)
	if err != nil {
		return "", fmt.Errorf("reading the kubeconfig credentials: %w", err)
	}
	if resp, err := rt.RoundTrip(req); err != nil {
		return "", fmt.Errorf("getting a token from the kubeconfig's credential plugin: %w", err)
	} else {
		resp.Body.Close()
	}
	scheme, tok, _ := strings.Cut(got, " ")
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		if cfg.CertFile != "" || len(cfg.CertData) > 0 || cfg.ExecProvider != nil {
			return "", errors.New("your kubeconfig authenticates with a client certificate, which the broker cannot check; use a context with a bearer token (OIDC, cloud IAM or a token) to review approvals")
		}
		return "", errors.New("your kubeconfig context has no bearer token to show the broker; use a context that authenticates with a token (OIDC, cloud IAM or a token)")
	}
	return tok, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
