package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newBenchLockCommand(a *app) *cobra.Command {
	var (
		clients, conns, locks, total, rate int
		duration, ttl                      time.Duration
		prefix                             string
	)
	cmd := &cobra.Command{
		Use:   "lock",
		Short: "Benchmark lock+unlock cycles of mutexes (each worker its own session)",
		Long: "Each of --clients workers opens its own session (a lease kept alive) and a\n" +
			"mutex on lock PREFIX<i mod --locks>, then runs Lock and Unlock back to back:\n" +
			"a request of the report is one such cycle, so Requests/sec is cycles per\n" +
			"second. Workers on the same lock contend (FIFO: the release and the next\n" +
			"grant are one apply). The run ends after --total cycles, or after\n" +
			"--duration if given. Each worker checks that its fencing tokens strictly\n" +
			"increase; a token that does not counts as a failed cycle. The sessions are\n" +
			"revoked at the end.",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, flag := range []struct {
				name          string
				value, lowest int
			}{{"clients", clients, 1}, {"conns", conns, 1}, {"locks", locks, 1}, {"total", total, 1}, {"rate", rate, 0}} {
				if flag.value < flag.lowest {
					return usageErrorf(cmd, "--%s must be >= %d, got %d", flag.name, flag.lowest, flag.value)
				}
			}
			if duration < 0 {
				return usageErrorf(cmd, "--duration must be >= 0 (0: run --total cycles), got %v", duration)
			}
			if duration > 0 && cmd.Flags().Changed("total") {
				return usageErrorf(cmd, "give --total or --duration, not both")
			}
			if prefix == "" {
				return usageErrorf(cmd, "--prefix must not be empty")
			}
			ctx := cmd.Context()
			endpoints := a.endpointList()
			conn, closeAll, err := a.benchClients(endpoints, conns)
			if err != nil {
				return err
			}
			defer closeAll()

			type worker struct {
				s *sdk.Session
				m *sdk.Mutex
			}
			workers := make([]worker, clients)
			defer func() {
				for _, w := range workers {
					if w.s != nil {
						_ = w.s.Close()
					}
				}
			}()
			for i := range workers {
				sctx, cancel := a.commandContext(cmd)
				s, err := sdk.NewSession(sctx, conn[i%len(conn)], sdk.WithSessionTTL(ttl))
				cancel()
				if err != nil {
					return fmt.Errorf("open the session of worker %d: %w", i, err)
				}
				workers[i] = worker{s: s, m: sdk.NewMutex(s, prefix+strconv.Itoa(i%locks))}
			}
			if duration > 0 {
				fmt.Fprintf(a.stderr, "bench lock: --duration %v --clients %d --locks %d --conns %d --endpoints %s\n",
					duration, clients, locks, conns, strings.Join(endpoints, ","))
			} else {
				fmt.Fprintf(a.stderr, "bench lock: --total %d --clients %d --locks %d --conns %d --endpoints %s\n",
					total, clients, locks, conns, strings.Join(endpoints, ","))
			}

			start := time.Now()
			runCtx := ctx
			if duration > 0 {
				var cancel context.CancelFunc
				runCtx, cancel = context.WithDeadline(ctx, start.Add(duration))
				defer cancel()
				total = 0 // unknown: progress shows the count alone
			}
			var pace *pacer
			if rate > 0 {
				pace = &pacer{start: start, interval: time.Second / time.Duration(rate)}
			}
			var done atomic.Int64
			stopProgress := a.startProgress(&done, total)
			latencies := make([][]time.Duration, clients)
			errs := make([]map[string]int, clients)
			var wg sync.WaitGroup
			for i, w := range workers {
				quota := -1 // until the deadline
				if duration == 0 {
					quota = total / clients
					if i < total%clients {
						quota++
					}
					latencies[i] = make([]time.Duration, 0, quota)
				}
				errs[i] = make(map[string]int)
				wg.Go(func() {
					var last uint64
					for k := 0; quota < 0 || k < quota; k++ {
						if pace.wait(runCtx) != nil {
							return
						}
						cycleCtx, cancel := context.WithTimeout(runCtx, a.commandTimeout)
						sent := time.Now()
						err := w.m.Lock(cycleCtx)
						token := w.m.Token()
						if err == nil {
							err = w.m.Unlock(cycleCtx)
						}
						latency := time.Since(sent)
						cancel()
						switch {
						case err != nil && runCtx.Err() != nil:
							return // the run ended during the cycle: not a failure
						case err != nil:
							errs[i][err.Error()]++
						case token <= last:
							errs[i][fmt.Sprintf("fencing token %d after %d: tokens must strictly increase", token, last)]++
						default:
							latencies[i] = append(latencies[i], latency)
						}
						last = max(last, token)
						done.Add(1)
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			stopProgress()
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted after %d cycles: %w", done.Load(), err)
			}
			fmt.Fprintf(a.stdout, "\n%s on %s: a request is one lock+unlock cycle\n", plural(clients, "client"), plural(locks, "lock"))
			return a.finishBench(elapsed, latencies, errs, int(done.Load()))
		},
	}
	cmd.Flags().IntVar(&clients, "clients", 1, "number of concurrent workers, each with its own session and mutex")
	cmd.Flags().IntVar(&conns, "conns", 1, "number of connections, each pinned to one endpoint, that the workers share")
	cmd.Flags().IntVar(&locks, "locks", 1, "number of locks: worker i takes lock i mod --locks")
	cmd.Flags().IntVar(&total, "total", 2000, "number of lock+unlock cycles")
	cmd.Flags().DurationVar(&duration, "duration", 0, "run for this long instead of --total cycles")
	cmd.Flags().IntVar(&rate, "rate", 0, "cycles per second over all workers (0: unlimited)")
	cmd.Flags().DurationVar(&ttl, "ttl", 60*time.Second, "TTL of each worker's session")
	cmd.Flags().StringVar(&prefix, "prefix", "bench-lock/", "the locks are named PREFIX0, PREFIX1...")
	return cmd
}

func newBenchElectionFailoverCommand(a *app) *cobra.Command {
	var (
		runs int
		name string
		ttl  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "election-failover",
		Short: "Measure how fast the next candidate is elected when the leader's lease is revoked",
		Long: "Each run has a leader and a candidate waiting in election --name, each with\n" +
			"its own session (on two connections, to two endpoints when there are two).\n" +
			"catctl revokes the leader's lease and times the candidate's Campaign call\n" +
			"returning, from three points:\n" +
			"  - the revoke's response (what a client can observe; it may come after the\n" +
			"    candidate was told, which shows as a negative time),\n" +
			"  - the revoke's request being sent,\n" +
			"  - the time the server that proposed the revoke stamped on it, which the new\n" +
			"    leader's grant carries: the revoke committing, to within the proposal\n" +
			"    (catctl and the servers must share a clock: same machine).\n" +
			"The candidate then leads the next run against a new candidate. It also\n" +
			"checks that the new leader was elected at the revoke's revision.",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runs < 1 {
				return usageErrorf(cmd, "--runs must be >= 1, got %d", runs)
			}
			if name == "" {
				return usageErrorf(cmd, "--name must not be empty")
			}
			ctx := cmd.Context()
			conns, closeAll, err := a.benchClients(a.endpointList(), 2)
			if err != nil {
				return err
			}
			defer closeAll()
			revoker := conns[0]
			var sessions []*sdk.Session
			defer func() {
				for _, s := range sessions {
					_ = s.Close()
				}
			}()
			// campaign opens session number n and campaigns in the background.
			type elected struct {
				at  time.Time
				err error
			}
			campaign := func(n int) (*sdk.Session, <-chan elected, error) {
				sctx, cancel := a.commandContext(cmd)
				s, err := sdk.NewSession(sctx, conns[n%2], sdk.WithSessionTTL(ttl))
				cancel()
				if err != nil {
					return nil, nil, fmt.Errorf("open session %d: %w", n, err)
				}
				sessions = append(sessions, s)
				e := sdk.NewElection(s, name)
				ch := make(chan elected, 1)
				go func() {
					err := e.Campaign(ctx, []byte(strconv.Itoa(n)))
					ch <- elected{at: time.Now(), err: err}
				}()
				return s, ch, nil
			}
			leader, first, err := campaign(0)
			if err != nil {
				return err
			}
			select {
			case r := <-first:
				if r.err != nil {
					return fmt.Errorf("first campaign: %w", r.err)
				}
			case <-time.After(ttl + a.commandTimeout):
				return fmt.Errorf("the first candidate was not elected within %v: is %s held by another leader?", ttl+a.commandTimeout, quoteKey(name))
			}
			fmt.Fprintf(a.stderr, "bench election-failover: --runs %d --name %s --endpoints %s\n", runs, name, strings.Join(a.endpointList(), ","))

			var fromResponse, fromRequest, fromProposal []time.Duration
			for n := 1; n <= runs; n++ {
				cand, ch, err := campaign(n)
				if err != nil {
					return err
				}
				if err := a.waitCandidates(ctx, revoker, name, 1); err != nil {
					return fmt.Errorf("run %d: %w", n, err)
				}
				rctx, cancel := a.commandContext(cmd)
				sent := time.Now()
				resp, err := revoker.Revoke(rctx, leader.Lease())
				acked := time.Now()
				cancel()
				if err != nil {
					return fmt.Errorf("run %d: revoke the leader's lease %d: %w", n, leader.Lease(), err)
				}
				var r elected
				select {
				case r = <-ch:
				case <-time.After(a.commandTimeout):
					return fmt.Errorf("run %d: the candidate was not elected within %v of the revoke", n, a.commandTimeout)
				}
				if r.err != nil {
					return fmt.Errorf("run %d: campaign: %w", n, r.err)
				}
				fromResponse = append(fromResponse, r.at.Sub(acked))
				fromRequest = append(fromRequest, r.at.Sub(sent))
				gctx, cancel := a.commandContext(cmd)
				got, err := revoker.GetLock(gctx, name)
				cancel()
				st := got.GetState()
				if err != nil {
					return fmt.Errorf("run %d: read the election: %w", n, err)
				}
				if st == nil || len(st.Holders) != 1 || st.Holders[0].Lease != cand.Lease() {
					return fmt.Errorf("run %d: election %s is led by %v, want lease %d", n, quoteKey(name), st.GetHolders(), cand.Lease())
				}
				h := st.Holders[0]
				if rev := resp.GetHeader().GetRevision(); h.Revision != rev {
					return fmt.Errorf("run %d: the new leader was elected at revision %d, want the revoke's revision %d", n, h.Revision, rev)
				}
				if h.UnixNano > 0 {
					fromProposal = append(fromProposal, r.at.Sub(time.Unix(0, h.UnixNano)))
				}
				leader.Orphan()
				leader = cand
			}

			fmt.Fprintf(a.stdout, "\nElection failover, %d runs: from the leader's lease revoke to the next candidate's Campaign returning\n", runs)
			tw := a.newTable()
			fmt.Fprintln(tw, "FROM\tMIN\tP50\tP90\tP99\tMAX")
			for _, row := range []struct {
				from string
				ds   []time.Duration
			}{
				{"the revoke's response", fromResponse},
				{"the revoke's request", fromRequest},
				{"the revoke's proposal", fromProposal},
			} {
				if len(row.ds) == 0 {
					fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\n", row.from)
					continue
				}
				slices.Sort(row.ds)
				r := &benchReport{latencies: row.ds}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", row.from, ms(r.fastest()), ms(r.percentile(50)), ms(r.percentile(90)),
					ms(r.percentile(99)), ms(r.slowest()))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(fromProposal) == 0 {
				fmt.Fprintln(a.stdout, "(the grants carry no proposal time: the last row is not available)")
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&runs, "runs", 20, "number of failovers")
	cmd.Flags().StringVar(&name, "name", "bench-election", "the election to run")
	cmd.Flags().DurationVar(&ttl, "ttl", 60*time.Second, "TTL of each candidate's session")
	return cmd
}

// ms prints a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond)) }

// waitCandidates waits until election name has n candidates waiting. The
// benchmark must revoke only once its candidate waits, or it would time the
// campaign's arrival instead of the failover.
func (a *app) waitCandidates(ctx context.Context, c *sdk.Client, name string, n int) error {
	deadline := time.Now().Add(a.commandTimeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, a.commandTimeout)
		resp, err := c.GetLock(rctx, name)
		cancel()
		if err != nil {
			return fmt.Errorf("read election %s: %w", quoteKey(name), err)
		}
		if len(resp.GetState().GetWaiters()) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the candidate is not waiting after " + a.commandTimeout.String())
		}
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return err
		}
	}
}

// sleepCtx waits for d, or returns ctx's error if ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// plural prints a count of things: "1 lock", "2 locks".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return strconv.Itoa(n) + " " + thing + "s"
}
