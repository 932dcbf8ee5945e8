package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	utilproxy "k8s.io/apimachinery/pkg/util/proxy"
	"k8s.io/client-go/rest"

	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

// upgrader dials the upstream for protocol upgrades. client-go's transport
// cannot hand back a hijacked connection, so the proxy dials with the
// upstream's TLS configuration (client certificates from exec plugins
// included) and adds the credential headers by running the request through
// client-go's auth wrappers (bearer tokens, token files, exec plugins).
type upgrader struct {
	tlsConfig *tls.Config
	wrappers  http.RoundTripper
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	host      string // host:port
	secure    bool
}

func newUpgrader(cfg *rest.Config, up *url.URL) (*upgrader, error) {
	tc, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the upstream TLS configuration: %w", err)
	}
	wr, err := rest.HTTPWrappersForConfig(cfg, utilproxy.MirrorRequest)
	if err != nil {
		return nil, fmt.Errorf("building the upstream credential wrappers: %w", err)
	}
	ug := &upgrader{wrappers: wr, secure: up.Scheme == "https"}
	if ug.secure {
		if tc == nil {
			tc = &tls.Config{}
		}
		tc = tc.Clone()
		tc.NextProtos = []string{"http/1.1"}
		if tc.ServerName == "" {
			tc.ServerName = up.Hostname()
		}
		ug.tlsConfig = tc
	}
	ug.host = up.Host
	if up.Port() == "" {
		if ug.secure {
			ug.host = net.JoinHostPort(up.Hostname(), "443")
		} else {
			ug.host = net.JoinHostPort(up.Hostname(), "80")
		}
	}
	ug.dial = cfg.Dial
	if ug.dial == nil {
		d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		ug.dial = d.DialContext
	}
	return ug, nil
}

