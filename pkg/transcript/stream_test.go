package transcript

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/moby/spdystream/spdy"
)

// wsFrame builds one RFC 6455 binary frame carrying a k8s channel message.
func wsFrame(t testing.TB, masked bool, channel byte, data []byte) []byte {
	t.Helper()
	payload := append([]byte{channel}, data...)
	var b bytes.Buffer
	b.WriteByte(0x82)
	mbit := byte(0)
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b.WriteByte(mbit | byte(n))
	case n < 1<<16:
		b.WriteByte(mbit | 126)
		_ = binary.Write(&b, binary.BigEndian, uint16(n))
	default:
		b.WriteByte(mbit | 127)
		_ = binary.Write(&b, binary.BigEndian, uint64(n))
	}
	if masked {
		key := [4]byte{0x12, 0x34, 0x56, 0x78}
		b.Write(key[:])
		for i, c := range payload {
			b.WriteByte(c ^ key[i%4])
		}
	} else {
		b.Write(payload)
	}
	return b.Bytes()
}

func streamEvents(t *testing.T, path string) []StreamEvent {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []StreamEvent
	for _, l := range splitLines(data) {
		var e Event
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		if e.Type == TypeStream {
			out = append(out, *e.Stream)
		}
	}
	return out
}

func joined(evs []StreamEvent, channel string) string {
	var s strings.Builder
	for _, e := range evs {
		if e.Channel == channel {
			s.WriteString(e.Data)
		}
	}
	return s.String()
}

// teeConn copies what goes each way over a real connection into writers.
type teeConn struct {
	net.Conn
	out, in io.Writer
	mu      sync.Mutex
}

func (c *teeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	_, _ = c.out.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		_, _ = c.in.Write(p[:n])
	}
	return n, err
}

// TestWebSocketTapRealConnection runs a real gorilla/websocket exchange in
// the v5.channel.k8s.io shape and records the bytes as they cross the wire,
// handshake included.
func TestWebSocketTapRealConnection(t *testing.T) {
	f := newFixture(t, "sess-ws", true)
	r, err := NewRecorder(f.options(nil))
	if err != nil {
		t.Fatal(err)
	}
	up := websocket.Upgrader{Subprotocols: []string{"v5.channel.k8s.io"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		c, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_, msg, err := c.ReadMessage() // stdin
		if err != nil || msg[0] != 0 {
			return
		}
		_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{1}, []byte("out: "+string(msg[1:]))...))
		_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{2}, []byte("warn\n")...))
		_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{1}, bytes.Repeat([]byte("x"), 70000)...))
		st := `{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}`
		_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{3}, st...))
		_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		_, _, _ = c.ReadMessage()
	}))
	defer srv.Close()

	toUp, toClient := r.StreamTap().Open("audit-ws", "v5.channel.k8s.io")
	d := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err != nil {
			return nil, err
		}
		return &teeConn{Conn: c, out: toUp, in: toClient}, nil
	}}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/exec", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Fragmented stdin: two frames, one message.
	w, _ := c.NextWriter(websocket.BinaryMessage)
	_, _ = w.Write([]byte{0})
	_, _ = w.Write([]byte("echo héllo\n"))
	_ = w.Close()
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			break
		}
	}
	c.Close()
	toUp.(io.Closer).Close()
	toClient.(io.Closer).Close()
	if _, err := r.Close(context.Background(), EndEvent{}); err != nil {
		t.Fatal(err)
	}
	evs := streamEvents(t, f.path)
	if got := joined(evs, "stdin"); got != "echo héllo\n" {
		t.Fatalf("stdin = %q", got)
	}
	if got := joined(evs, "stdout"); got != "out: echo héllo\n"+strings.Repeat("x", 70000) {
		t.Fatalf("stdout has %d bytes", len(got))
	}
	if got := joined(evs, "stderr"); got != "warn\n" {
		t.Fatalf("stderr = %q", got)
	}
	var exit *int
	for _, e := range evs {
		if e.Exit != nil {
			exit = e.Exit
		}
		if e.AuditID != "audit-ws" || e.Protocol != "v5.channel.k8s.io" {
			t.Fatalf("event %+v", e)
		}
	}
	if exit == nil || *exit != 3 {
		t.Fatalf("exit = %v", exit)
	}
	if evs[0].Channel != "open" || evs[len(evs)-1].Channel != "close" {
		t.Fatalf("first %q last %q", evs[0].Channel, evs[len(evs)-1].Channel)
	}
	if _, err := Verify(mustOpen(t, f.path), VerifyOptions{JWKS: f.broker.jwks}); err != nil {
		t.Fatal(err)
	}
}

