package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kubectl-agent/kubectl-agent/pkg/mask"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

// Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy owns.
var dropRequestHeaders = []string{
	"Authorization", "Proxy-Authorization", "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade", "Accept-Encoding", "Audit-Id",
}

var dropResponseHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Content-Length", "Content-Encoding",
}

// passThrough reports whether a resource request's response is not
// Kubernetes JSON and goes back unparsed: pod logs (text) and the proxy
// subresources (whatever the pod or service serves).
func passThrough(resource, sub string) bool {
	return sub == "log" || sub == "proxy"
}

// forward sends an allowed request upstream and streams the (masked)
// response back.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rq *request) {
	ctx := r.Context()
	out := r.Clone(ctx)
	out.RequestURI = ""
	u := *p.upstream
	u.Path = p.upstream.Path + r.URL.Path
	u.RawPath = ""
	u.RawQuery = r.URL.RawQuery
	out.URL = &u
	out.Host = ""
	for _, h := range dropRequestHeaders {
		out.Header.Del(h)
	}
	for _, h := range strings.Split(r.Header.Get("Connection"), ",") {
		if h = strings.TrimSpace(h); h != "" {
			out.Header.Del(h)
		}
	}
	out.Header.Set("Audit-ID", rq.auditID)
	a := rq.attrs
	parse := a.ResourceRequest && !passThrough(a.Resource, a.Subresource)
	if parse {
		out.Header.Set("Accept", jsonAccept(r.Header.Values("Accept")))
	}
	if rq.body != nil {
		out.Body = io.NopCloser(bytes.NewReader(rq.body))
		out.ContentLength = int64(len(rq.body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(rq.body)), nil }
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		p.errs.Add(1)
		msg := "kubectl-agent proxy: the cluster did not answer: " + err.Error()
		p.finish(ctx, rq, http.StatusBadGateway, "BadGateway", msg)
		writeStatus(w, http.StatusBadGateway, "BadGateway", msg, nil)
		p.notify(r, rq, http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()

	ct := resp.Header.Get("Content-Type")
	mt, params, cterr := mime.ParseMediaType(ct)
	hasBody := r.Method != http.MethodHead && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
	if parse && hasBody && (cterr != nil || mt != "application/json") && !(ct == "" && resp.ContentLength == 0) {
		p.badGateway(w, r, rq, fmt.Sprintf("kubectl-agent proxy: the cluster answered with content type %q, which the proxy cannot mask; refused", ct))
		return
	}
	// Go's transport undoes the gzip it asked for and then drops the header;
	// an encoding still named here is one the proxy cannot read.
	if ce := resp.Header.Get("Content-Encoding"); parse && hasBody && ce != "" && !strings.EqualFold(ce, "identity") {
		p.badGateway(w, r, rq, fmt.Sprintf("kubectl-agent proxy: the cluster answered with content encoding %q, which the proxy cannot mask; refused", ce))
		return
	}
	// A watch that failed answers with one Status object, not a stream of
	// events.
	watch := (a.Verb == "watch" || params["stream"] == "watch") && resp.StatusCode < 300
	if watch && hasBody {
		// A watch can run for the whole job: record that it started now,
		// not only when it ends.
		started := rq.ev
		started.Stage = "ResponseStarted"
		started.StageTimestamp = time.Now()
		started.ResponseStatus = &transcript.ResponseStatus{Code: resp.StatusCode, Status: statusWord(resp.StatusCode)}
		if started.RequestObject == nil {
			started.RequestObject = p.recordRequestBody(rq, &started)
		}
		p.record(ctx, &started)
	}

	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, h := range dropResponseHeaders {
		w.Header().Del(h)
	}
	if !parse && resp.ContentLength >= 0 && resp.Header.Get("Content-Encoding") == "" {
		w.Header().Set("Content-Length", fmt.Sprint(resp.ContentLength))
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	rec := newRecorder(p.opts.MaxRecordedBody)
	dst := io.MultiWriter(w, rec)

	var res mask.Result
	switch {
	case !hasBody:
	case !parse:
		err = flushCopy(dst, resp.Body, rc)
	case watch:
		res, err = p.masker.Watch(dst, resp.Body, kindForResource(p.masker, a.Resource), func() { _ = rc.Flush() })
	default:
		res, err = p.masker.Stream(dst, resp.Body, kindForResource(p.masker, a.Resource))
	}
	p.masked.Add(int64(res.Objects))
	rq.ev.MaskedPaths = res.Paths
	rq.ev.ResponseObject, rq.ev.Truncated, rq.ev.BodyBytes, rq.ev.Digest = rec.result()
	rq.ev.ResponseStatus = &transcript.ResponseStatus{Code: resp.StatusCode, Status: statusWord(resp.StatusCode)}
	if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
		// Half a response is out; cutting the connection makes the client
		// see a failure instead of a short but valid-looking answer.
		p.errs.Add(1)
		rq.ev.ResponseStatus.Message = "kubectl-agent proxy: response cut: " + err.Error()
		rq.ev.Stage = "ResponseComplete"
		rq.ev.StageTimestamp = time.Now()
		p.record(ctx, &rq.ev)
		p.notify(r, rq, resp.StatusCode)
		panic(http.ErrAbortHandler)
	}
	rq.ev.Stage = "ResponseComplete"
	rq.ev.StageTimestamp = time.Now()
	if rq.ev.RequestObject == nil {
		rq.ev.RequestObject = p.recordRequestBody(rq, &rq.ev)
	}
	p.record(ctx, &rq.ev)
	p.notify(r, rq, resp.StatusCode)
}

func statusWord(code int) string {
	if code >= 400 {
		return "Failure"
	}
	return "Success"
}

// badGateway refuses to pass on an upstream answer, before any of it is sent.
func (p *Proxy) badGateway(w http.ResponseWriter, r *http.Request, rq *request, msg string) {
	p.errs.Add(1)
	p.finish(r.Context(), rq, http.StatusBadGateway, "BadGateway", msg)
	writeStatus(w, http.StatusBadGateway, "BadGateway", msg, nil)
	p.notify(r, rq, http.StatusBadGateway)
}

// flushCopy copies src to dst, flushing after every read so that `logs -f`
// and similar streams reach the client as they come.
func flushCopy(dst io.Writer, src io.Reader, rc *http.ResponseController) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// jsonAccept turns the child's Accept header into one that asks for JSON
// only, keeping the as=Table / as=PartialObjectMetadata(List) conversions.
func jsonAccept(values []string) string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			_, params, err := mime.ParseMediaType(part)
			if err != nil {
				continue
			}
			if as := params["as"]; as != "" {
				keep := map[string]string{"as": as}
				if params["v"] != "" {
					keep["v"] = params["v"]
				}
				if params["g"] != "" {
					keep["g"] = params["g"]
				}
				s := "application/json;as=" + as
				if keep["v"] != "" {
					s += ";v=" + keep["v"]
				}
				if keep["g"] != "" {
					s += ";g=" + keep["g"]
				}
				add(s)
				continue
			}
			add("application/json")
		}
	}
	if len(out) == 0 {
		return "application/json"
	}
	if !seen["application/json"] {
		// A server that cannot do the conversion falls back to plain JSON.
		add("application/json")
	}
	return strings.Join(out, ", ")
}

