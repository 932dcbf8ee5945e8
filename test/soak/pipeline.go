package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/proxy"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

// pipeline is one run: what it sent and where its transcript is.
type pipeline struct {
	n      int64
	runID  string
	binary bool // through the real kubectl-agent binary

	sessionID    string
	transcriptID string
	exchange     time.Duration // in-process only: the Exchange call, retries included
	spool        string        // the transcript as the client holds it
	lines        int64
	bytes        int64
	ended        bool
	took         time.Duration
	err          error
}

// payload makes each ConfigMap (and so each transcript) carry some bytes.
var payload = strings.Repeat("soak-payload-", 160)

// runner runs pipelines; its counters are shared by all workers.
type runner struct {
	w      *world
	client *session.Client
	// uploadRetries counts failed transcript uploads that the recorder retried.
	uploadRetries atomic.Int64
	// brokerErrors counts network errors and 5xx answers that in-process
	// clients saw (and retried): the faults at work.
	brokerErrors atomic.Int64
}

func newRunner(w *world) (*runner, error) {
	c, err := session.NewClient(w.brokerURL())
	if err != nil {
		return nil, err
	}
	r := &runner{w: w, client: c}
	// One transport for all in-process pipelines, as many runners on one
	// NAT would look to the balancer; the counter sees every attempt.
	c.HTTP = &http.Client{Transport: &countingTransport{
		next: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second, ResponseHeaderTimeout: 45 * time.Second},
		errs: &r.brokerErrors,
	}}
	return r, nil
}

type countingTransport struct {
	next http.RoundTripper
	errs *atomic.Int64
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode >= 500 {
		t.errs.Add(1)
	}
	return resp, err
}

func (r *runner) run(ctx context.Context, p *pipeline) {
	start := time.Now()
	dir := filepath.Join(r.w.dir, "runs", p.runID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		p.err = err
		return
	}
	if p.binary {
		p.err = r.binaryPipeline(ctx, p, dir)
	} else {
		p.err = r.inProcess(ctx, p, dir)
	}
	p.took = time.Since(start)
	if p.spool != "" {
		if b, err := os.ReadFile(p.spool); err == nil {
			p.bytes = int64(len(b))
			p.lines = int64(bytes.Count(b, []byte{'\n'}))
		}
	}
}

// uploader sends one transcript's chunks with its session (what
// `kubectl agent exec` does).
type uploader struct {
	c            *session.Client
	sessionID    string
	transcriptID string
	retries      *atomic.Int64
}

func (u *uploader) Upload(ctx context.Context, chunk api.TranscriptChunk) (api.TranscriptAck, error) {
	chunk.Transcript = u.transcriptID
	ack, err := u.c.UploadTranscript(ctx, u.sessionID, chunk)
	if err != nil {
		u.retries.Add(1)
	}
	return ack, err
}

// inProcess is a pipeline in this process: token exchange with pkg/session,
// the real proxy fed with the session's credential and recording into a
// real Recorder that streams to the broker, kubectl-like calls through the
// proxy with client-go, the seal, and the end of the session.
func (r *runner) inProcess(ctx context.Context, p *pipeline, dir string) error {
	tok := r.w.iss.Mint(r.w.iss.GitHubClaims(repository, p.runID, r.w.audience))
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	t0 := time.Now()
	resp, err := r.client.Exchange(ctx, tok, clusterName, key)
	p.exchange = time.Since(t0)
	if err != nil {
		return err
	}
	p.sessionID = resp.Session.ID
	sc := r.client.WithSession(resp.AccessToken, key)
	cred := resp.Session.Credential
	if cred == nil || cred.Token == "" {
		return errors.New("the exchange gave no cluster credential")
	}
	pol := policy.Default()
	if resp.Session.Policy != "" {
		if pol, err = policy.Parse([]byte(resp.Session.Policy), "grant"); err != nil {
			return err
		}
	}
	tid := make([]byte, 6)
	_, _ = rand.Read(tid)
	p.transcriptID = hex.EncodeToString(tid)
	p.spool = filepath.Join(dir, transcript.SpoolFileName(p.sessionID))
	rec, err := transcript.NewRecorder(transcript.RecorderOptions{
		SessionID: p.sessionID, Key: key, KeyBinding: resp.Session.KeyBinding, SpoolPath: p.spool,
		Uploader: &uploader{c: sc, sessionID: p.sessionID, transcriptID: hex.EncodeToString(tid), retries: &r.uploadRetries},
		Start: transcript.StartEvent{
			TranscriptID: hex.EncodeToString(tid), Cluster: clusterName, Mode: "broker", PolicyDigest: pol.Digest(),
			Identity: map[string]string{"repository": repository, "runID": p.runID},
		},
	})
	if err != nil {
		return err
	}
	workErr := r.work(ctx, p, rec, pol, cred)
	code := 0
	if workErr != nil {
		code = 1
	}
	if _, err := rec.Close(ctx, transcript.EndEvent{ExitCode: code}); err != nil {
		return errors.Join(workErr, fmt.Errorf("sealing and uploading the transcript: %w", err))
	}
	if err := sc.End(ctx, p.sessionID); err != nil && !session.SessionGone(err) {
		return errors.Join(workErr, err)
	}
	p.ended = true
	return workErr
}

