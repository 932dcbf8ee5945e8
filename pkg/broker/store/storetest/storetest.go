// Package storetest is the conformance suite every store.Store passes: the
// same tests run against SQLite and a real PostgreSQL, so both behave alike,
// down to which sentinel error each refusal carries.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

// t0 is the suite's "now": fixed, so tests never depend on the wall clock.
var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// Run runs the suite. newStore returns a fresh, empty store for one test
// and arranges its Close at cleanup.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"SessionCreateOrGet", testSessionCreateOrGet},
		{"SessionEndAndNew", testSessionEndAndNew},
		{"SessionExpiredIsReplaced", testSessionExpired},
		{"SessionList", testSessionList},
		{"SessionConcurrentCreateOrGet", func(t *testing.T, s store.Store) { concurrentCreate(t, s, s) }},
		{"TokenBinding", testTokenBinding},
		{"TokenBindingConcurrent", func(t *testing.T, s store.Store) { concurrentBind(t, s, s) }},
		{"ProofJTI", testProofJTI},
		{"ProofJTIConcurrent", func(t *testing.T, s store.Store) { concurrentJTI(t, s, s) }},
		{"Credentials", testCredentials},
		{"Transcript", testTranscript},
		{"TranscriptBigChunk", testTranscriptBig},
		{"TranscriptConcurrentResend", func(t *testing.T, s store.Store) { concurrentTranscript(t, s, s) }},
		{"TranscriptSeal", testTranscriptSeal},
		{"TranscriptsOfOneSession", testTranscriptsOfOneSession},
		{"TranscriptList", testTranscriptList},
		{"Log", testLog},
		{"LogConcurrentAppend", func(t *testing.T, s store.Store) { concurrentLog(t, s, s) }},
		{"Checkpoints", testCheckpoints},
		{"ApprovalLifecycle", testApprovalLifecycle},
		{"ApprovalDenyAndExpire", testApprovalDenyExpire},
		{"ApprovalConcurrentDecideAndConsume", func(t *testing.T, s store.Store) { concurrentApproval(t, s, s) }},
		{"SigningKeys", testSigningKeys},
		{"Ping", func(t *testing.T, s store.Store) {
			if err := s.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// RunPair runs the races between two Store instances on one database (two
// brokers sharing it). newPair returns two stores opened separately on the
// same fresh database.
func RunPair(t *testing.T, newPair func(t *testing.T) (store.Store, store.Store)) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store, store.Store)
	}{
		{"CreateOrGet", concurrentCreate},
		{"TokenBinding", concurrentBind},
		{"ProofJTI", concurrentJTI},
		{"Transcript", concurrentTranscript},
		{"TwoTranscripts", concurrentTwoTranscripts},
		{"Log", concurrentLog},
		{"Approval", concurrentApproval},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newPair(t)
			tc.fn(t, a, b)
		})
	}
}

// ---- helpers ----

func ctx() context.Context { return context.Background() }

func run(n int) store.RunKey {
	return store.RunKey{Issuer: "https://token.actions.githubusercontent.com", Repository: "acme/web", RunID: fmt.Sprint(1000 + n), RunAttempt: "1"}
}

func newSession(id string, r store.RunKey, created time.Time) store.Session {
	return store.Session{
		ID: id, Run: r, Cluster: "prod",
		Identity:      json.RawMessage(`{"issuer":"` + r.Issuer + `","repository":"` + r.Repository + `","runID":"` + r.RunID + `"}`),
		Grant:         json.RawMessage(`{"rule":"deploy","namespaces":["web"],"ttl":"1h0m0s"}`),
		Policy:        "apiVersion: kubectl-agent.io/v1alpha1\nkind: Policy\n",
		KeyThumbprint: "thumb-" + id,
		PublicKey:     []byte("0123456789abcdef0123456789abcdef"),
		KeyBinding:    "eyJhbGciOiJFZERTQSJ9.binding." + id,
		CreatedAt:     created,
		ExpiresAt:     created.Add(time.Hour),
	}
}

func mustCreate(t *testing.T, s store.Store, in store.Session) store.Session {
	t.Helper()
	out, created, err := s.CreateOrGetSession(ctx(), in)
	if err != nil {
		t.Fatalf("CreateOrGetSession(%s): %v", in.ID, err)
	}
	if !created {
		t.Fatalf("CreateOrGetSession(%s): got existing session %s, want a new one", in.ID, out.ID)
	}
	return out
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

func sameSession(t *testing.T, got, want store.Session) {
	t.Helper()
	if got.ID != want.ID || got.Run != want.Run || got.Cluster != want.Cluster ||
		string(got.Identity) != string(want.Identity) || string(got.Grant) != string(want.Grant) ||
		got.Policy != want.Policy || got.KeyThumbprint != want.KeyThumbprint ||
		!bytes.Equal(got.PublicKey, want.PublicKey) || got.KeyBinding != want.KeyBinding ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("session differs:\n got %+v\nwant %+v", got, want)
	}
}

// parallel runs fn(i) for i in [0,n) at once (released together) and waits.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i)
		}()
	}
	close(start)
	wg.Wait()
}

// pick alternates between two store instances (or one, twice).
func pick(a, b store.Store, i int) store.Store {
	if i%2 == 0 {
		return a
	}
	return b
}

// ---- sessions ----

