package transcript

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/moby/spdystream/spdy"
)

// Stream coalescing: small writes are joined into one event per channel
// until this much is buffered or this long has passed.
const (
	streamFlushBytes = 4 << 10
	streamFlushDelay = 100 * time.Millisecond
	maxErrorBytes    = 64 << 10
	maxWSMessage     = 1 << 20 // base64 subprotocols buffer whole messages
)

// Tap implements the proxy's StreamTap hook: for each upgraded connection
// (exec, attach, port-forward) the proxy tees the bytes that flow each way
// into the writers Open returns. Parsing is passive: the writers never alter,
// hold back or reject bytes, except that once recording has failed and the
// recorder requires recording, Write returns the error so the proxy can cut
// the stream.
type Tap struct{ r *Recorder }

// StreamTap returns the recorder's stream hook.
func (r *Recorder) StreamTap() *Tap { return &Tap{r: r} }

// Open starts recording one upgraded stream. protocol is the negotiated
// protocol: a WebSocket subprotocol (v5.channel.k8s.io, v4.channel.k8s.io,
// base64.channel.k8s.io, v4.portforward.k8s.io...) or, for SPDY, a value
// containing "SPDY" (e.g. "SPDY/3.1+v4.channel.k8s.io"). The writers take
// the bytes after the HTTP upgrade (a leading HTTP handshake is skipped).
// They also implement io.Closer: close both when the stream ends; open
// streams are flushed when the recorder closes.
func (t *Tap) Open(auditID, protocol string) (toUpstream, toClient io.Writer) {
	s := &streamState{r: t.r, auditID: auditID, protocol: protocol, chans: map[string]*chanBuf{}, spdyTypes: map[uint32]string{}}
	t.r.tapsMu.Lock()
	t.r.taps[s] = struct{}{}
	t.r.tapsMu.Unlock()
	s.emit(StreamEvent{Channel: "open"})
	spdyProto := strings.Contains(strings.ToLower(protocol), "spdy")
	mk := func(fromClient bool) io.Writer {
		d := &direction{s: s, fromClient: fromClient}
		if spdyProto {
			d.spdy = &spdyParser{d: d}
		} else {
			d.ws = &wsParser{d: d}
		}
		return d
	}
	return mk(true), mk(false)
}

// streamState is one recorded stream.
type streamState struct {
	r        *Recorder
	auditID  string
	protocol string

	mu        sync.Mutex
	chans     map[string]*chanBuf
	spdyTypes map[uint32]string // SPDY stream id -> streamtype
	closed    int               // directions closed
	done      bool
	err       error
}

type chanBuf struct {
	name     string
	buf      []byte
	binary   bool
	timer    *time.Timer
	errData  []byte // the error channel's Status, gathered whole
	exitSent bool
}

