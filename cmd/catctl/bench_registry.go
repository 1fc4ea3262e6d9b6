package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

// leaderEndpoint returns the client address of the current leader.
func (a *app) leaderEndpoint(ctx context.Context) (string, error) {
	c, err := a.newClient()
	if err != nil {
		return "", err
	}
	defer c.Close()
	resp, err := c.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("find the leader: %w", err)
	}
	for _, m := range resp.Members {
		if m.IsLeader && m.ClientAddr != "" {
			return m.ClientAddr, nil
		}
	}
	return "", fmt.Errorf("find the leader: %w: no member is leader with a known client address", sdk.ErrNoLeader)
}

// benchClients opens n clients, each pinned to one endpoint, round robin.
func (a *app) benchClients(endpoints []string, n int) ([]*sdk.Client, func(), error) {
	clients := make([]*sdk.Client, 0, n)
	closeAll := func() {
		for _, c := range clients {
			c.Close()
		}
	}
	for i := range n {
		c, err := sdk.New(a.config([]string{endpoints[i%len(endpoints)]}))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		clients = append(clients, c)
	}
	return clients, closeAll, nil
}

func newBenchKeepAliveCommand(a *app) *cobra.Command {
	var (
		f            benchFlags
		ttl          time.Duration
		targetLeader bool
		once         bool
	)
	cmd := &cobra.Command{
		Use:   "keepalive",
		Short: "Benchmark lease keep-alives (each worker renews its own lease on its own stream)",
		Long: "Each of --clients workers grants a lease of --ttl, opens a KeepAlive stream and\n" +
			"sends keep-alives back to back, each after the previous answer, as etcd's\n" +
			"benchmark lease-keepalive does. With --target-leader every connection goes to\n" +
			"the leader (keep-alives sent to a follower are forwarded to it). With --once\n" +
			"each renewal is a KeepAliveOnce call that opens its own stream, which is what\n" +
			"etcd's benchmark lease-keepalive does. The leases are revoked at the end.",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.validate(cmd); err != nil {
				return err
			}
			ctx := cmd.Context()
			endpoints := a.endpointList()
			if targetLeader {
				lctx, cancel := a.commandContext(cmd)
				leader, err := a.leaderEndpoint(lctx)
				cancel()
				if err != nil {
					return err
				}
				endpoints = []string{leader}
			}
			clients, closeAll, err := a.benchClients(endpoints, f.conns)
			if err != nil {
				return err
			}
			defer closeAll()
			fmt.Fprintf(a.stderr, "bench keepalive: --total %d --clients %d --conns %d --endpoints %s\n",
				f.total, f.clients, f.conns, strings.Join(endpoints, ","))

			type worker struct {
				c      *sdk.Client
				lease  int64
				stream catalogpb.Lease_KeepAliveClient
			}
			workers := make([]*worker, f.clients)
			streamCtx, stopStreams := context.WithCancel(ctx)
			defer stopStreams()
			for w := range workers {
				c := clients[w%len(clients)]
				gctx, cancel := a.commandContext(cmd)
				resp, err := c.Grant(gctx, ttl)
				cancel()
				if err != nil {
					return fmt.Errorf("grant the lease of worker %d: %w", w, err)
				}
				stream, err := catalogpb.NewLeaseClient(c.Conn()).KeepAlive(streamCtx)
				if err != nil {
					return fmt.Errorf("open the keep-alive stream of worker %d: %w", w, err)
				}
				workers[w] = &worker{c: c, lease: resp.Id, stream: stream}
			}
			defer func() {
				for _, w := range workers {
					if w == nil {
						continue
					}
					rctx, cancel := context.WithTimeout(context.Background(), a.commandTimeout)
					_, _ = w.c.Revoke(rctx, w.lease)
					cancel()
				}
			}()

			var done atomic.Int64
			latencies := make([][]time.Duration, f.clients)
			errs := make([]map[string]int, f.clients)
			start := time.Now()
			stopProgress := a.startProgress(&done, f.total)
			var wg sync.WaitGroup
			for i, w := range workers {
				quota := f.total / f.clients
				if i < f.total%f.clients {
					quota++
				}
				latencies[i] = make([]time.Duration, 0, quota)
				errs[i] = make(map[string]int)
				wg.Go(func() {
					if once {
						for range quota {
							rctx, cancel := context.WithTimeout(ctx, a.commandTimeout)
							sent := time.Now()
							_, err := w.c.KeepAliveOnce(rctx, w.lease)
							latency := time.Since(sent)
							cancel()
							if err != nil {
								errs[i][err.Error()]++
							} else {
								latencies[i] = append(latencies[i], latency)
							}
							done.Add(1)
						}
						return
					}
					req := &catalogpb.LeaseKeepAliveRequest{Id: w.lease}
					for range quota {
						sent := time.Now()
						err := w.stream.Send(req)
						var resp *catalogpb.LeaseKeepAliveResponse
						if err == nil {
							resp, err = w.stream.Recv()
						}
						switch {
						case err != nil:
							errs[i][err.Error()] += quota - len(latencies[i])
							done.Add(int64(quota - len(latencies[i])))
							return
						case resp.TtlSeconds <= 0:
							errs[i]["lease not found"]++
						default:
							latencies[i] = append(latencies[i], time.Since(sent))
						}
						done.Add(1)
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			stopProgress()
			stopStreams()
			return a.finishBench(elapsed, latencies, errs, f.total)
		},
	}
	f.register(cmd)
	cmd.Flags().DurationVar(&ttl, "ttl", 60*time.Second, "TTL of each worker's lease")
	cmd.Flags().BoolVar(&targetLeader, "target-leader", false, "connect to the leader only")
	cmd.Flags().BoolVar(&once, "once", false, "renew with KeepAliveOnce, a new stream per renewal (as etcd's benchmark does)")
	return cmd
}

// finishBench prints the report and says whether requests failed.
func (a *app) finishBench(elapsed time.Duration, latencies [][]time.Duration, errs []map[string]int, total int) error {
	failed := 0
	all := make(map[string]int)
	for _, m := range errs {
		for msg, n := range m {
			all[msg] += n
			failed += n
		}
	}
	if err := newBenchReport(elapsed, latencies, all).write(a.stdout); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d requests failed", failed, total)
	}
	return nil
}

func newBenchWatchCommand(a *app) *cobra.Command {
	var (
		watchers, conns, total, rate int
		service                      string
	)
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Benchmark how fast a registration reaches watchers of its service",
		Long: "--watchers watches of --service (spread over --conns connections and every\n" +
			"endpoint) see --total instances registered one after the other at --rate per\n" +
			"second. Two latency distributions over every (registration, watcher) pair:\n" +
			"from the registration's acknowledgement to the watcher's receipt (what etcd's\n" +
			"benchmark watch-latency measures: it starts its clock when the put returns),\n" +
			"and from the start of the Register call. The service is deleted at the end.",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watchers < 1 || conns < 1 || total < 1 || rate < 1 {
				return usageErrorf(cmd, "--watchers, --conns, --total and --rate must be >= 1")
			}
			ctx := cmd.Context()
			clients, closeAll, err := a.benchClients(a.endpointList(), conns)
			if err != nil {
				return err
			}
			defer closeAll()
			writer := clients[0]
			cleanup := func() {
				dctx, cancel := context.WithTimeout(context.Background(), 4*a.commandTimeout)
				defer cancel()
				if _, err := writer.DeleteService(dctx, service, true); err != nil && !errors.Is(err, sdk.ErrServiceNotFound) {
					fmt.Fprintf(a.stderr, "bench watch: delete service %s: %v\n", service, err)
				}
			}
			cleanup()
			defer cleanup()

			sent := make([]time.Time, total)
			acked := make([]time.Time, total)
			recv := make([][]time.Time, watchers)
			watchCtx, stopWatches := context.WithCancel(ctx)
			defer stopWatches()
			var ready, finished sync.WaitGroup
			var watchErr atomic.Value
			for w := range watchers {
				recv[w] = make([]time.Time, total)
				ch := clients[w%len(clients)].Watch(watchCtx, sdk.WatchServiceFilter(service))
				ready.Add(1)
				finished.Add(1)
				go func() {
					defer finished.Done()
					created := false
					seen := 0
					for resp := range ch {
						now := time.Now()
						if !created {
							created = true
							ready.Done()
						}
						if resp.Err != nil {
							watchErr.Store(resp.Err)
							return
						}
						for _, ev := range resp.Events {
							in := ev.GetInstance()
							if ev.Kind != "instance" || ev.Type != catalogpb.Event_PUT || in == nil || ev.GetPrevInstance() != nil {
								continue
							}
							var n int
							if _, err := fmt.Sscanf(in.Id, "bench-%d", &n); err == nil && n >= 0 && n < total && recv[w][n].IsZero() {
								recv[w][n] = now
								seen++
							}
						}
						if seen == total {
							return
						}
					}
					if !created {
						ready.Done()
					}
				}()
			}
			// A watch is live once it answered a progress request; ask until
			// every watch has (the SDK creates watches asynchronously).
			readyc := make(chan struct{})
			go func() { ready.Wait(); close(readyc) }()
			deadline := time.After(30 * time.Second)
		waitReady:
			for {
				for _, c := range clients {
					if err := c.RequestProgress(ctx); err != nil {
						return fmt.Errorf("request progress: %w", err)
					}
				}
				select {
				case <-readyc:
					break waitReady
				case <-ctx.Done():
					return ctx.Err()
				case <-deadline:
					return errors.New("the watches were not all created within 30s")
				case <-time.After(200 * time.Millisecond):
				}
			}
			if err, _ := watchErr.Load().(error); err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			fmt.Fprintf(a.stderr, "bench watch: %d watchers on %d connections; registering %d instances at %d/s\n", watchers, conns, total, rate)
			pace := &pacer{start: time.Now(), interval: time.Second / time.Duration(rate)}
			for i := range total {
				if err := pace.wait(ctx); err != nil {
					return err
				}
				rctx, cancel := a.commandContext(cmd)
				sent[i] = time.Now()
				_, err := writer.RegisterInstance(rctx, &catalogpb.Instance{Service: service, Id: fmt.Sprintf("bench-%d", i), Address: "127.0.0.1:1"})
				acked[i] = time.Now()
				cancel()
				if err != nil {
					return fmt.Errorf("register instance %d: %w", i, err)
				}
			}
			if err := waitGroupCtx(ctx, &finished, 30*time.Second); err != nil {
				return fmt.Errorf("not every watcher saw every registration: %w", err)
			}
			fromAck := make([][]time.Duration, watchers)
			fromSend := make([][]time.Duration, watchers)
			missing := 0
			for w := range watchers {
				for i := range total {
					if recv[w][i].IsZero() {
						missing++
						continue
					}
					fromAck[w] = append(fromAck[w], max(recv[w][i].Sub(acked[i]), 0))
					fromSend[w] = append(fromSend[w], recv[w][i].Sub(sent[i]))
				}
			}
			elapsed := acked[total-1].Sub(sent[0])
			fmt.Fprintln(a.stdout, "\nFrom the registration's acknowledgement to the watcher (etcd's watch-latency):")
			if err := newBenchReport(elapsed, fromAck, nil).write(a.stdout); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "\nFrom the start of the Register call to the watcher:")
			if err := newBenchReport(elapsed, fromSend, nil).write(a.stdout); err != nil {
				return err
			}
			if missing > 0 {
				return fmt.Errorf("%d of %d events never reached their watcher", missing, watchers*total)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&watchers, "watchers", 100, "number of watches")
	cmd.Flags().IntVar(&conns, "conns", 10, "number of connections the watches share")
	cmd.Flags().IntVar(&total, "total", 2000, "number of registrations")
	cmd.Flags().IntVar(&rate, "rate", 200, "registrations per second")
	cmd.Flags().StringVar(&service, "service", "bench-watch", "the service to register instances of (deleted before and after)")
	return cmd
}

// waitGroupCtx waits for wg, at most d or until ctx ends.
func waitGroupCtx(ctx context.Context, wg *sync.WaitGroup, d time.Duration) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return fmt.Errorf("still waiting after %v", d)
	}
}

