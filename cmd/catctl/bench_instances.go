package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newBenchInstancesCommand(a *app) *cobra.Command {
	var (
		count, conns, workers int
		ttl, hold             time.Duration
		service               string
	)
	cmd := &cobra.Command{
		Use:   "instances",
		Short: "Hold many instances, each with its own lease kept alive, and report keep-alive latency",
		Long: "Grants --count leases of --ttl and registers one instance of --service on each,\n" +
			"while keeping every lease alive from the moment it is granted: each lease is\n" +
			"renewed every ttl/3 over one of --conns KeepAlive streams (spread over the\n" +
			"endpoints; a broken stream is reopened on another server). Then it holds them\n" +
			"for --hold, printing every 5s the keep-alive rate and latency and the\n" +
			"instances deleted (seen by a watch on the service: an instance deleted while\n" +
			"its lease was being kept alive is an instance lost to expiry). Kill a server\n" +
			"meanwhile to test failover. The leases are left to expire at the end.",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if count < 1 || conns < 1 || workers < 1 || ttl < time.Second || hold < 0 {
				return usageErrorf(cmd, "--count, --conns and --workers must be >= 1, --ttl >= 1s and --hold >= 0")
			}
			ctx := cmd.Context()
			c, err := a.newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			dctx, cancel := context.WithTimeout(ctx, 10*a.commandTimeout)
			_, err = c.DeleteService(dctx, service, true)
			cancel()
			if err != nil && !errors.Is(err, sdk.ErrServiceNotFound) {
				return fmt.Errorf("delete %s before the run: %w", service, err)
			}

			// Deletions of the service's instances, from now on.
			var deleted atomic.Int64
			watchCtx, stopWatch := context.WithCancel(ctx)
			defer stopWatch()
			var watchErr atomic.Value
			go func() {
				for resp := range c.Watch(watchCtx, sdk.WatchServiceFilter(service)) {
					if resp.Err != nil {
						watchErr.Store(resp.Err)
						return
					}
					for _, ev := range resp.Events {
						if ev.Kind == "instance" && ev.Type == catalogpb.Event_DELETE {
							deleted.Add(1)
						}
					}
				}
			}()

			streams := make([]*keepAliveStream, conns)
			for i := range streams {
				streams[i] = newKeepAliveStream(ctx, c, ttl)
			}
			defer func() {
				for _, s := range streams {
					s.stop()
				}
			}()

			fmt.Fprintf(a.stderr, "bench instances: registering %d instances of %s, each with its own %v lease, over %d keep-alive streams\n",
				count, service, ttl, conns)
			start := time.Now()
			var next, registered atomic.Int64
			var firstErr atomic.Value
			var wg sync.WaitGroup
			stopProgress := a.startProgress(&registered, count)
			for range workers {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(count) || firstErr.Load() != nil || ctx.Err() != nil {
							return
						}
						err := a.registerLeased(ctx, c, streams[i%int64(conns)], service, i, ttl)
						if err != nil {
							firstErr.CompareAndSwap(nil, err)
							return
						}
						registered.Add(1)
					}
				})
			}
			wg.Wait()
			stopProgress()
			if err, _ := firstErr.Load().(error); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "registered %d instances in %v (%.0f/s)\n", count, time.Since(start).Round(time.Millisecond),
				float64(count)/time.Since(start).Seconds())

			// Hold.
			for _, s := range streams {
				s.resetStats()
			}
			holdStart := time.Now()
			ticker := time.NewTicker(5 * time.Second)
			defer ticker.Stop()
			timer := time.NewTimer(hold)
			defer timer.Stop()
			var all [][]time.Duration
		holding:
			for {
				select {
				case <-ctx.Done():
					break holding
				case <-timer.C:
					break holding
				case <-ticker.C:
					var lat [][]time.Duration
					var lost int64
					for _, s := range streams {
						l, n := s.takeStats()
						lat = append(lat, l)
						lost += n
					}
					all = append(all, lat...)
					r := newBenchReport(5*time.Second, lat, nil)
					if len(r.latencies) > 0 {
						fmt.Fprintf(a.stdout, "%6.0fs  keep-alives %.0f/s  p50 %v  p99 %v  max %v  leases lost %d  instances deleted %d\n",
							time.Since(holdStart).Seconds(), float64(len(r.latencies))/5, r.percentile(50).Round(time.Microsecond),
							r.percentile(99).Round(time.Microsecond), r.slowest().Round(time.Microsecond), lost, deleted.Load())
					}
				}
			}
			for _, s := range streams {
				l, _ := s.takeStats()
				all = append(all, l)
			}
			fmt.Fprintln(a.stdout, "\nKeep-alive latency over the hold:")
			if err := newBenchReport(time.Since(holdStart), all, nil).write(a.stdout); err != nil {
				return err
			}
			cctx, cancel := a.commandContext(cmd)
			resp, err := c.GetService(cctx, &catalogpb.GetServiceRequest{Name: service, Limit: 1})
			cancel()
			if err != nil {
				return fmt.Errorf("count instances: %w", err)
			}
			fmt.Fprintf(a.stdout, "\ninstances held at the end: %d of %d; instance deletions seen: %d\n", resp.Count, count, deleted.Load())
			if err, _ := watchErr.Load().(error); err != nil {
				return fmt.Errorf("the deletions watch failed, so the count above is incomplete: %w", err)
			}
			if resp.Count != int64(count) || deleted.Load() != 0 {
				return fmt.Errorf("%d instances lost", int64(count)-resp.Count)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&count, "count", 100000, "instances, each with its own lease")
	fl.IntVar(&conns, "conns", 16, "keep-alive streams")
	fl.IntVar(&workers, "workers", 64, "concurrent registrations")
	fl.DurationVar(&ttl, "ttl", 10*time.Second, "TTL of each lease")
	fl.DurationVar(&hold, "hold", 60*time.Second, "how long to hold the instances after registering them")
	fl.StringVar(&service, "service", "bench-leased", "the service (deleted first)")
	return cmd
}

