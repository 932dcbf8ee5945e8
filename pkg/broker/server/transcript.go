package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/trust"
	"github.com/kubectl-agent/kubectl-agent/pkg/tlog"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

// PathTranscriptLog publishes the transcript log's origin, verifier key and
// latest checkpoint, for offline checks of inclusion proofs.
const PathTranscriptLog = "/.well-known/transcript-log"

// logKeyKID names the transcript log's checkpoint key in the store. It is
// kept apart from the rotating token keys: the log's verifier key must not
// change, or old checkpoints stop verifying.
const (
	logKeyKID = "transcript-log"
	logKeyAlg = "EdDSA-tlog"
)

// ingest holds the chain verifiers of transcripts being uploaded, one per
// (session, transcript), each behind its own lock. A verifier that is
// missing or behind the store (another broker took a chunk, or this one
// restarted) is rebuilt from the stored lines.
type ingest struct {
	mu sync.Mutex
	by map[ingestKey]*sessionIngest
}

type ingestKey struct{ session, transcript string }

type sessionIngest struct {
	mu sync.Mutex
	v  *transcript.ChainVerifier
}

func (in *ingest) get(sessionID, transcriptID string) *sessionIngest {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.by == nil {
		in.by = map[ingestKey]*sessionIngest{}
	}
	k := ingestKey{sessionID, transcriptID}
	si := in.by[k]
	if si == nil {
		si = &sessionIngest{}
		in.by[k] = si
	}
	return si
}

func (in *ingest) drop(sessionID, transcriptID string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.by, ingestKey{sessionID, transcriptID})
}

// forgetExcept drops the verifiers of sessions that are not live.
func (in *ingest) forgetExcept(live map[string]bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for k := range in.by {
		if !live[k.session] {
			delete(in.by, k)
		}
	}
}

// validTranscriptID: what a client may name a transcript: "" (a session's
// only transcript, as clients before transcript ids sent) or 1 to 64
// lowercase hex digits (exec makes 12).
func validTranscriptID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// logStorage adapts the store to tlog.Storage. Leaves are appended through
// the store directly (keyed by store.LogKey, so a resent seal is idempotent).
type logStorage struct{ st store.Store }

func (l logStorage) AppendLeaf(context.Context, []byte) (uint64, error) {
	return 0, errors.New("append through the store, keyed by transcript")
}

func (l logStorage) LeafHashes(ctx context.Context, from, to uint64) ([][]byte, error) {
	return l.st.LeafHashes(ctx, from, to)
}

func (l logStorage) Size(ctx context.Context) (uint64, error) { return l.st.LogSize(ctx) }

// openLog loads (or makes, once for all brokers of the store) the log key and
// opens the log.
func openLog(ctx context.Context, st store.Store, publicHost string) (*tlog.Log, string, error) {
	key, err := logKey(ctx, st)
	if err != nil {
		return nil, "", err
	}
	origin := publicHost + "/transcripts"
	vkey, err := tlog.VerifierKey(origin, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, "", err
	}
	signer, err := tlog.NewSigner(origin, key)
	if err != nil {
		return nil, "", err
	}
	l, err := tlog.New(origin, signer, logStorage{st})
	if err != nil {
		return nil, "", err
	}
	return l, vkey, nil
}

func logKey(ctx context.Context, st store.Store) (ed25519.PrivateKey, error) {
	find := func() (ed25519.PrivateKey, error) {
		keys, err := st.ListSigningKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("loading the transcript log key: %w", err)
		}
		for _, k := range keys {
			if k.KID == logKeyKID && k.Algorithm == logKeyAlg {
				p, err := x509.ParsePKCS8PrivateKey(k.Private)
				if err != nil {
					return nil, fmt.Errorf("decoding the transcript log key: %w", err)
				}
				if ek, ok := p.(ed25519.PrivateKey); ok {
					return ek, nil
				}
				return nil, errors.New("the transcript log key is not Ed25519")
			}
		}
		return nil, nil
	}
	if k, err := find(); err != nil || k != nil {
		return k, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the transcript log key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	// Two brokers racing: one insert wins (ErrConflict for the other), and
	// both read back the winner.
	if err := st.InsertSigningKey(ctx, store.SigningKey{KID: logKeyKID, Algorithm: logKeyAlg, Private: der, CreatedAt: time.Now()}); err != nil && !errors.Is(err, store.ErrConflict) {
		return nil, fmt.Errorf("storing the transcript log key: %w", err)
	}
	k, err := find()
	if err == nil && k == nil {
		err = errors.New("the transcript log key vanished after it was stored")
	}
	return k, err
}

