package sdk

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// ErrKeepAliveStopped is a KeepAlive's Err after Stop, or after its Client
// was closed.
var ErrKeepAliveStopped = errors.New("sdk: keep-alive stopped")

var errKeepAliveClientClosed = fmt.Errorf("%w: the client was closed", ErrKeepAliveStopped)

// keepAliveBuffer is how many renewals a KeepAlive's channel holds for a
// caller that does not read it; later ones are dropped. A variable for tests.
var keepAliveBuffer = 16

// keepAliveRetry is how long a keep-alive request waits for its answer
// (while the lease's TTL is not known yet) before it is sent again.
const keepAliveRetry = 500 * time.Millisecond

func (c *Client) leaseClient() catalogpb.LeaseClient { return catalogpb.NewLeaseClient(c.conn) }

// ttlSeconds converts a TTL to whole seconds, rounding up: a lease never
// lives shorter than asked.
func ttlSeconds(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return int64((ttl + time.Second - 1) / time.Second)
}

// Grant grants a lease of ttl (rounded up to whole seconds) with an id the
// server chooses. The server's bounds apply (the minimum is above its
// election timeout): outside them it fails with ErrTTLOutOfRange, whose
// message names them. It is retried only when the cluster had no leader.
func (c *Client) Grant(ctx context.Context, ttl time.Duration) (*catalogpb.LeaseGrantResponse, error) {
	return c.GrantWithID(ctx, 0, ttl)
}

// GrantWithID grants lease id (0: the server chooses) of ttl. An id already
// granted fails with ErrLeaseExists.
func (c *Client) GrantWithID(ctx context.Context, id int64, ttl time.Duration) (*catalogpb.LeaseGrantResponse, error) {
	if id < 0 {
		return nil, fmt.Errorf("%w: lease id must be 0 (the server chooses) or positive, got %d", ErrInvalidArgument, id)
	}
	req := &catalogpb.LeaseGrantRequest{Id: id, TtlSeconds: ttlSeconds(ttl)}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.LeaseGrantResponse, error) {
		return c.leaseClient().Grant(ctx, req)
	})
}

// Revoke revokes lease id, deleting everything attached to it (the response
// lists what). An unknown lease fails with ErrLeaseNotFound.
func (c *Client) Revoke(ctx context.Context, id int64) (*catalogpb.LeaseRevokeResponse, error) {
	if err := checkLeaseID(id); err != nil {
		return nil, err
	}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.LeaseRevokeResponse, error) {
		return c.leaseClient().Revoke(ctx, &catalogpb.LeaseRevokeRequest{Id: id})
	})
}

// TimeToLive returns the time lease id has left as the leader sees it
// (TtlSeconds -1 when the lease does not exist) and, withItems, what is
// attached to it.
func (c *Client) TimeToLive(ctx context.Context, id int64, withItems bool) (*catalogpb.LeaseTimeToLiveResponse, error) {
	if err := checkLeaseID(id); err != nil {
		return nil, err
	}
	req := &catalogpb.LeaseTimeToLiveRequest{Id: id, Items: withItems}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.LeaseTimeToLiveResponse, error) {
		return c.leaseClient().TimeToLive(ctx, req)
	})
}

// Leases lists up to limit leases (0: the server's maximum, 10000) with ids
// above after, in id order, each with its remaining time; More says whether
// another page follows (pass the last id as after).
func (c *Client) Leases(ctx context.Context, after, limit int64) (*catalogpb.LeaseListResponse, error) {
	req := &catalogpb.LeaseListRequest{After: after, Limit: limit}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.LeaseListResponse, error) {
		return c.leaseClient().List(ctx, req)
	})
}

// KeepAliveOnce renews lease id once. A lease that does not exist (any
// more) fails with ErrLeaseNotFound.
func (c *Client) KeepAliveOnce(ctx context.Context, id int64) (*catalogpb.LeaseKeepAliveResponse, error) {
	if err := checkLeaseID(id); err != nil {
		return nil, err
	}
	resp, err := invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.LeaseKeepAliveResponse, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.leaseClient().KeepAlive(ctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&catalogpb.LeaseKeepAliveRequest{Id: id}); err != nil {
			_, err = stream.Recv() // the stream's own error
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		_ = stream.CloseSend()
		return resp, nil
	})
	if err != nil {
		return nil, err
	}
	if resp.GetTtlSeconds() <= 0 {
		return nil, leaseGone(id)
	}
	return resp, nil
}

func checkLeaseID(id int64) error {
	if id <= 0 {
		return fmt.Errorf("%w: lease id must be positive, got %d", ErrInvalidArgument, id)
	}
	return nil
}

func leaseGone(id int64) error {
	return fmt.Errorf("%w: lease %d does not exist (it expired or was revoked); grant a new one", ErrLeaseNotFound, id)
}

// A KeepAlive renews one lease until Stop, its context ends, or the lease
// is found gone.
type KeepAlive struct {
	id    int64
	ka    *keepAliver
	c     chan *catalogpb.LeaseKeepAliveResponse
	donec chan struct{}
	once  sync.Once
	err   error

	mu sync.Mutex
	// stopCtx stops following the caller's context; ended is set by end.
	stopCtx func() bool
	ended   bool
}

