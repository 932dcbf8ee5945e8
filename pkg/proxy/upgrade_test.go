package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A client that is done sending (it half-closes, as kubectl exec -ti does
// when its stdin ends) must still get everything the cluster sends after
// that, the way a direct connection would; the proxy must neither drop the
// rest of the output nor reset the connection.
func TestUpgradePassesHalfCloseAndDeliversTheRest(t *testing.T) {
	const tail = "the last line of output\n"
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\nConnection: Upgrade\r\n\r\n")
		_ = rw.Flush()
		// Read what the client sends until it says it is done, then answer.
		got, _ := io.ReadAll(rw)
		time.Sleep(50 * time.Millisecond) // the command finishing after stdin ends
		_, _ = rw.WriteString("echo: " + string(got) + "\n" + tail)
		_ = rw.Flush()
	})
	px := startProxy(t, u, nil)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(px.CAData())
	conn, err := tls.Dial("tcp", strings.TrimPrefix(px.URL(), "https://"), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "POST /api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true&stdout=true&tty=true HTTP/1.1\r\n" +
		"Host: proxy\r\nAuthorization: Bearer " + px.Token() + "\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if _, err := io.WriteString(conn, "stdin bytes"); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading after the half-close: %v (got %q)", err, rest)
	}
	if want := "echo: stdin bytes\n" + tail; string(rest) != want {
		t.Fatalf("after the half-close the client got %q, want %q", rest, want)
	}
}