// serveUpgrade passes an exec/attach/port-forward upgrade through.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, r *http.Request, rq *request) {
	ctx := r.Context()
	fail := func(code int, reason, msg string) {
		p.errs.Add(1)
		p.finish(ctx, rq, code, reason, msg)
		writeStatus(w, code, reason, msg, nil)
		p.notify(r, rq, code)
	}
	out := r.Clone(ctx)
	out.RequestURI = ""
	u := *p.upstream
	u.Path = p.upstream.Path + r.URL.Path
	u.RawPath = ""
	u.RawQuery = r.URL.RawQuery
	out.URL = &u
	out.Host = u.Host
	out.Header.Del("Authorization")
	out.Header.Del("Proxy-Authorization")
	out.Header.Set("Audit-ID", rq.auditID)
	mirrored, err := p.upgrade.wrappers.RoundTrip(out)
	if err != nil {
		fail(http.StatusBadGateway, "BadGateway", "kubectl-agent proxy: getting the upstream credential: "+err.Error())
		return
	}
	out = mirrored.Request

	conn, err := p.upgrade.dial(ctx, "tcp", p.upgrade.host)
	if err != nil {
		fail(http.StatusBadGateway, "BadGateway", "kubectl-agent proxy: the cluster did not answer: "+err.Error())
		return
	}
	if p.upgrade.secure {
		tc := tls.Client(conn, p.upgrade.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			fail(http.StatusBadGateway, "BadGateway", "kubectl-agent proxy: TLS with the cluster failed: "+err.Error())
			return
		}
		conn = tc
	}
	if err := out.Write(conn); err != nil {
		conn.Close()
		fail(http.StatusBadGateway, "BadGateway", "kubectl-agent proxy: sending the upgrade request: "+err.Error())
		return
	}
	upR := bufio.NewReader(conn)
	resp, err := http.ReadResponse(upR, out)
	if err != nil {
		conn.Close()
		fail(http.StatusBadGateway, "BadGateway", "kubectl-agent proxy: reading the upgrade response: "+err.Error())
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The cluster said no (pod not found, forbidden, ...): relay it.
		defer conn.Close()
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		for _, h := range dropResponseHeaders {
			w.Header().Del(h)
		}
		w.WriteHeader(resp.StatusCode)
		rec := newRecorder(p.opts.MaxRecordedBody)
		_, _ = io.Copy(io.MultiWriter(w, rec), resp.Body)
		rq.ev.ResponseObject, rq.ev.Truncated, rq.ev.BodyBytes, rq.ev.Digest = rec.result()
		rq.ev.Stage = "ResponseComplete"
		rq.ev.StageTimestamp = time.Now()
		rq.ev.ResponseStatus = &transcript.ResponseStatus{Code: resp.StatusCode, Status: "Failure"}
		p.record(ctx, &rq.ev)
		p.notify(r, rq, resp.StatusCode)
		return
	}
	defer conn.Close()

	clientConn, clientRW, err := http.NewResponseController(w).Hijack()
	if err != nil {
		fail(http.StatusInternalServerError, "InternalError", "kubectl-agent proxy: cannot take over the connection: "+err.Error())
		return
	}
	defer clientConn.Close()
	// Write the 101 by hand: Response.Write would add headers of its own.
	var head strings.Builder
	fmt.Fprintf(&head, "HTTP/1.1 %s\r\n", resp.Status)
	_ = resp.Header.Write(&head)
	head.WriteString("\r\n")
	if _, err := io.WriteString(clientConn, head.String()); err != nil {
		return
	}

	protocol := resp.Header.Get("Sec-Websocket-Protocol")
	if protocol == "" {
		protocol = resp.Header.Get("Upgrade")
		if sp := resp.Header.Get("X-Stream-Protocol-Version"); sp != "" {
			protocol += "+" + sp
		}
	}
	rq.ev.Stage = "ResponseStarted"
	rq.ev.StageTimestamp = time.Now()
	rq.ev.ResponseStatus = &transcript.ResponseStatus{Code: resp.StatusCode, Status: "Success"}
	p.record(ctx, &rq.ev)
	p.notify(r, rq, resp.StatusCode)

	var toUp, toClient io.Writer
	if p.opts.Tap != nil {
		toUp, toClient = p.opts.Tap.Open(rq.auditID, protocol)
	}
	tu, tc := &tapWriter{w: toUp}, &tapWriter{w: toClient}
	defer tu.close()
	defer tc.close()

	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			clientConn.Close()
			conn.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		// Bytes the client sent after its request headers sit in clientRW.
		_, err := io.Copy(conn, io.TeeReader(clientRW.Reader, tu))
		// A client that is done sending (a half-close: kubectl exec -ti
		// does it when its stdin ends) still reads the rest of the output:
		// pass the half-close on and let the other direction finish, as a
		// direct connection would. Only a broken client ends both.
		if hc, ok := conn.(interface{ CloseWrite() error }); ok && err == nil {
			_ = hc.CloseWrite()
		} else {
			closeBoth()
		}
		close(done)
	}()
	_, _ = io.Copy(clientConn, io.TeeReader(upR, tc))
	// The cluster is done. Tell the client (TLS close_notify) and give it a
	// moment to read the rest and hang up itself: closing a socket that has
	// unread input sends a reset, and a reset can make the client's kernel
	// drop output it has not read yet (the last line of an exec -ti).
	if hc, ok := clientConn.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
		select {
		case <-done:
		case <-time.After(lingerAfterUpstreamClose):
		}
	}
	closeBoth()
	<-done
}

// lingerAfterUpstreamClose bounds how long a finished stream waits for the
// client to hang up.
const lingerAfterUpstreamClose = 5 * time.Second

// tapWriter hands bytes to a tap and never reports its errors: the stream
// must not depend on the tap.
type tapWriter struct {
	w      io.Writer
	failed bool
}

func (t *tapWriter) Write(b []byte) (int, error) {
	if t.w != nil && !t.failed {
		if _, err := t.w.Write(b); err != nil {
			t.failed = true
		}
	}
	return len(b), nil
}

func (t *tapWriter) close() {
	if c, ok := t.w.(io.Closer); ok {
		_ = c.Close()
	}
}
