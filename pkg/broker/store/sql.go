package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"
)

// dialect is what differs between SQLite and PostgreSQL. The queries are
// written once, with "?" placeholders and a {lock} marker where PostgreSQL
// needs "FOR UPDATE" (SQLite has one writer, so it needs no row locks).
type dialect struct {
	name string
	// rebind turns "?" placeholders into the driver's.
	dollar bool
	// forUpdate is appended where a row must be locked until commit.
	forUpdate string
	// classify maps a driver error to a sentinel (ErrConflict for unique
	// violations), or nil when it has no meaning for callers.
	classify func(error) error
	// retryable reports errors after which the whole transaction may be
	// run again (serialization failures, deadlocks, busy).
	retryable func(error) bool
}

// sqlStore implements Store over database/sql for both dialects.
type sqlStore struct {
	db      *sql.DB
	d       dialect
	onClose func()
	// calls counts UseProofJTI calls, to purge expired entries now and then
	// rather than on every call.
	calls atomic.Uint64
}

var _ Store = (*sqlStore)(nil)

// purgeEvery is how many UseProofJTI calls pass between purges.
const purgeEvery = 256

// q prepares a query for the dialect: placeholders and lock clauses.
func (s *sqlStore) q(query string) string {
	query = strings.ReplaceAll(query, "{lock}", s.d.forUpdate)
	if !s.d.dollar {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// tx runs fn in a transaction and commits, running it again (a few times)
// when the database reports a serialization failure or deadlock. fn must
// have no effects outside the transaction.
func (s *sqlStore) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	const attempts = 20
	var err error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			// Back off a little, growing, so racing brokers spread out.
			t := time.NewTimer(time.Duration(i*i) * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		err = s.tryTx(ctx, fn)
		if err == nil || !(errors.Is(err, errRetry) || s.d.retryable(err)) {
			return err
		}
	}
	return err
}

func (s *sqlStore) tryTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// wrap adds what was being done and maps driver errors to sentinels.
func (s *sqlStore) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if c := s.d.classify(err); c != nil && !errors.Is(err, c) {
		return fmt.Errorf("%s: %w: %w", what, c, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Times are stored as Unix nanoseconds; zero times as NULL where optional.
func ns(t time.Time) int64 { return t.UnixNano() }

func fromNS(v int64) time.Time { return time.Unix(0, v).UTC() }

func fromNullNS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromNS(v.Int64)
}

// LineDigest is the digest a transcript line is chained by: "sha256:<hex>" of its bytes.
func LineDigest(line string) string {
	sum := sha256.Sum256([]byte(line))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ---- sessions ----

const sessionColumns = `id, run_issuer, run_repository, run_id, run_attempt, cluster, identity, grant_doc, policy,
	key_thumbprint, public_key, key_binding, created_at, expires_at, ended_at, sealed, unsealed_end`

type scanner interface{ Scan(dest ...any) error }

func scanSession(r scanner) (Session, error) {
	var (
		s                          Session
		identity, grant            string
		created, expires           int64
		ended                      sql.NullInt64
		sealed, unsealedEnd        bool
		publicKey                  []byte
		thumb, binding, policy     string
		issuer, repo, runID, runAt string
	)
	if err := r.Scan(&s.ID, &issuer, &repo, &runID, &runAt, &s.Cluster, &identity, &grant, &policy,
		&thumb, &publicKey, &binding, &created, &expires, &ended, &sealed, &unsealedEnd); err != nil {
		return Session{}, err
	}
	s.Run = RunKey{Issuer: issuer, Repository: repo, RunID: runID, RunAttempt: runAt}
	s.Identity = json.RawMessage(identity)
	s.Grant = json.RawMessage(grant)
	s.Policy = policy
	s.KeyThumbprint = thumb
	s.PublicKey = publicKey
	s.KeyBinding = binding
	s.CreatedAt = fromNS(created)
	s.ExpiresAt = fromNS(expires)
	s.EndedAt = fromNullNS(ended)
	s.Sealed = sealed
	s.UnsealedEnd = unsealedEnd
	return s, nil
}

// jsonText stores a JSON document as text; an empty one as "null" so the
// column always holds valid JSON.
func jsonText(m json.RawMessage) string {
	if len(m) == 0 {
		return "null"
	}
	return string(m)
}

func (s *sqlStore) CreateOrGetSession(ctx context.Context, in Session) (Session, bool, error) {
	const what = "creating or getting the session of a run"
	if in.ID == "" {
		return Session{}, false, fmt.Errorf("%s: %w: empty session id", what, ErrInvalid)
	}
	if !in.ExpiresAt.After(in.CreatedAt) {
		return Session{}, false, fmt.Errorf("%s: %w: expiry %s is not after creation %s", what, ErrInvalid, in.ExpiresAt, in.CreatedAt)
	}
	if in.PublicKey == nil {
		in.PublicKey = []byte{}
	}
	now := ns(in.CreatedAt)
	r := in.Run
	var (
		out     Session
		created bool
	)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// A session of this run that expired without being ended no longer
		// counts as live: end it at its expiry so the unique index frees up.
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE sessions SET ended_at = expires_at, unsealed_end = NOT sealed
			WHERE run_issuer = ? AND run_repository = ? AND run_id = ? AND run_attempt = ? AND ended_at IS NULL AND expires_at <= ?`),
			r.Issuer, r.Repository, r.RunID, r.RunAttempt, now); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO sessions (`+sessionColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, FALSE, FALSE)
			ON CONFLICT (run_issuer, run_repository, run_id, run_attempt) WHERE ended_at IS NULL DO NOTHING`),
			in.ID, r.Issuer, r.Repository, r.RunID, r.RunAttempt, in.Cluster, jsonText(in.Identity), jsonText(in.Grant), in.Policy,
			in.KeyThumbprint, in.PublicKey, in.KeyBinding, now, ns(in.ExpiresAt))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		created = n == 1
		out, err = scanSession(tx.QueryRowContext(ctx, s.q(`SELECT `+sessionColumns+` FROM sessions
			WHERE run_issuer = ? AND run_repository = ? AND run_id = ? AND run_attempt = ? AND ended_at IS NULL`),
			r.Issuer, r.Repository, r.RunID, r.RunAttempt))
		if errors.Is(err, sql.ErrNoRows) {
			// The live session we collided with ended in between: try again.
			return errRetry
		}
		return err
	})
	if err != nil {
		return Session{}, false, s.wrap(what, err)
	}
	return out, created, nil
}

// sessionWhere turns a session filter into WHERE terms over the sessions
// table (its columns prefixed with p, e.g. "s.").
func sessionWhere(f SessionFilter, p string) ([]string, []any, error) {
	var (
		where []string
		args  []any
	)
	eq := func(col, v string) {
		if v != "" {
			where = append(where, p+col+" = ?")
			args = append(args, v)
		}
	}
	eq("run_issuer", f.Issuer)
	eq("run_repository", f.Repository)
	eq("run_id", f.RunID)
	eq("cluster", f.Cluster)
	if !f.Since.IsZero() {
		where = append(where, p+"created_at >= ?")
		args = append(args, ns(f.Since))
	}
	if !f.Until.IsZero() {
		where = append(where, p+"created_at < ?")
		args = append(args, ns(f.Until))
	}
	switch f.State {
	case SessionAny:
	case SessionEnded:
		where = append(where, p+"ended_at IS NOT NULL")
	case SessionLive, SessionExpired:
		if f.Now.IsZero() {
			return nil, nil, fmt.Errorf("%w: state %q needs the time to judge it at", ErrInvalid, f.State)
		}
		if f.State == SessionLive {
			where = append(where, p+"ended_at IS NULL AND "+p+"expires_at > ?")
		} else {
			where = append(where, p+"ended_at IS NULL AND "+p+"expires_at <= ?")
		}
		args = append(args, ns(f.Now))
	default:
		return nil, nil, fmt.Errorf("%w: unknown state %q (use live, ended or expired)", ErrInvalid, f.State)
	}
	return where, args, nil
}

// errRetry asks tx to run the transaction again.
var errRetry = errors.New("retry the transaction")

func (s *sqlStore) GetSession(ctx context.Context, id string) (Session, error) {
	out, err := scanSession(s.db.QueryRowContext(ctx, s.q(`SELECT `+sessionColumns+` FROM sessions WHERE id = ?`), id))
	if err != nil {
		return Session{}, s.wrap(fmt.Sprintf("getting session %q", id), err)
	}
	return out, nil
}

func (s *sqlStore) EndSession(ctx context.Context, id string, at time.Time) (Session, error) {
	var out Session
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE sessions SET ended_at = ?, unsealed_end = NOT sealed WHERE id = ? AND ended_at IS NULL`), ns(at), id); err != nil {
			return err
		}
		var err error
		out, err = scanSession(tx.QueryRowContext(ctx, s.q(`SELECT `+sessionColumns+` FROM sessions WHERE id = ?`), id))
		return err
	})
	if err != nil {
		return Session{}, s.wrap(fmt.Sprintf("ending session %q", id), err)
	}
	return out, nil
}

