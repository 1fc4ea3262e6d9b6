package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newBenchCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("bench", "Measure the latency and throughput of requests")
	cmd.Long = "bench opens --conns connections, each pinned to one endpoint (round robin over\n" +
		"--endpoints), and runs --clients workers sharing them round robin, each sending\n" +
		"requests back to back until --total is reached. It prints progress on stderr\n" +
		"every second and a report in the shape of etcd's benchmark tool on stdout.\n" +
		"--command-timeout bounds each request. Exit code 1 when any request failed.\n\n" +
		"The load generator runs its garbage collector at GOGC=400 unless $GOGC is set:\n" +
		"its heap is small and its per-request garbage large (a discovery of 1,000\n" +
		"instances decodes 1,000 messages), so at Go's default its own collections\n" +
		"would show in the latency tail. GOGC=100 catctl bench ... measures with the default."
	cmd.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		if err := a.validate(c, args); err != nil {
			return err
		}
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(benchGCPercent)
		}
		return nil
	}
	cmd.AddCommand(newBenchPutCommand(a), newBenchGetCommand(a), newBenchKeepAliveCommand(a), newBenchWatchCommand(a),
		newBenchDiscoverCommand(a), newBenchInstancesCommand(a), newBenchLockCommand(a), newBenchElectionFailoverCommand(a))
	return cmd
}

// benchGCPercent is the load generator's GOGC unless $GOGC is set.
const benchGCPercent = 400

// benchFlags are the flags every bench command takes.
type benchFlags struct {
	clients, conns, total, rate int
}

func (f *benchFlags) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&f.clients, "clients", 1, "number of concurrent workers")
	cmd.Flags().IntVar(&f.conns, "conns", 1, "number of connections, each pinned to one endpoint")
	cmd.Flags().IntVar(&f.total, "total", 10000, "number of requests")
	cmd.Flags().IntVar(&f.rate, "rate", 0, "requests per second over all workers (0: unlimited)")
}

func (f *benchFlags) validate(cmd *cobra.Command) error {
	for _, flag := range []struct {
		name          string
		value, lowest int
	}{{"clients", f.clients, 1}, {"conns", f.conns, 1}, {"total", f.total, 1}, {"rate", f.rate, 0}} {
		if flag.value < flag.lowest {
			return usageErrorf(cmd, "--%s must be >= %d, got %d", flag.name, flag.lowest, flag.value)
		}
	}
	return nil
}

func newBenchPutCommand(a *app) *cobra.Command {
	var (
		f                          benchFlags
		keySize, valSize, keySpace int
	)
	cmd := &cobra.Command{
		Use:   "put",
		Short: "Benchmark puts",
		Long: "Keys are decimal numbers zero-padded to --key-size digits. With --key-space 1\n" +
			"they are sequential (0 to --total-1); otherwise random in [0, --key-space).",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.validate(cmd); err != nil {
				return err
			}
			if keySize < 1 || valSize < 0 || keySpace < 1 {
				return usageErrorf(cmd, "--key-size must be >= 1, --val-size >= 0 and --key-space >= 1, got %d, %d and %d",
					keySize, valSize, keySpace)
			}
			highest := f.total - 1
			if keySpace > 1 {
				highest = keySpace - 1
			}
			if digits := len(strconv.Itoa(highest)); digits > keySize {
				return usageErrorf(cmd, "--key-size %d is too small: keys are zero-padded decimal numbers up to %d, which needs %d digits",
					keySize, highest, digits)
			}
			value := randomText(valSize)
			return a.runBench(cmd, "put", f, func(ctx context.Context, c *sdk.Client, i int, rng *rand.Rand) error {
				n := i
				if keySpace > 1 {
					n = rng.IntN(keySpace)
				}
				_, err := c.Put(ctx, fmt.Sprintf("%0*d", keySize, n), value)
				return err
			})
		},
	}
	f.register(cmd)
	cmd.Flags().IntVar(&keySize, "key-size", 8, "key length in bytes")
	cmd.Flags().IntVar(&valSize, "val-size", 8, "value length in bytes")
	cmd.Flags().IntVar(&keySpace, "key-space", 1, "1: sequential keys; N > 1: random keys in [0, N)")
	return cmd
}

func newBenchGetCommand(a *app) *cobra.Command {
	var (
		f                benchFlags
		key, consistency string
	)
	cmd := &cobra.Command{
		Use:   "get",
		Short: "Benchmark gets of one key (put first if missing)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.validate(cmd); err != nil {
				return err
			}
			var opts []sdk.OpOption
			switch consistency {
			case "l":
			case "s":
				opts = append(opts, sdk.WithSerializable())
			default:
				return usageErrorf(cmd, "--consistency must be l (linearizable) or s (serializable), got %q", consistency)
			}
			if key == "" {
				return usageErrorf(cmd, "--key must not be empty")
			}
			if err := a.ensureKey(cmd, key); err != nil {
				return err
			}
			return a.runBench(cmd, "get", f, func(ctx context.Context, c *sdk.Client, _ int, _ *rand.Rand) error {
				_, err := c.Get(ctx, key, opts...)
				return err
			})
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&key, "key", "foo", "the key to read")
	cmd.Flags().StringVar(&consistency, "consistency", "l", "l (linearizable) or s (serializable)")
	return cmd
}

