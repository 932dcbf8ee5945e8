package transcript

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func verifyBytes(b []byte, f *fixture) (*Report, error) {
	return Verify(bytes.NewReader(b), VerifyOptions{JWKS: f.broker.jwks})
}

func TestVerifyGoodTranscript(t *testing.T) {
	f := newFixture(t, "sess-1", true)
	b := f.record(t)
	rep, err := verifyBytes(b, f)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, b)
	}
	lines := splitLines(b)
	if !rep.Sealed || rep.VerifiedUpTo != int64(len(lines)) || !rep.BindingVerified || rep.SessionID != "sess-1" {
		t.Fatalf("report = %+v", rep)
	}
	if rep.Binding.Identity.Repository != "acme/app" || rep.ExitCode == nil || *rep.ExitCode != 1 {
		t.Fatalf("report = %+v", rep)
	}
	if rep.Counts["requests"] != 2 || rep.Counts["requests.deny"] != 1 || rep.Counts["approvals"] != 1 {
		t.Fatalf("counts = %v", rep.Counts)
	}
	// Checkpoints every 3 events: some must be there.
	if !bytes.Contains(b, []byte(`"type":"checkpoint"`)) {
		t.Fatal("no checkpoint written")
	}
	// Without a JWKS, the binding is decoded but not verified.
	rep, err = Verify(bytes.NewReader(b), VerifyOptions{})
	if err != nil || rep.BindingVerified || !rep.Bound {
		t.Fatalf("no jwks: %+v %v", rep, err)
	}
	// A JWKS of another broker fails line 1.
	_, err = Verify(bytes.NewReader(b), VerifyOptions{JWKS: newBroker(t).jwks})
	wantLineErr(t, err, 1, "not in the JWKS")
}

func wantLineErr(t *testing.T, err error, line int64, reason string) {
	t.Helper()
	var le *LineError
	if !errors.As(err, &le) {
		t.Fatalf("error %v is not a line error", err)
	}
	if le.Line != line || !strings.Contains(le.Reason, reason) {
		t.Fatalf("got %q, want line %d with %q", err, line, reason)
	}
}

// TestTamperEveryByte flips each byte of a real transcript in turn; every
// single flip must fail verification with a line-numbered error.
func TestTamperEveryByte(t *testing.T) {
	f := newFixture(t, "sess-flip", true)
	b := f.record(t)
	lineOf := make([]int64, len(b))
	var n int64 = 1
	for i, c := range b {
		lineOf[i] = n
		if c == '\n' {
			n++
		}
	}
	for i := range b {
		for _, mask := range []byte{0x01, 0x20} {
			if mask == 0x20 && i%5 != 0 {
				continue // a second kind of flip on a sample, to keep the test fast
			}
			m := bytes.Clone(b)
			m[i] ^= mask
			_, err := verifyBytes(m, f)
			if err == nil {
				t.Fatalf("flipping byte %d (line %d, %q ^ %#x) went unnoticed", i, lineOf[i], b[i], mask)
			}
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("byte %d: error %v names no line", i, err)
			}
			// The error names the edited line or, when only the next line's
			// prev shows the edit, the one after it.
			if le.Line != lineOf[i] && le.Line != lineOf[i]+1 {
				t.Fatalf("byte %d in line %d: error names line %d: %v", i, lineOf[i], le.Line, err)
			}
		}
	}
}

func TestTamperLines(t *testing.T) {
	f := newFixture(t, "sess-lines", true)
	b := f.record(t)
	lines := splitLines(b)
	join := func(ls ...[]byte) []byte { return bytes.Join(ls, nil) }
	del := func(i int) []byte {
		out := append([][]byte{}, lines[:i]...)
		return join(append(out, lines[i+1:]...)...)
	}
	other := newFixture(t, "sess-other", true).record(t)
	otherLines := splitLines(other)

	cases := []struct {
		name   string
		data   []byte
		line   int64
		reason string
	}{
		{"delete line 3", del(2), 3, "seq is 3, expected 2"},
		{"delete first line", del(0), 1, "seq is 1, expected 0"},
		{"duplicate line 3", join(append(append(append([][]byte{}, lines[:3]...), lines[2]), lines[3:]...)...), 4, "seq is 2, expected 3"},
		{"swap lines 3 and 4", join(append(append(append([][]byte{}, lines[:2]...), lines[3], lines[2]), lines[4:]...)...), 3, "seq is 3, expected 2"},
		{"truncate the seal", join(lines[:len(lines)-1]...), int64(len(lines)), "no seal"},
		{"truncate mid-line", b[:len(b)-10], int64(len(lines)), "incomplete line"},
		{"append after seal", join(append(append([][]byte{}, lines...), lines[2])...), int64(len(lines) + 1), "after the seal"},
		{"splice another session's line", join(append(append(append([][]byte{}, lines[:2]...), otherLines[2]), lines[3:]...)...), 3, "prev does not match sha256 of line 2"},
		{"another session's seal", join(append(append([][]byte{}, lines[:len(lines)-1]...), otherLines[len(otherLines)-1])...), int64(len(lines)), "prev does not match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := verifyBytes(tc.data, f)
			wantLineErr(t, err, tc.line, tc.reason)
			if rep == nil || rep.Sealed {
				t.Fatalf("report = %+v", rep)
			}
		})
	}
}