func (s *sqlStore) ListSessions(ctx context.Context, f SessionFilter) ([]Session, error) {
	const what = "listing sessions"
	where, args, err := sessionWhere(f, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	query := `SELECT ` + sessionColumns + ` FROM sessions`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY created_at DESC, id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, s.wrap(what, err)
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		ses, err := scanSession(rows)
		if err != nil {
			return nil, s.wrap(what, err)
		}
		out = append(out, ses)
	}
	return out, s.wrap(what, rows.Err())
}

func (s *sqlStore) ListLiveSessionIDs(ctx context.Context, now time.Time) ([]string, error) {
	const what = "listing live sessions"
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id FROM sessions WHERE ended_at IS NULL AND expires_at > ? ORDER BY id`), ns(now))
	if err != nil {
		return nil, s.wrap(what, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, s.wrap(what, err)
		}
		out = append(out, id)
	}
	return out, s.wrap(what, rows.Err())
}

// ---- token bindings and DPoP ----

func (s *sqlStore) BindToken(ctx context.Context, b TokenBinding, now time.Time) (string, error) {
	const what = "binding a token to a session key"
	if b.JTI == "" || b.Thumbprint == "" {
		return "", fmt.Errorf("%s: %w: empty jti or thumbprint", what, ErrInvalid)
	}
	var bound string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM token_bindings WHERE issuer = ? AND jti = ? AND expires_at <= ?`), b.Issuer, b.JTI, ns(now)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO token_bindings (issuer, jti, thumbprint, expires_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (issuer, jti) DO NOTHING`), b.Issuer, b.JTI, b.Thumbprint, ns(b.ExpiresAt)); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, s.q(`SELECT thumbprint FROM token_bindings WHERE issuer = ? AND jti = ?`), b.Issuer, b.JTI).Scan(&bound)
	})
	if err != nil {
		return "", s.wrap(what, err)
	}
	return bound, nil
}

func (s *sqlStore) UseProofJTI(ctx context.Context, jti string, expiresAt, now time.Time) error {
	const what = "recording a DPoP proof"
	if jti == "" {
		return fmt.Errorf("%s: %w: empty jti", what, ErrInvalid)
	}
	if s.calls.Add(1)%purgeEvery == 0 {
		if err := s.Purge(ctx, now); err != nil {
			return err
		}
	}
	var fresh bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM dpop_jtis WHERE jti = ? AND expires_at <= ?`), jti, ns(now)); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO dpop_jtis (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING`), jti, ns(expiresAt))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		fresh = n == 1
		return err
	})
	if err != nil {
		return s.wrap(what, err)
	}
	if !fresh {
		return fmt.Errorf("%s: %w: proof jti already used", what, ErrReplay)
	}
	return nil
}

func (s *sqlStore) Purge(ctx context.Context, now time.Time) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM dpop_jtis WHERE expires_at <= ?`), ns(now)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`DELETE FROM token_bindings WHERE expires_at <= ?`), ns(now))
		return err
	})
	return s.wrap("purging expired token bindings and proof jtis", err)
}

