package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fault is one injected failure and how long it took to come back.
type fault struct {
	what     string
	at       time.Duration // since the load started
	recovery time.Duration
	err      error
}

// run sets up the world, drives the load with the faults, and checks the
// result.
func run(ctx context.Context, cfg Config, out io.Writer) (*report, error) {
	log := &logger{out: out, start: time.Now()}
	w, err := setup(ctx, cfg, log.printf)
	defer func() {
		if w != nil {
			w.close()
		}
	}()
	if err != nil {
		return nil, err
	}
	if cfg.KeepLogs {
		log.printf("logs and transcripts stay in %s", w.dir)
	}
	r, err := newRunner(w)
	if err != nil {
		return nil, err
	}

	log.printf("load: %d concurrent pipelines (%d through the kubectl-agent binary) for %s", cfg.Pipelines, cfg.Binary, cfg.Duration)
	loadStart := time.Now()
	// Pipelines stop starting at the deadline; running ones get the grace.
	stopStarting := loadStart.Add(cfg.Duration)
	pctx, cancel := context.WithDeadline(ctx, stopStarting.Add(cfg.Grace))
	defer cancel()

	var faults []fault
	var faultsWG sync.WaitGroup
	if !cfg.NoFaults {
		faultsWG.Add(1)
		go func() {
			defer faultsWG.Done()
			faults = injectFaults(pctx, w, cfg, loadStart, log)
		}()
	}

	var (
		mu        sync.Mutex
		pipelines []*pipeline
		seq       atomic.Int64
		wg        sync.WaitGroup
	)
	runBase := time.Now().UnixNano() % 1e9 * 1000
	progressDone := make(chan struct{})
	go progress(pctx, log, &seq, progressDone)
	for i := range cfg.Pipelines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopStarting) && pctx.Err() == nil {
				n := seq.Add(1)
				p := &pipeline{n: n, runID: strconv.FormatInt(runBase+n, 10), binary: i < cfg.Binary}
				r.run(pctx, p)
				mu.Lock()
				pipelines = append(pipelines, p)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	loadTime := time.Since(loadStart)
	close(progressDone)
	faultsWG.Wait()
	log.printf("load done: %d pipelines in %s", len(pipelines), loadTime.Round(time.Millisecond))

	rep := &report{cfg: cfg, pipelines: pipelines, loadTime: loadTime, faults: faults, uploadRetries: r.uploadRetries.Load(), brokerErrors: r.brokerErrors.Load()}
	if err := rep.account(ctx, w, log); err != nil {
		return nil, err
	}
	rep.print(out)
	if !rep.ok() && cfg.KeepLogs {
		fmt.Fprintf(out, "broker logs: %s\n", w.dir)
	}
	return rep, nil
}

// progress prints the pipeline count every 15 seconds.
func progress(ctx context.Context, log *logger, seq *atomic.Int64, done <-chan struct{}) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			log.printf("%d pipelines started", seq.Load())
		case <-done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// injectFaults kills broker-b (SIGKILL) at 30% of the load and restarts it
// after cfg.BrokerDown, then restarts PostgreSQL (an immediate shutdown, as
// a crash) at 60%.
func injectFaults(ctx context.Context, w *world, cfg Config, loadStart time.Time, log *logger) []fault {
	var out []fault
	sleepUntil := func(at time.Duration) bool {
		select {
		case <-time.After(time.Until(loadStart.Add(at))):
			return true
		case <-ctx.Done():
			return false
		}
	}
	b := w.brokers[1]
	if !sleepUntil(cfg.Duration * 3 / 10) {
		return out
	}
	f := fault{what: "SIGKILL " + b.name + ", restart after " + cfg.BrokerDown.String(), at: time.Since(loadStart)}
	log.printf("fault: SIGKILL %s", b.name)
	b.kill()
	select {
	case <-time.After(cfg.BrokerDown):
	case <-ctx.Done():
	}
	t0 := time.Now()
	f.err = b.start(ctx)
	f.recovery = cfg.BrokerDown + time.Since(t0)
	log.printf("fault: %s is back (ready %s after its restart)", b.name, time.Since(t0).Round(time.Millisecond))
	out = append(out, f)

	if !sleepUntil(cfg.Duration * 6 / 10) {
		return out
	}
	f = fault{what: "PostgreSQL immediate shutdown and restart", at: time.Since(loadStart)}
	log.printf("fault: restarting PostgreSQL (immediate shutdown)")
	t0 = time.Now()
	f.err = w.pg.Restart(ctx)
	f.recovery = time.Since(t0)
	log.printf("fault: PostgreSQL is back after %s", f.recovery.Round(time.Millisecond))
	return append(out, f)
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func sortedDurations(ds []time.Duration) []time.Duration {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
