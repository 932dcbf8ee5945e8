package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/jit"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

// report is what was sent, what was stored, and what differs.
type report struct {
	cfg           Config
	pipelines     []*pipeline
	loadTime      time.Duration
	faults        []fault
	uploadRetries int64
	brokerErrors  int64

	// Sent.
	inProcess, binary, failed int
	sentLines, sentBytes      int64
	exchanges                 []time.Duration
	errors                    []string

	// Stored.
	storedSessions, storedEnded, storedSealed int
	storedLines, storedBytes                  int64

	// Losses.
	lostSessions, dupSessions, strangerSessions, notEnded int
	transcriptsDiffer, transcriptsUnsealed                int
	transcriptsLost, transcriptsDup                       int
	storedTranscripts                                     int
	leakedObjects, liveObjects                            int
	leakDetail                                            []string
	leakWait                                              time.Duration
}

// account reads the store and the cluster after the load.
func (rep *report) account(ctx context.Context, w *world, log *logger) error {
	st, err := store.Open(ctx, w.dsn)
	if err != nil {
		return fmt.Errorf("opening the store for the final accounting: %w", err)
	}
	defer st.Close()
	// The final accounting reads the store directly: a client cannot read
	// an ended session's transcript through the API.
	rows, err := st.ListSessions(ctx, store.SessionFilter{Repository: repository, Limit: len(rep.pipelines)*2 + 1000})
	if err != nil {
		return fmt.Errorf("listing the stored sessions: %w", err)
	}
	byRun := map[string][]store.Session{}
	for _, s := range rows {
		byRun[s.Run.RunID] = append(byRun[s.Run.RunID], s)
		rep.storedSessions++
		if s.Ended() {
			rep.storedEnded++
		}
		if s.Sealed {
			rep.storedSealed++
		}
	}
	// Every transcript the store holds for these runs, by session.
	infos, err := st.ListTranscripts(ctx, store.TranscriptFilter{SessionFilter: store.SessionFilter{Repository: repository, Limit: len(rep.pipelines)*4 + 1000}})
	if err != nil {
		return fmt.Errorf("listing the stored transcripts: %w", err)
	}
	transcripts := map[string][]store.TranscriptInfo{}
	for _, t := range infos {
		transcripts[t.SessionID] = append(transcripts[t.SessionID], t)
	}
	rep.storedTranscripts = len(infos)
	runs := map[string]bool{}
	for _, p := range rep.pipelines {
		runs[p.runID] = true
		if p.binary {
			rep.binary++
		} else {
			rep.inProcess++
			if p.sessionID != "" {
				rep.exchanges = append(rep.exchanges, p.exchange)
			}
		}
		rep.sentLines += p.lines
		rep.sentBytes += p.bytes
		if p.err != nil {
			rep.failed++
			if len(rep.errors) < 5 {
				rep.errors = append(rep.errors, fmt.Sprintf("run %s: %v", p.runID, p.err))
			}
		}
		got := byRun[p.runID]
		if len(got) > 1 {
			rep.dupSessions += len(got) - 1
		}
		if p.sessionID == "" {
			continue
		}
		var sess *store.Session
		for i := range got {
			if got[i].ID == p.sessionID {
				sess = &got[i]
			}
		}
		if sess == nil {
			rep.lostSessions++
			continue
		}
		if p.ended && !sess.Ended() {
			rep.notEnded++
		}
		if p.spool == "" {
			continue
		}
		spool, err := os.ReadFile(p.spool)
		if err != nil {
			return fmt.Errorf("reading the spool of run %s: %w", p.runID, err)
		}
		// One pipeline, one transcript: another one in its session would be
		// a duplicate (or a stranger).
		ts := transcripts[p.sessionID]
		if len(ts) != 1 || ts[0].TranscriptID != p.transcriptID {
			rep.transcriptsDup += max(len(ts)-1, 0)
			if len(ts) == 0 || ts[0].TranscriptID != p.transcriptID {
				rep.transcriptsLost++
			}
			continue
		}
		lines, err := st.ReadTranscript(ctx, p.sessionID, p.transcriptID, 0, 0)
		if err != nil {
			return fmt.Errorf("reading the stored transcript of session %s: %w", p.sessionID, err)
		}
		var stored bytes.Buffer
		for _, l := range lines {
			stored.WriteString(l)
			stored.WriteByte('\n')
		}
		rep.storedLines += int64(len(lines))
		rep.storedBytes += int64(stored.Len())
		if !bytes.Equal(stored.Bytes(), spool) {
			rep.transcriptsDiffer++
			if len(rep.errors) < 10 {
				rep.errors = append(rep.errors, fmt.Sprintf("session %s: the store holds %d lines (%d bytes), the spool %d lines (%d bytes)",
					p.sessionID, len(lines), stored.Len(), bytes.Count(spool, []byte{'\n'}), len(spool)))
			}
		}
		if !ts[0].Sealed || !sess.Sealed {
			rep.transcriptsUnsealed++
		}
	}
	for run, ss := range byRun {
		if !runs[run] {
			rep.strangerSessions += len(ss)
		}
	}
	return rep.leaks(ctx, w, st, log)
}