// ---- credentials ----

func (s *sqlStore) RecordCredential(ctx context.Context, c CredentialRecord) error {
	what := fmt.Sprintf("recording a credential for session %q", c.SessionID)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.sessionExists(ctx, tx, c.SessionID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO credentials (session_id, kind, issued_at, expires_at) VALUES (?, ?, ?, ?)`),
			c.SessionID, c.Kind, ns(c.IssuedAt), ns(c.ExpiresAt))
		return err
	})
	return s.wrap(what, err)
}

func (s *sqlStore) sessionExists(ctx context.Context, tx *sql.Tx, id string) error {
	var one int
	return tx.QueryRowContext(ctx, s.q(`SELECT 1 FROM sessions WHERE id = ?`), id).Scan(&one)
}

func (s *sqlStore) ListCredentials(ctx context.Context, sessionID string) ([]CredentialRecord, error) {
	what := fmt.Sprintf("listing credentials of session %q", sessionID)
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT kind, issued_at, expires_at FROM credentials WHERE session_id = ? ORDER BY id`), sessionID)
	if err != nil {
		return nil, s.wrap(what, err)
	}
	defer rows.Close()
	var out []CredentialRecord
	for rows.Next() {
		c := CredentialRecord{SessionID: sessionID}
		var issued, expires int64
		if err := rows.Scan(&c.Kind, &issued, &expires); err != nil {
			return nil, s.wrap(what, err)
		}
		c.IssuedAt, c.ExpiresAt = fromNS(issued), fromNS(expires)
		out = append(out, c)
	}
	return out, s.wrap(what, rows.Err())
}

// ---- transcripts ----