func TestWebSocketBinaryAndSplitWrites(t *testing.T) {
	f := newFixture(t, "sess-wsbin", false)
	r, err := NewRecorder(f.options(nil))
	if err != nil {
		t.Fatal(err)
	}
	toUp, toClient := r.StreamTap().Open("audit-cp", "v4.channel.k8s.io")
	tarish := append([]byte("file.txt\x00\x00\x00"), 0xff, 0xfe)
	frame := wsFrame(t, false, 1, tarish)
	// One byte at a time: the parser must not depend on write boundaries.
	for i := range frame {
		_, _ = toClient.Write(frame[i : i+1])
	}
	// A rune split across frames stays text.
	_, _ = toUp.Write(wsFrame(t, true, 0, []byte("caf\xc3")))
	_, _ = toUp.Write(wsFrame(t, true, 0, []byte("\xa9\n")))
	toUp.(io.Closer).Close()
	toClient.(io.Closer).Close()
	if _, err := r.Close(context.Background(), EndEvent{}); err != nil {
		t.Fatal(err)
	}
	evs := streamEvents(t, f.path)
	var bin *StreamEvent
	for i, e := range evs {
		if e.Channel == "stdout" {
			bin = &evs[i]
		}
	}
	if bin == nil || bin.Data != "" || bin.Size != int64(len(tarish)) || !strings.HasPrefix(bin.Digest, "sha256:") {
		t.Fatalf("binary event = %+v", bin)
	}
	if got := joined(evs, "stdin"); got != "café\n" {
		t.Fatalf("stdin = %q", got)
	}
}

// spdyFrames writes frames with spdystream's own framer, as kubectl does.
func spdyFrames(t *testing.T, frames ...spdy.Frame) []byte {
	t.Helper()
	var b bytes.Buffer
	fr, err := spdy.NewFramer(&b, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := fr.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func TestSPDYTap(t *testing.T) {
	f := newFixture(t, "sess-spdy", true)
	r, err := NewRecorder(f.options(nil))
	if err != nil {
		t.Fatal(err)
	}
	toUp, toClient := r.StreamTap().Open("audit-spdy", "SPDY/3.1+v4.channel.k8s.io")
	syn := func(id spdy.StreamId, typ string) *spdy.SynStreamFrame {
		return &spdy.SynStreamFrame{StreamId: id, Headers: http.Header{"Streamtype": {typ}}}
	}
	// One framer per direction: header compression state is per direction.
	clientBytes := spdyFrames(t,
		syn(1, "error"), syn(3, "stdin"), syn(5, "stdout"), syn(7, "stderr"),
		&spdy.DataFrame{StreamId: 3, Data: []byte("ls /\n")},
		&spdy.DataFrame{StreamId: 3, Flags: spdy.DataFlagFin},
	)
	st := `{"metadata":{},"status":"Success"}`
	serverBytes := spdyFrames(t,
		&spdy.SynReplyFrame{StreamId: 1, Headers: http.Header{}},
		&spdy.DataFrame{StreamId: 5, Data: []byte("bin\netc\n")},
		&spdy.DataFrame{StreamId: 7, Data: []byte("oops\n")},
		&spdy.DataFrame{StreamId: 1, Data: []byte(st)},
	)
	// Feed in odd-sized pieces.
	feed := func(w io.Writer, b []byte) {
		for len(b) > 0 {
			n := min(7, len(b))
			_, _ = w.Write(b[:n])
			b = b[n:]
		}
	}
	feed(toUp, clientBytes)
	feed(toClient, serverBytes)
	toUp.(io.Closer).Close()
	toClient.(io.Closer).Close()
	if _, err := r.Close(context.Background(), EndEvent{}); err != nil {
		t.Fatal(err)
	}
	evs := streamEvents(t, f.path)
	if joined(evs, "stdin") != "ls /\n" || joined(evs, "stdout") != "bin\netc\n" || joined(evs, "stderr") != "oops\n" {
		t.Fatalf("events = %+v", evs)
	}
	var exit *int
	for _, e := range evs {
		if e.Exit != nil {
			exit = e.Exit
		}
	}
	if exit == nil || *exit != 0 {
		t.Fatalf("exit = %v", exit)
	}
}

// The tap never changes what it is given and reports it all written.
func FuzzWebSocketTap(f *testing.F) {
	f.Add(wsFrame(f, true, 0, []byte("hello")))
	f.Add(append(wsFrame(f, false, 1, []byte("a")), 0x88, 0x00))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n\x82\x02\x01x"))
	f.Add([]byte{0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	fx := newFixture(f, "sess-fuzz", false)
	r, err := NewRecorder(fx.options(nil))
	if err != nil {
		f.Fatal(err)
	}
	tap := r.StreamTap()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, proto := range []string{"v5.channel.k8s.io", "base64.channel.k8s.io", "SPDY/3.1"} {
			up, _ := tap.Open("fuzz", proto)
			orig := bytes.Clone(data)
			n, err := up.Write(data)
			if n != len(data) || err != nil || !bytes.Equal(orig, data) {
				t.Fatalf("write changed or refused bytes: %d %v", n, err)
			}
			up.(io.Closer).Close()
		}
	})
}
