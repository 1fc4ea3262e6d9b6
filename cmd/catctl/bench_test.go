package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestBenchPut(t *testing.T) {
	a, b := startFake(t, nil), startFake(t, nil)
	r := catctl(t, nil, "--endpoints", a.addr+","+b.addr, "bench", "put",
		"--total", "50", "--clients", "4", "--conns", "2", "--key-size", "4", "--val-size", "3")
	if r.code != exitOK {
		t.Fatalf("bench put: %+v", r)
	}
	for _, want := range []string{"Summary:\n  Total:\t", "Requests/sec:\t", "Response time histogram:", "Latency distribution:\n  10% in "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.stdout)
		}
	}
	// Two connections over two endpoints: each server got some of the keys,
	// and together they got 0000..0049 exactly once.
	keys := append(a.keys(), b.keys()...)
	if len(a.keys()) == 0 || len(b.keys()) == 0 {
		t.Errorf("keys per server: %d and %d, want both connections used", len(a.keys()), len(b.keys()))
	}
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k] = true
	}
	for i := range 50 {
		if k := fmt.Sprintf("%04d", i); !seen[k] {
			t.Errorf("key %s was not put", k)
		}
	}
	if len(keys) != 50 {
		t.Errorf("%d keys put, want 50", len(keys))
	}
}

func TestBenchPutRandomKeys(t *testing.T) {
	srv := startFake(t, nil)
	r := catctl(t, nil, "--endpoints", srv.addr, "bench", "put", "--total", "30", "--key-space", "5", "--key-size", "1", "--rate", "1000")
	if r.code != exitOK {
		t.Fatalf("bench put: %+v", r)
	}
	srv.mu.Lock()
	puts := srv.puts
	srv.mu.Unlock()
	if puts != 30 {
		t.Errorf("%d puts, want 30", puts)
	}
	for _, k := range srv.keys() {
		if len(k) != 1 || k < "0" || k > "4" {
			t.Errorf("key %q is outside the key space 0..4", k)
		}
	}
}

func TestBenchGet(t *testing.T) {
	srv := startFake(t, nil)
	r := catctl(t, nil, "--endpoints", srv.addr, "bench", "get", "--total", "20", "--clients", "3", "--key", "bk", "--consistency", "s")
	if r.code != exitOK || !strings.Contains(r.stdout, "Requests/sec:") {
		t.Fatalf("bench get: %+v", r)
	}
	if keys := srv.keys(); len(keys) != 1 || keys[0] != "bk" {
		t.Errorf("keys after bench get: %v, want the missing key put first", keys)
	}
}

func TestBenchErrorsAreReported(t *testing.T) {
	srv := startFake(t, nil)
	// Keys longer than the fake allows: every put is refused.
	r := catctl(t, nil, "--endpoints", srv.addr, "bench", "put", "--total", "5", "--key-size", "70")
	if r.code != exitError {
		t.Errorf("exit code %d, want %d when requests failed", r.code, exitError)
	}
	if !strings.Contains(r.stdout, "No request succeeded.") ||
		!strings.Contains(r.stdout, "Error distribution:\n  [5]\tkey must be 1..64 bytes, got 70\n") {
		t.Errorf("report does not count the errors:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "5 of 5 requests failed") {
		t.Errorf("stderr = %q, want the number of failed requests", r.stderr)
	}
}

func TestBenchReport(t *testing.T) {
	perWorker := [][]time.Duration{nil, nil}
	// 1ms..100ms, split over two workers out of order.
	for i := 100; i >= 1; i-- {
		perWorker[i%2] = append(perWorker[i%2], time.Duration(i)*time.Millisecond)
	}
	report := newBenchReport(2*time.Second, perWorker, map[string]int{"no leader": 2, "boom": 2, "rare": 1})
	var b strings.Builder
	if err := report.write(&b); err != nil {
		t.Fatal(err)
	}
	bar := func(n int) string { return strings.Repeat("∎", n) }
	want := "\nSummary:\n" +
		"  Total:\t2.0000 secs.\n" +
		"  Slowest:\t0.1000 secs.\n" +
		"  Fastest:\t0.0010 secs.\n" +
		"  Average:\t0.0505 secs.\n" +
		"  Stddev:\t0.0289 secs.\n" +
		"  Requests/sec:\t50.0000\n" +
		"\nResponse time histogram:\n" +
		// Buckets of 9.9ms from 1ms; upper edges are inclusive.
		"  0.0109 [10]\t|" + bar(40) + "\n" +
		"  0.0208 [10]\t|" + bar(40) + "\n" +
		"  0.0307 [10]\t|" + bar(40) + "\n" +
		"  0.0406 [10]\t|" + bar(40) + "\n" +
		"  0.0505 [10]\t|" + bar(40) + "\n" +
		"  0.0604 [10]\t|" + bar(40) + "\n" +
		"  0.0703 [10]\t|" + bar(40) + "\n" +
		"  0.0802 [10]\t|" + bar(40) + "\n" +
		"  0.0901 [10]\t|" + bar(40) + "\n" +
		"  0.1000 [10]\t|" + bar(40) + "\n" +
		"\nLatency distribution:\n" +
		"  10% in 0.0100 secs.\n" +
		"  25% in 0.0250 secs.\n" +
		"  50% in 0.0500 secs.\n" +
		"  75% in 0.0750 secs.\n" +
		"  90% in 0.0900 secs.\n" +
		"  95% in 0.0950 secs.\n" +
		"  99% in 0.0990 secs.\n" +
		"  99.9% in 0.1000 secs.\n" +
		"\nError distribution:\n" +
		"  [2]\tboom\n" +
		"  [2]\tno leader\n" +
		"  [1]\trare\n"
	if got := b.String(); got != want {
		t.Errorf("report:\n%s\nwant:\n%s", got, want)
	}
}

func TestBenchReportHistogramSkew(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, v := range n {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name       string
		latencies  []time.Duration
		wantCounts []int
	}{
		{"all equal go to the first bucket", ms(5, 5, 5), []int{3, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"one outlier", ms(10, 10, 10, 110), []int{3, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{"edges are inclusive", ms(0, 10, 11, 100), []int{2, 1, 0, 0, 0, 0, 0, 0, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newBenchReport(time.Second, [][]time.Duration{tt.latencies}, nil)
			_, counts := r.histogram()
			if fmt.Sprint(counts) != fmt.Sprint(tt.wantCounts) {
				t.Errorf("counts = %v, want %v", counts, tt.wantCounts)
			}
		})
	}
}