// leaks waits for the brokers' reconcile to remove the JIT objects of
// sessions that are no longer live, then counts what is left: objects of
// ended or unknown sessions are leaks; those of live sessions (a failed
// pipeline that never ended its session) are counted apart.
func (rep *report) leaks(ctx context.Context, w *world, st store.Store, log *logger) error {
	cs := w.c.Clientset()
	sel := metav1.ListOptions{LabelSelector: jit.LabelManagedBy + "=" + jit.ManagedBy}
	start := time.Now()
	for i := 0; ; i++ {
		var leaked, live []string
		classify := func(kind string, m metav1.ObjectMeta) {
			id := m.Labels[jit.LabelSession]
			s, err := st.GetSession(ctx, id)
			name := kind + " " + m.Namespace + "/" + m.Name
			if err == nil && s.LiveAt(time.Now()) {
				live = append(live, name)
			} else {
				leaked = append(leaked, name)
			}
		}
		sas, err := cs.CoreV1().ServiceAccounts("").List(ctx, sel)
		if err != nil {
			return fmt.Errorf("listing ServiceAccounts: %w", err)
		}
		for _, o := range sas.Items {
			classify("ServiceAccount", o.ObjectMeta)
		}
		roles, err := cs.RbacV1().Roles("").List(ctx, sel)
		if err != nil {
			return fmt.Errorf("listing Roles: %w", err)
		}
		for _, o := range roles.Items {
			classify("Role", o.ObjectMeta)
		}
		rbs, err := cs.RbacV1().RoleBindings("").List(ctx, sel)
		if err != nil {
			return fmt.Errorf("listing RoleBindings: %w", err)
		}
		for _, o := range rbs.Items {
			classify("RoleBinding", o.ObjectMeta)
		}
		crs, err := cs.RbacV1().ClusterRoles().List(ctx, sel)
		if err != nil {
			return fmt.Errorf("listing ClusterRoles: %w", err)
		}
		for _, o := range crs.Items {
			classify("ClusterRole", o.ObjectMeta)
		}
		crbs, err := cs.RbacV1().ClusterRoleBindings().List(ctx, sel)
		if err != nil {
			return fmt.Errorf("listing ClusterRoleBindings: %w", err)
		}
		for _, o := range crbs.Items {
			classify("ClusterRoleBinding", o.ObjectMeta)
		}
		rep.leakedObjects, rep.liveObjects, rep.leakWait = len(leaked), len(live), time.Since(start)
		rep.leakDetail = leaked[:min(len(leaked), 5)]
		if len(leaked) == 0 || time.Since(start) > rep.cfg.LeakWait {
			return nil
		}
		if i%10 == 0 {
			log.printf("waiting for reconcile: %d JIT objects of ended sessions left", len(leaked))
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (rep *report) losses() int {
	return rep.lostSessions + rep.dupSessions + rep.strangerSessions + rep.notEnded +
		rep.transcriptsDiffer + rep.transcriptsUnsealed + rep.transcriptsLost + rep.transcriptsDup + rep.leakedObjects
}

func (rep *report) ok() bool {
	for _, f := range rep.faults {
		if f.err != nil {
			return false
		}
	}
	return rep.losses() == 0 && rep.failed == 0 && len(rep.pipelines) > 0
}

func (rep *report) print(out io.Writer) {
	secs := rep.loadTime.Seconds()
	ok := len(rep.pipelines) - rep.failed
	ex := sortedDurations(rep.exchanges)
	var b strings.Builder
	fmt.Fprintf(&b, "\n== faults\n")
	for _, f := range rep.faults {
		status := "recovered in " + f.recovery.Round(time.Millisecond).String()
		if f.err != nil {
			status = "FAILED: " + f.err.Error()
		}
		fmt.Fprintf(&b, "  at %-8s %s: %s\n", f.at.Round(time.Second), f.what, status)
	}
	if len(rep.faults) == 0 {
		fmt.Fprintf(&b, "  none\n")
	}
	fmt.Fprintf(&b, "== sent\n")
	fmt.Fprintf(&b, "  pipelines          %d (%d in process, %d through kubectl agent exec), %d failed\n", len(rep.pipelines), rep.inProcess, rep.binary, rep.failed)
	fmt.Fprintf(&b, "  transcript lines   %d (%d bytes in the clients' spools)\n", rep.sentLines, rep.sentBytes)
	fmt.Fprintf(&b, "  broker errors      %d network errors or 5xx answers seen by in-process clients and retried (%d of them transcript uploads)\n", rep.brokerErrors, rep.uploadRetries)
	fmt.Fprintf(&b, "== stored\n")
	fmt.Fprintf(&b, "  sessions           %d (%d ended, %d with a sealed transcript)\n", rep.storedSessions, rep.storedEnded, rep.storedSealed)
	fmt.Fprintf(&b, "  transcripts        %d, %d lines checked (%d bytes)\n", rep.storedTranscripts, rep.storedLines, rep.storedBytes)
	fmt.Fprintf(&b, "  JIT objects left   %d of live sessions, %d of ended ones (after %s of reconcile)\n", rep.liveObjects, rep.leakedObjects, rep.leakWait.Round(time.Second))
	fmt.Fprintf(&b, "== figures\n")
	fmt.Fprintf(&b, "  sessions per second        %.1f (%d completed pipelines in %s)\n", float64(ok)/secs, ok, rep.loadTime.Round(time.Second))
	fmt.Fprintf(&b, "  exchange latency           p50 %s, p99 %s, max %s (%d in-process exchanges, retries included)\n",
		percentile(ex, 0.50).Round(time.Millisecond), percentile(ex, 0.99).Round(time.Millisecond), percentile(ex, 1).Round(time.Millisecond), len(ex))
	fmt.Fprintf(&b, "  transcript bytes per second %.0f (%.1f KiB/s)\n", float64(rep.storedBytes)/secs, float64(rep.storedBytes)/secs/1024)
	fmt.Fprintf(&b, "== checks\n")
	fmt.Fprintf(&b, "  sessions lost %d, duplicated %d, unknown runs %d, not ended %d\n", rep.lostSessions, rep.dupSessions, rep.strangerSessions, rep.notEnded)
	fmt.Fprintf(&b, "  transcripts lost %d, duplicated %d, differing from the spool %d, unsealed %d\n",
		rep.transcriptsLost, rep.transcriptsDup, rep.transcriptsDiffer, rep.transcriptsUnsealed)
	fmt.Fprintf(&b, "  ServiceAccounts/RBAC leaked %d\n", rep.leakedObjects)
	for _, d := range rep.leakDetail {
		fmt.Fprintf(&b, "    leaked: %s\n", d)
	}
	fmt.Fprintf(&b, "  approvals: not exercised by this soak\n")
	for _, e := range rep.errors {
		fmt.Fprintf(&b, "  error: %s\n", firstLine(e))
	}
	fmt.Fprintf(&b, "losses: %d\n", rep.losses())
	if rep.failed > 0 {
		fmt.Fprintf(&b, "failed pipelines: %d\n", rep.failed)
	}
	fmt.Fprint(out, b.String())
}
