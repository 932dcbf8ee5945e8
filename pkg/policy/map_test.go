package policy

import (
	"fmt"
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
