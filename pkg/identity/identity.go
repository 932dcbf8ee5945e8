// Package identity gets a pipeline run's OIDC token from the CI system it runs
// in. Every source is an oauth2.TokenSource that fetches a fresh token on each
// call to Token: callers ask only when they need a new exchange (a session
// cache hit asks for nothing), and CI tokens are short-lived, so keeping one
// here would only hand out stale tokens.
//
// Specs (the --token-source flag):
//
//	auto            detect GitHub Actions, GitLab CI, CircleCI or Buildkite
//	github          Actions ID token: ACTIONS_ID_TOKEN_REQUEST_URL + _TOKEN, &audience=
//	gitlab[:VAR]    an id_tokens variable; default KUBECTL_AGENT_ID_TOKEN, then GITLAB_OIDC_TOKEN
//	circleci        CIRCLE_OIDC_TOKEN_V2 (then CIRCLE_OIDC_TOKEN)
//	buildkite       buildkite-agent oidc request-token --audience AUD
//	env:VAR         the value of VAR
//	file:PATH       the contents of PATH, re-read each time (projected tokens rotate)
//	command:CMD     stdout of sh -c CMD, trimmed, with a timeout
package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Default variable names for GitLab's id_tokens. GitLab lets the pipeline
// author name the variable, so there is no standard one: we document
// KUBECTL_AGENT_ID_TOKEN (ours, unambiguous) and accept GITLAB_OIDC_TOKEN,
// the name GitLab's own documentation examples use.
var gitlabDefaultVars = []string{"KUBECTL_AGENT_ID_TOKEN", "GITLAB_OIDC_TOKEN"}

// CommandTimeout bounds command: and buildkite sources, so a hung helper does
// not hang every kubectl call.
const CommandTimeout = 30 * time.Second

// HTTPTimeout bounds one GitHub token request.
const HTTPTimeout = 20 * time.Second

// maxTokenSize bounds what we accept as a token; real ones are a few KiB.
const maxTokenSize = 64 << 10

// New returns the token source for spec. audience is what the token should be
// issued for (GitHub and Buildkite request it; others are configured in the
// pipeline definition). env reads environment variables (os.Getenv in
// production; tests pass their own). New does no IO: the first fetch happens
// on Token.
func New(spec, audience string, env func(string) string) (oauth2.TokenSource, error) {
	if env == nil {
		env = os.Getenv
	}
	if spec == "" {
		spec = "auto"
	}
	kind, arg, hasArg := strings.Cut(spec, ":")
	switch kind {
	case "auto":
		return detect(audience, env)
	case "github":
		return newGitHub(audience, env)
	case "gitlab":
		if hasArg {
			if arg == "" {
				return nil, errors.New(`token source "gitlab:" names no variable; use gitlab:VAR with the variable of your id_tokens entry`)
			}
			return envSource{name: "gitlab:" + arg, vars: []string{arg}, env: env, hint: gitlabHint(arg, audience)}, nil
		}
		return envSource{name: "gitlab", vars: gitlabDefaultVars, env: env, hint: gitlabHint("KUBECTL_AGENT_ID_TOKEN", audience)}, nil
	case "circleci":
		return envSource{name: "circleci", vars: []string{"CIRCLE_OIDC_TOKEN_V2", "CIRCLE_OIDC_TOKEN"}, env: env,
			hint: "CircleCI sets CIRCLE_OIDC_TOKEN_V2 in jobs that use a context; add a context to the job"}, nil
	case "buildkite":
		args := []string{"oidc", "request-token"}
		if audience != "" {
			args = append(args, "--audience", audience)
		}
		return commandSource{name: "buildkite", argv: append([]string{"buildkite-agent"}, args...)}, nil
	case "env":
		if arg == "" {
			return nil, errors.New(`token source "env:" names no variable; use env:VAR`)
		}
		return envSource{name: spec, vars: []string{arg}, env: env, hint: "set " + arg + " to the pipeline's OIDC token"}, nil
	case "file":
		if arg == "" {
			return nil, errors.New(`token source "file:" names no file; use file:PATH`)
		}
		return fileSource{path: arg}, nil
	case "command":
		if strings.TrimSpace(arg) == "" {
			return nil, errors.New(`token source "command:" names no command; use command:CMD`)
		}
		return commandSource{name: "command", argv: []string{"sh", "-c", arg}}, nil
	}
	return nil, fmt.Errorf("unknown token source %q: use auto, github, gitlab[:VAR], circleci, buildkite, env:VAR, file:PATH or command:CMD", spec)
}

func gitlabHint(v, audience string) string {
	aud := audience
	if aud == "" {
		aud = "<broker audience>"
	}
	return fmt.Sprintf("add to the job: id_tokens: {%s: {aud: %s}} (or use --token-source gitlab:VAR)", v, aud)
}