func testSessionCreateOrGet(t *testing.T, s store.Store) {
	in := newSession("s1", run(1), t0)
	got := mustCreate(t, s, in)
	sameSession(t, got, in)
	if got.Ended() || got.Sealed || got.UnsealedEnd {
		t.Fatalf("new session should be live and unsealed: %+v", got)
	}

	// A second exchange of the same run, a minute later, gets the same session.
	again := newSession("s1-other", run(1), t0.Add(time.Minute))
	got2, created, err := s.CreateOrGetSession(ctx(), again)
	if err != nil || created {
		t.Fatalf("second CreateOrGetSession: created=%v err=%v, want existing", created, err)
	}
	sameSession(t, got2, in)

	// Another attempt of the run is another session.
	r2 := run(1)
	r2.RunAttempt = "2"
	mustCreate(t, s, newSession("s2", r2, t0))

	fetched, err := s.GetSession(ctx(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	sameSession(t, fetched, in)
	_, err = s.GetSession(ctx(), "nope")
	wantErr(t, err, store.ErrNotFound)

	// A new run must not reuse an existing id.
	_, _, err = s.CreateOrGetSession(ctx(), newSession("s1", run(99), t0))
	wantErr(t, err, store.ErrConflict)
	// Nonsense is refused.
	bad := newSession("s3", run(3), t0)
	bad.ExpiresAt = t0
	_, _, err = s.CreateOrGetSession(ctx(), bad)
	wantErr(t, err, store.ErrInvalid)
}

func testSessionEndAndNew(t *testing.T, s store.Store) {
	mustCreate(t, s, newSession("a", run(1), t0))
	ended, err := s.EndSession(ctx(), "a", t0.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !ended.EndedAt.Equal(t0.Add(10*time.Minute)) || !ended.UnsealedEnd {
		t.Fatalf("ended session: %+v, want EndedAt t0+10m and UnsealedEnd", ended)
	}
	// Ending twice keeps the first end time.
	again, err := s.EndSession(ctx(), "a", t0.Add(20*time.Minute))
	if err != nil || !again.EndedAt.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("second end: %v, EndedAt %s, want the first end time", err, again.EndedAt)
	}
	_, err = s.EndSession(ctx(), "nope", t0)
	wantErr(t, err, store.ErrNotFound)

	// The run gets a new session after its session ended.
	b := mustCreate(t, s, newSession("b", run(1), t0.Add(11*time.Minute)))
	if b.ID != "b" {
		t.Fatalf("got %s, want the new session b", b.ID)
	}
}

func testSessionExpired(t *testing.T, s store.Store) {
	mustCreate(t, s, newSession("old", run(1), t0))
	// Two hours later the first session has expired without being ended.
	fresh := mustCreate(t, s, newSession("new", run(1), t0.Add(2*time.Hour)))
	if fresh.ID != "new" {
		t.Fatalf("got %s, want new", fresh.ID)
	}
	old, err := s.GetSession(ctx(), "old")
	if err != nil {
		t.Fatal(err)
	}
	if !old.EndedAt.Equal(old.ExpiresAt) || !old.UnsealedEnd {
		t.Fatalf("expired session should be ended at its expiry and marked unsealed: %+v", old)
	}
	// Exactly at expiry the session no longer counts.
	mustCreate(t, s, newSession("x1", run(2), t0))
	x2 := mustCreate(t, s, newSession("x2", run(2), t0.Add(time.Hour)))
	if x2.ID != "x2" {
		t.Fatal("a session at its expiry instant must not be reused")
	}
}

func testSessionList(t *testing.T, s store.Store) {
	// s0..s4 created a minute apart; s1 other repo, s2 other cluster, s3 ended, s4 expires early.
	for i := 0; i < 5; i++ {
		in := newSession(fmt.Sprintf("s%d", i), run(i), t0.Add(time.Duration(i)*time.Minute))
		switch i {
		case 1:
			in.Run.Repository = "acme/api"
		case 2:
			in.Cluster = "staging"
		case 4:
			in.ExpiresAt = in.CreatedAt.Add(time.Minute)
		}
		mustCreate(t, s, in)
	}
	if _, err := s.EndSession(ctx(), "s3", t0.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(10 * time.Minute)
	ids := func(f store.SessionFilter) string {
		t.Helper()
		ss, err := s.ListSessions(ctx(), f)
		if err != nil {
			t.Fatalf("ListSessions(%+v): %v", f, err)
		}
		var out []string
		for _, x := range ss {
			out = append(out, x.ID)
		}
		return strings.Join(out, ",")
	}
	cases := []struct {
		f    store.SessionFilter
		want string
	}{
		{store.SessionFilter{}, "s4,s3,s2,s1,s0"},
		{store.SessionFilter{Repository: "acme/api"}, "s1"},
		{store.SessionFilter{Cluster: "staging"}, "s2"},
		{store.SessionFilter{RunID: run(0).RunID}, "s0"},
		{store.SessionFilter{Issuer: "https://other"}, ""},
		{store.SessionFilter{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)}, "s2,s1"},
		{store.SessionFilter{State: store.SessionEnded}, "s3"},
		{store.SessionFilter{State: store.SessionLive, Now: now}, "s2,s1,s0"},
		{store.SessionFilter{State: store.SessionExpired, Now: now}, "s4"},
		{store.SessionFilter{Limit: 2}, "s4,s3"},
		{store.SessionFilter{Repository: "acme/web", State: store.SessionLive, Now: now}, "s2,s0"},
	}
	for _, c := range cases {
		if got := ids(c.f); got != c.want {
			t.Errorf("ListSessions(%+v) = %q, want %q", c.f, got, c.want)
		}
	}
	_, err := s.ListSessions(ctx(), store.SessionFilter{State: store.SessionLive})
	wantErr(t, err, store.ErrInvalid)
	_, err = s.ListSessions(ctx(), store.SessionFilter{State: "zombie"})
	wantErr(t, err, store.ErrInvalid)

	live, err := s.ListLiveSessionIDs(ctx(), now)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(live, ","); got != "s0,s1,s2" {
		t.Fatalf("ListLiveSessionIDs = %q, want s0,s1,s2", got)
	}
}

// concurrentCreate: many exchanges of one run at once (over one or two
// store instances) create exactly one session, and all get it.
func concurrentCreate(t *testing.T, a, b store.Store) {
	const n = 24
	var (
		mu      sync.Mutex
		created int
		ids     = map[string]bool{}
		errs    []error
	)
	parallel(n, func(i int) {
		got, c, err := pick(a, b, i).CreateOrGetSession(ctx(), newSession(fmt.Sprintf("c%d", i), run(7), t0))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		if c {
			created++
		}
		ids[got.ID] = true
	})
	if len(errs) > 0 {
		t.Fatalf("%d of %d calls failed, first: %v", len(errs), n, errs[0])
	}
	if created != 1 || len(ids) != 1 {
		t.Fatalf("created %d sessions, callers saw %d ids; want exactly 1 and 1", created, len(ids))
	}
	// Different runs at once all get their own.
	created = 0
	parallel(n, func(i int) {
		_, c, err := pick(a, b, i).CreateOrGetSession(ctx(), newSession(fmt.Sprintf("d%d", i), run(100+i), t0))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		} else if c {
			created++
		}
	})
	if len(errs) > 0 || created != n {
		t.Fatalf("distinct runs: created %d of %d, errors %v", created, n, errs)
	}
}

// ---- token bindings and DPoP ----

func testTokenBinding(t *testing.T, s store.Store) {
	b := store.TokenBinding{Issuer: "iss", JTI: "j1", Thumbprint: "k1", ExpiresAt: t0.Add(5 * time.Minute)}
	got, err := s.BindToken(ctx(), b, t0)
	if err != nil || got != "k1" {
		t.Fatalf("first bind = %q, %v; want k1", got, err)
	}
	b2 := b
	b2.Thumbprint = "k2"
	if got, err := s.BindToken(ctx(), b2, t0.Add(time.Minute)); err != nil || got != "k1" {
		t.Fatalf("second bind = %q, %v; want the first key k1", got, err)
	}
	// Same jti of another issuer is another token.
	b3 := b2
	b3.Issuer = "other"
	if got, err := s.BindToken(ctx(), b3, t0); err != nil || got != "k2" {
		t.Fatalf("other issuer bind = %q, %v; want k2", got, err)
	}
	// A binding that expired no longer holds.
	b2.ExpiresAt = t0.Add(10 * time.Minute)
	if got, err := s.BindToken(ctx(), b2, t0.Add(5*time.Minute)); err != nil || got != "k2" {
		t.Fatalf("bind after expiry = %q, %v; want k2", got, err)
	}
	// Purge keeps bindings that have not expired.
	if err := s.Purge(ctx(), t0.Add(6*time.Minute)); err != nil {
		t.Fatal(err)
	}
	b4 := b
	b4.Thumbprint = "k3"
	if got, err := s.BindToken(ctx(), b4, t0.Add(6*time.Minute)); err != nil || got != "k2" {
		t.Fatalf("bind after purge = %q, %v; want k2 (bound until t0+10m)", got, err)
	}
	_, err = s.BindToken(ctx(), store.TokenBinding{Issuer: "iss"}, t0)
	wantErr(t, err, store.ErrInvalid)
}

func concurrentBind(t *testing.T, a, b store.Store) {
	const n = 16
	got := make([]string, n)
	errs := make([]error, n)
	parallel(n, func(i int) {
		got[i], errs[i] = pick(a, b, i).BindToken(ctx(), store.TokenBinding{Issuer: "iss", JTI: "race", Thumbprint: fmt.Sprintf("k%d", i), ExpiresAt: t0.Add(time.Hour)}, t0)
	})
	for i := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("callers saw different bindings: %q and %q", got[0], got[i])
		}
	}
}

