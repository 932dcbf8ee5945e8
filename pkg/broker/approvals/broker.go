package approvals

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

// BrokerOptions are what the broker has that approvals need.
type BrokerOptions struct {
	Config *config.Config
	Store  store.Store
	// Keys verifies session tokens (the broker's *keys.Manager).
	Keys SessionVerifier
	Now  func() time.Time
	// Logger gets the approvals log lines (never tokens or cookies).
	Logger *slog.Logger
	// Web is the web sign-in; nil reads it from the environment
	// (WebConfigFromEnv), which may leave it off.
	Web *WebConfig
	// Getenv reads the environment (os.Getenv when nil).
	Getenv func(string) string
}

// FromBroker makes the approvals handler for a broker: trust rules'
// approval settings, reviewer checks with each kubernetes cluster's broker
// credential, DPoP session authentication with the broker's keys.
func FromBroker(ctx context.Context, o BrokerOptions) (*Handler, error) {
	settings, err := ParseSettings(o.Config.TrustRules)
	if err != nil {
		return nil, err
	}
	clusters, err := ClusterConfigs(o.Config)
	if err != nil {
		return nil, err
	}
	kube, err := NewKube(clusters, o.Now)
	if err != nil {
		return nil, err
	}
	web := o.Web
	if web == nil {
		getenv := o.Getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		if web, err = WebConfigFromEnv(getenv); err != nil {
			return nil, err
		}
	}
	return NewHandler(ctx, Config{
		Store: o.Store, Sessions: DPoPSessions(o.Keys, o.Store, o.Config.PublicURL, o.Now), Reviewers: kube,
		Settings: settings, PublicURL: o.Config.PublicURL, Web: web, Now: o.Now, Logger: o.Logger,
	})
}

// ClusterConfigs returns the broker's own credential for each cluster with a
// kubernetes backend: reviewer checks (TokenReview, SubjectAccessReview) run
// with it. EKS clusters are left out: approvals filed for them cannot be
// decided until the broker has a Kubernetes credential there.
func ClusterConfigs(cfg *config.Config) (map[string]*rest.Config, error) {
	out := map[string]*rest.Config{}
	for _, c := range cfg.Clusters {
		if c.Backend.Type != "kubernetes" || c.Backend.Kubernetes == nil {
			continue
		}
		k := c.Backend.Kubernetes
		var (
			rc  *rest.Config
			err error
		)
		if k.Kubeconfig == "" {
			rc, err = rest.InClusterConfig()
		} else {
			rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: k.Kubeconfig}
			rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.Context}).ClientConfig()
		}
		if err != nil {
			return nil, fmt.Errorf("cluster %s: loading the broker's credential for reviewer checks: %w", c.Name, err)
		}
		out[c.Name] = rc
	}
	return out, nil
}

// WebConfigFromEnv reads the web sign-in from the environment (the broker
// configuration file has no place for it yet):
//
//	AGENT_BROKER_OIDC_ISSUER, AGENT_BROKER_OIDC_CLIENT_ID,
//	AGENT_BROKER_OIDC_CLIENT_SECRET (or AGENT_BROKER_OIDC_CLIENT_SECRET_FILE),
//	AGENT_BROKER_OIDC_USERNAME_CLAIM, AGENT_BROKER_OIDC_USERNAME_PREFIX,
//	AGENT_BROKER_OIDC_GROUPS_CLAIM, AGENT_BROKER_OIDC_GROUPS_PREFIX,
//	AGENT_BROKER_OIDC_SCOPES (comma-separated),
//	AGENT_BROKER_COOKIE_SECRET_FILE (32+ bytes; the same for every broker).
//
// Without an issuer it returns nil: the page says sign-in is not configured.
func WebConfigFromEnv(getenv func(string) string) (*WebConfig, error) {
	iss := getenv("AGENT_BROKER_OIDC_ISSUER")
	if iss == "" {
		return nil, nil
	}
	w := &WebConfig{
		Issuer: iss, ClientID: getenv("AGENT_BROKER_OIDC_CLIENT_ID"), ClientSecret: getenv("AGENT_BROKER_OIDC_CLIENT_SECRET"),
		UsernameClaim: getenv("AGENT_BROKER_OIDC_USERNAME_CLAIM"), UsernamePrefix: getenv("AGENT_BROKER_OIDC_USERNAME_PREFIX"),
		GroupsClaim: getenv("AGENT_BROKER_OIDC_GROUPS_CLAIM"), GroupsPrefix: getenv("AGENT_BROKER_OIDC_GROUPS_PREFIX"),
	}
	if s := getenv("AGENT_BROKER_OIDC_SCOPES"); s != "" {
		for _, sc := range strings.Split(s, ",") {
			if sc = strings.TrimSpace(sc); sc != "" {
				w.Scopes = append(w.Scopes, sc)
			}
		}
	}
	if f := getenv("AGENT_BROKER_OIDC_CLIENT_SECRET_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading AGENT_BROKER_OIDC_CLIENT_SECRET_FILE: %w", err)
		}
		w.ClientSecret = strings.TrimSpace(string(b))
	}
	if f := getenv("AGENT_BROKER_COOKIE_SECRET_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading AGENT_BROKER_COOKIE_SECRET_FILE: %w", err)
		}
		w.CookieSecret = b
	}
	if w.ClientID == "" {
		return nil, fmt.Errorf("AGENT_BROKER_OIDC_ISSUER is set but AGENT_BROKER_OIDC_CLIENT_ID is not; set both for the approvals web sign-in")
	}
	return w, nil
}
