package eks

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks/iamauth"
)

// TestRealAWS runs against real AWS STS when the environment allows it:
// KUBECTL_AGENT_TEST_EKS_ROLE_ARN names a role the ambient AWS credentials may
// assume (with sts:TagSession and sts:SetSourceIdentity, see docs/eks.md), a
// region is set (AWS_REGION or AWS_DEFAULT_REGION), and credentials are in the
// environment (keys, a profile, web identity or a container endpoint).
// KUBECTL_AGENT_TEST_EKS_CLUSTER names the cluster (any name works for STS).
// The token goes through the authenticator's checks and real STS.
func TestRealAWS(t *testing.T) {
	role := os.Getenv("KUBECTL_AGENT_TEST_EKS_ROLE_ARN")
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	hasCreds := false
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		if os.Getenv(k) != "" {
			hasCreds = true
		}
	}
	var missing []string
	if role == "" {
		missing = append(missing, "KUBECTL_AGENT_TEST_EKS_ROLE_ARN")
	}
	if region == "" {
		missing = append(missing, "AWS_REGION")
	}
	if !hasCreds {
		missing = append(missing, "AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_WEB_IDENTITY_TOKEN_FILE or a container credentials endpoint)")
	}
	if len(missing) > 0 {
		t.Skipf("skipping the real-AWS test: set %s", strings.Join(missing, ", "))
	}
	cluster := os.Getenv("KUBECTL_AGENT_TEST_EKS_CLUSTER")
	if cluster == "" {
		cluster = "kubectl-agent-test"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := New(ctx, Config{ClusterName: cluster, Region: region, RoleARN: role})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	req := testRequest()
	req.SessionID = "real-aws-" + time.Now().UTC().Format("20060102T150405")
	req.Identity.RunID = req.SessionID
	cred, err := b.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("real token: %d bytes, expires %s", len(cred.Token), cred.ExpiresAt)
	v := &iamauth.Verifier{ClusterID: cluster, Region: region, Partition: partitionOf(role)}
	id, err := v.Verify(ctx, cred.Token)
	if err != nil {
		t.Fatalf("the authenticator's checks with real STS: %v", err)
	}
	if id.CanonicalARN != role || id.SessionName != SessionName(req) {
		t.Errorf("identity = %+v, want role %s session %s", id, role, SessionName(req))
	}
}

func partitionOf(arn string) string {
	if p := strings.SplitN(arn, ":", 3); len(p) == 3 {
		return p[1]
	}
	return "aws"
}
