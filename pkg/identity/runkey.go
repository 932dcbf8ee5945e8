package identity

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// Run is a pipeline run's identity as its token claims it. It is read
// without verifying the token: it only names cache entries on the runner
// that holds the token; the broker verifies before it trusts any of it.
type Run struct {
	Issuer     string `json:"issuer"`
	Subject    string `json:"subject,omitempty"`
	Repository string `json:"repository,omitempty"`
	RunID      string `json:"runID,omitempty"`
	Attempt    string `json:"attempt,omitempty"`
}

// Complete reports whether the run is identified beyond its issuer: without
// a run id, two runs of one repository look the same, so a cache keyed on
// the claims alone could hand one run the other's session.
func (r Run) Complete() bool { return r.Issuer != "" && r.RunID != "" }

type rawClaims struct {
	Iss string  `json:"iss"`
	Sub string  `json:"sub"`
	Exp float64 `json:"exp"`
	// GitHub Actions
	Repository string `json:"repository"`
	RunID      any    `json:"run_id"`
	RunAttempt any    `json:"run_attempt"`
	// GitLab CI
	ProjectPath string `json:"project_path"`
	PipelineID  any    `json:"pipeline_id"`
	// Buildkite
	OrgSlug      string `json:"organization_slug"`
	PipelineSlug string `json:"pipeline_slug"`
	BuildNumber  any    `json:"build_number"`
	// CircleCI
	CircleProject  string `json:"oidc.circleci.com/project-id"`
	CircleWorkflow string `json:"oidc.circleci.com/workflow-id"`
}

// RunKey reads the issuer, repository, run id and attempt from a JWT's
// payload (GitHub, GitLab, Buildkite and CircleCI claim names). It decodes
// only the payload: no signature check, no network.
func RunKey(token string) (Run, error) {
	c, err := decodeClaims(token)
	if err != nil {
		return Run{}, err
	}
	r := Run{Issuer: c.Iss, Subject: c.Sub}
	switch {
	case c.RunID != nil: // GitHub Actions
		r.Repository, r.RunID, r.Attempt = c.Repository, str(c.RunID), str(c.RunAttempt)
	case c.PipelineID != nil: // GitLab CI: one session per pipeline
		r.Repository, r.RunID = c.ProjectPath, str(c.PipelineID)
	case c.BuildNumber != nil: // Buildkite
		r.Repository, r.RunID = c.OrgSlug+"/"+c.PipelineSlug, str(c.BuildNumber)
	case c.CircleWorkflow != "":
		r.Repository, r.RunID = c.CircleProject, c.CircleWorkflow
	default:
		r.Repository = c.Repository
	}
	return r, nil
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case nil:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func decodeClaims(token string) (*rawClaims, error) {
	_, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, errors.New("the pipeline token is not a JWT (no '.')")
	}
	payload, _, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, errors.New("the pipeline token is not a JWT (one '.')")
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(payload, "="))
	if err != nil {
		return nil, errors.New("the pipeline token is not a JWT (payload is not base64url)")
	}
	var c rawClaims
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, errors.New("the pipeline token is not a JWT (payload is not a JSON object)")
	}
	if c.Iss == "" {
		return nil, errors.New("the pipeline token has no iss claim")
	}
	return &c, nil
}

// EnvRun derives the run's identity from the CI system's environment, when
// it says enough: it names a session cache index entry that a cache hit can
// find without fetching a token (a network call on GitHub). Empty when the
// environment does not identify a run.
func EnvRun(env func(string) string) map[string]string {
	pick := func(kind string, names ...string) map[string]string {
		m := map[string]string{"ci": kind}
		for _, n := range names {
			v := env(n)
			if v == "" {
				return nil
			}
			m[n] = v
		}
		return m
	}
	switch {
	case env("GITHUB_ACTIONS") == "true":
		return pick("github", "GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT")
	case env("GITLAB_CI") == "true":
		return pick("gitlab", "CI_SERVER_URL", "CI_PROJECT_PATH", "CI_PIPELINE_ID")
	case env("CIRCLECI") == "true":
		return pick("circleci", "CIRCLE_PROJECT_REPONAME", "CIRCLE_WORKFLOW_ID")
	case env("BUILDKITE") == "true":
		return pick("buildkite", "BUILDKITE_ORGANIZATION_SLUG", "BUILDKITE_PIPELINE_SLUG", "BUILDKITE_BUILD_ID")
	}
	return nil
}
