package policy

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"testing/fstest"
)

func fsOpts(files map[string]string) MapOptions {
	m := fstest.MapFS{}
	for k, v := range files {
		m[k] = &fstest.MapFile{Data: []byte(v)}
	}
	return MapOptions{DefaultNamespace: "dev", ReadFile: m.ReadFile, ReadDir: m.ReadDir}
}

func summary(reqs []MappedRequest) string {
	var b []string
	for _, r := range reqs {
		s := fmt.Sprintf("%s %s/%s", r.Verb, r.APIGroup, r.Resource)
		if r.Subresource != "" {
			s += "/" + r.Subresource
		}
		s += fmt.Sprintf(" ns=%s name=%s", r.Namespace, r.Name)
		b = append(b, s)
	}
	return strings.Join(b, "; ")
}

func TestMapKubectlQuick(t *testing.T) {
	for _, line := range []string{
		"kubectl delete ns prod",
		"kubectl -n kube-system exec -it web -- sh -c id",
		"kubectl get secret -w -n kube-system",
		"kubectl delete ns --all",
		"kubectl get deployments.apps -A",
		"kubectl delete --raw /api/v1/namespaces/prod",
		"kubectl drain node1 --ignore-daemonsets",
		"kubectl create clusterrolebinding x --clusterrole=cluster-admin --user=me",
		"kubectl logs -f -p web -c app",
		"kubectl cp kube-system/web:/etc/passwd ./p",
	} {
		reqs, err := MapKubectl(strings.Fields(line), fsOpts(nil))
		if err != nil {
			t.Errorf("%s: %v", line, err)
			continue
		}
		t.Logf("%s => %s", line, summary(reqs))
	}
}

// TestMappedPathsParseBack: each mapped request's Method and Path, read by
// ParsePath (as the proxy reads kubectl's real requests), give the same
// verb, group, resource and namespace; the name too where the path has one.
func TestMappedPathsParseBack(t *testing.T) {
	opts := fsOpts(map[string]string{
		"app.yaml":             "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n",
		"k/kustomization.yaml": "namespace: kube-system\nresources: [cm.yaml]\n",
		"k/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
	})
	lines := []string{
		"get pods", "get po web -n a", "get deploy,svc -A", "get secrets -w", "describe pod web",
		"delete ns prod", "delete -f app.yaml", "apply -f app.yaml", "apply --server-side -f app.yaml",
		"apply -k k", "replace -f app.yaml", "patch deploy web -p {}", "edit cm c", "label pod web a=b",
		"scale deploy/web --replicas=2", "rollout restart deploy web", "rollout undo deploy/web",
		"set image deploy/web web=nginx", "exec web -- ls", "attach web", "cp web:/a b", "port-forward pod/web 80",
		"logs web", "run x --image=nginx --rm -it", "debug web --image=busybox", "cordon n1", "auth can-i get pods",
		"create token sa1", "create ns x", "get --raw /api/v1/namespaces/a/pods", "top pods", "wait --for=condition=Ready pod/web",
		"certificate approve csr1", "create clusterrolebinding b --clusterrole=view --user=u",
	}
	for _, line := range lines {
		reqs, err := MapKubectl(strings.Fields(line), opts)
		if err != nil {
			t.Errorf("%s: %v", line, err)
			continue
		}
		if len(reqs) == 0 {
			t.Errorf("%s: no requests", line)
		}
		for _, r := range reqs {
			if !r.ResourceRequest {
				continue
			}
			q := url.Values{}
			if r.Verb == "watch" {
				q.Set("watch", "true")
			}
			if (r.Verb == "watch" || r.Verb == "list") && r.Name != "" {
				q.Set("fieldSelector", "metadata.name="+r.Name)
			}
			if r.Verb == "delete" && r.Name == "" {
				continue // mapped "delete whatever matches": kubectl deletes by name after listing
			}
			if r.Subresource != "" && r.Name == "" {
				continue // a pod kubectl picks at run time
			}
			b, err := ParsePath(r.Method, r.Path, q)
			if err != nil {
				t.Errorf("%s: %s %s: %v", line, r.Method, r.Path, err)
				continue
			}
			want := r.Attributes
			if r.Verb == "create" && r.Subresource == "" {
				want.Name = "" // in the body, not the path
				if r.Resource == "namespaces" {
					want.Namespace = ""
				}
			}
			if b.Verb != want.Verb || b.APIGroup != want.APIGroup || b.Resource != want.Resource ||
				b.Subresource != want.Subresource || b.Namespace != want.Namespace || b.Name != want.Name {
				t.Errorf("%s: mapped %+v\n\tbut %s %s parses as %+v", line, want, r.Method, r.Path, b)
			}
		}
	}
}

func TestMapKubectlDetails(t *testing.T) {
	opts := fsOpts(map[string]string{
		"k/kustomization.yaml":     "namespace: kube-system\nresources: [cm.yaml, sub]\nconfigMapGenerator: [{name: gen}]\n",
		"k/cm.yaml":                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
		"k/sub/kustomization.yaml": "resources: [w.yaml]\n",
		"k/sub/w.yaml":             "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: other}\n",
	})
	check := func(line, want string) {
		t.Helper()
		reqs, err := MapKubectl(strings.Fields(line), opts)
		if err != nil {
			t.Errorf("%s: %v", line, err)
			return
		}
		if got := summary(reqs); got != want {
			t.Errorf("%s:\n\tgot  %s\n\twant %s", line, got, want)
		}
	}
	check("kubectl -n x get deployments.v1.apps web", "get apps/deployments ns=x name=web")
	check("kubectl apply --server-side -k k", "patch /configmaps ns=kube-system name=c; patch example.com/widgets ns=kube-system name=w; patch /configmaps ns=kube-system name=gen")
	check("kubectl get widgets.example.com", "list example.com/widgets ns=dev name=")
	check("kubectl delete pods --all -A", "list /pods ns= name=; delete /pods ns= name=")
	check("kubectl logs -f --previous deploy/web", "get apps/deployments ns=dev name=web; list /pods ns=dev name=; get /pods/log ns=dev name=")
	check("kubectl auth can-i delete ns", "create authorization.k8s.io/selfsubjectaccessreviews ns= name=")

	reqs, err := MapKubectl([]string{"kubectl", "--as=bob", "--as-group=g1", "exec", "web", "--", "sh", "-c", "id"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	last := reqs[len(reqs)-1]
	if fmt.Sprint(last.Impersonate) != "[user:bob group:g1]" || fmt.Sprint(last.Command) != "[sh -c id]" {
		t.Errorf("exec with --as: %+v", last)
	}
	for _, bad := range []struct{ line, want string }{
		{"kubectl frobnicate x", `cannot map "kubectl frobnicate x": unknown or unsupported subcommand "frobnicate"`},
		{"kubectl get foos", `unknown resource type "foos"`},
		{"kubectl get pods --frob", `unknown flag --frob`},
		{"kubectl delete pods", `no name was specified`},
		{"kubectl apply -f -", `stdin`},
		{"kubectl apply -f https://x/y.yaml", `URLs are not fetched`},
		{"kubectl -n", `no kubectl subcommand`},
		{"kubectl delete --raw /api/v1/namespaces/%76ictim", `percent-encoded`},
	} {
		if _, err := MapKubectl(strings.Fields(bad.line), opts); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error %v, want %q", bad.line, err, bad.want)
		}
	}
}
