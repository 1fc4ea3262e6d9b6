package robustness

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/tests/framework"
)

// failoverWait bounds one failover of BenchmarkLeaderKill: past it the
// cluster is broken, not slow.
const failoverWait = 30 * time.Second

// retryPause is how long a putter waits after a failed put.
const retryPause = 5 * time.Millisecond

// BenchmarkLeaderKill measures failover under write load: 8 clients put
// continuously, the leader is killed (SIGKILL), and each iteration measures
// the time from the kill to the acknowledgement of the first put that
// started after the kill. The killed member is restarted, and the members
// agree on a leader, before the next iteration. It reports the median and
// the maximum in milliseconds and logs every sample, with when that put
// started: a put that a follower forwarded to the dead leader is lost and
// waits out its 2s timeout, so when every client is caught that way the
// first acknowledged put starts only after the timeout, and the sample is
// the timeout rather than the election.
//
//	go test ./tests/robustness -run XXX -bench LeaderKill -benchtime 5x
func BenchmarkLeaderKill(b *testing.B) {
	c := framework.NewCluster(b, 3, clusterOptions()...)
	cluster, err := clusterID(b.Context(), c)
	if err != nil {
		b.Fatalf("%v", err)
	}
	acks := &ackWatch{}
	p, err := startPutters(c.Endpoints(), cluster, defaultLoad.Clients, defaultLoad.OpTimeout, acks)
	if err != nil {
		b.Fatalf("start putters: %v", err)
	}
	defer p.stop()

	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for iter := range b.N {
		b.StopTimer()
		ctx, cancel := context.WithTimeout(b.Context(), failoverWait)
		leader := c.WaitLeader(ctx)
		// The cluster takes writes before the kill, so the sample measures
		// the failover alone.
		if _, err := acks.await(ctx, time.Now()); err != nil {
			cancel()
			b.Fatalf("iteration %d: no put acknowledged before the kill: %v", iter, err)
		}
		b.StartTimer()

		killed := time.Now()
		c.Kill(leader)
		acked, err := acks.await(ctx, killed)
		if err != nil {
			cancel()
			b.Fatalf("iteration %d: no put started after killing leader %d was acknowledged: %v", iter, leader, err)
		}
		sample := acked.end.Sub(killed)

		b.StopTimer()
		samples = append(samples, sample)
		b.Logf("iteration %d: killed leader %d; the first put started after the kill (%v after it) was acknowledged %v after it",
			iter, leader, acked.start.Sub(killed).Round(time.Millisecond), sample.Round(time.Millisecond))
		c.Restart(leader)
		c.WaitLeader(ctx)
		cancel()
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(ms(samples[len(samples)/2]), "median-ms")
	b.ReportMetric(ms(samples[len(samples)-1]), "max-ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// An ackWatch tells waiters when a put that started after a given time is
// acknowledged.
type ackWatch struct {
	mu      sync.Mutex
	waiters []ackWaiter
}

type ackWaiter struct {
	after time.Time
	c     chan ackedPut
}

// An ackedPut is when an acknowledged put started and when its answer came.
type ackedPut struct{ start, end time.Time }

// acked reports a put that started at start and was acknowledged at end.
func (w *ackWatch) acked(start, end time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiters = slices.DeleteFunc(w.waiters, func(wt ackWaiter) bool {
		if start.After(wt.after) {
			wt.c <- ackedPut{start, end}
			return true
		}
		return false
	})
}

// await returns when the first put that started after after was
// acknowledged.
func (w *ackWatch) await(ctx context.Context, after time.Time) (ackedPut, error) {
	c := make(chan ackedPut, 1)
	w.mu.Lock()
	w.waiters = append(w.waiters, ackWaiter{after: after, c: c})
	w.mu.Unlock()
	select {
	case p := <-c:
		return p, nil
	case <-ctx.Done():
		return ackedPut{}, context.Cause(ctx)
	}
}

// putters are clients putting as fast as they are answered.
type putters struct {
	stopc   chan struct{}
	wg      sync.WaitGroup
	clients []*sdk.Client
}

// startPutters starts n clients putting to the cluster with id cluster;
// only its answers count as acknowledgements.
func startPutters(endpoints []string, cluster uint64, n int, opTimeout time.Duration, acks *ackWatch) (*putters, error) {
	p := &putters{stopc: make(chan struct{})}
	for k := range n {
		cli, err := sdk.New(sdk.Config{Endpoints: endpoints, DialTimeout: time.Second})
		if err != nil {
			p.stop()
			return nil, fmt.Errorf("client %d over %v: %w", k, endpoints, err)
		}
		p.clients = append(p.clients, cli)
	}
	for k, cli := range p.clients {
		p.wg.Go(func() {
			for seq := 0; ; seq++ {
				select {
				case <-p.stopc:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				start := time.Now()
				resp, err := cli.Put(ctx, fmt.Sprintf("bench/k%d", k), fmt.Sprintf("c%d-%d", k, seq))
				end := time.Now()
				cancel()
				if err != nil || resp.GetHeader().GetClusterId() != cluster {
					// A dead member refuses at once; do not spin. This bounds
					// the error of a sample to the pause.
					time.Sleep(retryPause)
					continue
				}
				acks.acked(start, end)
			}
		})
	}
	return p, nil
}

func (p *putters) stop() {
	close(p.stopc)
	p.wg.Wait()
	for _, cli := range p.clients {
		cli.Close()
	}
}
