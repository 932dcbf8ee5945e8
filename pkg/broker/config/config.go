// Package config loads and checks agent-broker's configuration file (apiVersion
// kubectl-agent.io/v1alpha1, kind BrokerConfig). Parsing is strict: unknown
// fields, bad globs, undefined clusters and unsafe trust rules are refused when
// the broker starts, with the file, line and field of the problem, because a
// broker that half-understands its trust rules grants the wrong things.
package config

import (
	"encoding/json"
	"net/url"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// APIVersion and Kind of the file.
const (
	APIVersion = "kubectl-agent.io/v1alpha1"
	Kind       = "BrokerConfig"
)

// Defaults.
const (
	DefaultListen            = "127.0.0.1:8443"
	DefaultStoreURL          = "sqlite:///var/lib/agent-broker/broker.db"
	DefaultTTL               = time.Hour
	MaxTTL                   = 24 * time.Hour
	MinTTL                   = time.Minute
	DefaultReconcileInterval = time.Minute
	DefaultKeyRotation       = 30 * 24 * time.Hour
	DefaultNamespace         = "agent-broker"
)

// Config is the broker configuration.
type Config struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// PublicURL is the broker's URL as clients reach it: the issuer and
	// audience of session tokens and the base of DPoP htu checks.
	PublicURL string `json:"publicURL"`
	Listen    string `json:"listen,omitempty"`
	TLS       *TLS   `json:"tls,omitempty"`
	// AllowInsecureHTTP permits plain HTTP on a non-loopback listen address
	// (behind a TLS-terminating proxy). Without it, plain HTTP is loopback only.
	AllowInsecureHTTP bool          `json:"allowInsecureHTTP,omitempty"`
	Store             Store         `json:"store"`
	Keys              Keys          `json:"keys,omitempty"`
	ReconcileInterval *api.Duration `json:"reconcileInterval,omitempty"`
	Issuers           []Issuer      `json:"issuers"`
	Clusters          []Cluster     `json:"clusters"`
	TrustRules        []TrustRule   `json:"trustRules"`

	// Dir is the directory of the config file; relative paths resolve from it.
	Dir string `json:"-"`
}

// TLS names the serving certificate.
type TLS struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
}

// Store selects the database.
type Store struct {
	// URL is sqlite:///path/to/file.db or postgres://user@host/db?sslmode=...
	URL string `json:"url"`
}

// Keys configures the broker's signing keys.
type Keys struct {
	// RotationPeriod is how long one signing key signs before a new one is made.
	RotationPeriod *api.Duration `json:"rotationPeriod,omitempty"`
}

// Issuer is a trusted OIDC issuer.
type Issuer struct {
	Issuer string `json:"issuer"`
	// Audiences are the `aud` values accepted; default [publicURL].
	Audiences []string `json:"audiences,omitempty"`
	// JWKSURL skips discovery and fetches keys from here (GHES-style setups).
	JWKSURL string `json:"jwksURL,omitempty"`
	// Preset names the CI system: github, gitlab, circleci, buildkite or
	// generic. It picks the identity claims and the run claims. Default from
	// the issuer URL, else generic.
	Preset string `json:"preset,omitempty"`
	// RunClaims are the claims that together identify one run; all must be
	// present. Default from the preset.
	RunClaims []string `json:"runClaims,omitempty"`
	// IdentityClaims maps identity fields (repository, runID, runAttempt, ref,
	// workflow, environment, job) to a claim name or a "{a}/{b}" template.
	IdentityClaims map[string]string `json:"identityClaims,omitempty"`
	// SigningAlgs restricts token algorithms; default RS256 and ES256.
	SigningAlgs []string `json:"signingAlgs,omitempty"`
}

// Cluster is a cluster the broker issues credentials for.
type Cluster struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	CAFile string `json:"caFile,omitempty"`
	CAData []byte `json:"caData,omitempty"`
	// Backend says how credentials are made.
	Backend Backend `json:"backend"`
}

