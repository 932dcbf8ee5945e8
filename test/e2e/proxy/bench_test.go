package proxy_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

func percentiles(b *testing.B, d []time.Duration, prefix string) {
	slices.Sort(d)
	if len(d) == 0 {
		return
	}
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, prefix+"p50-ms")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds())/1000, prefix+"p99-ms")
}

func fast(cfg *rest.Config) kubernetes.Interface {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	return kubernetes.NewForConfigOrDie(cfg)
}

// BenchmarkSmallGet measures a small GET direct and through the proxy; the
// difference of the p50s is the proxy's added latency (target < 1 ms).
func BenchmarkSmallGet(b *testing.B) {
	c := cluster.Shared(b)
	px := inProcess(b, c, denyPolicy)
	for _, v := range []struct {
		name string
		cs   kubernetes.Interface
	}{{"direct", fast(c.RESTConfig())}, {"proxy", fast(px.RESTConfig())}} {
		b.Run(v.name, func(b *testing.B) {
			var d []time.Duration
			for b.Loop() {
				t0 := time.Now()
				if _, err := v.cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
			}
			percentiles(b, d, "")
		})
	}
}

// BenchmarkList5000 lists 5,000 Secrets (all masked) and 5,000 ConfigMaps
// direct and through the proxy, and samples the heap while the proxy works.
func BenchmarkList5000(b *testing.B) {
	c := cluster.Shared(b)
	ns := c.Namespace(b)
	cs := fast(c.RESTConfig())
	ctx := context.Background()
	for i := range 5000 {
		_, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i)},
			StringData: map[string]string{"password": "value"}}, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c%d", i)},
			Data: map[string]string{"password": "value", "color": "blue"}}, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
	}
	px := inProcess(b, c, denyPolicy)
	for _, v := range []struct {
		name string
		cs   kubernetes.Interface
	}{{"direct", cs}, {"proxy", fast(px.RESTConfig())}} {
		for _, kind := range []string{"secrets", "configmaps"} {
			b.Run(v.name+"/"+kind, func(b *testing.B) {
				var peak atomic.Uint64
				stop := make(chan struct{})
				go func() {
					var ms runtime.MemStats
					for {
						select {
						case <-stop:
							return
						case <-time.After(20 * time.Millisecond):
							runtime.ReadMemStats(&ms)
							if ms.HeapInuse > peak.Load() {
								peak.Store(ms.HeapInuse)
							}
						}
					}
				}()
				for b.Loop() {
					var n int
					if kind == "secrets" {
						l, err := v.cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
						if err != nil {
							b.Fatal(err)
						}
						n = len(l.Items)
					} else {
						l, err := v.cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
						if err != nil {
							b.Fatal(err)
						}
						n = len(l.Items)
					}
					if n != 5000 {
						b.Fatalf("%d items", n)
					}
				}
				close(stop)
				b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
			})
		}
	}
}
