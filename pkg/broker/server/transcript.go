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
// session, each behind its own lock. A verifier that is missing or behind the
// store (another broker took a chunk, or this one restarted) is rebuilt from
// the stored lines.
type ingest struct {
	mu sync.Mutex
	by map[string]*sessionIngest
}

type sessionIngest struct {
	mu sync.Mutex
	v  *transcript.ChainVerifier
}

func (in *ingest) get(id string) *sessionIngest {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.by == nil {
		in.by = map[string]*sessionIngest{}
	}
	si := in.by[id]
	if si == nil {
		si = &sessionIngest{}
		in.by[id] = si
	}
	return si
}

func (in *ingest) drop(id string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.by, id)
}

// forgetExcept drops the verifiers of sessions that are not live.
func (in *ingest) forgetExcept(live map[string]bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for id := range in.by {
		if !live[id] {
			delete(in.by, id)
		}
	}
}

// logStorage adapts the store to tlog.Storage. Leaves are appended through
// the store directly (keyed by session, so a resent seal is idempotent).
type logStorage struct{ st store.Store }

func (l logStorage) AppendLeaf(context.Context, []byte) (uint64, error) {
	return 0, errors.New("append through the store, keyed by session")
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

// handleTranscript takes transcript chunks (POST) and returns the stored
// transcript as JSON lines (GET, ?from=&to=).
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
		writeError(w, http.StatusBadRequest, &api.Error{Code: trust.CodeInvalidRequest, Description: "the body must be a transcript chunk {firstSeq, lines} of at most 4 MiB"})
		return
	}
	if chunk.FirstSeq < 0 {
		writeError(w, http.StatusBadRequest, &api.Error{Code: trust.CodeInvalidRequest, Description: "firstSeq must not be negative"})
		return
	}
	si := s.ingest.get(sess.ID)
	si.mu.Lock()
	defer si.mu.Unlock()
	ctx := r.Context()
	state, err := s.st.TranscriptState(ctx, sess.ID)
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
		if si.v == nil || si.v.Next() != state.NextSeq {
			if si.v, err = s.rebuildVerifier(ctx, sess, state.NextSeq); err != nil {
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
	state, err = s.st.AppendTranscript(ctx, sess.ID, chunk.FirstSeq, chunk.Lines)
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
		if state, err = s.st.SealTranscript(ctx, sess.ID); err != nil {
			log.Error("sealing the transcript", "err", err)
			writeError(w, http.StatusInternalServerError, serverError())
			return
		}
		ack.Sealed = state.Sealed
		log.Info("transcript sealed", "lines", state.NextSeq)
	}
	if ack.Sealed {
		if ack.Inclusion, err = s.include(ctx, sess.ID, state.NextSeq); err != nil {
			log.Error("logging the sealed transcript", "err", err)
			writeError(w, http.StatusInternalServerError, serverError())
			return
		}
		s.ingest.drop(sess.ID)
	}
	writeJSON(w, http.StatusOK, ack)
}

// include appends the transcript's seal line to the log (idempotent by
// session) and proves its inclusion.
func (s *Server) include(ctx context.Context, sessionID string, lines int64) (*api.InclusionProof, error) {
	seal, err := s.st.ReadTranscript(ctx, sessionID, lines-1, lines)
	if err != nil || len(seal) != 1 {
		return nil, fmt.Errorf("reading the seal line: %v", err)
	}
	idx, err := s.st.AppendLeaf(ctx, sessionID, tlog.LeafHash([]byte(seal[0])))
	if err != nil {
		return nil, err
	}
	return s.tlog.InclusionProof(ctx, idx)
}

func (s *Server) rebuildVerifier(ctx context.Context, sess store.Session, upTo int64) (*transcript.ChainVerifier, error) {
	v := transcript.NewChainVerifier(sess.ID, ed25519.PublicKey(sess.PublicKey))
	if upTo == 0 {
		return v, nil
	}
	lines, err := s.st.ReadTranscript(ctx, sess.ID, 0, upTo)
	if err != nil {
		return nil, err
	}
	if err := v.Accept(0, lines); err != nil {
		return nil, fmt.Errorf("stored transcript does not verify: %w", err)
	}
	return v, nil
}

func (s *Server) readTranscript(w http.ResponseWriter, r *http.Request, sess store.Session) {
	q := r.URL.Query()
	from, _ := strconv.ParseInt(q.Get("from"), 10, 64)
	to, _ := strconv.ParseInt(q.Get("to"), 10, 64)
	lines, err := s.st.ReadTranscript(r.Context(), sess.ID, max(from, 0), to)
	if err != nil {
		s.log.Error("reading a transcript", "session", sess.ID, "err", err)
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