// transcriptRow makes the transcript's row if it is new (the session must
// exist) and locks it; created reports whether it was made.
func (s *sqlStore) transcriptRow(ctx context.Context, tx *sql.Tx, sessionID, transcriptID string) (st TranscriptState, created bool, err error) {
	if err := s.sessionExists(ctx, tx, sessionID); err != nil {
		return st, false, err
	}
	now := ns(time.Now())
	res, err := tx.ExecContext(ctx, s.q(`INSERT INTO transcripts (session_id, transcript_id, created_at, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (session_id, transcript_id) DO NOTHING`), sessionID, transcriptID, now, now)
	if err != nil {
		return st, false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return st, false, err
	}
	if created = n == 1; created {
		// An unsealed transcript more: the session is no longer all sealed,
		// and if it already ended it ended with this one unsealed.
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE sessions SET sealed = FALSE, unsealed_end = (ended_at IS NOT NULL) WHERE id = ?`), sessionID); err != nil {
			return st, false, err
		}
	}
	err = tx.QueryRowContext(ctx, s.q(`SELECT next_seq, last_digest, sealed FROM transcripts WHERE session_id = ? AND transcript_id = ? {lock}`), sessionID, transcriptID).
		Scan(&st.NextSeq, &st.LastDigest, &st.Sealed)
	return st, created, err
}

// insertBatch is how many lines go into one INSERT statement.
const insertBatch = 100

func (s *sqlStore) AppendTranscript(ctx context.Context, sessionID, transcriptID string, firstSeq int64, lines []string) (TranscriptState, error) {
	what := fmt.Sprintf("appending lines %d.. of transcript %q of session %q", firstSeq, transcriptID, sessionID)
	if firstSeq < 0 {
		return TranscriptState{}, fmt.Errorf("%s: %w: negative seq", what, ErrInvalid)
	}
	if int64(len(lines)) > math.MaxInt64-firstSeq {
		return TranscriptState{}, fmt.Errorf("%s: %w: seq overflows", what, ErrInvalid)
	}
	var st TranscriptState
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		st, _, err = s.transcriptRow(ctx, tx, sessionID, transcriptID)
		if err != nil {
			return err
		}
		if firstSeq > st.NextSeq {
			return fmt.Errorf("%w: the broker holds lines up to %d, the chunk starts at %d", ErrSeqGap, st.NextSeq, firstSeq)
		}
		end := firstSeq + int64(len(lines))
		// Lines already stored must be resent byte for byte.
		if overlap := min(end, st.NextSeq); overlap > firstSeq {
			rows, err := tx.QueryContext(ctx, s.q(`SELECT seq, line FROM transcript_lines WHERE session_id = ? AND transcript_id = ? AND seq >= ? AND seq < ? ORDER BY seq`),
				sessionID, transcriptID, firstSeq, overlap)
			if err != nil {
				return err
			}
			n := int64(0)
			for rows.Next() {
				var (
					seq  int64
					line string
				)
				if err := rows.Scan(&seq, &line); err != nil {
					rows.Close()
					return err
				}
				if line != lines[seq-firstSeq] {
					rows.Close()
					return fmt.Errorf("%w: line %d differs from the one already stored", ErrConflict, seq)
				}
				n++
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if err := rows.Err(); err != nil {
				return err
			}
			if n != overlap-firstSeq {
				return fmt.Errorf("transcript %q of session %q is missing stored lines (%d of %d)", transcriptID, sessionID, n, overlap-firstSeq)
			}
		}
		if end <= st.NextSeq {
			return nil
		}
		if st.Sealed {
			return fmt.Errorf("%w: the transcript was sealed at line %d", ErrSealed, st.NextSeq-1)
		}
		newLines := lines[st.NextSeq-firstSeq:]
		seq := st.NextSeq
		for len(newLines) > 0 {
			batch := newLines[:min(insertBatch, len(newLines))]
			newLines = newLines[len(batch):]
			var b strings.Builder
			b.WriteString(`INSERT INTO transcript_lines (session_id, transcript_id, seq, line, digest) VALUES `)
			args := make([]any, 0, 5*len(batch))
			for i, line := range batch {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("(?, ?, ?, ?, ?)")
				args = append(args, sessionID, transcriptID, seq, line, LineDigest(line))
				seq++
			}
			if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
				return err
			}
		}
		st.NextSeq = end
		st.LastDigest = LineDigest(lines[len(lines)-1])
		_, err = tx.ExecContext(ctx, s.q(`UPDATE transcripts SET next_seq = ?, last_digest = ?, updated_at = ? WHERE session_id = ? AND transcript_id = ?`),
			st.NextSeq, st.LastDigest, ns(time.Now()), sessionID, transcriptID)
		return err
	})
	if err != nil {
		return TranscriptState{}, s.wrap(what, err)
	}
	return st, nil
}

func (s *sqlStore) TranscriptState(ctx context.Context, sessionID, transcriptID string) (TranscriptState, error) {
	var st TranscriptState
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.sessionExists(ctx, tx, sessionID); err != nil {
			return err
		}
		err := tx.QueryRowContext(ctx, s.q(`SELECT next_seq, last_digest, sealed FROM transcripts WHERE session_id = ? AND transcript_id = ?`), sessionID, transcriptID).
			Scan(&st.NextSeq, &st.LastDigest, &st.Sealed)
		if errors.Is(err, sql.ErrNoRows) {
			st = TranscriptState{} // not begun yet
			return nil
		}
		return err
	})
	if err != nil {
		return TranscriptState{}, s.wrap(fmt.Sprintf("reading the state of transcript %q of session %q", transcriptID, sessionID), err)
	}
	return st, nil
}

func (s *sqlStore) ReadTranscript(ctx context.Context, sessionID, transcriptID string, from, to int64) ([]string, error) {
	what := fmt.Sprintf("reading transcript %q of session %q", transcriptID, sessionID)
	if from < 0 {
		return nil, fmt.Errorf("%s: %w: negative seq", what, ErrInvalid)
	}
	if to <= 0 {
		to = math.MaxInt64
	}
	var out []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		out = nil
		// The row read first makes an unknown transcript ErrNotFound, and
		// (one transaction) the lines consistent with it.
		var next int64
		if err := tx.QueryRowContext(ctx, s.q(`SELECT next_seq FROM transcripts WHERE session_id = ? AND transcript_id = ?`), sessionID, transcriptID).Scan(&next); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, s.q(`SELECT line FROM transcript_lines WHERE session_id = ? AND transcript_id = ? AND seq >= ? AND seq < ? ORDER BY seq`),
			sessionID, transcriptID, from, min(to, next))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return err
			}
			out = append(out, line)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, s.wrap(what, err)
	}
	return out, nil
}

func (s *sqlStore) SealTranscript(ctx context.Context, sessionID, transcriptID string, summary json.RawMessage) (TranscriptState, error) {
	var st TranscriptState
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		st, _, err = s.transcriptRow(ctx, tx, sessionID, transcriptID)
		if err != nil {
			return err
		}
		if !st.Sealed {
			st.Sealed = true
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE transcripts SET sealed = TRUE, summary = ? WHERE session_id = ? AND transcript_id = ?`),
				jsonText(summary), sessionID, transcriptID); err != nil {
				return err
			}
		}
		var unsealed int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM transcripts WHERE session_id = ? AND NOT sealed`), sessionID).Scan(&unsealed); err != nil {
			return err
		}
		if unsealed == 0 {
			_, err = tx.ExecContext(ctx, s.q(`UPDATE sessions SET sealed = TRUE, unsealed_end = FALSE WHERE id = ?`), sessionID)
		}
		return err
	})
	if err != nil {
		return TranscriptState{}, s.wrap(fmt.Sprintf("sealing transcript %q of session %q", transcriptID, sessionID), err)
	}
	return st, nil
}

func (s *sqlStore) ListTranscripts(ctx context.Context, f TranscriptFilter) ([]TranscriptInfo, error) {
	const what = "listing transcripts"
	f.State = SessionAny
	where, args, err := sessionWhere(f.SessionFilter, "s.")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if f.SessionID != "" {
		where = append(where, "s.id = ?")
		args = append(args, f.SessionID)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	cols := make([]string, 0, 17)
	for _, c := range strings.Split(sessionColumns, ",") {
		cols = append(cols, "s."+strings.TrimSpace(c))
	}
	query := `SELECT t.transcript_id, t.next_seq, t.last_digest, t.sealed, t.created_at, t.updated_at, t.summary, ` + strings.Join(cols, ", ") +
		` FROM transcripts t JOIN sessions s ON s.id = t.session_id`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY s.created_at DESC, s.id DESC, t.created_at, t.transcript_id LIMIT ?"
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, s.wrap(what, err)
	}
	defer rows.Close()
	var out []TranscriptInfo
	for rows.Next() {
		var (
			ti               TranscriptInfo
			created, updated int64
			summary          string
		)
		sess, err := scanSession(prefixScanner{rows, []any{&ti.TranscriptID, &ti.NextSeq, &ti.LastDigest, &ti.Sealed, &created, &updated, &summary}})
		if err != nil {
			return nil, s.wrap(what, err)
		}
		ti.Session, ti.SessionID = sess, sess.ID
		ti.CreatedAt, ti.UpdatedAt = fromNS(created), fromNS(updated)
		if summary != "null" && summary != "" {
			ti.Summary = json.RawMessage(summary)
		}
		out = append(out, ti)
	}
	return out, s.wrap(what, rows.Err())
}

// prefixScanner scans some columns before the ones its caller asks for.
type prefixScanner struct {
	r      scanner
	before []any
}

func (p prefixScanner) Scan(dest ...any) error { return p.r.Scan(append(p.before, dest...)...) }

// ---- Merkle log ----

func (s *sqlStore) AppendLeaf(ctx context.Context, key string, leafHash []byte) (uint64, error) {
	what := fmt.Sprintf("appending log leaf %q", key)
	if key == "" || len(leafHash) == 0 {
		return 0, fmt.Errorf("%s: %w: empty key or hash", what, ErrInvalid)
	}
	var idx int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// Take the log's lock first, so the key check below sees every
		// append committed before ours.
		var size int64
		if err := tx.QueryRowContext(ctx, s.q(`SELECT size FROM log_state WHERE id = 1 {lock}`)).Scan(&size); err != nil {
			return err
		}
		var existing []byte
		err := tx.QueryRowContext(ctx, s.q(`SELECT idx, leaf_hash FROM log_leaves WHERE leaf_key = ?`), key).Scan(&idx, &existing)
		switch {
		case err == nil:
			if string(existing) != string(leafHash) {
				return fmt.Errorf("%w: key already logged with another hash at index %d", ErrConflict, idx)
			}
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		idx = size
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO log_leaves (idx, leaf_key, leaf_hash, created_at) VALUES (?, ?, ?, ?)`),
			idx, key, leafHash, ns(time.Now())); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE log_state SET size = ? WHERE id = 1`), size+1)
		return err
	})
	if err != nil {
		return 0, s.wrap(what, err)
	}
	return uint64(idx), nil
}

func (s *sqlStore) LeafByKey(ctx context.Context, key string) (LogLeaf, error) {
	l := LogLeaf{Key: key}
	var idx, created int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT idx, leaf_hash, created_at FROM log_leaves WHERE leaf_key = ?`), key).Scan(&idx, &l.LeafHash, &created)
	if err != nil {
		return LogLeaf{}, s.wrap(fmt.Sprintf("reading log leaf %q", key), err)
	}
	l.Index, l.CreatedAt = uint64(idx), fromNS(created)
	return l, nil
}

