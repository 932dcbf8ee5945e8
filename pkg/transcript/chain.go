package transcript

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"maps"
	"slices"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Seal statement constants (DESIGN.md "Transcript file").
const (
	StatementType    = "https://in-toto.io/Statement/v1"
	PredicateType    = "https://kubectl-agent.io/transcript/v1"
	PayloadType      = "application/vnd.in-toto+json"
	SubjectName      = "transcript"
	checkpointPrefix = "kubectl-agent checkpoint v1"
)

// CheckpointPayload is the payload of a checkpoint event: a signature by the
// session key over the chain up to the previous line.
type CheckpointPayload struct {
	UpTo   int64  `json:"upTo"`   // seq of the previous line
	Digest string `json:"digest"` // "sha256:" of the previous line
	Sig    string `json:"sig"`    // unpadded base64url ed25519 signature over CheckpointMessage
}

// SealPayload is the payload of the seal event, the last line.
type SealPayload struct {
	Envelope   *dsse.Envelope `json:"envelope"`
	KeyBinding string         `json:"keyBinding,omitempty"`
}

// Statement is an in-toto Statement v1 as a seal signs it.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     Predicate `json:"predicate"`
}

// Subject is an in-toto resource descriptor.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Predicate summarizes the run a sealed transcript records.
type Predicate struct {
	Session      string            `json:"session"`
	Identity     map[string]string `json:"identity,omitempty"`
	Cluster      string            `json:"cluster"`
	Mode         string            `json:"mode"`
	Command      []string          `json:"command"`
	PolicyDigest string            `json:"policyDigest"`
	Counts       map[string]int64  `json:"counts"`
	ExitCode     int               `json:"exitCode"`
	Lines        int64             `json:"lines"` // lines before the seal
	// SealedAt repeats the seal line's time, so that the signature covers it.
	SealedAt time.Time `json:"sealedAt"`
}