func newBenchDiscoverCommand(a *app) *cobra.Command {
	var (
		f         benchFlags
		instances int
		service   string
		mode      string
	)
	cmd := &cobra.Command{
		Use:   "discover",
		Short: "Benchmark discovery of a service's healthy instances",
		Long: "Registers --instances instances of --service if it has fewer, then looks up its\n" +
			"healthy instances --total times: --mode l (linearizable GetService), s\n" +
			"(serializable) or cache (an sdk.Resolver's in-memory cache, kept live by a\n" +
			"watch: no network per lookup).",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.validate(cmd); err != nil {
				return err
			}
			if instances < 1 {
				return usageErrorf(cmd, "--instances must be >= 1, got %d", instances)
			}
			var filters []sdk.Filter
			switch mode {
			case "l":
			case "s":
				filters = append(filters, sdk.Serializable())
			case "cache":
			default:
				return usageErrorf(cmd, "--mode must be l, s or cache, got %q", mode)
			}
			filters = append(filters, sdk.Healthy())
			if err := a.ensureInstances(cmd, service, instances); err != nil {
				return err
			}
			if mode != "cache" {
				return a.runBench(cmd, "discover", f, func(ctx context.Context, c *sdk.Client, _ int, _ *rand.Rand) error {
					insts, err := c.Discover(ctx, service, filters...)
					if err == nil && len(insts) < instances {
						err = fmt.Errorf("discovered %d instances, want at least %d", len(insts), instances)
					}
					return err
				})
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := a.commandContext(cmd)
			res, err := c.NewResolver(rctx, service, filters...)
			cancel()
			if err != nil {
				return fmt.Errorf("start resolver: %w", err)
			}
			defer res.Close()
			return a.runBench(cmd, "discover (cache)", f, func(ctx context.Context, _ *sdk.Client, _ int, _ *rand.Rand) error {
				if n := len(res.Instances()); n < instances {
					return fmt.Errorf("cache holds %d instances, want at least %d", n, instances)
				}
				return nil
			})
		},
	}
	f.register(cmd)
	cmd.Flags().IntVar(&instances, "instances", 1000, "instances the service must have")
	cmd.Flags().StringVar(&service, "service", "bench-discover", "the service to look up")
	cmd.Flags().StringVar(&mode, "mode", "l", "l (linearizable), s (serializable) or cache (sdk.Resolver)")
	return cmd
}

// ensureInstances registers instances bench-0..n-1 of service (healthy, no
// lease) unless it has n already.
func (a *app) ensureInstances(cmd *cobra.Command, service string, n int) error {
	c, err := a.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx := cmd.Context()
	resp, err := c.GetService(ctx, &catalogpb.GetServiceRequest{Name: service, Limit: 1})
	if err == nil && resp.Count >= int64(n) {
		return nil
	}
	if err != nil && !errors.Is(err, sdk.ErrServiceNotFound) {
		return fmt.Errorf("look up %s: %w", service, err)
	}
	fmt.Fprintf(a.stderr, "bench: registering %d instances of %s\n", n, service)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || firstErr.Load() != nil {
					return
				}
				rctx, cancel := a.commandContext(cmd)
				_, err := c.RegisterInstance(rctx, &catalogpb.Instance{Service: service, Id: fmt.Sprintf("bench-%d", i),
					Address: fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255), Zone: fmt.Sprintf("zone-%d", i%3)})
				cancel()
				if err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("register %s/bench-%d: %w", service, i, err))
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}