func (s *sqlStore) LeafHashes(ctx context.Context, from, to uint64) ([][]byte, error) {
	what := fmt.Sprintf("reading log leaves [%d, %d)", from, to)
	if from > to || to > math.MaxInt64 {
		return nil, fmt.Errorf("%s: %w: bad range", what, ErrInvalid)
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT leaf_hash FROM log_leaves WHERE idx >= ? AND idx < ? ORDER BY idx`), int64(from), int64(to))
	if err != nil {
		return nil, s.wrap(what, err)
	}
	defer rows.Close()
	out := make([][]byte, 0, to-from)
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			return nil, s.wrap(what, err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(what, err)
	}
	if uint64(len(out)) != to-from {
		return nil, fmt.Errorf("%s: %w: the log has only %d of them", what, ErrNotFound, len(out))
	}
	return out, nil
}

func (s *sqlStore) LogSize(ctx context.Context) (uint64, error) {
	var size int64
	if err := s.db.QueryRowContext(ctx, `SELECT size FROM log_state WHERE id = 1`).Scan(&size); err != nil {
		return 0, s.wrap("reading the log size", err)
	}
	return uint64(size), nil
}

func (s *sqlStore) PutCheckpoint(ctx context.Context, c Checkpoint) error {
	if c.Size > math.MaxInt64 {
		return fmt.Errorf("storing a checkpoint: %w: size too large", ErrInvalid)
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO checkpoints (size, root_hash, signed, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING`),
		int64(c.Size), nonNil(c.RootHash), c.Signed, ns(c.CreatedAt))
	return s.wrap(fmt.Sprintf("storing the checkpoint of size %d", c.Size), err)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (s *sqlStore) LatestCheckpoint(ctx context.Context) (Checkpoint, error) {
	var (
		c             Checkpoint
		size, created int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT size, root_hash, signed, created_at FROM checkpoints ORDER BY size DESC LIMIT 1`).
		Scan(&size, &c.RootHash, &c.Signed, &created)
	if err != nil {
		return Checkpoint{}, s.wrap("reading the latest checkpoint", err)
	}
	c.Size, c.CreatedAt = uint64(size), fromNS(created)
	return c, nil
}

// ---- approvals ----

const approvalColumns = `id, session_id, method, path, body_digest, rule, details, required, reviewer_groups, state,
	created_at, expires_at, decided_at, consumed_at`

func scanApproval(r scanner) (Approval, error) {
	var (
		a                 Approval
		details, groups   string
		state             string
		created, expires  int64
		decided, consumed sql.NullInt64
	)
	if err := r.Scan(&a.ID, &a.SessionID, &a.Request.Method, &a.Request.Path, &a.Request.BodyDigest, &a.Rule, &details,
		&a.Required, &groups, &state, &created, &expires, &decided, &consumed); err != nil {
		return Approval{}, err
	}
	if details != "null" {
		a.Details = json.RawMessage(details)
	}
	if err := json.Unmarshal([]byte(groups), &a.Groups); err != nil {
		return Approval{}, fmt.Errorf("reading reviewer groups of approval %q: %w", a.ID, err)
	}
	a.State = ApprovalState(state)
	a.CreatedAt, a.ExpiresAt = fromNS(created), fromNS(expires)
	a.DecidedAt, a.ConsumedAt = fromNullNS(decided), fromNullNS(consumed)
	return a, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (s *sqlStore) decisions(ctx context.Context, q querier, id string) ([]Decision, error) {
	rows, err := q.QueryContext(ctx, s.q(`SELECT reviewer, verdict, reason, decided_at FROM approval_decisions WHERE approval_id = ? ORDER BY decided_at, reviewer`), id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Decision
	for rows.Next() {
		var (
			d       Decision
			verdict string
			at      int64
		)
		if err := rows.Scan(&d.Reviewer, &verdict, &d.Reason, &at); err != nil {
			return nil, err
		}
		d.Verdict, d.Time = Verdict(verdict), fromNS(at)
		out = append(out, d)
	}
	return out, rows.Err()
}

func (s *sqlStore) CreateApproval(ctx context.Context, a Approval) error {
	what := fmt.Sprintf("filing approval %q", a.ID)
	switch {
	case a.ID == "" || a.SessionID == "":
		return fmt.Errorf("%s: %w: empty id or session", what, ErrInvalid)
	case a.Required < 1:
		return fmt.Errorf("%s: %w: at least one approval must be required", what, ErrInvalid)
	}
	groups := a.Groups
	if groups == nil {
		groups = []string{}
	}
	groupsJSON, err := json.Marshal(groups)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.sessionExists(ctx, tx, a.SessionID); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: session %q", ErrNotFound, a.SessionID)
			}
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO approvals (`+approvalColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, NULL, NULL)`),
			a.ID, a.SessionID, a.Request.Method, a.Request.Path, a.Request.BodyDigest, a.Rule, jsonText(a.Details),
			a.Required, string(groupsJSON), ns(a.CreatedAt), ns(a.ExpiresAt))
		return err
	})
	return s.wrap(what, err)
}

func (s *sqlStore) GetApproval(ctx context.Context, id string) (Approval, error) {
	var a Approval
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if a, err = scanApproval(tx.QueryRowContext(ctx, s.q(`SELECT `+approvalColumns+` FROM approvals WHERE id = ?`), id)); err != nil {
			return err
		}
		a.Decisions, err = s.decisions(ctx, tx, id)
		return err
	})
	if err != nil {
		return Approval{}, s.wrap(fmt.Sprintf("getting approval %q", id), err)
	}
	return a, nil
}

func (s *sqlStore) ListPendingApprovals(ctx context.Context, now time.Time) ([]Approval, error) {
	const what = "listing pending approvals"
	var out []Approval
	err := s.tx(ctx, func(tx *sql.Tx) error {
		out = nil
		rows, err := tx.QueryContext(ctx, s.q(`SELECT `+approvalColumns+` FROM approvals WHERE state = 'pending' AND expires_at > ? ORDER BY created_at, id`), ns(now))
		if err != nil {
			return err
		}
		for rows.Next() {
			a, err := scanApproval(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, a)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for i := range out {
			if out[i].Decisions, err = s.decisions(ctx, tx, out[i].ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap(what, err)
	}
	return out, nil
}

func (s *sqlStore) Decide(ctx context.Context, id string, d Decision) (Approval, error) {
	what := fmt.Sprintf("recording %s's decision on approval %q", d.Reviewer, id)
	if d.Reviewer == "" {
		return Approval{}, fmt.Errorf("%s: %w: empty reviewer", what, ErrInvalid)
	}
	if d.Verdict != VerdictApprove && d.Verdict != VerdictDeny {
		return Approval{}, fmt.Errorf("%s: %w: verdict %q (use approve or deny)", what, ErrInvalid, d.Verdict)
	}
	var (
		a Approval
		// refused is returned after the transaction commits: an expiry
		// found on the way is stored even though the decision is refused.
		refused error
	)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		refused = nil
		var err error
		a, err = scanApproval(tx.QueryRowContext(ctx, s.q(`SELECT `+approvalColumns+` FROM approvals WHERE id = ? {lock}`), id))
		if err != nil {
			return err
		}
		if a.Decisions, err = s.decisions(ctx, tx, id); err != nil {
			return err
		}
		if a.State != ApprovalPending {
			refused = fmt.Errorf("%w: it is %s", ErrDecided, a.State)
			return nil
		}
		if !d.Time.Before(a.ExpiresAt) {
			a.State, a.DecidedAt = ApprovalExpired, a.ExpiresAt
			refused = fmt.Errorf("%w: its deadline was %s", ErrExpired, a.ExpiresAt.Format(time.RFC3339))
			_, err := tx.ExecContext(ctx, s.q(`UPDATE approvals SET state = 'expired', decided_at = expires_at WHERE id = ?`), id)
			return err
		}
		approvals := 0
		for _, prev := range a.Decisions {
			if prev.Reviewer == d.Reviewer {
				refused = fmt.Errorf("%w: %s already decided (%s)", ErrConflict, d.Reviewer, prev.Verdict)
				return nil
			}
			if prev.Verdict == VerdictApprove {
				approvals++
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO approval_decisions (approval_id, reviewer, verdict, reason, decided_at) VALUES (?, ?, ?, ?, ?)`),
			id, d.Reviewer, string(d.Verdict), d.Reason, ns(d.Time)); err != nil {
			return err
		}
		d.Time = fromNS(ns(d.Time))
		a.Decisions = append(a.Decisions, d)
		switch {
		case d.Verdict == VerdictDeny:
			a.State = ApprovalDenied
		case approvals+1 >= a.Required:
			a.State = ApprovalApproved
		default:
			return nil
		}
		a.DecidedAt = d.Time
		_, err = tx.ExecContext(ctx, s.q(`UPDATE approvals SET state = ?, decided_at = ? WHERE id = ?`), string(a.State), ns(d.Time), id)
		return err
	})
	if err != nil {
		return Approval{}, s.wrap(what, err)
	}
	if refused != nil {
		return a, fmt.Errorf("%s: %w", what, refused)
	}
	return a, nil
}

