package transcript

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// Defaults of RecorderOptions.
const (
	DefaultCheckpointInterval = 5 * time.Second
	DefaultCheckpointEvery    = 100
	// DefaultBrokerOutageLimit is how long lines may wait for the broker's
	// acknowledgement before a recorder with RequireRecording refuses events.
	DefaultBrokerOutageLimit = 60 * time.Second
	DefaultCloseTimeout      = 30 * time.Second
	defaultChunkLines        = 500
	defaultChunkBytes        = 1 << 20
)

// Uploader sends transcript chunks to the broker
// (POST /v1/sessions/{id}/transcript). Uploads are idempotent by seq; the
// ack says how far the broker holds the transcript.
type Uploader interface {
	Upload(ctx context.Context, chunk api.TranscriptChunk) (api.TranscriptAck, error)
}

// ErrUploadIncomplete is returned by Close when the sealed transcript is
// complete in the spool but the broker has not acknowledged all of it in time;
// `kubectl agent transcript push` can send the rest later.
var ErrUploadIncomplete = errors.New("the broker has not acknowledged the whole transcript")

// RecorderOptions configure a Recorder.
type RecorderOptions struct {
	SessionID  string
	Key        ed25519.PrivateKey // the session key
	KeyBinding string             // the broker's binding JWT; "" in local mode
	// Start is the rest of the start event; SessionID, PublicKey, KeyBinding
	// and (when empty) Mode are filled in by the recorder.
	Start StartEvent
	// SpoolPath is the transcript file. It is created (0600, with its
	// directory 0700) and must not exist, unless Resume is set: then an
	// existing spool is continued after a crash.
	SpoolPath string
	Resume    bool
	Uploader  Uploader // nil in local mode
	Clock     func() time.Time

	CheckpointInterval time.Duration // default 5s; negative: no timed checkpoints
	CheckpointEvery    int           // default 100 events

	// RequireRecording makes Append fail when lines have waited for the
	// broker's acknowledgement for longer than BrokerOutageLimit (default
	// 60s), so that the proxy refuses requests instead of running unrecorded
	// at the broker. Spool write failures always fail Append.
	RequireRecording  bool
	BrokerOutageLimit time.Duration

	// Logf, when set, receives upload problems (never line contents).
	Logf func(format string, args ...any)
}

// Recorder is the transcript Sink: it chains, spools (fsynced), checkpoints,
// uploads and finally seals a run's events. It is safe for concurrent use.
type Recorder struct {
	opts RecorderOptions
	pub  ed25519.PublicKey

	mu              sync.Mutex
	f               *os.File
	next            int64
	prev            string
	size            int64
	offsets         []int64 // offsets[i] is the end of line i (after its newline)
	h               hash.Hash
	lastTime        time.Time
	sinceCheckpoint int
	counts          map[string]int64
	command         []string
	start           StartEvent
	closed          bool

	syncMu  sync.Mutex
	durable atomic.Int64 // bytes known to be on disk

	tapsMu sync.Mutex
	taps   map[*streamState]struct{}

	// Upload state.
	acked        atomic.Int64
	pendingSince atomic.Int64 // unix nanos since lines wait unacknowledged; 0 = none
	kick         chan struct{}
	stop         chan struct{}
	uploadDone   chan struct{}
	uploadCancel context.CancelFunc
	tickerDone   chan struct{}
	proofMu      sync.Mutex
	inclusion    *api.InclusionProof
}

