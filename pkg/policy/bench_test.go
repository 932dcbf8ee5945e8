package policy

import (
	"context"
	"net/url"
	"sort"
	"testing"
	"time"
)

// BenchmarkEvaluate measures one decision under the example policy for a
// mix of requests (one with a CEL `when` on the body), the per-request cost
// the proxy adds.
func BenchmarkEvaluate(b *testing.B) {
	p := examplePolicy(b)
	ins := []Input{
		{Attributes: raw(b, "GET", "/api/v1/namespaces/a/pods", nil)},
		{Attributes: raw(b, "DELETE", "/api/v1/namespaces/prod", nil)},
		{Attributes: raw(b, "POST", "/api/v1/namespaces/kube-system/pods/x/exec", url.Values{"command": {"sh"}})},
		{Attributes: raw(b, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", nil),
			Object: map[string]any{"roleRef": map[string]any{"name": "cluster-admin"}}},
	}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if _, err := p.Evaluate(ctx, ins[i%len(ins)]); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
}

// BenchmarkParsePath measures attribute derivation for a list with query.
func BenchmarkParsePath(b *testing.B) {
	q := url.Values{"watch": {"true"}, "fieldSelector": {"metadata.name=web"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParsePath("GET", "/apis/apps/v1/namespaces/a/deployments", q); err != nil {
			b.Fatal(err)
		}
	}
}