// Backend selects and configures a credential backend.
type Backend struct {
	Type       string             `json:"type"` // kubernetes | eks
	Kubernetes *KubernetesBackend `json:"kubernetes,omitempty"`
	// EKS is passed to the eks backend as is; it checks its own fields.
	EKS json.RawMessage `json:"eks,omitempty"`
}

// KubernetesBackend is the JIT ServiceAccount backend.
type KubernetesBackend struct {
	// Kubeconfig is the broker's own credential for the cluster; empty means
	// in-cluster configuration.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	Context    string `json:"context,omitempty"`
	// Namespace holds the per-session ServiceAccounts.
	Namespace string `json:"namespace,omitempty"`
}

// TrustRule maps verified claims to a grant.
type TrustRule struct {
	Name   string `json:"name"`
	Issuer string `json:"issuer"`
	// Match maps claim names to globs (path.Match syntax); a list means any of
	// them. Every listed claim must be present and match.
	Match   map[string]Patterns `json:"match"`
	Cluster string              `json:"cluster"`
	TTL     *api.Duration       `json:"ttl,omitempty"`
	Grant   Grant               `json:"grant"`
	// Policy is an inline policy document; PolicyFile a path to one.
	Policy     string `json:"policy,omitempty"`
	PolicyFile string `json:"policyFile,omitempty"`
	// Approvals is reserved for approval settings (reviewers, timeout).
	Approvals json.RawMessage `json:"approvals,omitempty"`
}

// Grant is what a rule gives: RBAC rules in namespaces, cluster-wide rules,
// or an IAM role (eks).
type Grant struct {
	Namespaces   []string         `json:"namespaces,omitempty"`
	Rules        []api.PolicyRule `json:"rules,omitempty"`
	ClusterRules []api.PolicyRule `json:"clusterRules,omitempty"`
	IAMRole      string           `json:"iamRole,omitempty"`
}

// Patterns is one glob or a list of globs.
type Patterns []string

// UnmarshalJSON accepts "glob" or ["glob", ...].
func (p *Patterns) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*p = Patterns{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return &api.Error{Code: "invalid", Description: "a match value must be a string or a list of strings"}
	}
	*p = many
	return nil
}

// API converts the grant to the wire form.
func (g Grant) API(rule string, ttl time.Duration) api.Grant {
	out := api.Grant{Rule: rule, IAMRole: g.IAMRole, TTL: api.Duration{Duration: ttl}}
	if len(g.ClusterRules) > 0 {
		out.Rules = g.ClusterRules
	} else {
		out.Namespaces = g.Namespaces
		out.Rules = g.Rules
	}
	return out
}

// RuleTTL is the rule's TTL or the default.
func (r TrustRule) RuleTTL() time.Duration {
	if r.TTL == nil || r.TTL.Duration == 0 {
		return DefaultTTL
	}
	return r.TTL.Duration
}

// ReconcileEvery is the reconcile interval or the default.
func (c *Config) ReconcileEvery() time.Duration {
	if c.ReconcileInterval == nil || c.ReconcileInterval.Duration <= 0 {
		return DefaultReconcileInterval
	}
	return c.ReconcileInterval.Duration
}

// KeyRotation is the signing key rotation period or the default.
func (c *Config) KeyRotation() time.Duration {
	if c.Keys.RotationPeriod == nil || c.Keys.RotationPeriod.Duration <= 0 {
		return DefaultKeyRotation
	}
	return c.Keys.RotationPeriod.Duration
}

// ClusterByName finds a cluster.
func (c *Config) ClusterByName(name string) (*Cluster, bool) {
	for i := range c.Clusters {
		if c.Clusters[i].Name == name {
			return &c.Clusters[i], true
		}
	}
	return nil, false
}

// IssuerByURL finds an issuer.
func (c *Config) IssuerByURL(iss string) (*Issuer, bool) {
	for i := range c.Issuers {
		if c.Issuers[i].Issuer == iss {
			return &c.Issuers[i], true
		}
	}
	return nil, false
}

// PublicHost is the host of PublicURL.
func (c *Config) PublicHost() string {
	u, err := url.Parse(c.PublicURL)
	if err != nil {
		return ""
	}
	return u.Host
}