func (s *sqlStore) ExpireApprovals(ctx context.Context, now time.Time) (int, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE approvals SET state = 'expired', decided_at = expires_at WHERE state = 'pending' AND expires_at <= ?`), ns(now))
	if err != nil {
		return 0, s.wrap("expiring approvals", err)
	}
	n, err := res.RowsAffected()
	return int(n), s.wrap("expiring approvals", err)
}

func (s *sqlStore) Consume(ctx context.Context, id string, req RequestDigest, now time.Time) error {
	what := fmt.Sprintf("using approval %q", id)
	var refused error
	err := s.tx(ctx, func(tx *sql.Tx) error {
		refused = nil
		// One conditional UPDATE: of racing consumers exactly one changes the row.
		res, err := tx.ExecContext(ctx, s.q(`UPDATE approvals SET consumed_at = ?
			WHERE id = ? AND state = 'approved' AND consumed_at IS NULL AND method = ? AND path = ? AND body_digest = ?`),
			ns(now), id, req.Method, req.Path, req.BodyDigest)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		// Say why not.
		a, err := scanApproval(tx.QueryRowContext(ctx, s.q(`SELECT `+approvalColumns+` FROM approvals WHERE id = ?`), id))
		if err != nil {
			return err
		}
		switch {
		case a.State != ApprovalApproved:
			refused = fmt.Errorf("%w: it is %s", ErrNotApproved, a.StateAt(now))
		case !a.ConsumedAt.IsZero():
			refused = fmt.Errorf("%w: at %s", ErrConsumed, a.ConsumedAt.Format(time.RFC3339Nano))
		default:
			refused = fmt.Errorf("%w: approved %s %s, got %s %s", ErrMismatch, a.Request.Method, a.Request.Path, req.Method, req.Path)
		}
		return nil
	})
	if err != nil {
		return s.wrap(what, err)
	}
	if refused != nil {
		return fmt.Errorf("%s: %w", what, refused)
	}
	return nil
}

// ---- signing keys ----

func (s *sqlStore) ListSigningKeys(ctx context.Context) ([]SigningKey, error) {
	const what = "listing signing keys"
	rows, err := s.db.QueryContext(ctx, `SELECT kid, algorithm, private_key, created_at, retire_after FROM signing_keys ORDER BY created_at, kid`)
	if err != nil {
		return nil, s.wrap(what, err)
	}
	defer rows.Close()
	var out []SigningKey
	for rows.Next() {
		var (
			k                SigningKey
			created, retires int64
		)
		if err := rows.Scan(&k.KID, &k.Algorithm, &k.Private, &created, &retires); err != nil {
			return nil, s.wrap(what, err)
		}
		k.CreatedAt, k.RetireAfter = fromNS(created), fromNS(retires)
		out = append(out, k)
	}
	return out, s.wrap(what, rows.Err())
}

func (s *sqlStore) InsertSigningKey(ctx context.Context, k SigningKey) error {
	what := fmt.Sprintf("storing signing key %q", k.KID)
	if k.KID == "" || len(k.Private) == 0 {
		return fmt.Errorf("%s: %w: empty kid or key", what, ErrInvalid)
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO signing_keys (kid, algorithm, private_key, created_at, retire_after) VALUES (?, ?, ?, ?, ?)`),
		k.KID, k.Algorithm, k.Private, ns(k.CreatedAt), ns(k.RetireAfter))
	return s.wrap(what, err)
}

// ---- lifecycle ----

func (s *sqlStore) Ping(ctx context.Context) error {
	var one int
	return s.wrap("pinging the "+s.d.name+" store", s.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one))
}

func (s *sqlStore) Close() error {
	err := s.db.Close()
	if s.onClose != nil {
		s.onClose()
	}
	return err
}