func testProofJTI(t *testing.T, s store.Store) {
	exp := t0.Add(2 * time.Minute)
	if err := s.UseProofJTI(ctx(), "p1", exp, t0); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.UseProofJTI(ctx(), "p1", exp, t0.Add(time.Minute)), store.ErrReplay)
	if err := s.Purge(ctx(), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.UseProofJTI(ctx(), "p1", exp, t0.Add(time.Minute)), store.ErrReplay)
	// After its expiry the entry is gone (the broker refuses such old proofs by their iat anyway).
	if err := s.UseProofJTI(ctx(), "p1", exp.Add(time.Minute), exp); err != nil {
		t.Fatalf("use after expiry: %v", err)
	}
	// Many distinct jtis (crosses the purge interval).
	for i := 0; i < 300; i++ {
		if err := s.UseProofJTI(ctx(), fmt.Sprintf("m%d", i), t0.Add(time.Hour), t0); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, s.UseProofJTI(ctx(), "m5", t0.Add(time.Hour), t0), store.ErrReplay)
	wantErr(t, s.UseProofJTI(ctx(), "", exp, t0), store.ErrInvalid)
}

func concurrentJTI(t *testing.T, a, b store.Store) {
	const n = 16
	errs := make([]error, n)
	parallel(n, func(i int) {
		errs[i] = pick(a, b, i).UseProofJTI(ctx(), "once", t0.Add(time.Minute), t0)
	})
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrReplay):
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d callers used the same proof jti, want exactly 1", ok)
	}
}

// ---- credentials ----

func testCredentials(t *testing.T, s store.Store) {
	mustCreate(t, s, newSession("s", run(1), t0))
	for i := 0; i < 3; i++ {
		c := store.CredentialRecord{SessionID: "s", Kind: []string{"kubernetes", "eks", "kubernetes"}[i], IssuedAt: t0.Add(time.Duration(i) * time.Minute), ExpiresAt: t0.Add(time.Hour)}
		if err := s.RecordCredential(ctx(), c); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := s.ListCredentials(ctx(), "s")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 3 || cs[1].Kind != "eks" || !cs[2].IssuedAt.Equal(t0.Add(2*time.Minute)) || !cs[0].ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("credentials = %+v", cs)
	}
	wantErr(t, s.RecordCredential(ctx(), store.CredentialRecord{SessionID: "nope", Kind: "x", IssuedAt: t0, ExpiresAt: t0}), store.ErrNotFound)
}

// ---- transcripts ----

func line(sess string, seq int) string {
	return fmt.Sprintf(`{"seq":%d,"type":"request","session":%q}`, seq, sess)
}

func lines(sess string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, line(sess, i))
	}
	return out
}