// detect picks the source for the CI system found in env.
func detect(audience string, env func(string) string) (oauth2.TokenSource, error) {
	switch {
	case env("GITHUB_ACTIONS") == "true":
		return newGitHub(audience, env)
	case env("GITLAB_CI") == "true":
		return New("gitlab", audience, env)
	case env("CIRCLECI") == "true":
		return New("circleci", audience, env)
	case env("BUILDKITE") == "true":
		return New("buildkite", audience, env)
	}
	return nil, errors.New("no pipeline token source found: looked for GITHUB_ACTIONS, GITLAB_CI, CIRCLECI and BUILDKITE; " +
		"set --token-source (or KUBECTL_AGENT_TOKEN_SOURCE) to env:VAR, file:PATH or command:CMD outside those CI systems")
}

func newGitHub(audience string, env func(string) string) (oauth2.TokenSource, error) {
	u, tok := env("ACTIONS_ID_TOKEN_REQUEST_URL"), env("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
	if u == "" || tok == "" {
		return nil, errors.New("GitHub Actions gives no OIDC token to this job (ACTIONS_ID_TOKEN_REQUEST_URL is not set): " +
			"add `permissions: id-token: write` to the workflow or job")
	}
	return githubSource{url: u, bearer: tok, audience: audience, client: &http.Client{Timeout: HTTPTimeout}}, nil
}

// githubSource speaks the Actions ID token protocol.
type githubSource struct {
	url, bearer, audience string
	client                *http.Client
}

func (s githubSource) Token() (*oauth2.Token, error) {
	u := s.url
	if s.audience != "" {
		sep := "&"
		if !strings.Contains(u, "?") {
			sep = "?"
		}
		u += sep + "audience=" + url.QueryEscape(s.audience)
	}
	var lastErr error
	// Two tries: the token service has brief hiccups, and a failed fetch
	// fails the user's kubectl call.
	for attempt := range 2 {
		if attempt > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		tok, retry, err := s.fetch(u)
		if err == nil {
			return tok, nil
		}
		lastErr = err
		if !retry {
			break
		}
	}
	return nil, lastErr
}

func (s githubSource) fetch(u string) (*oauth2.Token, bool, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		return nil, false, fmt.Errorf("getting the GitHub Actions OIDC token: bad ACTIONS_ID_TOKEN_REQUEST_URL: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+s.bearer)
	req.Header.Set("Accept", "application/json; api-version=2.0")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, true, fmt.Errorf("getting the GitHub Actions OIDC token: %w", redactURL(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenSize))
	if err != nil {
		return nil, true, fmt.Errorf("getting the GitHub Actions OIDC token: reading the response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode >= 500, fmt.Errorf("getting the GitHub Actions OIDC token: HTTP %d (check `permissions: id-token: write`)", resp.StatusCode)
	}
	var v struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Value == "" {
		return nil, false, errors.New("getting the GitHub Actions OIDC token: the response has no \"value\"")
	}
	return token(v.Value), false, nil
}

// redactURL drops the URL from a client error: the Actions token URL is not
// secret, but it is long and says nothing the user can act on.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// envSource reads the first non-empty variable of vars.
type envSource struct {
	name string
	vars []string
	env  func(string) string
	hint string
}

func (s envSource) Token() (*oauth2.Token, error) {
	for _, v := range s.vars {
		if t := strings.TrimSpace(s.env(v)); t != "" {
			return token(t), nil
		}
	}
	return nil, fmt.Errorf("token source %s: %s is not set; %s", s.name, strings.Join(s.vars, " or "), s.hint)
}

// fileSource re-reads the file each time, since projected and rotated
// tokens change under the same path.
type fileSource struct{ path string }

func (s fileSource) Token() (*oauth2.Token, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("token source file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenSize+1))
	if err != nil {
		return nil, fmt.Errorf("token source file: reading %s: %w", s.path, err)
	}
	if len(b) > maxTokenSize {
		return nil, fmt.Errorf("token source file: %s is larger than %d bytes; is it a token?", s.path, maxTokenSize)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return nil, fmt.Errorf("token source file: %s is empty", s.path)
	}
	return token(t), nil
}

// commandSource runs a helper and takes its trimmed stdout as the token.
type commandSource struct {
	name string
	argv []string
}

func (s commandSource) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.argv[0], s.argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// WaitDelay: a helper that forks a child holding stdout open must not
	// outlive the timeout.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("token source %s: %s did not finish within %s", s.name, s.argv[0], CommandTimeout)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if msg != "" {
			return nil, fmt.Errorf("token source %s: %s: %w: %s", s.name, s.argv[0], err, msg)
		}
		return nil, fmt.Errorf("token source %s: %s: %w", s.name, s.argv[0], err)
	}
	if stdout.Len() > maxTokenSize {
		return nil, fmt.Errorf("token source %s: the output is larger than %d bytes; is it a token?", s.name, maxTokenSize)
	}
	t := strings.TrimSpace(stdout.String())
	if t == "" {
		return nil, fmt.Errorf("token source %s: %s printed nothing", s.name, s.argv[0])
	}
	return token(t), nil
}

// token wraps a raw JWT; Expiry comes from its exp claim when it has one, so
// oauth2 helpers can tell a stale token.
func token(raw string) *oauth2.Token {
	t := &oauth2.Token{AccessToken: raw, TokenType: "Bearer"}
	if c, err := decodeClaims(raw); err == nil && c.Exp > 0 {
		t.Expiry = time.Unix(int64(c.Exp), 0)
	}
	return t
}