// emit appends a stream event. Errors are kept for the writers to return.
func (s *streamState) emit(ev StreamEvent) {
	ev.AuditID, ev.Protocol = s.auditID, s.protocol
	if err := s.r.Append(context.Background(), Event{Type: TypeStream, Stream: &ev}); err != nil {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
}

// data adds bytes of one channel (s.mu held by the caller's direction).
func (s *streamState) data(channel string, p []byte) {
	if len(p) == 0 {
		return
	}
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	c := s.chans[channel]
	if c == nil {
		c = &chanBuf{name: channel}
		s.chans[channel] = c
	}
	var out []StreamEvent
	if channel == "error" {
		if len(c.errData)+len(p) <= maxErrorBytes {
			c.errData = append(c.errData, p...)
		}
		if ev, ok := statusEvent(c.errData); ok && !c.exitSent {
			c.exitSent = true
			out = append(out, ev)
		}
	} else {
		c.buf = append(c.buf, p...)
		if len(c.buf) >= streamFlushBytes {
			out = append(out, c.take(false)...)
		} else if c.timer == nil {
			c.timer = time.AfterFunc(streamFlushDelay, func() { s.flushChannel(channel) })
		}
	}
	s.mu.Unlock()
	for _, ev := range out {
		s.emit(ev)
	}
}

func (s *streamState) flushChannel(channel string) {
	s.mu.Lock()
	c := s.chans[channel]
	var out []StreamEvent
	if c != nil {
		c.timer = nil
		out = c.take(false)
	}
	s.mu.Unlock()
	for _, ev := range out {
		s.emit(ev)
	}
}

// take turns the buffer into events. Text stays text; a channel that once
// carried bytes that are not UTF-8 text (or hold NUL, as tar does) is binary
// from then on, and only its size and digest are kept.
func (c *chanBuf) take(final bool) []StreamEvent {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	b := c.buf
	if len(b) == 0 {
		return nil
	}
	keep := 0
	if !final && !c.binary {
		keep = incompleteRuneTail(b)
	}
	data := b[:len(b)-keep]
	c.buf = append([]byte(nil), b[len(b)-keep:]...)
	if len(data) == 0 {
		return nil
	}
	if !c.binary && (!utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0) {
		c.binary = true
	}
	if c.binary {
		sum := sha256.Sum256(data)
		return []StreamEvent{{Channel: c.name, Size: int64(len(data)), Digest: DigestPrefix + hex.EncodeToString(sum[:])}}
	}
	return []StreamEvent{{Channel: c.name, Data: string(data), Size: int64(len(data))}}
}

// incompleteRuneTail is how many bytes at the end of b start a UTF-8
// sequence that the next write may complete.
func incompleteRuneTail(b []byte) int {
	for i := 1; i <= 3 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < 0x80 {
			return 0
		}
		if c >= 0xC0 { // a lead byte
			need := 2
			if c >= 0xF0 {
				need = 4
			} else if c >= 0xE0 {
				need = 3
			}
			if need > i {
				return i
			}
			return 0
		}
	}
	return 0
}