// LineError is a verification failure at one line (1-based).
type LineError struct {
	Line   int64
	Reason string
	Err    error // a sentinel such as ErrUnsealed, or nil
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

func (e *LineError) Unwrap() error { return e.Err }

func lineErr(line int64, format string, args ...any) error {
	return &LineError{Line: line, Reason: fmt.Sprintf(format, args...)}
}

// chain checks lines one by one. Verify, ChainVerifier and the recorder's
// crash recovery share it, so all three accept exactly the same transcripts.
type chain struct {
	sessionID string // expected; "" = take from the start event
	pub       ed25519.PublicKey
	start     *StartEvent

	next           int64
	lastDigest     string
	h              hash.Hash // sha256 over every accepted line + "\n"
	sealed         bool
	lastCheckpoint int64 // seq of the last good checkpoint, -1 if none
	end            *EndEvent
	command        []string
	statement      *Statement
	lastTime       time.Time
	counts         map[string]int64
}

func newChain(sessionID string, pub ed25519.PublicKey) *chain {
	return &chain{sessionID: sessionID, pub: pub, h: sha256.New(), lastCheckpoint: -1, counts: map[string]int64{}}
}

// accept checks one line (without its newline) and advances the chain.
func (c *chain) accept(lineNo int64, line []byte) (*Event, error) {
	if c.sealed {
		return nil, lineErr(lineNo, "line after the seal (lines were appended to a sealed transcript)")
	}
	ev, err := parseCanonical(lineNo, line)
	if err != nil {
		return nil, err
	}
	if ev.Seq != c.next {
		return nil, lineErr(lineNo, "seq is %d, expected %d (a line was deleted, duplicated or moved)", ev.Seq, c.next)
	}
	if c.next == 0 {
		if ev.Prev != "" {
			return nil, lineErr(lineNo, "the first line must have an empty prev")
		}
	} else if ev.Prev != c.lastDigest {
		return nil, lineErr(lineNo, "prev does not match sha256 of line %d (the transcript was edited, reordered or has a line inserted)", lineNo-1)
	}
	if err := checkPayloadShape(lineNo, ev); err != nil {
		return nil, err
	}
	if (ev.Type == TypeStart) != (ev.Seq == 0) {
		return nil, lineErr(lineNo, "a transcript has exactly one start event, on its first line")
	}
	if ev.Time.Before(c.lastTime) {
		return nil, lineErr(lineNo, "time goes backwards (%s after %s)", ev.Time.Format(time.RFC3339Nano), c.lastTime.Format(time.RFC3339Nano))
	}
	if c.end != nil && ev.Type != TypeSeal && ev.Type != TypeCheckpoint {
		return nil, lineErr(lineNo, "%s event after the end event", ev.Type)
	}
	switch ev.Type {
	case TypeStart:
		if err := c.acceptStart(lineNo, ev.Start); err != nil {
			return nil, err
		}
	case TypeCheckpoint:
		if err := c.acceptCheckpoint(lineNo, ev); err != nil {
			return nil, err
		}
	case TypeSeal:
		if err := c.acceptSeal(lineNo, ev); err != nil {
			return nil, err
		}
	case TypeCommand:
		c.command = ev.Command.Argv
	case TypeEnd:
		if c.end != nil {
			return nil, lineErr(lineNo, "second end event")
		}
		c.end = ev.End
	}
	countEvent(c.counts, ev)
	c.lastTime = ev.Time
	if ev.Type != TypeSeal {
		c.h.Write(line)
		c.h.Write([]byte{'\n'})
	}
	c.lastDigest = LineDigest(line)
	c.next++
	return ev, nil
}

func (c *chain) acceptStart(lineNo int64, s *StartEvent) error {
	if c.sessionID != "" && s.SessionID != c.sessionID {
		return lineErr(lineNo, "start event is for session %q, not %q (lines from another session)", s.SessionID, c.sessionID)
	}
	if s.SessionID == "" {
		return lineErr(lineNo, "start event has no sessionID")
	}
	pub, err := DecodePublicKey(s.PublicKey)
	if err != nil {
		return lineErr(lineNo, "start event: %v", err)
	}
	if c.pub != nil && !pub.Equal(c.pub) {
		return lineErr(lineNo, "start event names session key %s, but the session's key is %s (a foreign key)", Thumbprint(pub), Thumbprint(c.pub))
	}
	c.sessionID, c.pub, c.start = s.SessionID, pub, s
	return nil
}

func (c *chain) acceptCheckpoint(lineNo int64, ev *Event) error {
	var cp CheckpointPayload
	if err := strictPayload(ev.Checkpoint, &cp); err != nil {
		return lineErr(lineNo, "checkpoint payload: %v", err)
	}
	if cp.UpTo != ev.Seq-1 || cp.Digest != ev.Prev {
		return lineErr(lineNo, "checkpoint covers seq %d (%s), not the previous line", cp.UpTo, cp.Digest)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(cp.Sig)
	if err != nil || !ed25519.Verify(c.pub, CheckpointMessage(c.sessionID, cp.UpTo, cp.Digest), sig) {
		return lineErr(lineNo, "checkpoint signature does not verify with the session key %s (forged, re-signed with another key, or edited)", Thumbprint(c.pub))
	}
	c.lastCheckpoint = ev.Seq
	return nil
}

func (c *chain) acceptSeal(lineNo int64, ev *Event) error {
	var sp SealPayload
	if err := strictPayload(ev.Seal, &sp); err != nil {
		return lineErr(lineNo, "seal payload: %v", err)
	}
	if sp.KeyBinding != c.start.KeyBinding {
		return lineErr(lineNo, "seal's key binding differs from the start event's")
	}
	st, err := openEnvelope(sp.Envelope, c.pub)
	if err != nil {
		return lineErr(lineNo, "seal: %v", err)
	}
	sum := c.h.Sum(nil)
	want := hex.EncodeToString(sum)
	if st.Type != StatementType || st.PredicateType != PredicateType || len(st.Subject) != 1 || st.Subject[0].Name != SubjectName {
		return lineErr(lineNo, "seal statement is not a kubectl-agent transcript statement")
	}
	if got := st.Subject[0].Digest["sha256"]; got != want {
		return lineErr(lineNo, "seal covers transcript digest %s, but lines 1-%d hash to %s (lines were edited, added or removed)", got, lineNo-1, want)
	}
	p := st.Predicate
	switch {
	case p.Session != c.sessionID:
		return lineErr(lineNo, "seal is for session %q, not %q", p.Session, c.sessionID)
	case p.Lines != ev.Seq:
		return lineErr(lineNo, "seal says %d lines precede it, there are %d", p.Lines, ev.Seq)
	case !p.SealedAt.Equal(ev.Time):
		return lineErr(lineNo, "seal line's time differs from the signed sealedAt")
	case c.end == nil:
		return lineErr(lineNo, "seal without an end event")
	case p.ExitCode != c.end.ExitCode || !maps.Equal(p.Counts, c.end.Counts):
		return lineErr(lineNo, "seal's exit code or counts differ from the end event's")
	case !slices.Equal(p.Command, c.command):
		return lineErr(lineNo, "seal's command differs from the command event's")
	case p.Cluster != c.start.Cluster || p.PolicyDigest != c.start.PolicyDigest || p.Mode != c.start.Mode || !maps.Equal(p.Identity, c.start.Identity):
		return lineErr(lineNo, "seal's cluster, mode, identity or policy digest differ from the start event's")
	}
	c.statement = st
	c.sealed = true
	return nil
}

// openEnvelope verifies a DSSE envelope with the session key and decodes its
// statement. Base64 is decoded strictly so that no other encoding of the same
// bytes passes.
func openEnvelope(env *dsse.Envelope, pub ed25519.PublicKey) (*Statement, error) {
	if env == nil {
		return nil, errors.New("no DSSE envelope")
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("envelope payloadType is %q, want %q", env.PayloadType, PayloadType)
	}
	if len(env.Signatures) != 1 {
		return nil, fmt.Errorf("envelope has %d signatures, want 1", len(env.Signatures))
	}
	if kid := Thumbprint(pub); env.Signatures[0].KeyID != kid {
		return nil, fmt.Errorf("envelope is signed by key %q, not the session key %q (re-signed with another key)", env.Signatures[0].KeyID, kid)
	}
	body, err := base64.StdEncoding.Strict().DecodeString(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("envelope payload is not base64: %w", err)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(env.Signatures[0].Sig)
	if err != nil {
		return nil, fmt.Errorf("envelope signature is not base64: %w", err)
	}
	if !ed25519.Verify(pub, dsse.PAE(env.PayloadType, body), sig) {
		return nil, fmt.Errorf("envelope signature does not verify with the session key %s (forged, edited or re-signed with another key)", Thumbprint(pub))
	}
	var st Statement
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("envelope payload is not an in-toto statement: %w", err)
	}
	return &st, nil
}

// parseCanonical decodes a line and insists that it is exactly what the
// recorder would have written for that event. Without this, edits that JSON
// decoding ignores (key case, escapes, whitespace, unknown fields) would pass
// on the one line no later line hashes: the seal.
func parseCanonical(lineNo int64, line []byte) (*Event, error) {
	var ev Event
	if err := json.Unmarshal(line, &ev); err != nil {
		return nil, lineErr(lineNo, "not a JSON event (edited or torn): %v", err)
	}
	again, err := json.Marshal(&ev)
	if err != nil || !bytes.Equal(again, line) {
		return nil, lineErr(lineNo, "not in the recorder's canonical form (the line was edited)")
	}
	return &ev, nil
}

// strictPayload decodes a raw payload and requires it to be canonical.
func strictPayload(raw json.RawMessage, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return err
	}
	again, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if !bytes.Equal(again, raw) {
		return errors.New("not in canonical form (edited)")
	}
	return nil
}

// checkPayloadShape requires exactly the payload that goes with the type.
func checkPayloadShape(lineNo int64, ev *Event) error {
	set := map[string]bool{
		TypeStart:      ev.Start != nil,
		TypeCommand:    ev.Command != nil,
		TypeRequest:    ev.Request != nil,
		TypeStream:     ev.Stream != nil,
		TypeApproval:   ev.Approval != nil,
		TypeEnd:        ev.End != nil,
		TypeCheckpoint: ev.Checkpoint != nil,
		TypeSeal:       ev.Seal != nil,
	}
	has, known := set[ev.Type]
	if !known {
		return lineErr(lineNo, "unknown event type %q", ev.Type)
	}
	if !has {
		return lineErr(lineNo, "%s event without its %s payload", ev.Type, ev.Type)
	}
	for t, v := range set {
		if v && t != ev.Type {
			return lineErr(lineNo, "%s event also carries a %s payload", ev.Type, t)
		}
	}
	return nil
}

// countEvent keeps the counters that end events and seals report.
func countEvent(counts map[string]int64, ev *Event) {
	switch ev.Type {
	case TypeRequest:
		counts["requests"]++
		if d := ev.Request.Decision; d != "" {
			counts["requests."+d]++
		}
	case TypeStream:
		counts["streamEvents"]++
	case TypeApproval:
		counts["approvals"]++
	}
}

// ChainState is a ChainVerifier's progress, for the broker to persist
// between chunks (JSON-serializable).
type ChainState struct {
	SessionID      string `json:"sessionID"`
	PublicKey      string `json:"publicKey"`
	NextSeq        int64  `json:"nextSeq"`
	LastDigest     string `json:"lastDigest"`
	Hash           []byte `json:"hash"` // sha256 state over all lines so far
	Sealed         bool   `json:"sealed"`
	LastCheckpoint int64  `json:"lastCheckpoint"`
	// What the seal is checked against.
	Start   *StartEvent `json:"start,omitempty"`
	End     *EndEvent   `json:"end,omitempty"`
	Command []string    `json:"command,omitempty"`
	// LastTime is the newest event time seen.
	LastTime time.Time `json:"lastTime"`
}

// ChainVerifier checks a transcript as it arrives in chunks, for the broker:
// it refuses a broken chain, another session's lines, a foreign key and bad
// checkpoint or seal signatures. It does not check the key binding: the
// broker made it.
type ChainVerifier struct{ c *chain }

// NewChainVerifier starts verifying the transcript of sessionID, whose
// session key is publicKey.
func NewChainVerifier(sessionID string, publicKey ed25519.PublicKey) *ChainVerifier {
	return &ChainVerifier{c: newChain(sessionID, publicKey)}
}

// ResumeChainVerifier continues from a persisted state.
func ResumeChainVerifier(st ChainState) (*ChainVerifier, error) {
	pub, err := DecodePublicKey(st.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("resuming chain verifier: %w", err)
	}
	c := newChain(st.SessionID, pub)
	if len(st.Hash) > 0 {
		if err := c.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.Hash); err != nil {
			return nil, fmt.Errorf("resuming chain verifier: hash state: %w", err)
		}
	}
	c.next, c.lastDigest, c.sealed, c.lastCheckpoint = st.NextSeq, st.LastDigest, st.Sealed, st.LastCheckpoint
	c.start, c.end, c.command, c.lastTime = st.Start, st.End, st.Command, st.LastTime
	if c.next > 0 && c.start == nil {
		return nil, errors.New("resuming chain verifier: state past seq 0 has no start event")
	}
	return &ChainVerifier{c: c}, nil
}

