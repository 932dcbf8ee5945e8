package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/mask"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
)

// Limits of previews.
const (
	maxPreviewText = 256 << 10 // a diff or object shown to reviewers
	maxUpstream    = 8 << 20   // an upstream answer read for a preview
	previewTimeout = 20 * time.Second
)

// Previewer runs held requests upstream with dryRun=All, with the run's own
// credential, and describes what they would do. Every object it returns is
// masked.
type Previewer struct {
	client *http.Client
	base   *url.URL
	masker *mask.Masker
}

// NewPreviewer makes a previewer for the upstream cluster; masker hides
// secret values (nil masks Secrets only).
func NewPreviewer(upstream *rest.Config, masker *mask.Masker) (*Previewer, error) {
	rt, err := rest.TransportFor(upstream)
	if err != nil {
		return nil, fmt.Errorf("building the dry-run transport: %w", err)
	}
	host := upstream.Host
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("upstream server %q: %w", upstream.Host, err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if masker == nil {
		masker = mask.New(nil)
	}
	return &Previewer{client: &http.Client{Transport: rt, Timeout: previewTimeout}, base: u, masker: masker}, nil
}

// Request is what a previewer needs of a held request.
type Request struct {
	Method      string
	RequestURI  string
	ContentType string
	Body        []byte
	Attributes  policy.Attributes
}

// Subresources that connect rather than change an object: no dry run exists.
var connectSubresources = map[string]bool{"exec": true, "attach": true, "portforward": true, "proxy": true, "log": true}

// Preview describes what req would do. It never fails: when no dry run is
// possible or the apiserver refuses it, the preview says so in Note.
func (p *Previewer) Preview(ctx context.Context, req Request) *api.Preview {
	ctx, cancel := context.WithTimeout(ctx, previewTimeout)
	defer cancel()
	a := req.Attributes
	if !a.ResourceRequest {
		return &api.Preview{Kind: api.PreviewNone, Note: "not a resource request; the apiserver has no dry run for it"}
	}
	if connectSubresources[a.Subresource] {
		return &api.Preview{Kind: api.PreviewNone, Note: fmt.Sprintf("%s opens a connection (%s); there is nothing to dry-run", a.Resource+"/"+a.Subresource, a.Verb)}
	}
	if a.DryRun {
		return &api.Preview{Kind: api.PreviewNone, Note: "the request is itself a dry run"}
	}
	kindHint := p.masker.KindForResource(a.Resource)
	switch a.Verb {
	case "create":
		res, code, err := p.do(ctx, req.Method, dryRunURI(req.RequestURI), req.ContentType, req.Body)
		if err != nil || code/100 != 2 {
			return refused(api.PreviewObject, code, res, err)
		}
		obj, err := p.yaml(res, kindHint)
		if err != nil {
			return &api.Preview{Kind: api.PreviewObject, DryRun: true, Note: "the dry-run result could not be shown: " + err.Error()}
		}
		return &api.Preview{Kind: api.PreviewObject, DryRun: true, Object: clip(obj)}
	case "update", "patch":
		live, lcode, lerr := p.do(ctx, http.MethodGet, objectURI(req.RequestURI), "", nil)
		res, code, err := p.do(ctx, req.Method, dryRunURI(req.RequestURI), req.ContentType, req.Body)
		if err != nil || code/100 != 2 {
			return refused(api.PreviewDiff, code, res, err)
		}
		after, err := p.yaml(res, kindHint)
		if err != nil {
			return &api.Preview{Kind: api.PreviewDiff, DryRun: true, Note: "the dry-run result could not be shown: " + err.Error()}
		}
		before := ""
		if lerr == nil && lcode == http.StatusOK {
			if before, err = p.yaml(live, kindHint); err != nil {
				before = ""
			}
		}
		pv := &api.Preview{Kind: api.PreviewDiff, DryRun: true}
		if lcode == http.StatusNotFound {
			pv.Note = "the object does not exist yet (an apply that creates it)"
		}
		pv.Diff = clip(UnifiedDiff("live", "after", before, after))
		if pv.Diff == "" {
			pv.Note = "no change: the dry-run result equals the live object"
		}
		return pv
	case "delete":
		body, ok := dryRunDeleteBody(req.Body)
		if !ok {
			return &api.Preview{Kind: api.PreviewDelete, Note: "the delete options are not a JSON object, so no dry run was made"}
		}
		live, lcode, _ := p.do(ctx, http.MethodGet, objectURI(req.RequestURI), "", nil)
		res, code, err := p.do(ctx, req.Method, dryRunURI(req.RequestURI), "application/json", body)
		if err != nil || code/100 != 2 {
			return refused(api.PreviewDelete, code, res, err)
		}
		pv := &api.Preview{Kind: api.PreviewDelete, DryRun: true}
		if lcode == http.StatusOK {
			if obj, err := p.yaml(live, kindHint); err == nil {
				pv.Object = clip(obj)
			}
		}
		if a.APIGroup == "" && a.Resource == "namespaces" && a.Name != "" && a.Subresource == "" {
			pv.Deletes, pv.Note = p.namespaceContents(ctx, a.Name)
		}
		return pv
	case "deletecollection":
		body, ok := dryRunDeleteBody(req.Body)
		if !ok {
			return &api.Preview{Kind: api.PreviewDelete, Note: "the delete options are not a JSON object, so no dry run was made"}
		}
		res, code, err := p.do(ctx, req.Method, dryRunURI(req.RequestURI), "application/json", body)
		if err != nil || code/100 != 2 {
			return refused(api.PreviewDelete, code, res, err)
		}
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		_ = json.Unmarshal(res, &list)
		return &api.Preview{Kind: api.PreviewDelete, DryRun: true, Deletes: []api.DeleteCount{{Resource: qualified(a.Resource, a.APIGroup), Count: len(list.Items)}}}
	}
	return &api.Preview{Kind: api.PreviewNone, Note: fmt.Sprintf("no dry run for the verb %q", a.Verb)}
}

func qualified(resource, group string) string {
	if group == "" {
		return resource
	}
	return resource + "." + group
}

func refused(kind string, code int, body []byte, err error) *api.Preview {
	if err != nil {
		return &api.Preview{Kind: kind, Note: "the dry run could not be made: " + err.Error()}
	}
	var st struct {
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	_ = json.Unmarshal(body, &st)
	msg := st.Message
	if msg == "" {
		msg = http.StatusText(code)
	}
	return &api.Preview{Kind: kind, Note: fmt.Sprintf("the apiserver refused the dry run (HTTP %d %s): %s; the request would likely fail the same way", code, st.Reason, msg)}
}

func clip(s string) string {
	if len(s) <= maxPreviewText {
		return s
	}
	return s[:maxPreviewText] + "\n... (cut at 256 KiB)\n"
}

// dryRunDeleteBody makes a delete's body ask for a dry run. The apiserver
// reads DeleteOptions from the body when there is one and then ignores the
// query, so dryRun=All in the URI alone would let a real delete through.
func dryRunDeleteBody(b []byte) ([]byte, bool) {
	opts := map[string]any{}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &opts); err != nil {
			if y, yerr := yaml.YAMLToJSON(b); yerr != nil || json.Unmarshal(y, &opts) != nil {
				return nil, false
			}
		}
	}
	if opts == nil {
		return nil, false
	}
	if _, ok := opts["kind"]; !ok {
		opts["kind"], opts["apiVersion"] = "DeleteOptions", "v1"
	}
	opts["dryRun"] = []string{"All"}
	out, err := json.Marshal(opts)
	return out, err == nil
}

