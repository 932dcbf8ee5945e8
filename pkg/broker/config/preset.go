package config

import "strings"

// Preset describes how a CI system's ID tokens name a run and its identity.
type Preset struct {
	Name string
	// RunClaims identify one run (a second token of the same run has the same values).
	RunClaims []string
	// Identity maps api.Identity fields to claims or "{a}/{b}" templates.
	Identity map[string]string
	// TenantClaims: on a multi-tenant issuer (github.com, gitlab.com) every
	// trust rule must pin one of these without a leading wildcard, or any
	// repository in the world would match.
	TenantClaims []string
	// ForbiddenMatch are claims rules must not match on (GitHub's sub is
	// built from mutable names and user-chosen parts).
	ForbiddenMatch []string
}

// Identity field names usable in identityClaims.
var identityFields = []string{"repository", "runID", "runAttempt", "ref", "workflow", "environment", "job"}

// Presets by name.
func Presets() map[string]Preset {
	return map[string]Preset{
		"github": {
			Name:      "github",
			RunClaims: []string{"repository", "run_id", "run_attempt"},
			Identity: map[string]string{
				"repository": "repository", "runID": "run_id", "runAttempt": "run_attempt", "ref": "ref",
				"workflow": "workflow", "environment": "environment", "job": "job_workflow_ref",
			},
			TenantClaims:   []string{"repository", "repository_id", "repository_owner", "repository_owner_id"},
			ForbiddenMatch: []string{"sub"},
		},
		"gitlab": {
			Name:      "gitlab",
			RunClaims: []string{"project_path", "pipeline_id"},
			Identity: map[string]string{
				"repository": "project_path", "runID": "pipeline_id", "ref": "ref_path",
				"workflow": "ci_config_ref_uri", "environment": "environment", "job": "job_id",
			},
			TenantClaims: []string{"project_path", "project_id", "namespace_path", "namespace_id"},
		},
		"circleci": {
			Name:      "circleci",
			RunClaims: []string{"oidc.circleci.com/project-id", "oidc.circleci.com/workflow-id"},
			Identity: map[string]string{
				"repository": "oidc.circleci.com/project-id", "runID": "oidc.circleci.com/workflow-id",
				"ref": "oidc.circleci.com/vcs-ref", "job": "oidc.circleci.com/job-id",
			},
		},
		"buildkite": {
			Name:      "buildkite",
			RunClaims: []string{"organization_slug", "pipeline_slug", "build_number"},
			Identity: map[string]string{
				"repository": "{organization_slug}/{pipeline_slug}", "runID": "build_number",
				"ref": "build_branch", "job": "job_id", "workflow": "step_key",
			},
		},
		"generic": {
			Name:      "generic",
			RunClaims: []string{"jti"},
			Identity:  map[string]string{"repository": "sub", "runID": "jti"},
		},
	}
}

// PresetFor returns the issuer's preset with its overrides applied.
func (i Issuer) PresetFor() Preset {
	name := i.Preset
	if name == "" {
		name = GuessPreset(i.Issuer)
	}
	p, ok := Presets()[name]
	if !ok {
		p = Presets()["generic"]
	}
	if len(i.RunClaims) > 0 {
		p.RunClaims = i.RunClaims
	}
	if len(i.IdentityClaims) > 0 {
		m := make(map[string]string, len(p.Identity)+len(i.IdentityClaims))
		for k, v := range p.Identity {
			m[k] = v
		}
		for k, v := range i.IdentityClaims {
			m[k] = v
		}
		p.Identity = m
	}
	return p
}

// GuessPreset picks a preset from well-known issuer URLs.
func GuessPreset(issuer string) string {
	switch {
	case issuer == "https://token.actions.githubusercontent.com",
		strings.HasPrefix(issuer, "https://token.actions.githubusercontent.com/"):
		return "github"
	case issuer == "https://gitlab.com":
		return "gitlab"
	case strings.HasPrefix(issuer, "https://oidc.circleci.com/org/"):
		return "circleci"
	case issuer == "https://agent.buildkite.com":
		return "buildkite"
	}
	return "generic"
}
