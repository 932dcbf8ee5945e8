// Package eks_test runs the eks backend end to end the way EKS runs it: a real
// kube-apiserver authenticates the broker's "k8s-aws-v1." tokens through a
// token-review webhook (iamauth.Webhook: aws-iam-authenticator's verifier
// plus an access-entry-like role mapping), which sends each token's presigned
// GetCallerIdentity to the local STS stand-in (ststest), and RBAC authorizes
// the mapped user. The real agent-broker process assumes the role at the
// stand-in with its own static AWS credentials; the real kubectl gets its token
// through `kubectl agent credential`, written into a kubeconfig by `kubectl
// agent kubeconfig`, from a GitHub-shaped OIDC token of the issuer stand-in.
//
// The webhook and the stand-in must exist before the apiserver starts (its
// flags name the webhook), so TestMain starts them, then the control plane.
package eks_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks/iamauth"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks/ststest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

// The AWS side of the test: the broker's IAM user, the role runs assume, and
// the EKS cluster's name (signed into every token as x-k8s-aws-id).
const (
	clusterID    = "e2e-eks"
	region       = "us-east-1"
	brokerARN    = "arn:aws:iam::111122223333:user/agent-broker"
	brokerKey    = "AKIAIOSFODNN7EXAMPLE"
	brokerSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	ciRoleARN    = "arn:aws:iam::111122223333:role/kubectl-agent-ci"
	ciRoleID     = "AROAEXAMPLEROLEID0001"
	// unmappedRoleARN is trusted by STS but has no access entry, so its
	// tokens verify at STS and still do not authenticate.
	unmappedRoleARN = "arn:aws:iam::111122223333:role/not-in-the-cluster"
	// ciGroup is the access entry's Kubernetes group; RBAC binds it.
	ciGroup = "kubectl-agent-ci"
	// userPrefix is the access entry's username template before {{SessionName}}.
	userPrefix = "kubectl-agent:"
)

// standIns is what TestMain started before the control plane. A test package is
// one process, so a package variable is where TestMain's state lives (as in
// package cluster).
var standIns struct {
	sts *ststest.Server
	// reviews counts the TokenReviews the apiserver sent the webhook; it
	// proves the apiserver consulted it.
	reviews atomic.Int64
	// verdicts holds the webhook's answer per token (by its SHA-256), so a
	// test can tell which check refused a token.
	verdicts sync.Map // [sha256.Size]byte -> authnv1.TokenReviewStatus
	// caFile holds the stand-in's CA for the broker's SDK (AWS_CA_BUNDLE).
	caFile string
}

func TestMain(m *testing.M) { os.Exit(agenttest.Main(m, run)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ka-eks-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "eks e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	s, err := ststest.Start(ststest.Options{
		Region:     region,
		Principals: []ststest.Principal{{ARN: brokerARN, UserID: "AIDAEXAMPLEUSERID0001", AccessKeyID: brokerKey, SecretAccessKey: brokerSecret}},
		Roles: []ststest.Role{
			{ARN: ciRoleARN, RoleID: ciRoleID, Trusted: []string{brokerARN}},
			{ARN: unmappedRoleARN, RoleID: "AROAEXAMPLEROLEID0002", Trusted: []string{brokerARN}},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "eks e2e: starting the STS stand-in:", err)
		return 1
	}
	defer s.Close()
	standIns.sts = s
	standIns.caFile = filepath.Join(dir, "sts-ca.pem")
	if err := os.WriteFile(standIns.caFile, s.CAPEM, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "eks e2e:", err)
		return 1
	}

	// The webhook is what EKS runs in its control plane: verify the token
	// (its final GetCallerIdentity goes to the stand-in, whatever STS host
	// the token names), then map the role like an access entry.
	wh := &iamauth.Webhook{
		Verifier: &iamauth.Verifier{ClusterID: clusterID, Region: region, Client: s.Client()},
		Roles:    []iamauth.RoleMapping{{RoleARN: ciRoleARN, Username: userPrefix + "{{SessionName}}", Groups: []string{ciGroup}}},
	}
	srv, caPEM, err := startWebhook(recordVerdicts(wh))
	if err != nil {
		fmt.Fprintln(os.Stderr, "eks e2e: starting the token-review webhook:", err)
		return 1
	}
	defer srv.Close()
	kubeconfig := filepath.Join(dir, "webhook.kubeconfig")
	if err := os.WriteFile(kubeconfig, webhookKubeconfig(srv.URL+"/authenticate", caPEM), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "eks e2e:", err)
		return 1
	}
	return cluster.MainWith(m, cluster.Options{APIServerArgs: []string{
		"--authentication-token-webhook-config-file=" + kubeconfig,
		"--authentication-token-webhook-version=v1",
	}})
}

// recordVerdicts wraps the webhook: it counts the reviews and keeps each
// token's answer in standIns.verdicts.
func recordVerdicts(wh http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		standIns.reviews.Add(1)
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var in authnv1.TokenReview
		_ = json.Unmarshal(body, &in)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, r)
		var out authnv1.TokenReview
		if json.Unmarshal(rec.Body.Bytes(), &out) == nil {
			standIns.verdicts.Store(sha256.Sum256([]byte(in.Spec.Token)), out.Status)
		}
		maps.Copy(w.Header(), rec.Header())
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// verdict is the webhook's answer for token, if the apiserver asked.
func verdict(token string) (authnv1.TokenReviewStatus, bool) {
	v, ok := standIns.verdicts.Load(sha256.Sum256([]byte(token)))
	if !ok {
		return authnv1.TokenReviewStatus{}, false
	}
	return v.(authnv1.TokenReviewStatus), true
}

// webhookKubeconfig is the file kube-apiserver reads to reach the webhook:
// the "cluster" is the webhook, the "user" is the apiserver (no credential).
func webhookKubeconfig(url string, caPEM []byte) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: iamauth
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: kube-apiserver
  user: {}
contexts:
- name: webhook
  context: {cluster: iamauth, user: kube-apiserver}
current-context: webhook
`, url, base64.StdEncoding.EncodeToString(caPEM))
}

// startWebhook serves h over TLS on loopback with a certificate from a
// throwaway CA, and returns the CA's PEM for the apiserver to trust.
func startWebhook(h http.Handler) (*httptest.Server, []byte, error) {
	cfg, caPEM, err := ststest.NewTLS([]string{"iamauth-webhook"})
	if err != nil {
		return nil, nil, err
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = cfg
	srv.StartTLS()
	return srv, caPEM, nil
}