func (s *Server) handleTranscriptLog(w http.ResponseWriter, r *http.Request) {
	cp, err := s.tlog.Checkpoint(r.Context())
	if err != nil {
		s.log.Error("making a log checkpoint", "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"verifierKey": s.logKey, "checkpoint": cp})
}

// handleTranscript takes transcript chunks (POST) and returns a stored
// transcript as JSON lines (GET ?transcript=ID&from=&to=) or, without
// ?transcript, the list of the session's transcripts.
func (s *Server) handleTranscript(w http.ResponseWriter, r *http.Request, sess store.Session) {
	if r.Method == http.MethodGet {
		s.readTranscript(w, r, sess)
		return
	}
	log := s.log.With("session", sess.ID, "repository", sess.Run.Repository, "run", sess.Run.RunID)
	r.Body = http.MaxBytesReader(w, r.Body, MaxJSONBytes)
	var chunk api.TranscriptChunk
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&chunk); err != nil {
		writeError(w, http.StatusBadRequest, &api.Error{Code: trust.CodeInvalidRequest, Description: "the body must be a transcript chunk {transcript, firstSeq, lines} of at most 4 MiB"})
		return
	}
	if chunk.FirstSeq < 0 {
		writeError(w, http.StatusBadRequest, &api.Error{Code: trust.CodeInvalidRequest, Description: "firstSeq must not be negative"})
		return
	}
	if !validTranscriptID(chunk.Transcript) {
		writeError(w, http.StatusBadRequest, &api.Error{Code: trust.CodeInvalidRequest, Description: "transcript must be at most 64 lowercase hex digits"})
		return
	}
	tid := chunk.Transcript
	log = log.With("transcript", tid)
	si := s.ingest.get(sess.ID, tid)
	si.mu.Lock()
	defer si.mu.Unlock()
	ctx := r.Context()
	state, err := s.st.TranscriptState(ctx, sess.ID, tid)
	if err != nil {
		log.Error("reading the transcript state", "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	ack := api.TranscriptAck{NextSeq: state.NextSeq, Sealed: state.Sealed}
	if chunk.FirstSeq > state.NextSeq {
		// A gap: the ack says where to resend from.
		writeJSON(w, http.StatusOK, ack)
		return
	}
	skip := state.NextSeq - chunk.FirstSeq
	if skip < int64(len(chunk.Lines)) {
		fresh := chunk.Lines[skip:]
		if state.NextSeq == 0 {
			if err := checkStart(fresh[0], sess, tid); err != nil {
				log.Warn("transcript chunk refused", "err", err)
				writeError(w, http.StatusUnprocessableEntity, &api.Error{Code: "invalid_transcript", Description: "transcript line 0: " + err.Error()})
				return
			}
		}
		if si.v == nil || si.v.Next() != state.NextSeq {
			if si.v, err = s.rebuildVerifier(ctx, sess, tid, state.NextSeq); err != nil {
				log.Error("rebuilding the transcript verifier", "err", err)
				writeError(w, http.StatusInternalServerError, serverError())
				return
			}
		}
		if err := si.v.Accept(state.NextSeq, fresh); err != nil {
			si.v = nil // partly advanced; rebuilt from the store next time
			log.Warn("transcript chunk refused", "err", err)
			writeError(w, http.StatusUnprocessableEntity, &api.Error{Code: "invalid_transcript", Description: "transcript " + err.Error()})
			return
		}
	}
	// The overlap is stored too: the store checks it is byte-equal to what it holds.
	state, err = s.st.AppendTranscript(ctx, sess.ID, tid, chunk.FirstSeq, chunk.Lines)
	switch {
	case errors.Is(err, store.ErrConflict):
		si.v = nil
		writeError(w, http.StatusConflict, &api.Error{Code: "invalid_transcript", Description: "the chunk's lines differ from the lines the broker already holds at those seqs"})
		return
	case errors.Is(err, store.ErrSealed):
		writeError(w, http.StatusConflict, &api.Error{Code: "invalid_transcript", Description: "the transcript is sealed; nothing can follow the seal"})
		return
	case err != nil:
		si.v = nil
		log.Error("storing transcript lines", "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	ack = api.TranscriptAck{NextSeq: state.NextSeq, Sealed: state.Sealed}
	if si.v != nil && si.v.Sealed() && !state.Sealed {
		if state, err = s.st.SealTranscript(ctx, sess.ID, tid, s.endSummary(ctx, sess.ID, tid, state.NextSeq)); err != nil {
			log.Error("sealing the transcript", "err", err)
			writeError(w, http.StatusInternalServerError, serverError())
			return
		}
		ack.Sealed = state.Sealed
		log.Info("transcript sealed", "lines", state.NextSeq)
	}
	if ack.Sealed {
		if ack.Inclusion, err = s.include(ctx, sess.ID, tid, state.NextSeq); err != nil {
			log.Error("logging the sealed transcript", "err", err)
			writeError(w, http.StatusInternalServerError, serverError())
			return
		}
		s.ingest.drop(sess.ID, tid)
	}
	writeJSON(w, http.StatusOK, ack)
}

// checkStart checks what the chain verifier leaves to the broker in a
// transcript's first line: that it names the transcript it is uploaded as,
// and carries the key binding this broker issued for the session (a
// transcript is only as good as the binding its verifiers will check).
func checkStart(line string, sess store.Session, transcriptID string) error {
	var ev transcript.Event
	if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Type != transcript.TypeStart || ev.Start == nil {
		return errors.New("the first line must be the start event")
	}
	if ev.Start.TranscriptID != transcriptID {
		return fmt.Errorf("the start event names transcript %q, uploaded as %q", ev.Start.TranscriptID, transcriptID)
	}
	if ev.Start.KeyBinding != sess.KeyBinding {
		return errors.New("the start event's key binding is not the one the broker issued for this session")
	}
	return nil
}

// endSummary is the end event's payload of a sealed transcript (the last
// lines are the end, maybe a checkpoint, and the seal), or nil.
func (s *Server) endSummary(ctx context.Context, sessionID, transcriptID string, next int64) json.RawMessage {
	lines, err := s.st.ReadTranscript(ctx, sessionID, transcriptID, max(next-8, 0), next)
	if err != nil {
		return nil
	}
	for i := len(lines) - 1; i >= 0; i-- {
		var ev struct {
			Type string          `json:"type"`
			End  json.RawMessage `json:"end"`
		}
		if json.Unmarshal([]byte(lines[i]), &ev) == nil && ev.Type == transcript.TypeEnd {
			return ev.End
		}
	}
	return nil
}

// include appends the transcript's seal line to the log (idempotent by
// store.LogKey) and proves its inclusion.
func (s *Server) include(ctx context.Context, sessionID, transcriptID string, lines int64) (*api.InclusionProof, error) {
	seal, err := s.st.ReadTranscript(ctx, sessionID, transcriptID, lines-1, lines)
	if err != nil || len(seal) != 1 {
		return nil, fmt.Errorf("reading the seal line: %v", err)
	}
	idx, err := s.st.AppendLeaf(ctx, store.LogKey(sessionID, transcriptID), tlog.LeafHash([]byte(seal[0])))
	if err != nil {
		return nil, err
	}
	return s.tlog.InclusionProof(ctx, idx)
}

func (s *Server) rebuildVerifier(ctx context.Context, sess store.Session, transcriptID string, upTo int64) (*transcript.ChainVerifier, error) {
	v := transcript.NewChainVerifier(sess.ID, ed25519.PublicKey(sess.PublicKey))
	if upTo == 0 {
		return v, nil
	}
	lines, err := s.st.ReadTranscript(ctx, sess.ID, transcriptID, 0, upTo)
	if err != nil {
		return nil, err
	}
	if err := v.Accept(0, lines); err != nil {
		return nil, fmt.Errorf("stored transcript does not verify: %w", err)
	}
	return v, nil
}

// readTranscript serves the session's own transcripts to the session (the
// run reading back what it recorded).
func (s *Server) readTranscript(w http.ResponseWriter, r *http.Request, sess store.Session) {
	q := r.URL.Query()
	if !q.Has("transcript") {
		ts, err := s.st.ListTranscripts(r.Context(), store.TranscriptFilter{SessionID: sess.ID})
		if err != nil {
			s.log.Error("listing a session's transcripts", "session", sess.ID, "err", err)
			writeError(w, http.StatusInternalServerError, serverError())
			return
		}
		writeJSON(w, http.StatusOK, transcriptList(ts))
		return
	}
	s.writeLines(w, r, sess.ID, q.Get("transcript"))
}

// writeLines writes lines [from, to) of a transcript as JSON lines.
func (s *Server) writeLines(w http.ResponseWriter, r *http.Request, sessionID, transcriptID string) {
	q := r.URL.Query()
	from, _ := strconv.ParseInt(q.Get("from"), 10, 64)
	to, _ := strconv.ParseInt(q.Get("to"), 10, 64)
	lines, err := s.st.ReadTranscript(r.Context(), sessionID, transcriptID, max(from, 0), to)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, &api.Error{Code: "not_found", Description: fmt.Sprintf("session %s has no transcript %q", sessionID, transcriptID)})
		return
	}
	if err != nil {
		s.log.Error("reading a transcript", "session", sessionID, "transcript", transcriptID, "err", err)
		writeError(w, http.StatusInternalServerError, serverError())
		return
	}
	w.Header().Set("Content-Type", "application/jsonl")
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	_, _ = w.Write([]byte(b.String()))
}
