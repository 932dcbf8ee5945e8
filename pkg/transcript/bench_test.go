package transcript

import (
	"bytes"
	"context"
	"os"
	"sort"
	"sync"
	"testing"
	"time"
)

// BenchmarkAppend is the recording overhead per event: marshal, chain, write
// and fsync to the spool. "serial" is one appender; "parallel" is many
// goroutines, as the proxy appends, where group commit shares fsyncs.
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []string{"serial", "parallel"} {
		b.Run(mode, func(b *testing.B) {
			f := newFixture(b, "sess-bench", true)
			opts := f.options(time.Now)
			opts.CheckpointEvery = DefaultCheckpointEvery
			r, err := NewRecorder(opts)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			ev := requestEvent(1, "get", "pods", "allow", 200)
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			one := func() {
				t0 := time.Now()
				if err := r.Append(ctx, ev); err != nil {
					b.Error(err)
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
			if mode == "serial" {
				for range b.N {
					one()
				}
			} else {
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						one()
					}
				})
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
			if _, err := r.Close(ctx, EndEvent{}); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkVerify is verification throughput over a 10,000-event transcript.
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b, "sess-vbench", true)
	opts := f.options(time.Now)
	opts.CheckpointEvery = DefaultCheckpointEvery
	r, err := NewRecorder(opts)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range 10000 {
		if err := r.Append(ctx, requestEvent(i, "get", "pods", "allow", 200)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := r.Close(ctx, EndEvent{}); err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		b.Fatal(err)
	}
	lines := bytes.Count(data, []byte{'\n'})
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if _, err := Verify(bytes.NewReader(data), VerifyOptions{JWKS: f.broker.jwks}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