func testTranscript(t *testing.T, s store.Store) {
	mustCreate(t, s, newSession("s", run(1), t0))
	st, err := s.TranscriptState(ctx(), "s", "t1")
	if err != nil || st.NextSeq != 0 || st.LastDigest != "" || st.Sealed {
		t.Fatalf("empty transcript state = %+v, %v", st, err)
	}
	st, err = s.AppendTranscript(ctx(), "s", "t1", 0, lines("s", 0, 3))
	if err != nil || st.NextSeq != 3 || st.LastDigest != store.LineDigest(line("s", 2)) {
		t.Fatalf("append 0..2: %+v, %v", st, err)
	}
	if !strings.HasPrefix(st.LastDigest, "sha256:") || len(st.LastDigest) != len("sha256:")+64 {
		t.Fatalf("digest %q is not sha256:<hex>", st.LastDigest)
	}
	// A resend overlapping what is stored, with new lines after it.
	st, err = s.AppendTranscript(ctx(), "s", "t1", 1, lines("s", 1, 5))
	if err != nil || st.NextSeq != 5 {
		t.Fatalf("overlapping resend: %+v, %v", st, err)
	}
	// A pure resend changes nothing.
	st, err = s.AppendTranscript(ctx(), "s", "t1", 0, lines("s", 0, 2))
	if err != nil || st.NextSeq != 5 || st.LastDigest != store.LineDigest(line("s", 4)) {
		t.Fatalf("pure resend: %+v, %v", st, err)
	}
	// Different content at a stored seq is refused, and the whole chunk with it.
	chunk := append([]string{`{"seq":4,"type":"forged"}`}, lines("s", 5, 7)...)
	_, err = s.AppendTranscript(ctx(), "s", "t1", 4, chunk)
	wantErr(t, err, store.ErrConflict)
	if st, _ := s.TranscriptState(ctx(), "s", "t1"); st.NextSeq != 5 {
		t.Fatalf("refused chunk changed the transcript: NextSeq %d, want 5", st.NextSeq)
	}
	// Gaps are refused.
	_, err = s.AppendTranscript(ctx(), "s", "t1", 6, lines("s", 6, 7))
	wantErr(t, err, store.ErrSeqGap)
	_, err = s.AppendTranscript(ctx(), "s", "t1", -1, lines("s", 0, 1))
	wantErr(t, err, store.ErrInvalid)
	// An empty chunk at the end is a no-op.
	if st, err := s.AppendTranscript(ctx(), "s", "t1", 5, nil); err != nil || st.NextSeq != 5 {
		t.Fatalf("empty chunk: %+v, %v", st, err)
	}
	_, err = s.AppendTranscript(ctx(), "nope", "t1", 0, lines("nope", 0, 1))
	wantErr(t, err, store.ErrNotFound)

	got, err := s.ReadTranscript(ctx(), "s", "t1", 0, 0)
	if err != nil || strings.Join(got, "\n") != strings.Join(lines("s", 0, 5), "\n") {
		t.Fatalf("read all = %q, %v", got, err)
	}
	got, err = s.ReadTranscript(ctx(), "s", "t1", 2, 4)
	if err != nil || strings.Join(got, "\n") != strings.Join(lines("s", 2, 4), "\n") {
		t.Fatalf("read [2,4) = %q, %v", got, err)
	}
	if got, err := s.ReadTranscript(ctx(), "s", "t1", 9, 0); err != nil || len(got) != 0 {
		t.Fatalf("read past end = %q, %v", got, err)
	}
	_, err = s.ReadTranscript(ctx(), "nope", "t1", 0, 0)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.TranscriptState(ctx(), "nope", "t1")
	wantErr(t, err, store.ErrNotFound)

	// Lines keep their bytes exactly (unicode, escapes, trailing spaces).
	mustCreate(t, s, newSession("u", run(2), t0))
	odd := []string{"{\"x\":\"h\u00e9llo \\u0000 \u2603\"}  ", `{}`}
	if _, err := s.AppendTranscript(ctx(), "u", "t1", 0, odd); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ReadTranscript(ctx(), "u", "t1", 0, 0); len(got) != 2 || got[0] != odd[0] {
		t.Fatalf("bytes changed: %q", got)
	}
}

func testTranscriptBig(t *testing.T, s store.Store) {
	mustCreate(t, s, newSession("s", run(1), t0))
	// More lines than one INSERT takes, in two overlapping chunks.
	if _, err := s.AppendTranscript(ctx(), "s", "t1", 0, lines("s", 0, 250)); err != nil {
		t.Fatal(err)
	}
	st, err := s.AppendTranscript(ctx(), "s", "t1", 200, lines("s", 200, 530))
	if err != nil || st.NextSeq != 530 {
		t.Fatalf("%+v, %v", st, err)
	}
	got, err := s.ReadTranscript(ctx(), "s", "t1", 0, 0)
	if err != nil || len(got) != 530 || got[529] != line("s", 529) || got[250] != line("s", 250) {
		t.Fatalf("read %d lines, %v", len(got), err)
	}
}