// State is the verifier's progress, to persist.
func (v *ChainVerifier) State() ChainState {
	hs, _ := v.c.h.(encoding.BinaryMarshaler).MarshalBinary()
	return ChainState{
		SessionID: v.c.sessionID, PublicKey: EncodePublicKey(v.c.pub),
		NextSeq: v.c.next, LastDigest: v.c.lastDigest, Hash: hs, Sealed: v.c.sealed,
		LastCheckpoint: v.c.lastCheckpoint, Start: v.c.start, End: v.c.end, Command: v.c.command,
		LastTime: v.c.lastTime,
	}
}

// Next is the seq the next accepted line must have.
func (v *ChainVerifier) Next() int64 { return v.c.next }

// Sealed reports whether the seal was accepted.
func (v *ChainVerifier) Sealed() bool { return v.c.sealed }

// Accept checks lines starting at firstSeq, which must be Next(): the broker
// drops the part of a resent chunk it already holds before calling Accept.
// Lines are accepted one by one; on error, the lines before the bad one are
// accepted (Next tells how far) and the rest are not.
func (v *ChainVerifier) Accept(firstSeq int64, lines []string) error {
	if firstSeq != v.c.next {
		return fmt.Errorf("chunk starts at seq %d, expected %d", firstSeq, v.c.next)
	}
	for i, l := range lines {
		if _, err := v.c.accept(firstSeq+int64(i)+1, []byte(l)); err != nil {
			return err
		}
	}
	return nil
}