// ensureKey puts key if it does not exist, so that a get benchmark reads a value.
func (a *app) ensureKey(cmd *cobra.Command, key string) error {
	c, err := a.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := a.commandContext(cmd)
	defer cancel()
	resp, err := c.Get(ctx, key, sdk.WithCountOnly())
	if err != nil {
		return fmt.Errorf("check that %q exists: %w", key, err)
	}
	if resp.Count > 0 {
		return nil
	}
	if _, err := c.Put(ctx, key, "bench"); err != nil {
		return fmt.Errorf("put %q before the benchmark: %w", key, err)
	}
	return nil
}

// A benchRequest sends request number i (0..total-1) of a run.
type benchRequest func(ctx context.Context, c *sdk.Client, i int, rng *rand.Rand) error

// runBench runs the benchmark and prints its report. Each worker records
// latencies into its own preallocated slice, so requests share no lock.
func (a *app) runBench(cmd *cobra.Command, name string, f benchFlags, request benchRequest) error {
	endpoints := a.endpointList()
	clients := make([]*sdk.Client, 0, f.conns)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := range f.conns {
		c, err := sdk.New(a.config([]string{endpoints[i%len(endpoints)]}))
		if err != nil {
			return err
		}
		clients = append(clients, c)
	}
	fmt.Fprintf(a.stderr, "bench %s: --total %d --clients %d --conns %d --endpoints %s\n",
		name, f.total, f.clients, f.conns, strings.Join(endpoints, ","))

	ctx := cmd.Context()
	start := time.Now()
	var pace *pacer
	if f.rate > 0 {
		pace = &pacer{start: start, interval: time.Second / time.Duration(f.rate)}
	}
	var done atomic.Int64
	stopProgress := a.startProgress(&done, f.total)

	latencies := make([][]time.Duration, f.clients)
	errs := make([]map[string]int, f.clients)
	var wg sync.WaitGroup
	for w := range f.clients {
		quota := f.total / f.clients
		if w < f.total%f.clients {
			quota++
		}
		latencies[w] = make([]time.Duration, 0, quota)
		errs[w] = make(map[string]int)
		c := clients[w%len(clients)]
		rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), uint64(w)))
		wg.Go(func() {
			for k := range quota {
				if pace.wait(ctx) != nil {
					return
				}
				reqCtx, cancel := context.WithTimeout(ctx, a.commandTimeout)
				sent := time.Now()
				// Request numbers interleave over workers so that together
				// they cover 0..total-1 exactly once.
				err := request(reqCtx, c, w+k*f.clients, rng)
				latency := time.Since(sent)
				cancel()
				switch {
				case err == nil:
					latencies[w] = append(latencies[w], latency)
				case ctx.Err() != nil:
					return
				default:
					errs[w][err.Error()]++
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	failed := 0
	allErrs := make(map[string]int)
	for _, m := range errs {
		for msg, n := range m {
			allErrs[msg] += n
			failed += n
		}
	}
	if err := newBenchReport(elapsed, latencies, allErrs).write(a.stdout); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted after %d of %d requests: %w", done.Load(), f.total, err)
	}
	if failed > 0 {
		return errors.New(strconv.Itoa(failed) + " of " + strconv.Itoa(f.total) + " requests failed")
	}
	return nil
}

// startProgress prints how far the run is on stderr every second, until the
// returned function is called. A total of 0 means unknown (a timed run).
func (a *app) startProgress(done *atomic.Int64, total int) (stop func()) {
	stopc := make(chan struct{})
	exitedc := make(chan struct{})
	go func() {
		defer close(exitedc)
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		last, lastAt := int64(0), time.Now()
		for {
			select {
			case <-stopc:
				return
			case now := <-ticker.C:
				n := done.Load()
				rate := float64(n-last) / now.Sub(lastAt).Seconds()
				if total > 0 {
					fmt.Fprintf(a.stderr, "bench: %d/%d requests, %.0f req/s\n", n, total, rate)
				} else {
					fmt.Fprintf(a.stderr, "bench: %d requests, %.0f req/s\n", n, rate)
				}
				last, lastAt = n, now
			}
		}
	}()
	return func() {
		close(stopc)
		<-exitedc
	}
}

// A pacer spaces the requests of all workers to one rate without a lock:
// each request takes the next slot from a counter and waits for its time.
type pacer struct {
	start    time.Time
	interval time.Duration
	next     atomic.Int64
}

// wait blocks until the next slot; a nil pacer never waits. It returns ctx's
// error when ctx ends first.
func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return ctx.Err()
	}
	slot := p.next.Add(1) - 1
	d := time.Until(p.start.Add(time.Duration(slot) * p.interval))
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// randomText returns n random lowercase letters.
func randomText(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(rand.IntN(26))
	}
	return string(b)
}
