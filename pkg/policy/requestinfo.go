package policy

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/api/validation/path"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CanonicalPath refuses request paths that the apiserver could read
// differently from a plain split on "/": any percent-encoding (the apiserver
// decodes `/api/v1/namespaces/%76ictim` to victim), "." and ".." segments,
// empty segments ("//"), a trailing slash (except "/" itself), backslashes,
// and NUL or other control characters. Pass the raw form
// (r.URL.EscapedPath() or the path part of r.RequestURI).
func CanonicalPath(rawPath string) error {
	if rawPath == "/" {
		return nil
	}
	if rawPath == "" || rawPath[0] != '/' {
		return fmt.Errorf("request path %q does not start with /", rawPath)
	}
	for i := 0; i < len(rawPath); i++ {
		c := rawPath[i]
		switch {
		case c == '%':
			return fmt.Errorf("request path %q is percent-encoded; refused because the apiserver would decode it", rawPath)
		case c == '\\':
			return fmt.Errorf("request path %q contains a backslash", rawPath)
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("request path %q contains a control character", rawPath)
		case c == '?' || c == '#':
			return fmt.Errorf("request path %q contains %q (pass the path without query or fragment)", rawPath, c)
		}
	}
	if strings.HasSuffix(rawPath, "/") {
		return fmt.Errorf("request path %q ends with a slash", rawPath)
	}
	for _, seg := range strings.Split(rawPath[1:], "/") {
		switch seg {
		case "":
			return fmt.Errorf("request path %q has an empty segment (//)", rawPath)
		case ".", "..":
			return fmt.Errorf("request path %q has a %q segment", rawPath, seg)
		}
	}
	return nil
}

// ParsePath derives the authorization attributes of an API request exactly as
// kube-apiserver's RequestInfoFactory does (k8s.io/apiserver v0.34), for the
// prefixes /api (groupless) and /apis. The path must be canonical (see
// CanonicalPath); it is refused otherwise, so a path the apiserver would
// read differently never gets a decision. Beyond RequestInfo: GET on
// pods/exec, pods/attach and pods/portforward is `create` (what the
// apiserver authorizes for WebSocket upgrades), dryRun=All sets DryRun, and
// pods/exec's command= values land in Command.
func ParsePath(method, p string, query url.Values) (Attributes, error) {
	if err := CanonicalPath(p); err != nil {
		return Attributes{}, err
	}
	a := Attributes{Path: p, Verb: strings.ToLower(method)}
	if q := query["dryRun"]; len(q) > 0 {
		for _, v := range q {
			if v == metav1.DryRunAll {
				a.DryRun = true
			}
		}
	}
	parts := splitPath(p)
	if len(parts) < 3 || (parts[0] != "api" && parts[0] != "apis") {
		return a, nil
	}
	prefix := parts[0]
	parts = parts[1:]
	if prefix == "apis" {
		if len(parts) < 3 {
			return a, nil
		}
		a.APIGroup = parts[0]
		parts = parts[1:]
	}
	a.ResourceRequest = true
	a.APIVersion = parts[0]
	parts = parts[1:]

	if parts[0] == "proxy" || parts[0] == "watch" {
		if len(parts) < 2 {
			return a, fmt.Errorf("unable to determine kind and namespace from path %q", p)
		}
		a.Verb = parts[0]
		parts = parts[1:]
	} else {
		switch method {
		case http.MethodPost:
			a.Verb = "create"
		case http.MethodGet, http.MethodHead:
			a.Verb = "get"
		case http.MethodPut:
			a.Verb = "update"
		case http.MethodPatch:
			a.Verb = "patch"
		case http.MethodDelete:
			a.Verb = "delete"
		default:
			a.Verb = ""
		}
	}
	if parts[0] == "namespaces" {
		if len(parts) > 1 {
			a.Namespace = parts[1]
			if len(parts) > 2 && parts[2] != "status" && parts[2] != "finalize" {
				parts = parts[2:]
			}
		}
	}
	switch {
	case len(parts) >= 3 && a.Verb != "proxy":
		a.Subresource = parts[2]
		fallthrough
	case len(parts) >= 2:
		a.Name = parts[1]
		fallthrough
	case len(parts) >= 1:
		a.Resource = parts[0]
	}
	if a.Name == "" && a.Verb == "get" {
		opts := metainternalversion.ListOptions{}
		if err := metainternalversionscheme.ParameterCodec.DecodeParameters(query, metav1.SchemeGroupVersion, &opts); err != nil {
			opts = metainternalversion.ListOptions{}
			if values := query["watch"]; len(values) > 0 {
				switch strings.ToLower(values[0]) {
				case "false", "0":
				default:
					opts.Watch = true
				}
			}
		}
		if opts.Watch {
			a.Verb = "watch"
		} else {
			a.Verb = "list"
		}
		if opts.FieldSelector != nil {
			if name, ok := opts.FieldSelector.RequiresExactMatch("metadata.name"); ok {
				if len(path.IsValidPathSegmentName(name)) == 0 {
					a.Name = name
				}
			}
		}
	}
	if a.Name == "" && a.Verb == "delete" {
		a.Verb = "deletecollection"
	}
	if a.Verb == "get" && a.APIGroup == "" && a.Resource == "pods" {
		switch a.Subresource {
		case "exec", "attach", "portforward":
			a.Verb = "create"
		}
	}
	if a.Resource == "pods" && a.Subresource == "exec" && a.APIGroup == "" {
		if cmd := query["command"]; len(cmd) > 0 {
			a.Command = append([]string(nil), cmd...)
		}
	}
	return a, nil
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return []string{}
	}
	return strings.Split(p, "/")
}
