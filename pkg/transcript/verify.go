package transcript

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"

	jose "github.com/go-jose/go-jose/v4"
)

// ErrUnsealed marks a transcript that ends without a seal.
var ErrUnsealed = errors.New("transcript is not sealed")

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// JWKS is the broker's key set. With it, the key binding must verify, and
	// a transcript whose key no broker bound fails.
	JWKS *jose.JSONWebKeySet
}

// Report is what Verify found.
type Report struct {
	SessionID string            `json:"sessionID"`
	KeyID     string            `json:"keyID"` // RFC 7638 thumbprint of the session key
	Cluster   string            `json:"cluster"`
	Mode      string            `json:"mode"`
	Identity  map[string]string `json:"identity,omitempty"`
	Lines     int64             `json:"lines"`
	Sealed    bool              `json:"sealed"`
	// VerifiedUpTo is the last line (1-based) that a signature covers: the
	// seal, or else the last good checkpoint; 0 when none does.
	VerifiedUpTo int64 `json:"verifiedUpTo"`
	// Bound is set when the start event carries a broker's key binding;
	// BindingVerified when its signature was checked against a JWKS.
	Bound           bool              `json:"bound"`
	BindingVerified bool              `json:"bindingVerified"`
	Binding         *KeyBindingClaims `json:"binding,omitempty"`
	Command         []string          `json:"command,omitempty"`
	ExitCode        *int              `json:"exitCode,omitempty"`
	Counts          map[string]int64  `json:"counts,omitempty"`
	Statement       *Statement        `json:"statement,omitempty"`
}

// Verify checks a whole transcript: seq order, the prev chain, every
// checkpoint signature, the seal (DSSE signature by the session key from the
// start event, subject digest of every line before it) and the key binding.
// Errors name the first bad line (*LineError). An unsealed transcript gives
// a Report (Sealed false, VerifiedUpTo the last checkpoint) and an error that
// wraps ErrUnsealed. The Report is returned with every error, as far as
// verification got.
func Verify(r io.Reader, opts VerifyOptions) (*Report, error) {
	rep := &Report{}
	c := newChain("", nil)
	br := bufio.NewReaderSize(r, 64<<10)
	var lineNo int64
	fill := func() {
		if c.lastCheckpoint >= 0 {
			rep.VerifiedUpTo = c.lastCheckpoint + 1
		}
		rep.Lines = c.next
		rep.Command = c.command
		if c.end != nil {
			code := c.end.ExitCode
			rep.ExitCode = &code
			rep.Counts = maps.Clone(c.end.Counts)
		}
	}
	for {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			break
		}
		lineNo++
		if err != nil && !errors.Is(err, io.EOF) {
			fill()
			return rep, fmt.Errorf("reading transcript: %w", err)
		}
		if err != nil { // EOF with bytes and no newline
			fill()
			return rep, lineErr(lineNo, "incomplete line: no newline at its end (a torn write, or the file was truncated)")
		}
		if _, err := c.accept(lineNo, line[:len(line)-1]); err != nil {
			fill()
			return rep, err
		}
		if lineNo == 1 {
			s := c.start
			rep.SessionID, rep.KeyID, rep.Cluster, rep.Mode, rep.Identity = s.SessionID, Thumbprint(c.pub), s.Cluster, s.Mode, s.Identity
			if err := checkBinding(rep, s, opts.JWKS); err != nil {
				fill()
				return rep, &LineError{Line: 1, Reason: err.Error()}
			}
		}
	}
	fill()
	if lineNo == 0 {
		return rep, lineErr(1, "empty transcript")
	}
	if !c.sealed {
		return rep, &LineError{Line: lineNo + 1, Err: ErrUnsealed, Reason: fmt.Sprintf(
			"no seal: the transcript ends after line %d (truncated, or the run did not finish); signatures cover it up to line %d", lineNo, rep.VerifiedUpTo)}
	}
	rep.Sealed = true
	rep.VerifiedUpTo = lineNo
	rep.Statement = c.statement
	return rep, nil
}

// checkBinding checks the start event's key binding against the session and,
// with a JWKS, the broker's signature.
func checkBinding(rep *Report, s *StartEvent, jwks *jose.JSONWebKeySet) error {
	if s.KeyBinding == "" {
		if jwks != nil {
			return errors.New("the session key is not bound by a broker (a local-mode transcript), but a JWKS was given to check the binding")
		}
		return nil
	}
	rep.Bound = true
	claims, verified, err := ParseKeyBinding(s.KeyBinding, jwks)
	if err != nil {
		return err
	}
	if claims.Subject != s.SessionID {
		return fmt.Errorf("key binding is for session %q, not %q", claims.Subject, s.SessionID)
	}
	if claims.Cnf.JWK.Kty != "OKP" || claims.Cnf.JWK.Crv != "Ed25519" || claims.Cnf.JWK.X != s.PublicKey {
		return fmt.Errorf("key binding binds key %q, not the session key %q (a foreign key)", claims.Cnf.JWK.X, s.PublicKey)
	}
	if claims.Cluster != s.Cluster {
		return fmt.Errorf("key binding is for cluster %q, not %q", claims.Cluster, s.Cluster)
	}
	rep.Binding, rep.BindingVerified = claims, verified
	return nil
}
