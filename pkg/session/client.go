// Package session is the client side of the broker protocol (token exchange
// and DPoP-bound session calls) and the per-run session cache that lets many
// short-lived processes of one run (every kubectl call runs the credential
// plugin) share one session.
package session

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/dpop"
)

// Defaults of a Client.
const (
	DefaultTimeout  = 60 * time.Second // a whole call, retries included
	DefaultAttempts = 4
	maxBody         = 8 << 20
)

// Client talks to one broker. A Client with a session (WithSession) signs a
// DPoP proof for each session call.
type Client struct {
	base *url.URL
	// HTTP is the transport; nil means a client with sane timeouts.
	HTTP *http.Client
	// Timeout bounds one call including its retries.
	Timeout time.Duration
	// Attempts is how many times a call is tried on network errors and 5xx.
	Attempts int
	// Backoff is the first retry's delay; it doubles, with jitter.
	Backoff time.Duration

	token string
	key   ed25519.PrivateKey
	now   func() time.Time
}

// NewClient returns a client for the broker at brokerURL (https, or http on
// loopback for tests and local brokers).
func NewClient(brokerURL string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(brokerURL, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("broker URL %q is not an http(s) URL; set --broker (or KUBECTL_AGENT_BROKER) to e.g. https://broker.example.com", brokerURL)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("broker URL %q uses plain http to a host that is not loopback; use https", brokerURL)
	}
	u.RawQuery, u.Fragment = "", ""
	return &Client{
		base:     u,
		HTTP:     &http.Client{Transport: defaultTransport()},
		Timeout:  DefaultTimeout,
		Attempts: DefaultAttempts,
		Backoff:  200 * time.Millisecond,
		now:      time.Now,
	}, nil
}