// NewRecorder creates (or with Resume, reopens) the spool and writes the
// start event.
func NewRecorder(opts RecorderOptions) (*Recorder, error) {
	if opts.SessionID == "" {
		return nil, errors.New("recorder: no session id")
	}
	if len(opts.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("recorder: no ed25519 session key")
	}
	if opts.SpoolPath == "" {
		return nil, errors.New("recorder: no spool path")
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.CheckpointInterval == 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = DefaultCheckpointEvery
	}
	if opts.BrokerOutageLimit <= 0 {
		opts.BrokerOutageLimit = DefaultBrokerOutageLimit
	}
	r := &Recorder{
		opts:   opts,
		pub:    opts.Key.Public().(ed25519.PublicKey),
		h:      sha256.New(),
		counts: map[string]int64{},
		taps:   map[*streamState]struct{}{},
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	if err := os.MkdirAll(filepath.Dir(opts.SpoolPath), 0o700); err != nil {
		return nil, fmt.Errorf("creating transcript spool directory: %w", err)
	}
	resumed := false
	if opts.Resume {
		if _, err := os.Stat(opts.SpoolPath); err == nil {
			if err := r.recover(); err != nil {
				return nil, err
			}
			resumed = true
		}
	}
	if !resumed {
		f, err := os.OpenFile(opts.SpoolPath, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("creating transcript spool: %w", err)
		}
		r.f = f
		st := opts.Start
		st.SessionID, st.PublicKey, st.KeyBinding = opts.SessionID, EncodePublicKey(r.pub), opts.KeyBinding
		if st.Mode == "" {
			st.Mode = "local"
			if opts.KeyBinding != "" {
				st.Mode = "broker"
			}
		}
		r.start = st
		r.mu.Lock()
		err = r.writeLocked(Event{Type: TypeStart, Start: &st}, time.Time{})
		r.mu.Unlock()
		if err == nil {
			err = r.sync()
		}
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	if opts.Uploader != nil {
		ctx, cancel := context.WithCancel(context.Background())
		r.uploadDone, r.uploadCancel = make(chan struct{}), cancel
		go r.uploadLoop(ctx)
		r.kickUpload()
	}
	if opts.CheckpointInterval > 0 {
		r.tickerDone = make(chan struct{})
		go r.checkpointLoop()
	}
	return r, nil
}

// recover reopens a spool after a crash: it checks the chain of every
// complete line, drops a torn tail line and continues from the last good one.
func (r *Recorder) recover() error {
	f, err := os.OpenFile(r.opts.SpoolPath, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("reopening transcript spool: %w", err)
	}
	c := newChain(r.opts.SessionID, r.pub)
	br := bufio.NewReader(f)
	var size int64
	for {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			break // a torn tail line (no newline) or nothing: dropped below
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("reading transcript spool: %w", err)
		}
		if _, aerr := c.accept(c.next+1, line[:len(line)-1]); aerr != nil {
			if _, perr := br.Peek(1); errors.Is(perr, io.EOF) {
				break // the last line is damaged: a torn write, dropped
			}
			f.Close()
			return fmt.Errorf("transcript spool %s is damaged before its end, refusing to continue it: %w", r.opts.SpoolPath, aerr)
		}
		size += int64(len(line))
		r.offsets = append(r.offsets, size)
	}
	if c.next == 0 {
		f.Close()
		return fmt.Errorf("transcript spool %s has no complete start line; remove it to start over", r.opts.SpoolPath)
	}
	if c.sealed {
		f.Close()
		return fmt.Errorf("transcript spool %s is already sealed", r.opts.SpoolPath)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("dropping the torn tail of the transcript spool: %w", err)
	}
	if _, err := f.Seek(size, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("reopening transcript spool: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing transcript spool: %w", err)
	}
	r.f, r.size, r.next, r.prev, r.h = f, size, c.next, c.lastDigest, c.h
	r.lastTime, r.counts, r.command, r.start = c.lastTime, c.counts, c.command, *c.start
	r.sinceCheckpoint = int(c.next - 1 - c.lastCheckpoint)
	r.durable.Store(size)
	return nil
}

// Append records one event. The recorder owns start, checkpoint, end and
// seal events; Append refuses them. It returns once the line is on disk.
func (r *Recorder) Append(ctx context.Context, ev Event) error {
	switch ev.Type {
	case TypeStart, TypeCheckpoint, TypeSeal, TypeEnd:
		return fmt.Errorf("recording event: %s events are written by the recorder itself", ev.Type)
	}
	if err := r.Healthy(); err != nil {
		return err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errors.New("recording event: the transcript is already sealed")
	}
	err := r.writeLocked(ev, time.Time{})
	if err == nil && r.sinceCheckpoint >= r.opts.CheckpointEvery {
		err = r.checkpointLocked()
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if err := r.sync(); err != nil {
		return err
	}
	r.kickUpload()
	return nil
}

// Healthy reports whether events can be recorded as the options require:
// with RequireRecording, it fails while the broker has left lines
// unacknowledged for longer than BrokerOutageLimit.
func (r *Recorder) Healthy() error {
	if !r.opts.RequireRecording || r.opts.Uploader == nil {
		return nil
	}
	since := r.pendingSince.Load()
	if since == 0 {
		return nil
	}
	if wait := r.opts.Clock().Sub(time.Unix(0, since)); wait > r.opts.BrokerOutageLimit {
		return fmt.Errorf("recording event: the broker has not acknowledged the transcript for %s (limit %s); refusing to continue unrecorded", wait.Round(time.Second), r.opts.BrokerOutageLimit)
	}
	return nil
}

// writeLocked chains, marshals and writes one line (r.mu held). A zero t means now.
func (r *Recorder) writeLocked(ev Event, t time.Time) error {
	if t.IsZero() {
		t = r.opts.Clock().UTC()
	}
	if t.Before(r.lastTime) {
		t = r.lastTime // the chain's times never go backwards, even if the wall clock does
	}
	ev.Seq, ev.Time, ev.Prev = r.next, t, r.prev
	line, err := json.Marshal(&ev)
	if err != nil {
		return fmt.Errorf("recording %s event: %w", ev.Type, err)
	}
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')
	if _, err := r.f.Write(buf); err != nil {
		// Cut a partial write off so that the spool stays a valid chain.
		_ = r.f.Truncate(r.size)
		return fmt.Errorf("writing transcript spool: %w", err)
	}
	if r.opts.Uploader != nil && r.pendingSince.Load() == 0 {
		r.pendingSince.Store(r.opts.Clock().UnixNano())
	}
	r.h.Write(buf)
	r.size += int64(len(buf))
	r.offsets = append(r.offsets, r.size)
	r.prev = LineDigest(line)
	r.next++
	r.lastTime = t
	r.sinceCheckpoint++
	countEvent(r.counts, &ev)
	if ev.Type == TypeCommand {
		r.command = ev.Command.Argv
	}
	return nil
}

func (r *Recorder) checkpointLocked() error {
	upTo := r.next - 1
	p, err := json.Marshal(CheckpointPayload{UpTo: upTo, Digest: r.prev, Sig: signCheckpoint(r.opts.Key, r.opts.SessionID, upTo, r.prev)})
	if err != nil {
		return err
	}
	if err := r.writeLocked(Event{Type: TypeCheckpoint, Checkpoint: p}, time.Time{}); err != nil {
		return err
	}
	r.sinceCheckpoint = 0
	return nil
}

// sync makes every written line durable. Concurrent callers share fsyncs
// (group commit): whoever gets syncMu syncs everything written so far, and
// callers whose lines that covered return without another fsync.
func (r *Recorder) sync() error {
	r.mu.Lock()
	target := r.size
	r.mu.Unlock()
	if r.durable.Load() >= target {
		return nil
	}
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	if r.durable.Load() >= target {
		return nil
	}
	r.mu.Lock()
	end := r.size
	r.mu.Unlock()
	if err := r.f.Sync(); err != nil {
		return fmt.Errorf("syncing transcript spool: %w", err)
	}
	r.durable.Store(end)
	return nil
}

func (r *Recorder) checkpointLoop() {
	defer close(r.tickerDone)
	t := time.NewTicker(r.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.Checkpoint()
		}
	}
}

// Checkpoint writes a signed checkpoint now if events came since the last one.
func (r *Recorder) Checkpoint() {
	r.mu.Lock()
	var err error
	if !r.closed && r.sinceCheckpoint > 0 {
		err = r.checkpointLocked()
	}
	r.mu.Unlock()
	if err == nil {
		err = r.sync()
	}
	if err != nil {
		r.logf("transcript checkpoint failed: %v", err)
		return
	}
	r.kickUpload()
}

// Lines is the number of lines written so far.
func (r *Recorder) Lines() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next
}

