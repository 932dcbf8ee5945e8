package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

// Reconcile removes the cluster objects of every session that is not live
// (ended, expired, or unknown to the store: a lost or replaced store leaves no
// orphans), purges expired token bindings and proof jtis, and refreshes the
// active-sessions gauge.
func (s *Server) Reconcile(ctx context.Context) error {
	now := s.now()
	ids, err := s.st.ListLiveSessionIDs(ctx, now)
	if err != nil {
		s.m.reconcile.WithLabelValues("error").Inc()
		return fmt.Errorf("listing live sessions: %w", err)
	}
	live := make(map[string]bool, len(ids))
	for _, id := range ids {
		live[id] = true
	}
	s.m.active.Set(float64(len(ids)))
	s.ingest.forgetExcept(live)
	// An object that the backend lists was made after its session was
	// stored; a session created after the list above is looked up again, so
	// a reconcile never removes a session being created right now. A store
	// error keeps the objects until the next pass.
	isLive := func(id string) bool {
		if live[id] {
			return true
		}
		sess, err := s.st.GetSession(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return false
		}
		if err != nil {
			s.log.Warn("reconcile: reading a session; keeping its objects", "session", id, "err", err)
			return true
		}
		return sess.LiveAt(s.now())
	}
	var errs []error
	for name, b := range s.backends {
		err := s.timed(name, "reconcile", func() error {
			return b.Reconcile(ctx, isLive)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("reconciling cluster %s: %w", name, err))
		}
	}
	if err := s.st.Purge(ctx, now); err != nil {
		errs = append(errs, fmt.Errorf("purging expired bindings: %w", err))
	}
	err = errors.Join(errs...)
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.m.reconcile.WithLabelValues(result).Inc()
	return err
}

// Maintain reconciles and maintains the signing keys now and then every
// interval until ctx ends.
func (s *Server) Maintain(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.keys.Maintain(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("maintaining signing keys", "err", err)
		}
		if err := s.Reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