// C delivers the renewals. A caller that does not read it loses renewals,
// never holds them up.
func (k *KeepAlive) C() <-chan *catalogpb.LeaseKeepAliveResponse { return k.c }

// Done is closed when the keep-alive ends.
func (k *KeepAlive) Done() <-chan struct{} { return k.donec }

// Err says why the keep-alive ended, once Done is closed: ErrLeaseNotFound
// (the lease expired or was revoked), the context's error, or
// ErrKeepAliveStopped (Stop, or the client was closed).
func (k *KeepAlive) Err() error {
	select {
	case <-k.donec:
		return k.err
	default:
		return nil
	}
}

// Stop stops renewing the lease (it is not revoked: it expires after its TTL
// unless renewed elsewhere).
func (k *KeepAlive) Stop() { k.end(ErrKeepAliveStopped) }

func (k *KeepAlive) end(err error) {
	k.once.Do(func() {
		k.err = err
		close(k.donec)
		k.mu.Lock()
		k.ended = true
		stop := k.stopCtx
		k.mu.Unlock()
		if stop != nil {
			stop()
		}
		k.ka.remove(k)
	})
}

func (k *KeepAlive) deliver(resp *catalogpb.LeaseKeepAliveResponse) {
	select {
	case <-k.donec:
	case k.c <- resp:
	default:
	}
}

// KeepAlive renews lease id every TTL/3 over one KeepAlive stream shared by
// all the client's leases, reconnecting (to another endpoint if need be)
// when the stream breaks. It ends with ErrLeaseNotFound when a server
// answers that the lease does not exist, with ctx's error when ctx ends, or
// on Stop. Renewing the same lease from several KeepAlives costs one
// renewal.
func (c *Client) KeepAlive(ctx context.Context, id int64) (*KeepAlive, error) {
	if err := checkLeaseID(id); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.isClosed() {
		return nil, errKeepAliveClientClosed
	}
	k := &KeepAlive{id: id, c: make(chan *catalogpb.LeaseKeepAliveResponse, keepAliveBuffer), donec: make(chan struct{})}
	c.keepAliver(k)
	stop := context.AfterFunc(ctx, func() { k.end(context.Cause(ctx)) })
	k.mu.Lock()
	if k.ended {
		k.mu.Unlock()
		stop()
	} else {
		k.stopCtx = stop
		k.mu.Unlock()
	}
	return k, nil
}

// A keepAliver renews a client's leases over one stream.
type keepAliver struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	wakeC  chan struct{}

	mu     sync.Mutex
	leases map[int64]*keptLease
	// queue holds the renewals to send, soonest first. An entry whose time
	// is not its lease's next any more is stale and skipped.
	queue renewQueue
	// scheduled is when the sender looks at the queue next.
	scheduled time.Time
}

// keptLease is one lease a keepAliver renews, for one or more KeepAlives.
type keptLease struct {
	ttl     time.Duration // 0 until the first answer
	next    time.Time     // when to send the next renewal
	handles map[*KeepAlive]struct{}
}

// keepAliver adds k to its client's loop, starting one if need be.
func (c *Client) keepAliver(k *KeepAlive) {
	c.kaMu.Lock()
	defer c.kaMu.Unlock()
	ka := c.ka
	if ka == nil {
		ctx, cancel := context.WithCancel(context.Background())
		ka = &keepAliver{c: c, ctx: ctx, cancel: cancel, wakeC: make(chan struct{}, 1), leases: map[int64]*keptLease{}}
		c.ka = ka
		go ka.run()
	}
	k.ka = ka
	ka.mu.Lock()
	defer ka.mu.Unlock()
	l := ka.leases[k.id]
	if l == nil {
		l = &keptLease{handles: map[*KeepAlive]struct{}{}}
		ka.leases[k.id] = l
		ka.scheduleLocked(k.id, l, time.Now())
	}
	l.handles[k] = struct{}{}
}

// scheduleLocked makes at lease id's next renewal; ka.mu is held.
func (ka *keepAliver) scheduleLocked(id int64, l *keptLease, at time.Time) {
	l.next = at
	heap.Push(&ka.queue, renewal{at: at, id: id})
	if at.Before(ka.scheduled) || ka.scheduled.IsZero() {
		select {
		case ka.wakeC <- struct{}{}:
		default:
		}
	}
}

// remove forgets k; the loop ends with the client's last lease.
func (ka *keepAliver) remove(k *KeepAlive) {
	ka.c.kaMu.Lock()
	defer ka.c.kaMu.Unlock()
	ka.mu.Lock()
	defer ka.mu.Unlock()
	if l := ka.leases[k.id]; l != nil {
		delete(l.handles, k)
		if len(l.handles) == 0 {
			delete(ka.leases, k.id)
		}
	}
	if len(ka.leases) == 0 && ka.c.ka == ka {
		ka.c.ka = nil
		ka.cancel()
	}
}