// work is the kubectl part: create, get, list and delete a ConfigMap
// through the run's proxy.
func (r *runner) work(ctx context.Context, p *pipeline, rec *transcript.Recorder, pol *policy.Policy, cred *api.Credential) error {
	server, ca := cred.Server, cred.CAData
	if server == "" {
		server, ca = r.w.c.Server, r.w.c.CAData
	}
	px, err := proxy.New(proxy.Options{
		Upstream: &rest.Config{Host: server, BearerToken: cred.Token, TLSClientConfig: rest.TLSClientConfig{CAData: ca}, QPS: -1},
		Policy:   pol, Sink: rec, Tap: rec.StreamTap(),
	})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := px.Start(pctx); err != nil {
		return err
	}
	defer px.Close()
	rc := px.RESTConfig()
	rc.QPS = -1
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	cms := cs.CoreV1().ConfigMaps(workNS)
	name := "soak-" + p.runID
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"soak-run": p.runID}},
		Data:       map[string]string{"run": p.runID, "payload": payload},
	}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating configmap %s through the proxy: %w", name, err)
	}
	got, err := cms.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("getting configmap %s through the proxy: %w", name, err)
	}
	if got.Data["run"] != p.runID {
		return fmt.Errorf("configmap %s came back with run %q", name, got.Data["run"])
	}
	list, err := cms.List(ctx, metav1.ListOptions{LabelSelector: "soak-run=" + p.runID})
	if err != nil {
		return fmt.Errorf("listing configmaps through the proxy: %w", err)
	}
	if len(list.Items) != 1 {
		return fmt.Errorf("listing configmaps of run %s: %d items, want 1", p.runID, len(list.Items))
	}
	if err := cms.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("deleting configmap %s through the proxy: %w", name, err)
	}
	return nil
}

// binaryPipeline is a GitHub Actions job as a user writes it: `kubectl agent
// exec` around real kubectl calls (the token comes from the issuer's
// ACTIONS_ID_TOKEN_REQUEST_URL), then `kubectl agent logout` ends the
// session.
func (r *runner) binaryPipeline(ctx context.Context, p *pipeline, dir string) error {
	env := append(os.Environ(),
		"PATH="+r.w.c.BinDir()+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KUBECONFIG="+filepath.Join(dir, "kubeconfig-unused"),
		"KUBECACHEDIR="+filepath.Join(dir, "cache"),
		"GITHUB_ACTIONS=true",
		"GITHUB_SERVER_URL=https://github.com",
		"GITHUB_REPOSITORY="+repository,
		"GITHUB_RUN_ID="+p.runID,
		"GITHUB_RUN_ATTEMPT=1",
		"ACTIONS_ID_TOKEN_REQUEST_URL="+r.w.iss.URL+"/token?repository="+repository+"&run_id="+p.runID,
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN=soak-request-token",
		"RUNNER_TEMP=",
		"NO_COLOR=1",
		"KUBECTL_AGENT_BROKER="+r.w.brokerURL(),
		"KUBECTL_AGENT_CLUSTER="+clusterName,
		"KUBECTL_AGENT_TOKEN_SOURCE=github",
		"KUBECTL_AGENT_AUDIENCE="+r.w.audience,
		"SOAK_CM=soak-"+p.runID,
	)
	tfile := filepath.Join(dir, "run.transcript.jsonl")
	script := `set -e
kubectl create configmap "$SOAK_CM" --from-literal=payload=` + payload + `
kubectl get configmap "$SOAK_CM" -o name
kubectl get configmaps -l "soak-run=$SOAK_CM" -o name
kubectl delete configmap "$SOAK_CM"`
	out, err := runCmd(ctx, env, r.w.agentBin, "exec", "--transcript", tfile, "--", "sh", "-c", script)
	if _, serr := os.Stat(tfile); serr == nil {
		p.spool = tfile
		p.sessionID, p.transcriptID = startSession(tfile)
	}
	if err != nil {
		return fmt.Errorf("kubectl agent exec: %w\n%s", err, out)
	}
	if !strings.Contains(out, "configmap/soak-"+p.runID) {
		return fmt.Errorf("kubectl agent exec: the child's output lacks configmap/soak-%s:\n%s", p.runID, out)
	}
	if p.sessionID == "" {
		return fmt.Errorf("kubectl agent exec wrote no transcript at %s:\n%s", tfile, out)
	}
	if out, err := runCmd(ctx, env, r.w.agentBin, "logout"); err != nil {
		return fmt.Errorf("kubectl agent logout: %w\n%s", err, out)
	}
	p.ended = true
	return nil
}

func runCmd(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// startSession reads the session and transcript ids from a transcript's
// start event.
func startSession(path string) (sessionID, transcriptID string) {
	f, err := os.Open(path)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	if !sc.Scan() {
		return "", ""
	}
	var ev transcript.Event
	if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Start == nil {
		return "", ""
	}
	return ev.Start.SessionID, ev.Start.TranscriptID
}