// TestResignWithAnotherKey rewrites a transcript with a new key from the
// start, chain and signatures recomputed: the binding names the old key.
func TestResignWithAnotherKey(t *testing.T) {
	f := newFixture(t, "sess-resign", true)
	f.record(t)
	// The forger records the same events with their own key but keeps the
	// broker's binding (which binds the real key).
	forged := *f
	_, forged.key, _ = ed25519.GenerateKey(rand.Reader)
	forged.path = f.path + ".forged"
	b := forged.record(t)
	_, err := verifyBytes(b, f)
	wantLineErr(t, err, 1, "a foreign key")

	// Replacing only the seal's signature with another key's fails at the seal.
	lines := splitLines(f.record2(t))
	last := lines[len(lines)-1]
	var ev Event
	if err := json.Unmarshal(last[:len(last)-1], &ev); err != nil {
		t.Fatal(err)
	}
	var sp SealPayload
	_ = json.Unmarshal(ev.Seal, &sp)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	body, _ := sp.Envelope.DecodeB64Payload()
	sp.Envelope.Signatures[0].Sig = b64std(ed25519.Sign(other, paeOf(body)))
	ev.Seal, _ = json.Marshal(sp)
	nl, _ := json.Marshal(&ev)
	lines[len(lines)-1] = append(nl, '\n')
	_, err = verifyBytes(bytes.Join(lines, nil), f)
	wantLineErr(t, err, int64(len(lines)), "signature does not verify")
}

func TestLocalModeUnbound(t *testing.T) {
	f := newFixture(t, "sess-local", false)
	b := f.record(t)
	rep, err := Verify(bytes.NewReader(b), VerifyOptions{})
	if err != nil || !rep.Sealed || rep.Bound || rep.Mode != "local" {
		t.Fatalf("local verify: %+v %v", rep, err)
	}
	_, err = verifyBytes(b, f)
	wantLineErr(t, err, 1, "not bound by a broker")
}

func TestUnsealedVerifiesToLastCheckpoint(t *testing.T) {
	f := newFixture(t, "sess-unsealed", true)
	b := f.record(t)
	lines := splitLines(b)
	// Cut before the end event: find the last checkpoint in what is left.
	cut := lines[:len(lines)-2]
	var lastCP int64
	for i, l := range cut {
		if bytes.Contains(l, []byte(`"type":"checkpoint"`)) {
			lastCP = int64(i + 1)
		}
	}
	if lastCP == 0 {
		t.Fatal("fixture has no checkpoint")
	}
	rep, err := verifyBytes(bytes.Join(cut, nil), f)
	if !errors.Is(err, ErrUnsealed) {
		t.Fatalf("err = %v, want ErrUnsealed", err)
	}
	if rep.Sealed || rep.VerifiedUpTo != lastCP || !strings.Contains(err.Error(), "up to line") {
		t.Fatalf("report %+v err %v (last checkpoint at %d)", rep, err, lastCP)
	}
}

func TestChainVerifier(t *testing.T) {
	f := newFixture(t, "sess-cv", true)
	b := f.record(t)
	var lines []string
	for _, l := range splitLines(b) {
		lines = append(lines, string(l[:len(l)-1]))
	}
	pub := f.key.Public().(ed25519.PublicKey)

	// In chunks, persisting and resuming the state between them.
	v := NewChainVerifier("sess-cv", pub)
	for i := 0; i < len(lines); i += 2 {
		end := min(i+2, len(lines))
		if err := v.Accept(int64(i), lines[i:end]); err != nil {
			t.Fatalf("chunk at %d: %v", i, err)
		}
		st, _ := json.Marshal(v.State())
		var back ChainState
		if err := json.Unmarshal(st, &back); err != nil {
			t.Fatal(err)
		}
		var err error
		if v, err = ResumeChainVerifier(back); err != nil {
			t.Fatal(err)
		}
	}
	if !v.Sealed() || v.Next() != int64(len(lines)) {
		t.Fatalf("sealed=%v next=%d", v.Sealed(), v.Next())
	}

	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	edited := append([]string{}, lines...)
	edited[2] = strings.Replace(edited[2], `"get"`, `"put"`, 1)
	other := newFixture(t, "sess-x", true).record(t)
	cases := []struct {
		name   string
		v      *ChainVerifier
		first  int64
		lines  []string
		reason string
	}{
		{"wrong session", NewChainVerifier("sess-else", pub), 0, lines, "another session"},
		{"foreign key", NewChainVerifier("sess-cv", otherKey.Public().(ed25519.PublicKey)), 0, lines, "foreign key"},
		{"edited line", NewChainVerifier("sess-cv", pub), 0, edited, "prev does not match sha256 of line 3"},
		{"gap", NewChainVerifier("sess-cv", pub), 1, lines[1:], "chunk starts at seq 1"},
		{"other transcript", NewChainVerifier("sess-cv", pub), 0, strings.Split(strings.TrimSpace(string(other)), "\n"), "another session"},
	}
	for _, tc := range cases {
		if err := tc.v.Accept(tc.first, tc.lines); err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.reason)
		}
	}
	// A bad checkpoint signature is refused.
	bad := append([]string{}, lines...)
	for i, l := range bad {
		if strings.Contains(l, `"type":"checkpoint"`) {
			var ev Event
			_ = json.Unmarshal([]byte(l), &ev)
			var cp CheckpointPayload
			_ = json.Unmarshal(ev.Checkpoint, &cp)
			cp.Sig = signCheckpoint(otherKey, "sess-cv", cp.UpTo, cp.Digest)
			ev.Checkpoint, _ = json.Marshal(cp)
			nb, _ := json.Marshal(&ev)
			bad[i] = string(nb)
			if err := NewChainVerifier("sess-cv", pub).Accept(0, bad[:i+1]); err == nil || !strings.Contains(err.Error(), "checkpoint signature does not verify") {
				t.Fatalf("forged checkpoint: %v", err)
			}
			break
		}
	}
}