// kindForResource guesses which masked kind a resource serves, for Table rows
// (which do not carry their kind). "" when no masked kind fits.
func kindForResource(m *mask.Masker, resource string) string {
	switch resource {
	case "":
		return ""
	case "secrets":
		return "Secret"
	case "configmaps":
		return "ConfigMap"
	}
	return m.KindForResource(resource)
}

// recordRequestBody is the request body as the transcript keeps it: masked,
// capped, with a digest of the whole.
func (p *Proxy) recordRequestBody(rq *request, ev *transcript.RequestEvent) json.RawMessage {
	if len(rq.body) == 0 {
		return nil
	}
	hint := kindForResource(p.masker, rq.attrs.Resource)
	js := rq.body
	if !json.Valid(js) {
		if y, err := yaml.YAMLToJSON(rq.body); err == nil {
			js = y
		}
	}
	masked, _, err := p.masker.Bytes(js, hint)
	if err != nil {
		// Not an object (a JSON patch array, or unreadable): keep it only when
		// nothing about this resource is masked.
		if hint != "" || !json.Valid(js) {
			b, _ := json.Marshal(mask.Placeholder)
			return b
		}
		masked = js
	}
	if len(masked) > p.opts.MaxRecordedBody {
		sum := sha256.Sum256(masked)
		b, _ := json.Marshal(fmt.Sprintf("truncated request body of %d bytes, sha256:%s", len(masked), hex.EncodeToString(sum[:])))
		return b
	}
	return json.RawMessage(bytes.Clone(masked))
}

// recorder keeps the first max bytes of a (masked) response body and a digest
// of all of it.
type recorder struct {
	max   int
	buf   bytes.Buffer
	n     int64
	h     hash.Hash
	trunc bool
}

func newRecorder(max int) *recorder { return &recorder{max: max, h: sha256.New()} }

func (c *recorder) Write(b []byte) (int, error) {
	c.n += int64(len(b))
	c.h.Write(b)
	if room := c.max - c.buf.Len(); room > 0 {
		if len(b) > room {
			c.buf.Write(b[:room])
			c.trunc = true
		} else {
			c.buf.Write(b)
		}
	} else if len(b) > 0 {
		c.trunc = true
	}
	return len(b), nil
}

// result returns the kept body (as JSON: the object itself when it is whole
// valid JSON, a string otherwise), whether it was cut, the size and digest.
func (c *recorder) result() (json.RawMessage, bool, int64, string) {
	if c.n == 0 {
		return nil, false, 0, ""
	}
	digest := "sha256:" + hex.EncodeToString(c.h.Sum(nil))
	b := c.buf.Bytes()
	if !c.trunc && json.Valid(b) {
		return json.RawMessage(bytes.Clone(b)), false, c.n, digest
	}
	s, _ := json.Marshal(string(b))
	return s, c.trunc, c.n, digest
}