// statusEvent reads the error channel's metav1.Status, with the exit code
// of a finished command.
func statusEvent(b []byte) (StreamEvent, bool) {
	var st struct {
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Details struct {
			Causes []struct {
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"causes"`
		} `json:"details"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return StreamEvent{}, false
	}
	ev := StreamEvent{Channel: "error", Data: string(b), Size: int64(len(b))}
	switch {
	case st.Status == "Success":
		zero := 0
		ev.Exit = &zero
	case st.Reason == "NonZeroExitCode":
		for _, c := range st.Details.Causes {
			if c.Reason == "ExitCode" {
				if n, err := strconv.Atoi(c.Message); err == nil {
					ev.Exit = &n
				}
			}
		}
	}
	return ev, true
}

// closeDirection ends one direction; the stream ends with both.
func (s *streamState) closeDirection() {
	s.mu.Lock()
	s.closed++
	last := s.closed >= 2
	s.mu.Unlock()
	if last {
		s.finish()
	}
}

// finish flushes every channel and writes the close event.
func (s *streamState) finish() {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done = true
	var out []StreamEvent
	for _, name := range sortedKeys(s.chans) {
		c := s.chans[name]
		out = append(out, c.take(true)...)
		if name == "error" && !c.exitSent && len(c.errData) > 0 {
			out = append(out, StreamEvent{Channel: "error", Data: strings.ToValidUTF8(string(c.errData), "\uFFFD"), Size: int64(len(c.errData))})
		}
	}
	s.mu.Unlock()
	for _, ev := range out {
		s.emit(ev)
	}
	s.emit(StreamEvent{Channel: "close"})
	s.r.tapsMu.Lock()
	delete(s.r.taps, s)
	s.r.tapsMu.Unlock()
}

func sortedKeys(m map[string]*chanBuf) []string { return slices.Sorted(maps.Keys(m)) }

// flushTaps writes out what open streams hold; with final, it ends them.
func (r *Recorder) flushTaps(final bool) {
	r.tapsMu.Lock()
	open := make([]*streamState, 0, len(r.taps))
	for s := range r.taps {
		open = append(open, s)
	}
	r.tapsMu.Unlock()
	for _, s := range open {
		if final {
			s.finish()
		} else {
			s.mu.Lock()
			names := sortedKeys(s.chans)
			s.mu.Unlock()
			for _, n := range names {
				s.flushChannel(n)
			}
		}
	}
}

// direction is the writer for one way of a stream.
type direction struct {
	s          *streamState
	fromClient bool
	mu         sync.Mutex
	handshake  []byte // bytes of a leading HTTP handshake, until its end
	inHTTP     int    // 0 unknown, 1 skipping HTTP headers, 2 frames
	failed     bool   // the parser gave up; bytes pass without recording
	ws         *wsParser
	spdy       *spdyParser
}

// Write parses p passively. It reports all of p written.
func (d *direction) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := p
	if d.inHTTP != 2 {
		q = d.skipHTTP(q)
	}
	if len(q) > 0 && !d.failed {
		var err error
		if d.ws != nil {
			err = d.ws.feed(q)
		} else {
			err = d.spdy.feed(q)
		}
		if err != nil {
			d.failed = true
			d.s.emit(StreamEvent{Channel: "close", Data: "stream parser stopped: " + err.Error()})
		}
	}
	d.s.mu.Lock()
	err := d.s.err
	d.s.mu.Unlock()
	if err != nil && d.s.r.opts.RequireRecording {
		return len(p), err
	}
	return len(p), nil
}

// Close ends this direction.
func (d *direction) Close() error {
	d.s.closeDirection()
	return nil
}

// skipHTTP drops a leading HTTP/1.1 upgrade request or response, in case
// the proxy tees the handshake too. Frames never start with an ASCII letter.
func (d *direction) skipHTTP(p []byte) []byte {
	if d.inHTTP == 0 {
		if len(p) == 0 {
			return p
		}
		if c := p[0]; (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') {
			d.inHTTP = 1
		} else {
			d.inHTTP = 2
			return p
		}
	}
	d.handshake = append(d.handshake, p...)
	if i := bytes.Index(d.handshake, []byte("\r\n\r\n")); i >= 0 {
		rest := d.handshake[i+4:]
		d.handshake, d.inHTTP = nil, 2
		return rest
	}
	if len(d.handshake) > 64<<10 {
		d.handshake, d.inHTTP, d.failed = nil, 2, true
	}
	return nil
}

// wsParser reads RFC 6455 frames incrementally.
type wsParser struct {
	d      *direction
	hdr    []byte
	remain uint64
	mask   [4]byte
	masked bool
	maskAt int
	opcode byte
	fin    bool

	inMessage bool   // a data message is in progress
	needChan  bool   // the next payload byte is the channel
	channel   byte   // channel of the current message
	textMsg   bool   // base64 protocols: whole text message buffered
	msg       []byte // base64 protocols: the message so far
}

func (w *wsParser) feed(p []byte) error {
	for len(p) > 0 {
		if w.remain == 0 && !w.headerDone() {
			need := w.headerLen()
			take := min(need-len(w.hdr), len(p))
			w.hdr = append(w.hdr, p[:take]...)
			p = p[take:]
			if len(w.hdr) < w.headerLen() {
				continue
			}
			if err := w.startFrame(); err != nil {
				return err
			}
			if w.remain == 0 {
				w.endFrame()
			}
			continue
		}
		n := uint64(len(p))
		if n > w.remain {
			n = w.remain
		}
		chunk := make([]byte, n)
		copy(chunk, p[:n])
		if w.masked {
			for i := range chunk {
				chunk[i] ^= w.mask[(w.maskAt+i)%4]
			}
			w.maskAt = (w.maskAt + int(n)) % 4
		}
		w.payload(chunk)
		p = p[n:]
		w.remain -= n
		if w.remain == 0 {
			w.endFrame()
		}
	}
	return nil
}

// headerLen is the full header length given the bytes seen so far.
func (w *wsParser) headerLen() int {
	if len(w.hdr) < 2 {
		return 2
	}
	n := 2
	switch w.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if w.hdr[1]&0x80 != 0 {
		n += 4
	}
	return n
}

func (w *wsParser) headerDone() bool { return len(w.hdr) >= 2 && len(w.hdr) == w.headerLen() }

func (w *wsParser) startFrame() error {
	h := w.hdr
	w.fin, w.opcode = h[0]&0x80 != 0, h[0]&0x0f
	w.masked = h[1]&0x80 != 0
	i := 2
	switch l := h[1] & 0x7f; l {
	case 126:
		w.remain = uint64(binary.BigEndian.Uint16(h[2:4]))
		i = 4
	case 127:
		w.remain = binary.BigEndian.Uint64(h[2:10])
		i = 10
	default:
		w.remain = uint64(l)
	}
	if w.masked {
		copy(w.mask[:], h[i:i+4])
	}
	w.maskAt = 0
	switch w.opcode {
	case 0:
		if !w.inMessage {
			return fmt.Errorf("websocket continuation frame outside a message")
		}
	case 1, 2:
		w.inMessage, w.needChan, w.textMsg, w.msg = true, true, w.opcode == 1, nil
	case 8, 9, 10:
	default:
		return fmt.Errorf("websocket opcode %d is not known", w.opcode)
	}
	return nil
}

func (w *wsParser) payload(p []byte) {
	if w.opcode >= 8 { // control frames: ping, pong, close
		return
	}
	if w.base64() {
		if len(w.msg)+len(p) <= maxWSMessage {
			w.msg = append(w.msg, p...)
		}
		return
	}
	if w.needChan && len(p) > 0 {
		w.channel, p, w.needChan = p[0], p[1:], false
	}
	w.deliver(w.channel, p)
}

func (w *wsParser) endFrame() {
	w.hdr = w.hdr[:0]
	if w.opcode >= 8 || !w.fin {
		return
	}
	if w.base64() && len(w.msg) > 0 {
		ch := w.msg[0] - '0'
		dec, err := base64.StdEncoding.DecodeString(string(w.msg[1:]))
		if err == nil {
			w.deliver(ch, dec)
		}
	}
	w.inMessage, w.msg = false, nil
}

func (w *wsParser) base64() bool {
	return w.textMsg && strings.Contains(w.d.s.protocol, "base64")
}

func (w *wsParser) deliver(ch byte, p []byte) {
	if ch == 255 { // v5: close signal for a channel
		return
	}
	w.d.s.data(wsChannelName(w.d.s.protocol, ch), p)
}

// wsChannelName names a channel of the k8s channel protocols.
func wsChannelName(protocol string, ch byte) string {
	if strings.Contains(protocol, "portforward") {
		if ch%2 == 0 {
			return "data"
		}
		return "error"
	}
	switch ch {
	case 0:
		return "stdin"
	case 1:
		return "stdout"
	case 2:
		return "stderr"
	case 3:
		return "error"
	case 4:
		return "resize"
	}
	return "channel-" + strconv.Itoa(int(ch))
}

// spdyParser reads SPDY/3.1 frames. It cuts whole frames out of the bytes
// and hands each to a spdy.Framer, which keeps the direction's zlib header
// state, so parsing is synchronous with the bytes.
type spdyParser struct {
	d      *direction
	buf    []byte
	in     bytes.Buffer
	framer *spdy.Framer
}

func (sp *spdyParser) feed(p []byte) error {
	sp.buf = append(sp.buf, p...)
	for len(sp.buf) >= 8 {
		length := int(sp.buf[5])<<16 | int(sp.buf[6])<<8 | int(sp.buf[7])
		total := 8 + length
		if len(sp.buf) < total {
			return nil
		}
		frame := sp.buf[:total]
		if sp.framer == nil {
			f, err := spdy.NewFramer(io.Discard, &sp.in)
			if err != nil {
				return err
			}
			sp.framer = f
		}
		sp.in.Write(frame)
		fr, err := sp.framer.ReadFrame()
		sp.in.Reset()
		sp.buf = append(sp.buf[:0], sp.buf[total:]...)
		if err != nil {
			return fmt.Errorf("reading SPDY frame: %w", err)
		}
		sp.handle(fr)
	}
	return nil
}

func (sp *spdyParser) handle(fr spdy.Frame) {
	s := sp.d.s
	switch f := fr.(type) {
	case *spdy.SynStreamFrame:
		t := f.Headers.Get("streamtype")
		if t == "" {
			t = "stream-" + strconv.Itoa(int(f.StreamId))
		}
		s.mu.Lock()
		s.spdyTypes[uint32(f.StreamId)] = t
		s.mu.Unlock()
	case *spdy.DataFrame:
		s.mu.Lock()
		t, ok := s.spdyTypes[uint32(f.StreamId)]
		s.mu.Unlock()
		if !ok {
			t = "stream-" + strconv.Itoa(int(f.StreamId))
		}
		s.data(t, f.Data)
	}
}
