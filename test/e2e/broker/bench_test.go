package broker_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
)

// Exchange throughput and latency over loopback HTTP with the real JIT
// backend (ServiceAccount, Role, RoleBinding and TokenRequest against the
// local kube-apiserver) on each store. "new" makes a session per exchange;
// "repeat" exchanges fresh tokens of one run, which returns the same session
// and a fresh TokenRequest credential.
func BenchmarkExchange(b *testing.B) {
	for _, st := range []string{"sqlite", "postgres"} {
		for _, kind := range []string{"new", "repeat"} {
			b.Run(st+"/"+kind, func(b *testing.B) {
				e := newEnvB(b)
				storeURL := e.storeURL
				if st == "postgres" {
					storeURL = agenttest.PostgresURL(b)
				}
				br := e.startBroker(b, storeURL, nil)
				ctx := context.Background()
				r := newRunner(b, br.URL)
				tokens := make([]string, b.N)
				for i := range tokens {
					run := "bench"
					if kind == "new" {
						run = fmt.Sprintf("bench-%d", i)
					}
					tokens[i] = e.iss.Mint(e.iss.GitHubClaims("acme/app", run, audience))
				}
				if kind == "repeat" {
					if _, err := r.exchange(ctx, e.iss.Mint(e.iss.GitHubClaims("acme/app", "bench", audience))); err != nil {
						b.Fatal(err)
					}
				}
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				start := time.Now()
				for _, tok := range tokens {
					t0 := time.Now()
					rn := r
					if kind == "new" {
						rn = newRunner(b, br.URL)
					}
					if _, err := rn.exchange(ctx, tok); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				total := time.Since(start)
				b.StopTimer()
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				pct := func(p float64) float64 {
					return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
				}
				b.ReportMetric(float64(len(lat))/total.Seconds(), "exchanges/s")
				b.ReportMetric(pct(0.50), "p50-ms")
				b.ReportMetric(pct(0.99), "p99-ms")
			})
		}
	}
}
