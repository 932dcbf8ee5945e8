package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestSoakSmall runs the whole soak with small numbers so that `make test`
// keeps it working: 8 pipelines (2 through the kubectl-agent binary) for
// 20 s, with the broker kill and the PostgreSQL restart.
func TestSoakSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane, PostgreSQL and two brokers")
	}
	cfg := defaultConfig()
	cfg.Pipelines, cfg.Binary = 8, 2
	cfg.Duration, cfg.Grace = 20*time.Second, 2*time.Minute
	cfg.BrokerDown, cfg.Reconcile, cfg.LeakWait = time.Second, 2*time.Second, time.Minute
	cfg.BinDir = "" // build the binaries from this tree
	var out bytes.Buffer
	rep, err := run(context.Background(), cfg, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.ok() {
		t.Fatalf("the soak found losses or failed pipelines")
	}
	if len(rep.faults) != 2 {
		t.Errorf("%d faults injected, want the broker kill and the PostgreSQL restart", len(rep.faults))
	}
	if rep.binary == 0 || rep.inProcess == 0 {
		t.Errorf("pipelines: %d in process, %d through the binary; want both kinds", rep.inProcess, rep.binary)
	}
	// Every pipeline's session and transcript is in the store, once.
	if rep.storedSessions != len(rep.pipelines) || rep.storedTranscripts != len(rep.pipelines) {
		t.Errorf("%d pipelines, %d sessions and %d transcripts stored", len(rep.pipelines), rep.storedSessions, rep.storedTranscripts)
	}
	if rep.storedBytes != rep.sentBytes || rep.sentBytes == 0 {
		t.Errorf("transcript bytes: %d sent, %d stored", rep.sentBytes, rep.storedBytes)
	}
	if !strings.Contains(out.String(), "losses: 0\n") {
		t.Errorf("the report does not say losses: 0")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := sortedDurations(ds)
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}