// dryRunURI adds dryRun=All to a request URI.
func dryRunURI(uri string) string {
	path, q, _ := strings.Cut(uri, "?")
	v, _ := url.ParseQuery(q)
	v.Set("dryRun", "All")
	return path + "?" + v.Encode()
}

// objectURI is the request URI without its query: the object to read.
func objectURI(uri string) string {
	path, _, _ := strings.Cut(uri, "?")
	return path
}

func (p *Previewer) do(ctx context.Context, method, uri, contentType string, body []byte) ([]byte, int, error) {
	u := p.base.String() + uri
	var rd io.Reader
	if len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" && len(body) > 0 {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", "kubectl-agent/approval-preview")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstream))
	return b, resp.StatusCode, err
}

// yaml masks a JSON object, drops the fields that only add noise to a
// review (managedFields, resourceVersion), and renders it as YAML.
func (p *Previewer) yaml(b []byte, kindHint string) (string, error) {
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return "", fmt.Errorf("the answer is not a JSON object")
	}
	p.masker.Object(obj, kindHint, "")
	if md, ok := obj["metadata"].(map[string]any); ok {
		delete(md, "managedFields")
		delete(md, "resourceVersion")
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// Resource kinds counted when a namespace would be deleted.
var namespaceKinds = []struct{ group, version, resource string }{
	{"", "v1", "pods"}, {"", "v1", "services"}, {"", "v1", "configmaps"}, {"", "v1", "secrets"},
	{"", "v1", "serviceaccounts"}, {"", "v1", "persistentvolumeclaims"},
	{"apps", "v1", "deployments"}, {"apps", "v1", "statefulsets"}, {"apps", "v1", "daemonsets"}, {"apps", "v1", "replicasets"},
	{"batch", "v1", "jobs"}, {"batch", "v1", "cronjobs"},
	{"networking.k8s.io", "v1", "ingresses"}, {"rbac.authorization.k8s.io", "v1", "roles"}, {"rbac.authorization.k8s.io", "v1", "rolebindings"},
}

// namespaceContents counts the common resource kinds in a namespace (one
// list call per kind, limit=1 and the apiserver's remainingItemCount). Kinds
// the run may not list are named in the note.
func (p *Previewer) namespaceContents(ctx context.Context, ns string) ([]api.DeleteCount, string) {
	var out []api.DeleteCount
	var unknown []string
	for _, k := range namespaceKinds {
		prefix := "/apis/" + k.group + "/" + k.version
		if k.group == "" {
			prefix = "/api/" + k.version
		}
		b, code, err := p.do(ctx, http.MethodGet, prefix+"/namespaces/"+url.PathEscape(ns)+"/"+k.resource+"?limit=1", "", nil)
		if err != nil || code != http.StatusOK {
			unknown = append(unknown, qualified(k.resource, k.group))
			continue
		}
		var list struct {
			Metadata struct {
				RemainingItemCount *int64 `json:"remainingItemCount"`
			} `json:"metadata"`
			Items []json.RawMessage `json:"items"`
		}
		if json.Unmarshal(b, &list) != nil {
			unknown = append(unknown, qualified(k.resource, k.group))
			continue
		}
		n := len(list.Items)
		if list.Metadata.RemainingItemCount != nil {
			n += int(*list.Metadata.RemainingItemCount)
		}
		if n > 0 {
			out = append(out, api.DeleteCount{Resource: qualified(k.resource, k.group), Count: n})
		}
	}
	note := "everything in the namespace goes with it"
	if len(out) == 0 {
		note = "the namespace holds none of the common resource kinds"
	}
	if len(unknown) > 0 {
		note += "; not counted (the run may not list them): " + strings.Join(unknown, ", ")
	}
	return out, note
}