// endAll ends every KeepAlive of the loop with err.
func (ka *keepAliver) endAll(err error) {
	ka.mu.Lock()
	var handles []*KeepAlive
	for _, l := range ka.leases {
		for k := range l.handles {
			handles = append(handles, k)
		}
	}
	ka.mu.Unlock()
	for _, k := range handles {
		k.end(err)
	}
}

// run keeps a stream open while the client has leases to renew.
func (ka *keepAliver) run() {
	client := ka.c.leaseClient()
	for try := 0; ka.ctx.Err() == nil; try++ {
		if ka.c.isClosed() {
			ka.endAll(errKeepAliveClientClosed)
			return
		}
		ctx, cancel := context.WithCancel(ka.ctx)
		stream, err := client.KeepAlive(ctx)
		if err == nil {
			var answered bool
			answered, err = ka.serve(ctx, stream)
			if answered {
				try = 0
			}
		}
		cancel()
		if ka.ctx.Err() != nil {
			return
		}
		if ka.c.isClosed() {
			ka.endAll(errKeepAliveClientClosed)
			return
		}
		switch status.Code(err) {
		case codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated:
			ka.endAll(fmt.Errorf("keep-alive stream: %w", toError(err)))
			return
		}
		if ka.c.sleep(ka.ctx, ka.c.backoff(try)) != nil {
			return
		}
	}
}

// serve renews the leases over one stream until it breaks; answered says
// whether any renewal was answered on it.
func (ka *keepAliver) serve(ctx context.Context, stream catalogpb.Lease_KeepAliveClient) (bool, error) {
	var answered atomic.Bool
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			answered.Store(true)
			ka.answer(resp)
		}
	}()
	// A new stream may reach a new leader: renew everything now.
	ka.mu.Lock()
	now := time.Now()
	ka.queue = ka.queue[:0]
	for id, l := range ka.leases {
		l.next = now
		ka.queue = append(ka.queue, renewal{at: now, id: id})
	}
	heap.Init(&ka.queue)
	ka.mu.Unlock()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return answered.Load(), ctx.Err()
		case err := <-recvErr:
			return answered.Load(), err
		case <-ka.wakeC:
		case <-timer.C:
		}
		due, next := ka.due(time.Now())
		for _, id := range due {
			if err := stream.Send(&catalogpb.LeaseKeepAliveRequest{Id: id}); err != nil {
				// Recv reports why the stream broke.
				select {
				case err := <-recvErr:
					return answered.Load(), err
				case <-ctx.Done():
					return answered.Load(), ctx.Err()
				}
			}
		}
		timer.Reset(time.Until(next))
	}
}

// due returns the leases to renew now, and when to look again. A lease sent
// is due again after its retry interval unless its answer comes first.
func (ka *keepAliver) due(now time.Time) ([]int64, time.Time) {
	ka.mu.Lock()
	defer ka.mu.Unlock()
	var ids []int64
	for len(ka.queue) > 0 && !ka.queue[0].at.After(now) {
		r := heap.Pop(&ka.queue).(renewal)
		l := ka.leases[r.id]
		if l == nil || !l.next.Equal(r.at) {
			continue // stale
		}
		ids = append(ids, r.id)
		retry := keepAliveRetry
		if l.ttl > 0 {
			retry = l.ttl / 3
		}
		l.next = now.Add(retry)
		heap.Push(&ka.queue, renewal{at: l.next, id: r.id})
	}
	ka.scheduled = now.Add(time.Minute)
	if len(ka.queue) > 0 {
		ka.scheduled = ka.queue[0].at
	}
	return ids, ka.scheduled
}

// answer handles one response: the lease's next renewal, or its end.
func (ka *keepAliver) answer(resp *catalogpb.LeaseKeepAliveResponse) {
	ka.mu.Lock()
	l := ka.leases[resp.GetId()]
	if l == nil {
		ka.mu.Unlock()
		return
	}
	handles := make([]*KeepAlive, 0, len(l.handles))
	for k := range l.handles {
		handles = append(handles, k)
	}
	if resp.GetTtlSeconds() <= 0 {
		ka.mu.Unlock()
		err := leaseGone(resp.GetId())
		for _, k := range handles {
			k.end(err)
		}
		return
	}
	l.ttl = time.Duration(resp.GetTtlSeconds()) * time.Second
	ka.scheduleLocked(resp.GetId(), l, time.Now().Add(l.ttl/3))
	ka.mu.Unlock()
	for _, k := range handles {
		k.deliver(resp)
	}
}

// A renewal is a lease's renewal due at a time.
type renewal struct {
	at time.Time
	id int64
}

// renewQueue is a min-heap of renewals by time.
type renewQueue []renewal

func (q renewQueue) Len() int           { return len(q) }
func (q renewQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q renewQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *renewQueue) Push(x any)        { *q = append(*q, x.(renewal)) }
func (q *renewQueue) Pop() any {
	old := *q
	r := old[len(old)-1]
	*q = old[:len(old)-1]
	return r
}