// registerLeased grants a lease, starts keeping it alive and registers
// instance i on it, retrying while the cluster has no leader.
func (a *app) registerLeased(ctx context.Context, c *sdk.Client, s *keepAliveStream, service string, i int64, ttl time.Duration) error {
	rctx, cancel := context.WithTimeout(ctx, 4*a.commandTimeout)
	defer cancel()
	lease, err := c.Grant(rctx, ttl)
	if err != nil {
		return fmt.Errorf("grant lease %d: %w", i, err)
	}
	s.add(lease.Id)
	_, err = c.RegisterInstance(rctx, &catalogpb.Instance{Service: service, Id: fmt.Sprintf("i-%d", i),
		Address: fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255), Lease: lease.Id})
	if err != nil {
		return fmt.Errorf("register instance %d: %w", i, err)
	}
	return nil
}

// A keepAliveStream renews a set of leases over one KeepAlive stream, each
// every ttl/3, spread evenly, and measures each renewal's round trip.
type keepAliveStream struct {
	c      *sdk.Client
	ttl    time.Duration
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	leases []int64
	sent   map[int64]time.Time
	lat    []time.Duration
	lost   int64
}

func newKeepAliveStream(ctx context.Context, c *sdk.Client, ttl time.Duration) *keepAliveStream {
	ctx, cancel := context.WithCancel(ctx)
	s := &keepAliveStream{c: c, ttl: ttl, cancel: cancel, done: make(chan struct{}), sent: make(map[int64]time.Time)}
	go s.run(ctx)
	return s
}

func (s *keepAliveStream) add(id int64) {
	s.mu.Lock()
	s.leases = append(s.leases, id)
	s.mu.Unlock()
}

func (s *keepAliveStream) stop() {
	s.cancel()
	<-s.done
}

func (s *keepAliveStream) resetStats() {
	s.mu.Lock()
	s.lat, s.lost = nil, 0
	s.mu.Unlock()
}

func (s *keepAliveStream) takeStats() ([]time.Duration, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lat, lost := s.lat, s.lost
	s.lat, s.lost = nil, 0
	return lat, lost
}

// run keeps the stream open, reopening it (the balancer picks a live
// server) after an error.
func (s *keepAliveStream) run(ctx context.Context) {
	defer close(s.done)
	for ctx.Err() == nil {
		s.session(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *keepAliveStream) session(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := catalogpb.NewLeaseClient(s.c.Conn()).KeepAlive(ctx)
	if err != nil {
		return
	}
	// Renewals unanswered on a broken stream are not measured.
	s.mu.Lock()
	clear(s.sent)
	s.mu.Unlock()
	go func() {
		defer cancel()
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			now := time.Now()
			s.mu.Lock()
			if t, ok := s.sent[resp.Id]; ok {
				delete(s.sent, resp.Id)
				if resp.TtlSeconds > 0 {
					s.lat = append(s.lat, now.Sub(t))
				} else {
					s.lost++
				}
			}
			s.mu.Unlock()
		}
	}()
	// Send each lease's renewal every ttl/3: a pass over the leases is
	// spread over that period in steps of 10 ms. The cursor carries over
	// from step to step, so leases added during a pass shift no lease out
	// of it; they are reached at the end of the pass.
	period := s.ttl / 3
	const step = 10 * time.Millisecond
	steps := max(int(period/step), 1)
	ticker := time.NewTicker(step)
	defer ticker.Stop()
	pos := 0
	for k := 0; ; k = (k + 1) % steps {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		s.mu.Lock()
		n := len(s.leases)
		if k == 0 {
			pos = 0
		}
		to := max((k+1)*n/steps, pos)
		if k == steps-1 {
			to = n
		}
		batch := append([]int64(nil), s.leases[pos:to]...)
		pos = to
		now := time.Now()
		for _, id := range batch {
			s.sent[id] = now
		}
		s.mu.Unlock()
		for _, id := range batch {
			if err := stream.Send(&catalogpb.LeaseKeepAliveRequest{Id: id}); err != nil {
				return
			}
		}
	}
}