// Acked is the number of lines the broker has acknowledged.
func (r *Recorder) Acked() int64 { return r.acked.Load() }

// Close flushes open streams, writes the end event (its counts are the
// recorder's counters, plus any others given) and the seal, and waits for
// the broker to acknowledge the whole transcript: until ctx ends, or
// DefaultCloseTimeout when ctx has no deadline. It returns the inclusion
// proof of the sealed transcript when the broker gave one; when the broker
// has not acknowledged everything, the error wraps ErrUploadIncomplete and
// the spool still holds the sealed transcript.
func (r *Recorder) Close(ctx context.Context, end EndEvent) (*api.InclusionProof, error) {
	r.flushTaps(true)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("closing transcript: already closed")
	}
	counts := map[string]int64{}
	for k, v := range end.Counts {
		counts[k] = v
	}
	for k, v := range r.counts {
		counts[k] = v
	}
	end.Counts = counts
	err := r.writeLocked(Event{Type: TypeEnd, End: &end}, time.Time{})
	if err == nil {
		err = r.sealLocked(end)
	}
	if err == nil {
		r.closed = true
	}
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("sealing transcript: %w", err)
	}
	close(r.stop)
	if r.tickerDone != nil {
		<-r.tickerDone
	}
	if err := r.sync(); err != nil {
		return nil, fmt.Errorf("sealing transcript: %w", err)
	}
	var upErr error
	if r.opts.Uploader != nil {
		upErr = r.waitUploaded(ctx)
	}
	if err := r.f.Close(); err != nil && upErr == nil {
		upErr = fmt.Errorf("closing transcript spool: %w", err)
	}
	r.proofMu.Lock()
	defer r.proofMu.Unlock()
	return r.inclusion, upErr
}

