// Package credential renders the client.authentication.k8s.io ExecCredential
// that kubectl reads from an exec credential plugin, and reads the
// KUBERNETES_EXEC_INFO kubectl passes in. The structs are written here, not
// imported from client-go: this is the path every kubectl call waits on, so
// its import graph stays small (no scheme, no clientset, no cli-runtime).
package credential

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// API versions of ExecCredential.
const (
	V1      = "client.authentication.k8s.io/v1"
	V1beta1 = "client.authentication.k8s.io/v1beta1"
	// ExecInfoEnv is the variable kubectl passes the ExecCredential spec in.
	ExecInfoEnv = "KUBERNETES_EXEC_INFO"
	// ExtensionName is the kubeconfig cluster extension whose value kubectl
	// passes as spec.cluster.config when provideClusterInfo is true.
	ExtensionName = "client.authentication.k8s.io/exec"
	// ExpiryMargin is taken off the credential's expiry, so kubectl asks
	// again before the token really expires (clock skew, slow requests).
	ExpiryMargin = time.Minute
)

// ExecCredential is the plugin's answer (and kubectl's request).
type ExecCredential struct {
	APIVersion string  `json:"apiVersion"`
	Kind       string  `json:"kind"`
	Spec       Spec    `json:"spec"`
	Status     *Status `json:"status,omitempty"`
}

// Spec is what kubectl tells the plugin.
type Spec struct {
	Cluster     *Cluster `json:"cluster,omitempty"`
	Interactive bool     `json:"interactive"`
}

// Cluster is spec.cluster (provideClusterInfo: true).
type Cluster struct {
	Server                   string          `json:"server"`
	TLSServerName            string          `json:"tls-server-name,omitempty"`
	InsecureSkipTLSVerify    bool            `json:"insecure-skip-tls-verify,omitempty"`
	CertificateAuthorityData []byte          `json:"certificate-authority-data,omitempty"`
	ProxyURL                 string          `json:"proxy-url,omitempty"`
	DisableCompression       bool            `json:"disable-compression,omitempty"`
	Config                   json.RawMessage `json:"config,omitempty"`
}

// Status carries the credential.
type Status struct {
	ExpirationTimestamp *time.Time `json:"expirationTimestamp,omitempty"`
	Token               string     `json:"token,omitempty"`
}

// Config is the exec extension of the kubeconfig cluster: where kubectl
// agent credential finds its broker and cluster name when no flag or
// environment variable sets them.
type Config struct {
	Broker      string `json:"broker,omitempty"`
	Cluster     string `json:"cluster,omitempty"`
	Audience    string `json:"audience,omitempty"`
	TokenSource string `json:"tokenSource,omitempty"`
}

// ExecInfo is what KUBERNETES_EXEC_INFO told us.
type ExecInfo struct {
	APIVersion string
	Cluster    *Cluster
	Config     Config
}

// ReadExecInfo parses KUBERNETES_EXEC_INFO. An empty value (a plugin run by
// hand, or an old kubectl) gives V1 and no cluster.
func ReadExecInfo(value string) (*ExecInfo, error) {
	info := &ExecInfo{APIVersion: V1}
	if value == "" {
		return info, nil
	}
	var ec ExecCredential
	if err := json.Unmarshal([]byte(value), &ec); err != nil {
		return nil, fmt.Errorf("reading %s: %w", ExecInfoEnv, err)
	}
	switch ec.APIVersion {
	case V1, V1beta1:
		info.APIVersion = ec.APIVersion
	case "":
	default:
		return nil, fmt.Errorf("reading %s: apiVersion %q is not supported; use %s or %s in the kubeconfig's exec section", ExecInfoEnv, ec.APIVersion, V1, V1beta1)
	}
	info.Cluster = ec.Spec.Cluster
	if info.Cluster != nil && len(info.Cluster.Config) > 0 && string(info.Cluster.Config) != "null" {
		if err := json.Unmarshal(info.Cluster.Config, &info.Config); err != nil {
			return nil, fmt.Errorf("reading the kubeconfig cluster extension %s: %w; it must be a map with broker, cluster and audience", ExtensionName, err)
		}
	}
	return info, nil
}

// Render returns the ExecCredential for token, in apiVersion (V1 when
// empty), expiring ExpiryMargin before expiresAt (or at a third of the
// remaining life when that is shorter, so a short credential is not stale
// on arrival).
func Render(apiVersion, token string, expiresAt, now time.Time) ([]byte, error) {
	if token == "" {
		return nil, errors.New("no credential token to print")
	}
	if apiVersion == "" {
		apiVersion = V1
	}
	if apiVersion != V1 && apiVersion != V1beta1 {
		return nil, fmt.Errorf("ExecCredential apiVersion %q is not supported", apiVersion)
	}
	ec := ExecCredential{APIVersion: apiVersion, Kind: "ExecCredential", Status: &Status{Token: token}}
	if !expiresAt.IsZero() {
		margin := ExpiryMargin
		if left := expiresAt.Sub(now); left < 3*margin {
			margin = max(left/3, 0)
		}
		exp := expiresAt.Add(-margin).UTC().Truncate(time.Second)
		ec.Status.ExpirationTimestamp = &exp
	}
	b, err := json.Marshal(ec)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
