// Package backend issues cluster credentials for broker sessions. There are two
// implementations: jit (a per-session ServiceAccount with exactly the granted
// RBAC, and a TokenRequest token) and eks (an IAM role assumed through AWS STS,
// presigned into an EKS bearer token).
package backend

import (
	"context"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// Request is what a backend needs to issue a credential for a session.
type Request struct {
	SessionID string
	Cluster   string
	Identity  api.Identity
	Grant     api.Grant
	// ExpiresAt is when the session ends; credentials never outlive it.
	ExpiresAt time.Time
}

// Backend issues and revokes the cluster credentials of sessions.
type Backend interface {
	// Issue returns a credential for the session, creating what it needs
	// (idempotent: a second call for the same session reuses its objects).
	Issue(ctx context.Context, req Request) (*api.Credential, error)
	// Revoke removes everything the session was given; revoking an unknown or
	// already revoked session is not an error.
	Revoke(ctx context.Context, sessionID string) error
	// Reconcile removes what belongs to sessions for which live returns false
	// (expired, ended, or unknown to the store).
	Reconcile(ctx context.Context, live func(sessionID string) bool) error
	// Ready reports whether the backend can reach what it talks to.
	Ready(ctx context.Context) error
}