func (r *Recorder) sealLocked(end EndEvent) error {
	t := r.opts.Clock().UTC()
	if t.Before(r.lastTime) {
		t = r.lastTime
	}
	st := Statement{
		Type:          StatementType,
		Subject:       []Subject{{Name: SubjectName, Digest: map[string]string{"sha256": hex.EncodeToString(r.h.Sum(nil))}}},
		PredicateType: PredicateType,
		Predicate: Predicate{
			Session: r.opts.SessionID, Identity: r.start.Identity, Cluster: r.start.Cluster, Mode: r.start.Mode,
			Command: r.command, PolicyDigest: r.start.PolicyDigest, Counts: end.Counts, ExitCode: end.ExitCode,
			Lines: r.next, SealedAt: t,
		},
	}
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	env := &dsse.Envelope{
		PayloadType: PayloadType,
		Payload:     base64.StdEncoding.EncodeToString(body),
		Signatures: []dsse.Signature{{
			KeyID: Thumbprint(r.pub),
			Sig:   base64.StdEncoding.EncodeToString(ed25519.Sign(r.opts.Key, dsse.PAE(PayloadType, body))),
		}},
	}
	p, err := json.Marshal(SealPayload{Envelope: env, KeyBinding: r.start.KeyBinding})
	if err != nil {
		return err
	}
	return r.writeLocked(Event{Type: TypeSeal, Seal: p}, t)
}

func (r *Recorder) logf(format string, args ...any) {
	if r.opts.Logf != nil {
		r.opts.Logf(format, args...)
	}
}

func (r *Recorder) kickUpload() {
	if r.opts.Uploader == nil {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// waitUploaded waits until the broker acknowledged every line.
func (r *Recorder) waitUploaded(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCloseTimeout)
		defer cancel()
	}
	r.kickUpload()
	select {
	case <-r.uploadDone:
	case <-ctx.Done():
	}
	r.uploadCancel()
	<-r.uploadDone
	if n, total := r.acked.Load(), r.Lines(); n < total {
		return fmt.Errorf("%w: %d of %d lines acknowledged (run `kubectl agent transcript push` to send the rest)", ErrUploadIncomplete, n, total)
	}
	return nil
}

// pending reads up to one chunk of durable, unacknowledged lines.
func (r *Recorder) pending() (api.TranscriptChunk, error) {
	first := r.acked.Load()
	durable := r.durable.Load()
	r.mu.Lock()
	var from, to int64
	if first > 0 && first <= int64(len(r.offsets)) {
		from = r.offsets[first-1]
	}
	last := first
	to = from
	for last < int64(len(r.offsets)) && last-first < defaultChunkLines && r.offsets[last] <= durable {
		if last > first && r.offsets[last]-from > defaultChunkBytes {
			break
		}
		to = r.offsets[last]
		last++
	}
	r.mu.Unlock()
	chunk := api.TranscriptChunk{FirstSeq: first}
	if last == first {
		return chunk, nil
	}
	buf := make([]byte, to-from)
	if _, err := r.f.ReadAt(buf, from); err != nil {
		return chunk, fmt.Errorf("reading transcript spool for upload: %w", err)
	}
	for _, l := range bytes.SplitAfter(buf, []byte{'\n'}) {
		if len(l) > 0 {
			chunk.Lines = append(chunk.Lines, string(l[:len(l)-1]))
		}
	}
	return chunk, nil
}

// uploadLoop streams lines to the broker in the background. The run never
// waits for it: Append only spools. Each upload sends what is durable and
// unacknowledged, so lines written during an upload batch into the next one.
func (r *Recorder) uploadLoop(ctx context.Context) {
	defer close(r.uploadDone)
	const minBackoff, maxBackoff = 200 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	for {
		chunk, err := r.pending()
		if err == nil && len(chunk.Lines) == 0 {
			r.mu.Lock()
			done := r.closed && r.acked.Load() >= r.next
			r.mu.Unlock()
			if done {
				return
			}
			select {
			case <-r.kick:
				continue
			case <-ctx.Done():
				return
			}
		}
		var ack api.TranscriptAck
		if err == nil {
			ack, err = r.opts.Uploader.Upload(ctx, chunk)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.logf("transcript upload failed (will retry in %s): %v", backoff, err)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = minBackoff
		n := ack.NextSeq
		if total := r.Lines(); n > total {
			r.logf("broker acknowledged seq %d but only %d lines exist", n, total)
			n = total
		}
		n = max(n, 0)
		r.acked.Store(n)
		r.mu.Lock()
		if n >= r.next {
			r.pendingSince.Store(0)
		} else if n > chunk.FirstSeq {
			r.pendingSince.Store(r.opts.Clock().UnixNano()) // progress
		}
		r.mu.Unlock()
		if ack.Inclusion != nil {
			r.proofMu.Lock()
			r.inclusion = ack.Inclusion
			r.proofMu.Unlock()
		}
	}
}