func defaultTransport() http.RoundTripper {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 45 * time.Second, // approvals long-poll up to 30 s
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Broker is the broker's base URL.
func (c *Client) Broker() string { return c.base.String() }

// WithSession returns a copy of c that makes session calls with the session
// token and its DPoP key.
func (c *Client) WithSession(sessionToken string, key ed25519.PrivateKey) *Client {
	cp := *c
	cp.token, cp.key = sessionToken, key
	return &cp
}

// Error is a failed broker call: the HTTP status and the RFC 6749 body.
type Error struct {
	Op     string // what was being done, e.g. "exchanging the pipeline token"
	Status int
	Body   *api.Error
}

func (e *Error) Error() string {
	msg := e.Op + ": the broker answered HTTP " + fmt.Sprint(e.Status)
	if e.Body != nil && e.Body.Code != "" {
		msg = e.Op + ": " + e.Body.Error()
	}
	if h := e.hint(); h != "" {
		msg += " (" + h + ")"
	}
	return msg
}

func (e *Error) Unwrap() error {
	if e.Body == nil {
		return nil
	}
	return e.Body
}

// hint says what to do, for codes whose description may not.
func (e *Error) hint() string {
	code := ""
	if e.Body != nil {
		code = e.Body.Code
	}
	switch {
	case code == "invalid_token" || e.Status == http.StatusUnauthorized:
		return "the session has ended or expired; run `kubectl agent logout` and try again"
	case code == "invalid_target":
		return "check --cluster against `kubectl agent kubeconfig` or the broker's cluster list"
	case code == "invalid_grant" && (e.Body.Description == ""):
		return "the broker's trust rules do not accept this run's token"
	case e.Status == http.StatusNotFound && code == "":
		return "is --broker the agent-broker's URL?"
	}
	return ""
}

// SessionGone reports whether err says the session is no longer usable
// (ended, expired, unknown), so a cached entry must be dropped.
func SessionGone(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusNotFound || e.Status == http.StatusGone {
		return true
	}
	return e.Body != nil && e.Body.Code == "invalid_token"
}

// Exchange trades the pipeline's OIDC token for a session (RFC 8693),
// binding it to sessionKey's public half.
func (c *Client) Exchange(ctx context.Context, subjectToken, cluster string, sessionKey ed25519.PrivateKey) (*api.TokenResponse, error) {
	form := url.Values{
		"grant_type":         {api.GrantTypeTokenExchange},
		"subject_token":      {subjectToken},
		"subject_token_type": {api.TokenTypeIDToken},
		"audience":           {cluster},
		api.FormSessionKey:   {base64.RawURLEncoding.EncodeToString(sessionKey.Public().(ed25519.PublicKey))},
	}
	var out api.TokenResponse
	err := c.call(ctx, "exchanging the pipeline token", http.MethodPost, api.PathToken, "application/x-www-form-urlencoded", []byte(form.Encode()), false, &out)
	if err != nil {
		return nil, err
	}
	if out.AccessToken == "" || out.Session.ID == "" {
		return nil, errors.New("exchanging the pipeline token: the broker's answer has no session token or session id")
	}
	if !strings.EqualFold(out.TokenType, api.TokenTypeDPoP) {
		return nil, fmt.Errorf("exchanging the pipeline token: the broker issued a %q token, expected DPoP", out.TokenType)
	}
	return &out, nil
}

// Clusters lists the broker's clusters (no session needed).
func (c *Client) Clusters(ctx context.Context) (*api.ClusterList, error) {
	var out api.ClusterList
	if err := c.call(ctx, "listing the broker's clusters", http.MethodGet, api.PathClusters, "", nil, false, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func sessionPath(p, id string) string {
	return strings.Replace(p, "{id}", url.PathEscape(id), 1)
}

// Get returns the session as the broker knows it.
func (c *Client) Get(ctx context.Context, sessionID string) (*api.Session, error) {
	var out api.Session
	if err := c.Do(ctx, http.MethodGet, sessionPath(api.PathSession, sessionID), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Credential asks for a fresh cluster credential.
func (c *Client) Credential(ctx context.Context, sessionID string) (*api.Credential, error) {
	var out api.Credential
	if err := c.Do(ctx, http.MethodPost, sessionPath(api.PathSessionCredential, sessionID), nil, &out); err != nil {
		return nil, err
	}
	if out.Token == "" {
		return nil, errors.New("refreshing the cluster credential: the broker's answer has no token")
	}
	return &out, nil
}

// End ends the session; the broker revokes its cluster credentials.
func (c *Client) End(ctx context.Context, sessionID string) error {
	return c.Do(ctx, http.MethodDelete, sessionPath(api.PathSession, sessionID), nil, nil)
}

// UploadTranscript appends a chunk of transcript lines.
func (c *Client) UploadTranscript(ctx context.Context, sessionID string, chunk api.TranscriptChunk) (api.TranscriptAck, error) {
	var out api.TranscriptAck
	err := c.Do(ctx, http.MethodPost, sessionPath(api.PathSessionTranscript, sessionID), chunk, &out)
	return out, err
}

// Do makes a session call: body (when not nil) is sent as JSON, a 2xx answer
// is decoded into out (when not nil). path may carry a query.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	if c.token == "" || c.key == nil {
		return errors.New("no session: exchange a pipeline token first")
	}
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return fmt.Errorf("encoding the request to %s: %w", path, err)
		}
	}
	return c.call(ctx, opName(method, path), method, path, "application/json", b, true, out)
}

func opName(method, path string) string {
	switch {
	case strings.HasSuffix(path, "/credential"):
		return "refreshing the cluster credential"
	case strings.Contains(path, "/transcript"):
		return "uploading the transcript"
	case strings.HasPrefix(path, "/v1/sessions/") && method == http.MethodDelete:
		return "ending the session"
	case strings.HasPrefix(path, "/v1/sessions/"):
		return "reading the session"
	}
	return method + " " + path
}

// call does one broker call with retries on network errors and 5xx; 4xx
// answers are final.
func (c *Client) call(ctx context.Context, op, method, path, contentType string, body []byte, session bool, out any) error {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	u, err := c.base.Parse(c.base.Path + path)
	if err != nil {
		return fmt.Errorf("%s: bad path %q: %w", op, path, err)
	}
	attempts := max(c.Attempts, 1)
	delay := c.Backoff
	var lastErr error
	for i := range attempts {
		if i > 0 {
			// Full jitter: many runners retrying at once should not stampede.
			d := delay/2 + rand.N(delay/2+1)
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: %w (last error: %v)", op, ctx.Err(), lastErr)
			case <-time.After(d):
			}
			delay *= 2
		}
		retry, err := c.once(ctx, op, method, u, contentType, body, session, out)
		if err == nil {
			return nil
		}
		lastErr = err
		if !retry || ctx.Err() != nil {
			break
		}
	}
	return lastErr
}

func (c *Client) once(ctx context.Context, op, method string, u *url.URL, contentType string, body []byte, session bool, out any) (retry bool, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if session {
		// A fresh proof per attempt: the broker refuses a replayed jti.
		proof, err := dpop.NewProof(c.key, method, u.String(), c.token, c.now())
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		req.Header.Set("Authorization", api.TokenTypeDPoP+" "+c.token)
		req.Header.Set(dpop.HeaderName, proof)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return true, fmt.Errorf("%s: cannot reach the broker at %s: %w", op, c.base.Host, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return true, fmt.Errorf("%s: reading the broker's answer: %w", op, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Op: op, Status: resp.StatusCode}
		var ae api.Error
		if json.Unmarshal(data, &ae) == nil && ae.Code != "" {
			e.Body = &ae
		}
		return resp.StatusCode >= 500, e
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return false, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return false, fmt.Errorf("%s: the broker's answer is not the expected JSON: %w", op, err)
	}
	return false, nil
}
