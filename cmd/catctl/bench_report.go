package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A benchReport summarizes a benchmark run in the shape of etcd's benchmark
// tool: summary, response time histogram, latency distribution, errors.
type benchReport struct {
	elapsed time.Duration
	// latencies of the successful requests, sorted.
	latencies []time.Duration
	// errors counts failed requests by error message.
	errors map[string]int
}

// newBenchReport merges the latencies each worker recorded.
func newBenchReport(elapsed time.Duration, perWorker [][]time.Duration, errs map[string]int) *benchReport {
	n := 0
	for _, l := range perWorker {
		n += len(l)
	}
	all := make([]time.Duration, 0, n)
	for _, l := range perWorker {
		all = append(all, l...)
	}
	slices.Sort(all)
	return &benchReport{elapsed: elapsed, latencies: all, errors: errs}
}

// reportPercentiles are the rows of the latency distribution.
var reportPercentiles = []float64{10, 25, 50, 75, 90, 95, 99, 99.9}

const (
	histogramBuckets = 10
	histogramBarMax  = 40
)

func (r *benchReport) fastest() time.Duration { return r.latencies[0] }
func (r *benchReport) slowest() time.Duration { return r.latencies[len(r.latencies)-1] }

func (r *benchReport) average() time.Duration {
	var sum time.Duration
	for _, l := range r.latencies {
		sum += l
	}
	return sum / time.Duration(len(r.latencies))
}

// stddev is the population standard deviation of the latencies.
func (r *benchReport) stddev() time.Duration {
	mean := r.average().Seconds()
	var sq float64
	for _, l := range r.latencies {
		d := l.Seconds() - mean
		sq += d * d
	}
	return time.Duration(math.Sqrt(sq/float64(len(r.latencies))) * float64(time.Second))
}

// percentile is the nearest-rank percentile: the smallest latency that p
// percent of the requests did not exceed.
func (r *benchReport) percentile(p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(r.latencies)))) - 1
	return r.latencies[min(max(i, 0), len(r.latencies)-1)]
}

// histogram splits [fastest, slowest] into equal buckets and counts the
// latencies in each; bounds are the buckets' upper edges.
func (r *benchReport) histogram() (bounds []time.Duration, counts []int) {
	fastest, slowest := r.fastest(), r.slowest()
	width := (slowest - fastest) / histogramBuckets
	bounds = make([]time.Duration, histogramBuckets)
	for i := range bounds {
		bounds[i] = fastest + width*time.Duration(i+1)
	}
	bounds[histogramBuckets-1] = slowest
	counts = make([]int, histogramBuckets)
	b := 0
	for _, l := range r.latencies {
		for l > bounds[b] && b < histogramBuckets-1 {
			b++
		}
		counts[b]++
	}
	return bounds, counts
}

func secs(d time.Duration) string { return fmt.Sprintf("%.4f", d.Seconds()) }

// write prints the report.
func (r *benchReport) write(w io.Writer) error {
	var b strings.Builder
	b.WriteString("\nSummary:\n")
	fmt.Fprintf(&b, "  Total:\t%s secs.\n", secs(r.elapsed))
	if len(r.latencies) == 0 {
		b.WriteString("  No request succeeded.\n")
	} else {
		fmt.Fprintf(&b, "  Slowest:\t%s secs.\n", secs(r.slowest()))
		fmt.Fprintf(&b, "  Fastest:\t%s secs.\n", secs(r.fastest()))
		fmt.Fprintf(&b, "  Average:\t%s secs.\n", secs(r.average()))
		fmt.Fprintf(&b, "  Stddev:\t%s secs.\n", secs(r.stddev()))
		rate := 0.0
		if r.elapsed > 0 {
			rate = float64(len(r.latencies)) / r.elapsed.Seconds()
		}
		fmt.Fprintf(&b, "  Requests/sec:\t%.4f\n", rate)

		bounds, counts := r.histogram()
		peak := slices.Max(counts)
		b.WriteString("\nResponse time histogram:\n")
		for i, bound := range bounds {
			bar := strings.Repeat("∎", counts[i]*histogramBarMax/peak)
			fmt.Fprintf(&b, "  %s [%d]\t|%s\n", secs(bound), counts[i], bar)
		}

		b.WriteString("\nLatency distribution:\n")
		for _, p := range reportPercentiles {
			fmt.Fprintf(&b, "  %s%% in %s secs.\n", strconv.FormatFloat(p, 'f', -1, 64), secs(r.percentile(p)))
		}
	}
	if len(r.errors) > 0 {
		b.WriteString("\nError distribution:\n")
		msgs := make([]string, 0, len(r.errors))
		for msg := range r.errors {
			msgs = append(msgs, msg)
		}
		// Most frequent first; ties by message so the output is stable.
		slices.SortFunc(msgs, func(x, y string) int {
			if c := r.errors[y] - r.errors[x]; c != 0 {
				return c
			}
			return strings.Compare(x, y)
		})
		for _, msg := range msgs {
			fmt.Fprintf(&b, "  [%d]\t%s\n", r.errors[msg], msg)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