// concurrentTranscript: a client retrying uploads while an earlier attempt
// is still in flight: the same lines arrive concurrently from several
// places; all succeed and the transcript is exactly the lines.
func concurrentTranscript(t *testing.T, a, b store.Store) {
	mustCreate(t, a, newSession("s", run(1), t0))
	const n = 8
	errs := make([]error, n)
	parallel(n, func(i int) {
		// Each worker sends all chunks in order; chunks overlap.
		for from := 0; from < 40; from += 10 {
			if _, err := pick(a, b, i).AppendTranscript(ctx(), "s", "t1", int64(from), lines("s", from, from+15)); err != nil {
				errs[i] = err
				return
			}
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.ReadTranscript(ctx(), "s", "t1", 0, 0)
	if err != nil || strings.Join(got, "\n") != strings.Join(lines("s", 0, 45), "\n") {
		t.Fatalf("transcript after concurrent resends: %d lines, %v", len(got), err)
	}
}

func testTranscriptSeal(t *testing.T, s store.Store) {
	mustCreate(t, s, newSession("s", run(1), t0))
	if _, err := s.AppendTranscript(ctx(), "s", "t1", 0, lines("s", 0, 3)); err != nil {
		t.Fatal(err)
	}
	st, err := s.SealTranscript(ctx(), "s", "t1", nil)
	if err != nil || !st.Sealed || st.NextSeq != 3 {
		t.Fatalf("seal: %+v, %v", st, err)
	}
	if st, err := s.SealTranscript(ctx(), "s", "t1", nil); err != nil || !st.Sealed {
		t.Fatalf("second seal: %+v, %v", st, err)
	}
	// A resend of sealed lines is fine; new lines are not.
	if _, err := s.AppendTranscript(ctx(), "s", "t1", 1, lines("s", 1, 3)); err != nil {
		t.Fatalf("resend after seal: %v", err)
	}
	_, err = s.AppendTranscript(ctx(), "s", "t1", 2, lines("s", 2, 4))
	wantErr(t, err, store.ErrSealed)
	sess, err := s.EndSession(ctx(), "s", t0.Add(time.Minute))
	if err != nil || !sess.Sealed || sess.UnsealedEnd {
		t.Fatalf("ended sealed session: %+v, %v; want Sealed and not UnsealedEnd", sess, err)
	}
	// A seal arriving after the end clears the unsealed marker.
	mustCreate(t, s, newSession("late", run(2), t0))
	if sess, _ := s.EndSession(ctx(), "late", t0.Add(time.Minute)); !sess.UnsealedEnd {
		t.Fatal("ending an unsealed session must mark it")
	}
	if _, err := s.SealTranscript(ctx(), "late", "t1", nil); err != nil {
		t.Fatal(err)
	}
	if sess, _ := s.GetSession(ctx(), "late"); !sess.Sealed || sess.UnsealedEnd {
		t.Fatalf("late seal: %+v", sess)
	}
	_, err = s.SealTranscript(ctx(), "nope", "t1", nil)
	wantErr(t, err, store.ErrNotFound)
}

// testTranscriptsOfOneSession: a run wraps several commands, each with its
// own transcript in the one session: independent chains, idempotency per
// transcript, and the session counts as sealed only when all of them are.
func testTranscriptsOfOneSession(t *testing.T, s store.Store) {
	mustCreate(t, s, newSession("s", run(1), t0))
	// Same seqs, different bytes: each transcript has its own chain.
	if _, err := s.AppendTranscript(ctx(), "s", "a", 0, lines("a", 0, 4)); err != nil {
		t.Fatal(err)
	}
	st, err := s.AppendTranscript(ctx(), "s", "b", 0, lines("b", 0, 2))
	if err != nil || st.NextSeq != 2 || st.LastDigest != store.LineDigest(line("b", 1)) {
		t.Fatalf("second transcript starts its own chain: %+v, %v", st, err)
	}
	if st, _ := s.TranscriptState(ctx(), "s", "a"); st.NextSeq != 4 || st.LastDigest != store.LineDigest(line("a", 3)) {
		t.Fatalf("first transcript changed by the second: %+v", st)
	}
	// A transcript not begun is empty, not missing.
	if st, err := s.TranscriptState(ctx(), "s", "c"); err != nil || st.NextSeq != 0 || st.Sealed {
		t.Fatalf("unbegun transcript = %+v, %v", st, err)
	}
	_, err = s.ReadTranscript(ctx(), "s", "c", 0, 0)
	wantErr(t, err, store.ErrNotFound)
	// Idempotency is per transcript: a's lines resent are fine for a, a
	// conflict for b.
	if st, err := s.AppendTranscript(ctx(), "s", "a", 0, lines("a", 0, 2)); err != nil || st.NextSeq != 4 {
		t.Fatalf("resend to a: %+v, %v", st, err)
	}
	_, err = s.AppendTranscript(ctx(), "s", "b", 0, lines("a", 0, 2))
	wantErr(t, err, store.ErrConflict)
	_, err = s.AppendTranscript(ctx(), "s", "b", 3, lines("b", 3, 4))
	wantErr(t, err, store.ErrSeqGap)
	got, err := s.ReadTranscript(ctx(), "s", "b", 0, 0)
	if err != nil || strings.Join(got, "\n") != strings.Join(lines("b", 0, 2), "\n") {
		t.Fatalf("read b = %q, %v", got, err)
	}
	got, err = s.ReadTranscript(ctx(), "s", "a", 1, 3)
	if err != nil || strings.Join(got, "\n") != strings.Join(lines("a", 1, 3), "\n") {
		t.Fatalf("read a[1,3) = %q, %v", got, err)
	}
	_, err = s.AppendTranscript(ctx(), "nope", "a", 0, lines("a", 0, 1))
	wantErr(t, err, store.ErrNotFound)
	_, err = s.TranscriptState(ctx(), "nope", "a")
	wantErr(t, err, store.ErrNotFound)

	// Sealing a seals a only.
	summary := json.RawMessage(`{"exitCode":0,"counts":{"allowed":3,"denied":1}}`)
	if st, err := s.SealTranscript(ctx(), "s", "a", summary); err != nil || !st.Sealed || st.NextSeq != 4 {
		t.Fatalf("seal a: %+v, %v", st, err)
	}
	_, err = s.AppendTranscript(ctx(), "s", "a", 4, lines("a", 4, 5))
	wantErr(t, err, store.ErrSealed)
	if st, err := s.AppendTranscript(ctx(), "s", "b", 2, lines("b", 2, 3)); err != nil || st.Sealed || st.NextSeq != 3 {
		t.Fatalf("b goes on after a is sealed: %+v, %v", st, err)
	}
	if sess, _ := s.GetSession(ctx(), "s"); sess.Sealed {
		t.Fatal("session sealed while transcript b is not")
	}
	// The end marks the session: b is unsealed.
	if sess, _ := s.EndSession(ctx(), "s", t0.Add(time.Minute)); !sess.UnsealedEnd || sess.Sealed {
		t.Fatalf("ended with b unsealed: %+v", sess)
	}
	// A second seal of a keeps the first summary.
	if _, err := s.SealTranscript(ctx(), "s", "a", json.RawMessage(`{"other":1}`)); err != nil {
		t.Fatal(err)
	}
	if sess, _ := s.GetSession(ctx(), "s"); !sess.UnsealedEnd {
		t.Fatal("resealing a cleared the unsealed marker while b is unsealed")
	}
	// b's seal, arriving late (pushed after the run), clears it.
	if _, err := s.SealTranscript(ctx(), "s", "b", nil); err != nil {
		t.Fatal(err)
	}
	if sess, _ := s.GetSession(ctx(), "s"); !sess.Sealed || sess.UnsealedEnd {
		t.Fatalf("all sealed: %+v", sess)
	}
	// A transcript begun after that (a spool pushed late) unseals the session again.
	if _, err := s.AppendTranscript(ctx(), "s", "c", 0, lines("c", 0, 1)); err != nil {
		t.Fatal(err)
	}
	if sess, _ := s.GetSession(ctx(), "s"); sess.Sealed || !sess.UnsealedEnd {
		t.Fatalf("new unsealed transcript of an ended session: %+v", sess)
	}
	ts, err := s.ListTranscripts(ctx(), store.TranscriptFilter{SessionID: "s"})
	if err != nil || len(ts) != 3 {
		t.Fatalf("list = %+v, %v", ts, err)
	}
	byID := map[string]store.TranscriptInfo{}
	for _, ti := range ts {
		byID[ti.TranscriptID] = ti
	}
	if a := byID["a"]; !a.Sealed || a.NextSeq != 4 || string(a.Summary) != string(summary) || a.Session.ID != "s" || a.SessionID != "s" {
		t.Fatalf("a = %+v", a)
	}
	if b := byID["b"]; !b.Sealed || b.NextSeq != 3 || b.Summary != nil {
		t.Fatalf("b = %+v", b)
	}
	if c := byID["c"]; c.Sealed || c.NextSeq != 1 || c.CreatedAt.IsZero() {
		t.Fatalf("c = %+v", c)
	}
	if k := store.LogKey("s", "a"); k != "s/a" {
		t.Fatalf("LogKey = %q", k)
	}
	if k := store.LogKey("s", ""); k != "s" {
		t.Fatalf("LogKey of the legacy transcript = %q", k)
	}
}

func testTranscriptList(t *testing.T, s store.Store) {
	r2 := run(2)
	r2.Repository = "acme/api"
	mustCreate(t, s, newSession("one", run(1), t0))
	two := newSession("two", r2, t0.Add(time.Hour))
	two.Cluster = "staging"
	mustCreate(t, s, two)
	mustCreate(t, s, newSession("empty", run(3), t0.Add(2*time.Hour)))
	for _, k := range [][2]string{{"one", "x"}, {"one", "y"}, {"two", "z"}} {
		if _, err := s.AppendTranscript(ctx(), k[0], k[1], 0, lines(k[1], 0, 2)); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(f store.TranscriptFilter) string {
		t.Helper()
		ts, err := s.ListTranscripts(ctx(), f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ti := range ts {
			out = append(out, ti.SessionID+"/"+ti.TranscriptID)
		}
		return strings.Join(out, ",")
	}
	// Newest session first; a session without transcripts lists nothing.
	if got := ids(store.TranscriptFilter{}); got != "two/z,one/x,one/y" {
		t.Fatalf("all = %s", got)
	}
	if got := ids(store.TranscriptFilter{SessionFilter: store.SessionFilter{Repository: "acme/api"}}); got != "two/z" {
		t.Fatalf("by repository = %s", got)
	}
	if got := ids(store.TranscriptFilter{SessionFilter: store.SessionFilter{RunID: run(1).RunID}}); got != "one/x,one/y" {
		t.Fatalf("by run = %s", got)
	}
	if got := ids(store.TranscriptFilter{SessionFilter: store.SessionFilter{Cluster: "staging"}}); got != "two/z" {
		t.Fatalf("by cluster = %s", got)
	}
	if got := ids(store.TranscriptFilter{SessionFilter: store.SessionFilter{Since: t0.Add(time.Minute)}}); got != "two/z" {
		t.Fatalf("since = %s", got)
	}
	if got := ids(store.TranscriptFilter{SessionFilter: store.SessionFilter{Until: t0.Add(time.Minute)}}); got != "one/x,one/y" {
		t.Fatalf("until = %s", got)
	}
	if got := ids(store.TranscriptFilter{SessionFilter: store.SessionFilter{Limit: 1}}); got != "two/z" {
		t.Fatalf("limit = %s", got)
	}
	if got := ids(store.TranscriptFilter{SessionID: "nope"}); got != "" {
		t.Fatalf("unknown session = %s", got)
	}
}

// concurrentTwoTranscripts: two commands of one run uploading at once (over
// one or two brokers) do not disturb each other.
func concurrentTwoTranscripts(t *testing.T, a, b store.Store) {
	mustCreate(t, a, newSession("s", run(1), t0))
	const n = 6
	errs := make([]error, n)
	parallel(n, func(i int) {
		tid := fmt.Sprint("t", i%2)
		for from := 0; from < 30; from += 10 {
			if _, err := pick(a, b, i).AppendTranscript(ctx(), "s", tid, int64(from), lines(tid, from, from+12)); err != nil {
				errs[i] = err
				return
			}
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, tid := range []string{"t0", "t1"} {
		got, err := b.ReadTranscript(ctx(), "s", tid, 0, 0)
		if err != nil || strings.Join(got, "\n") != strings.Join(lines(tid, 0, 32), "\n") {
			t.Fatalf("transcript %s: %d lines, %v", tid, len(got), err)
		}
	}
}

// ---- Merkle log ----

func leaf(key string) []byte {
	h := store.LineDigest(key) // any 32+ bytes will do; reuse the digest
	return []byte(h[len("sha256:"):][:32])
}

func testLog(t *testing.T, s store.Store) {
	if n, err := s.LogSize(ctx()); err != nil || n != 0 {
		t.Fatalf("empty log size = %d, %v", n, err)
	}
	for i := 0; i < 3; i++ {
		idx, err := s.AppendLeaf(ctx(), fmt.Sprintf("k%d", i), leaf(fmt.Sprintf("k%d", i)))
		if err != nil || idx != uint64(i) {
			t.Fatalf("append k%d = %d, %v", i, idx, err)
		}
	}
	// Idempotent by key.
	if idx, err := s.AppendLeaf(ctx(), "k1", leaf("k1")); err != nil || idx != 1 {
		t.Fatalf("re-append k1 = %d, %v; want 1", idx, err)
	}
	_, err := s.AppendLeaf(ctx(), "k1", leaf("other"))
	wantErr(t, err, store.ErrConflict)
	_, err = s.AppendLeaf(ctx(), "", leaf("x"))
	wantErr(t, err, store.ErrInvalid)
	if n, err := s.LogSize(ctx()); err != nil || n != 3 {
		t.Fatalf("size = %d, %v; want 3", n, err)
	}
	hs, err := s.LeafHashes(ctx(), 1, 3)
	if err != nil || len(hs) != 2 || !bytes.Equal(hs[0], leaf("k1")) || !bytes.Equal(hs[1], leaf("k2")) {
		t.Fatalf("leaves [1,3) = %x, %v", hs, err)
	}
	if hs, err := s.LeafHashes(ctx(), 2, 2); err != nil || len(hs) != 0 {
		t.Fatalf("empty range = %x, %v", hs, err)
	}
	_, err = s.LeafHashes(ctx(), 0, 4)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.LeafHashes(ctx(), 3, 1)
	wantErr(t, err, store.ErrInvalid)
	l, err := s.LeafByKey(ctx(), "k2")
	if err != nil || l.Index != 2 || !bytes.Equal(l.LeafHash, leaf("k2")) || l.Key != "k2" {
		t.Fatalf("LeafByKey(k2) = %+v, %v", l, err)
	}
	_, err = s.LeafByKey(ctx(), "nope")
	wantErr(t, err, store.ErrNotFound)
}

// concurrentLog: appends racing (over one or two instances) get dense,
// distinct indexes, and each index holds the hash appended under it.
func concurrentLog(t *testing.T, a, b store.Store) {
	const workers, each = 8, 6
	idx := make([][]uint64, workers)
	errs := make([]error, workers)
	parallel(workers, func(w int) {
		for j := 0; j < each; j++ {
			i, err := pick(a, b, w).AppendLeaf(ctx(), fmt.Sprintf("w%d-%d", w, j), leaf(fmt.Sprintf("w%d-%d", w, j)))
			if err != nil {
				errs[w] = err
				return
			}
			idx[w] = append(idx[w], i)
		}
	})
	seen := map[uint64]string{}
	for w := range idx {
		if errs[w] != nil {
			t.Fatal(errs[w])
		}
		prev := -1
		for j, i := range idx[w] {
			key := fmt.Sprintf("w%d-%d", w, j)
			if other, dup := seen[i]; dup {
				t.Fatalf("index %d given to %s and %s", i, other, key)
			}
			seen[i] = key
			// One writer's appends are ordered.
			if int(i) <= prev {
				t.Fatalf("worker %d got index %d after %d", w, i, prev)
			}
			prev = int(i)
		}
	}
	total := uint64(workers * each)
	if n, err := a.LogSize(ctx()); err != nil || n != total {
		t.Fatalf("size = %d, %v; want %d", n, err, total)
	}
	hs, err := b.LeafHashes(ctx(), 0, total)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if !bytes.Equal(h, leaf(seen[uint64(i)])) {
			t.Fatalf("index %d holds the wrong hash", i)
		}
	}
}

func testCheckpoints(t *testing.T, s store.Store) {
	_, err := s.LatestCheckpoint(ctx())
	wantErr(t, err, store.ErrNotFound)
	for _, size := range []uint64{1, 5, 3} {
		c := store.Checkpoint{Size: size, RootHash: []byte(fmt.Sprintf("root%d", size)), Signed: fmt.Sprintf("log\n%d\n", size), CreatedAt: t0}
		if err := s.PutCheckpoint(ctx(), c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutCheckpoint(ctx(), store.Checkpoint{Size: 5, RootHash: []byte("other"), Signed: "other", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	c, err := s.LatestCheckpoint(ctx())
	if err != nil || c.Size != 5 || string(c.RootHash) != "root5" || c.Signed != "log\n5\n" || !c.CreatedAt.Equal(t0) {
		t.Fatalf("latest = %+v, %v; want the first checkpoint of size 5", c, err)
	}
}

// ---- approvals ----

var req = store.RequestDigest{Method: "DELETE", Path: "/api/v1/namespaces/prod/pods/web", BodyDigest: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}

func newApproval(id, sess string, required int) store.Approval {
	return store.Approval{
		ID: id, SessionID: sess, Request: req, Rule: "prod-changes-need-a-human",
		Details:  json.RawMessage(`{"verb":"delete","diff":"- web"}`),
		Required: required, Groups: []string{"reviewers", "sre"},
		CreatedAt: t0, ExpiresAt: t0.Add(10 * time.Minute),
	}
}

func testApprovalLifecycle(t *testing.T, s store.Store) {
	mustCreate(t, s, newSession("s", run(1), t0))
	in := newApproval("a1", "s", 2)
	if err := s.CreateApproval(ctx(), in); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.CreateApproval(ctx(), in), store.ErrConflict)
	wantErr(t, s.CreateApproval(ctx(), newApproval("a2", "nope", 1)), store.ErrNotFound)
	wantErr(t, s.CreateApproval(ctx(), newApproval("a3", "s", 0)), store.ErrInvalid)

	a, err := s.GetApproval(ctx(), "a1")
	if err != nil {
		t.Fatal(err)
	}
	if a.State != store.ApprovalPending || a.Request != req || a.Rule != in.Rule || string(a.Details) != string(in.Details) ||
		a.Required != 2 || strings.Join(a.Groups, ",") != "reviewers,sre" || !a.ExpiresAt.Equal(in.ExpiresAt) || !a.DecidedAt.IsZero() {
		t.Fatalf("stored approval = %+v", a)
	}
	_, err = s.GetApproval(ctx(), "nope")
	wantErr(t, err, store.ErrNotFound)
	pending, err := s.ListPendingApprovals(ctx(), t0.Add(time.Minute))
	if err != nil || len(pending) != 1 || pending[0].ID != "a1" {
		t.Fatalf("pending = %+v, %v", pending, err)
	}
	// Not approved yet: cannot be used.
	wantErr(t, s.Consume(ctx(), "a1", req, t0), store.ErrNotApproved)

	a, err = s.Decide(ctx(), "a1", store.Decision{Reviewer: "alice", Verdict: store.VerdictApprove, Reason: "ok", Time: t0.Add(time.Minute)})
	if err != nil || a.State != store.ApprovalPending || len(a.Decisions) != 1 {
		t.Fatalf("first of two approvals: %+v, %v; want still pending", a, err)
	}
	// The same reviewer cannot count twice.
	_, err = s.Decide(ctx(), "a1", store.Decision{Reviewer: "alice", Verdict: store.VerdictApprove, Time: t0.Add(2 * time.Minute)})
	wantErr(t, err, store.ErrConflict)
	_, err = s.Decide(ctx(), "a1", store.Decision{Reviewer: "bob", Verdict: "maybe", Time: t0})
	wantErr(t, err, store.ErrInvalid)
	a, err = s.Decide(ctx(), "a1", store.Decision{Reviewer: "bob", Verdict: store.VerdictApprove, Time: t0.Add(3 * time.Minute)})
	if err != nil || a.State != store.ApprovalApproved || !a.DecidedAt.Equal(t0.Add(3*time.Minute)) || len(a.Decisions) != 2 {
		t.Fatalf("second approval: %+v, %v; want approved", a, err)
	}
	// Decided approvals never change.
	a, err = s.Decide(ctx(), "a1", store.Decision{Reviewer: "carol", Verdict: store.VerdictDeny, Time: t0.Add(4 * time.Minute)})
	wantErr(t, err, store.ErrDecided)
	if a.State != store.ApprovalApproved {
		t.Fatalf("state after refused decision = %s", a.State)
	}
	_, err = s.Decide(ctx(), "nope", store.Decision{Reviewer: "bob", Verdict: store.VerdictApprove, Time: t0})
	wantErr(t, err, store.ErrNotFound)

	stored, err := s.GetApproval(ctx(), "a1")
	if err != nil || stored.State != store.ApprovalApproved || len(stored.Decisions) != 2 ||
		stored.Decisions[0].Reviewer != "alice" || stored.Decisions[0].Reason != "ok" || !stored.Decisions[1].Time.Equal(t0.Add(3*time.Minute)) {
		t.Fatalf("stored decisions = %+v, %v", stored, err)
	}
	if p, _ := s.ListPendingApprovals(ctx(), t0.Add(time.Minute)); len(p) != 0 {
		t.Fatalf("approved approval still pending: %+v", p)
	}

	// Used once, only for its own request.
	other := req
	other.BodyDigest = "sha256:00"
	wantErr(t, s.Consume(ctx(), "a1", other, t0.Add(5*time.Minute)), store.ErrMismatch)
	if err := s.Consume(ctx(), "a1", req, t0.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Consume(ctx(), "a1", req, t0.Add(6*time.Minute)), store.ErrConsumed)
	if a, _ := s.GetApproval(ctx(), "a1"); !a.ConsumedAt.Equal(t0.Add(5 * time.Minute)) {
		t.Fatalf("ConsumedAt = %s", a.ConsumedAt)
	}
	wantErr(t, s.Consume(ctx(), "nope", req, t0), store.ErrNotFound)
}

func testApprovalDenyExpire(t *testing.T, s store.Store) {
	mustCreate(t, s, newSession("s", run(1), t0))
	for _, id := range []string{"deny", "late", "sweep", "live"} {
		a := newApproval(id, "s", 2)
		if id == "live" {
			a.ExpiresAt = t0.Add(time.Hour)
		}
		if err := s.CreateApproval(ctx(), a); err != nil {
			t.Fatal(err)
		}
	}
	// One deny is enough, whatever Required says.
	a, err := s.Decide(ctx(), "deny", store.Decision{Reviewer: "alice", Verdict: store.VerdictDeny, Reason: "no", Time: t0.Add(time.Minute)})
	if err != nil || a.State != store.ApprovalDenied {
		t.Fatalf("deny: %+v, %v", a, err)
	}
	wantErr(t, s.Consume(ctx(), "deny", req, t0.Add(time.Minute)), store.ErrNotApproved)

	// A decision at the deadline expires the approval instead.
	a, err = s.Decide(ctx(), "late", store.Decision{Reviewer: "alice", Verdict: store.VerdictApprove, Time: t0.Add(10 * time.Minute)})
	wantErr(t, err, store.ErrExpired)
	if a.State != store.ApprovalExpired {
		t.Fatalf("late decision left state %s", a.State)
	}
	if a, _ := s.GetApproval(ctx(), "late"); a.State != store.ApprovalExpired || len(a.Decisions) != 0 || !a.DecidedAt.Equal(a.ExpiresAt) {
		t.Fatalf("stored late approval = %+v; want expired with no decisions", a)
	}
	// Before the sweep, StateAt shows the expiry; the pending list hides it.
	sw, _ := s.GetApproval(ctx(), "sweep")
	if sw.State != store.ApprovalPending || sw.StateAt(t0.Add(11*time.Minute)) != store.ApprovalExpired {
		t.Fatalf("sweep: State %s StateAt %s", sw.State, sw.StateAt(t0.Add(11*time.Minute)))
	}
	p, err := s.ListPendingApprovals(ctx(), t0.Add(11*time.Minute))
	if err != nil || len(p) != 1 || p[0].ID != "live" {
		t.Fatalf("pending at t0+11m = %+v, %v; want live only", p, err)
	}
	n, err := s.ExpireApprovals(ctx(), t0.Add(11*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("ExpireApprovals = %d, %v; want 1 (sweep)", n, err)
	}
	if a, _ := s.GetApproval(ctx(), "sweep"); a.State != store.ApprovalExpired {
		t.Fatalf("sweep state = %s", a.State)
	}
	if a, _ := s.GetApproval(ctx(), "live"); a.State != store.ApprovalPending {
		t.Fatalf("live state = %s", a.State)
	}
}

// concurrentApproval: reviewers deciding at once on a one-reviewer approval
// produce exactly one decision; proxies racing to use it succeed once.
func concurrentApproval(t *testing.T, a, b store.Store) {
	mustCreate(t, a, newSession("s", run(1), t0))
	if err := a.CreateApproval(ctx(), newApproval("a", "s", 1)); err != nil {
		t.Fatal(err)
	}
	const n = 12
	errs := make([]error, n)
	parallel(n, func(i int) {
		v := store.VerdictApprove
		if i%3 == 2 {
			v = store.VerdictDeny
		}
		_, errs[i] = pick(a, b, i).Decide(ctx(), "a", store.Decision{Reviewer: fmt.Sprintf("r%d", i), Verdict: v, Time: t0.Add(time.Minute)})
	})
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrDecided):
			t.Fatalf("unexpected error: %v", err)
		}
	}
	got, err := b.GetApproval(ctx(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if won != 1 || len(got.Decisions) != 1 {
		t.Fatalf("%d decisions succeeded, %d stored; want 1 and 1", won, len(got.Decisions))
	}
	wantState := store.ApprovalApproved
	if got.Decisions[0].Verdict == store.VerdictDeny {
		wantState = store.ApprovalDenied
	}
	if got.State != wantState {
		t.Fatalf("state %s after verdict %s", got.State, got.Decisions[0].Verdict)
	}
	if wantState != store.ApprovalApproved {
		return
	}
	parallel(n, func(i int) { errs[i] = pick(a, b, i).Consume(ctx(), "a", req, t0.Add(2*time.Minute)) })
	used := 0
	for _, err := range errs {
		switch {
		case err == nil:
			used++
		case !errors.Is(err, store.ErrConsumed):
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if used != 1 {
		t.Fatalf("approval used %d times, want exactly once", used)
	}
}

// ---- signing keys ----

func testSigningKeys(t *testing.T, s store.Store) {
	if ks, err := s.ListSigningKeys(ctx()); err != nil || len(ks) != 0 {
		t.Fatalf("empty list = %+v, %v", ks, err)
	}
	secret := []byte{0x30, 0x2e, 0x02, 0x01, 0x00, 0xff, 0x00, 0x10}
	k2 := store.SigningKey{KID: "k2", Algorithm: "EdDSA", Private: secret, CreatedAt: t0.Add(time.Hour), RetireAfter: t0.Add(48 * time.Hour)}
	k1 := store.SigningKey{KID: "k1", Algorithm: "EdDSA", Private: []byte("one"), CreatedAt: t0, RetireAfter: t0.Add(24 * time.Hour)}
	for _, k := range []store.SigningKey{k2, k1} {
		if err := s.InsertSigningKey(ctx(), k); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, s.InsertSigningKey(ctx(), k1), store.ErrConflict)
	wantErr(t, s.InsertSigningKey(ctx(), store.SigningKey{KID: "k3"}), store.ErrInvalid)
	ks, err := s.ListSigningKeys(ctx())
	if err != nil || len(ks) != 2 || ks[0].KID != "k1" || ks[1].KID != "k2" {
		t.Fatalf("keys = %+v, %v; want k1, k2 (oldest first)", ks, err)
	}
	if !bytes.Equal(ks[1].Private, secret) || ks[1].Algorithm != "EdDSA" || !ks[1].RetireAfter.Equal(k2.RetireAfter) || !ks[1].CreatedAt.Equal(k2.CreatedAt) {
		t.Fatalf("k2 round trip = %+v", ks[1])
	}
}
