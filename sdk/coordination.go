package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// Patience of blocking calls (Lock, Campaign, Dequeue, barrier Wait, Enter,
// Leave). Variables for tests.
var (
	// waitMinRetries is the least number of failed attempts in a row a
	// blocking call rides out (Config.MaxRetries if larger): at the
	// backoff's 100 ms cap, about ten seconds, several elections' worth.
	// Config.MaxRetries < 0 still means no retries.
	waitMinRetries = 100
	// waitAttemptReset: an attempt that waited on a server this long before
	// it failed was connected, so the failures after it are a new outage
	// and counted afresh.
	waitAttemptReset = time.Second
	// cleanupHold is how long the SDK keeps a call that rejoins an
	// abandoned wait open before cancelling it, which makes the server
	// remove the wait (see cleanupWait).
	cleanupHold = 2 * time.Second
	// cleanupTries bounds the attempts of one cleanup.
	cleanupTries = 20
)

// deadlineSkew is how much earlier than the caller's context a server may
// end a call on the deadline gRPC sent it.
const deadlineSkew = 500 * time.Millisecond

func (c *Client) lockClient() catalogpb.LockClient {
	return lockCaller{LockClient: catalogpb.NewLockClient(c.conn), ls: c.locks}
}

func (c *Client) electionClient() catalogpb.ElectionClient {
	return catalogpb.NewElectionClient(c.conn)
}

func (c *Client) barrierClient() catalogpb.BarrierClient {
	return catalogpb.NewBarrierClient(c.conn)
}

func (c *Client) queueClient() catalogpb.QueueClient {
	return catalogpb.NewQueueClient(c.conn)
}

// newWaiterID returns a random non-zero waiter id.
func newWaiterID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
}

// maxRetryOf is the most waiter ids of earlier attempts a Lock, Campaign
// or Dequeue names (retry_of; the server refuses more).
const maxRetryOf = 16

// waitAttempts names the attempts of one blocking call (Lock, Campaign,
// Dequeue, and the cleanup of an abandoned one): each attempt carries its
// own random waiter id, and names the ids of the attempts before it (the
// most recent maxRetryOf) in retry_of. A retry still continues the call's
// place: the server keys holders, waiters and handed-out items by lease, so
// a retry by the same lease finds them and re-tags them with its id (a
// Dequeue gets back an item handed to an attempt named in retry_of). The
// cancel a member proposes when an earlier attempt's connection broke names
// that attempt's id, so once a retry re-tagged the place it changes
// nothing: it cannot release a hold or take back an item the retry was
// answered. For a lock or an election the retry also retires the ids it
// names (LockOwner.retired_waiter_ids): an earlier attempt whose proposal
// is applied after the retry's changes nothing (its member answers it
// WAIT_SUPERSEDED, to a client that no longer listens), instead of
// re-tagging the place back to itself, where its cancel would match again.
// One attempt at a time uses it.
type waitAttempts struct {
	// ids of the attempts so far, the most recent maxRetryOf, oldest first.
	ids []uint64
}

// next returns the waiter id of a new attempt and the ids of the earlier
// ones (the most recent maxRetryOf).
func (a *waitAttempts) next() (id uint64, earlier []uint64) {
	earlier = append([]uint64(nil), a.ids...)
	for id = newWaiterID(); containsID(earlier, id); id = newWaiterID() {
	}
	a.ids = append(a.ids, id)
	if len(a.ids) > maxRetryOf {
		a.ids = append(a.ids[:0:0], a.ids[len(a.ids)-maxRetryOf:]...)
	}
	return id, earlier
}

func containsID(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// sameWaitRetryable reports whether a blocking call that failed with err
// may be sent again: the failure says nothing about the wait itself (no
// server answered, the cluster had no leader, the proposal timed out on
// the server), and a retry of the same lease continues the wait the server
// may keep for it. A plain DeadlineExceeded is not among them: without
// Config.RequestTimeout (which blocking calls ignore) it is the caller's
// deadline.
func sameWaitRetryable(err error) bool {
	if errors.Is(err, ErrTimeout) {
		return true
	}
	var e *Error
	return errors.As(err, &e) && e.Code == codes.Unavailable
}

// definite reports whether err is a server's answer about the call itself
// (a catalogd reason that is not about reaching the cluster): after it the
// server keeps no wait for the call.
func definite(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason != "" && !sameWaitRetryable(err)
}

// A waitOutcome says what a blocking call's attempts left behind.
type waitOutcome struct {
	// retried: an attempt failed in a way that may have left its effect
	// on the server, and the call was sent again.
	retried bool
	// abandoned: the call failed while the server may still hold its
	// place (a wait, a hold, an item handed out) that no attempt will
	// answer or cancel.
	abandoned bool
}

// waitCall runs a call that may wait on the server until it answers, ctx
// ends or, with a session, the session ends. Config.RequestTimeout does not
// bound it: a wait lasts as long as the caller's ctx allows. After a failure
// that says nothing about the wait (sameWaitRetryable) it calls again (a
// new attempt, with its own waiter id: see waitAttempts), which continues
// the wait. So it does after ErrWaitSuperseded once an attempt was retried:
// an earlier attempt of the same call, applied late, may have taken the
// wait over (for a lock or an election only one the current attempt's
// retry_of no longer names, more than maxRetryOf attempts back; for a
// Dequeue's waiting consumer any), and the next attempt takes it back. When
// ctx ends it returns ctx.Err(); when the session ends first, the
// session's Err.
//
// Cancelling an attempt in flight makes the server remove its wait. A wait
// left by an attempt whose answer was lost is reported as abandoned.
func waitCall[T any](ctx context.Context, c *Client, s *Session, call func(context.Context) (T, error)) (T, waitOutcome, error) {
	var zero T
	var out waitOutcome
	if err := ctx.Err(); err != nil {
		return zero, out, err
	}
	callCtx := ctx
	if s != nil {
		if err := s.Err(); err != nil {
			return zero, out, err
		}
		var cancel context.CancelFunc
		callCtx, cancel = s.bind(ctx)
		defer cancel()
	}
	ended := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s != nil {
			return s.Err()
		}
		return nil
	}
	limit := 0
	if c.maxRetries > 0 {
		limit = max(c.maxRetries, waitMinRetries)
	}
	failures := 0
	// late counts the failed attempts that may still be applied after a
	// later one (their answer was lost, not their proposal): each may take
	// the wait over once, and be taken back by one more attempt.
	late := 0
	for {
		start := time.Now()
		resp, err := call(callCtx)
		if err == nil {
			return resp, out, nil
		}
		err = toError(err)
		if endErr := ended(); endErr != nil {
			// An attempt in flight was cancelled with the call, and the
			// server removes its wait; one that failed earlier may have
			// left a wait no one cancelled.
			out.abandoned = out.retried
			return zero, out, endErr
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < deadlineSkew &&
			!definite(err) && errors.Is(err, context.DeadlineExceeded) {
			// The server ended the call on the deadline gRPC sent it, a
			// moment before ctx expires here: the server removed the
			// wait, as for any call whose caller went away.
			<-callCtx.Done()
			out.abandoned = out.retried
			return zero, out, ended()
		}
		switch {
		case sameWaitRetryable(err):
			late++
		case late > 0 && errors.Is(err, ErrWaitSuperseded):
			// Taken over, maybe, by an earlier attempt of this call whose
			// proposal was applied after this one's and which this one did
			// not retire (see above): the place is still this call's, and
			// the next attempt takes it back. (A retired attempt's own
			// WAIT_SUPERSEDED goes to that attempt, which was abandoned.)
			late--
		default:
			out.abandoned = !definite(err)
			return zero, out, err
		}
		if time.Since(start) >= waitAttemptReset {
			failures = 0
		}
		failures++
		out.retried = true
		if failures > limit {
			out.abandoned = true
			return zero, out, err
		}
		if c.sleep(callCtx, c.backoff(failures-1)) != nil {
			out.abandoned = true
			if endErr := ended(); endErr != nil {
				return zero, out, endErr
			}
			return zero, out, err
		}
	}
}

// invokeSettle runs a write that a retry cannot apply twice (Unlock,
// Resign, Proclaim, Ack, barrier Set and Release): it is retried like a read
// (on Unavailable, a server timeout, an attempt cut by
// Config.RequestTimeout). Once an attempt may have been applied, the error
// of a later attempt goes through afterLost (when not nil), which returns
// what the call reports: nil when that error shows the outcome the call
// wanted either way (ErrNotHeld for a release: the lock is not held), or
// the error, annotated when it may be the lost attempt's doing (see
// lostAck).
func invokeSettle[T any](ctx context.Context, c *Client, afterLost func(error) error, call func(context.Context) (T, error)) (T, error) {
	var zero T
	mayHaveApplied := false
	for try := 0; ; try++ {
		resp, attemptTimedOut, err := attempt(ctx, c.cfg.RequestTimeout, call)
		if err == nil {
			return resp, nil
		}
		err = toError(err)
		if mayHaveApplied && afterLost != nil {
			if err = afterLost(err); err == nil {
				return zero, nil
			}
		}
		if try >= c.maxRetries || ctx.Err() != nil || !(sameWaitRetryable(err) || attemptTimedOut) {
			return zero, err
		}
		if !errors.Is(err, ErrNoLeader) {
			mayHaveApplied = true
		}
		wait := c.backoff(try)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return zero, err
		}
		if ctxErr := c.sleep(ctx, wait); ctxErr != nil {
			return zero, fmt.Errorf("%w while waiting to retry after: %w", ctxErr, err)
		}
	}
}

// cleanupWait removes a wait that a blocking call abandoned (see
// waitOutcome): rejoin sends the call again, as a new attempt of it (its
// own waiter id, and for a Dequeue the earlier ones in retry_of), under a
// context that ends after cleanupHold. The server then either answers at
// once (the wait was granted meanwhile: rejoin gives the grant back) or
// keeps the wait, re-tagged with the new attempt's id, until that context
// ends and removes it, as for any cancelled call. It runs in the background
// until done, bounded by the session; the returned channel closes when it
// is over. A helper waits for it before its next call, which would
// otherwise race with it.
func (s *Session) cleanupWait(rejoin func(ctx context.Context) error) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for try := 0; try < cleanupTries && s.Err() == nil; try++ {
			ctx, cancel := context.WithTimeout(s.ctx, cleanupHold)
			err := toError(rejoin(ctx))
			expired := ctx.Err() != nil
			cancel()
			if err == nil || expired || !sameWaitRetryable(err) {
				return
			}
			if s.c.sleep(s.ctx, s.c.backoff(try)) != nil {
				return
			}
		}
	}()
	return done
}

// settleNotHeld settles a release whose earlier attempt may have released:
// ErrNotHeld then means the lock is not held, by that attempt's doing or
// because it moved on, which is what the release was for.
func settleNotHeld(err error) error {
	if errors.Is(err, ErrNotHeld) {
		return nil
	}
	return err
}

// lostAck annotates the error of an Ack retried after an attempt whose
// answer was lost: ErrItemNotFound then does not tell whether that attempt
// removed the item, or whether the lease expired meanwhile and the item went
// back to the queue (and on to another consumer, who may have acked it).
func lostAck(err error) error {
	if errors.Is(err, ErrItemNotFound) {
		return fmt.Errorf("%w (an earlier attempt's answer was lost: that Ack may or may not have been applied; "+
			"the item may be gone by it, or have gone back to the queue with an ended lease)", err)
	}
	return err
}

// awaitCleanup waits until the cleanup c (nil: none) is over, or ctx ends.
func awaitCleanup(ctx context.Context, c <-chan struct{}) error {
	if c == nil {
		return nil
	}
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Fence reports whether token is held now by a holder of the lock named
// name: false once the lock has moved on (released, its lease lost). A
// linearizable read; WithSerializable answers from the contacted member.
// To make a write conditional on it, use the Fence Cmp in a transaction.
func (c *Client) Fence(ctx context.Context, name string, token uint64, opts ...OpOption) (bool, error) {
	s, err := applyOptions("Fence", optSerializable, opts)
	if err != nil {
		return false, err
	}
	req := &catalogpb.FenceRequest{Name: name, Token: token, Serializable: s.serializable}
	resp, err := invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.FenceResponse, error) {
		return c.lockClient().Fence(ctx, req)
	})
	if err != nil {
		return false, err
	}
	return resp.GetValid(), nil
}

// GetLock returns the lock name's holders and waiters (State is absent when
// it has neither). It takes WithSerializable.
func (c *Client) GetLock(ctx context.Context, name string, opts ...OpOption) (*catalogpb.GetLockResponse, error) {
	s, err := applyOptions("GetLock", optSerializable, opts)
	if err != nil {
		return nil, err
	}
	req := &catalogpb.GetLockRequest{Name: name, Serializable: s.serializable}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.GetLockResponse, error) {
		return c.lockClient().Get(ctx, req)
	})
}

// ListLocks lists lock names (mutexes, RW locks, semaphores, elections) by
// prefix and kind, a page at a time.
func (c *Client) ListLocks(ctx context.Context, req *catalogpb.ListLocksRequest) (*catalogpb.ListLocksResponse, error) {
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.ListLocksResponse, error) {
		return c.lockClient().List(ctx, req)
	})
}

// GetBarrier returns a barrier (State is absent when it does not exist). It
// takes WithSerializable.
func (c *Client) GetBarrier(ctx context.Context, name string, opts ...OpOption) (*catalogpb.GetBarrierResponse, error) {
	s, err := applyOptions("GetBarrier", optSerializable, opts)
	if err != nil {
		return nil, err
	}
	req := &catalogpb.GetBarrierRequest{Name: name, Serializable: s.serializable}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.GetBarrierResponse, error) {
		return c.barrierClient().Get(ctx, req)
	})
}

// ListBarriers lists barriers by prefix, a page at a time.
func (c *Client) ListBarriers(ctx context.Context, req *catalogpb.ListBarriersRequest) (*catalogpb.ListBarriersResponse, error) {
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.ListBarriersResponse, error) {
		return c.barrierClient().List(ctx, req)
	})
}

// QueueStatus returns a queue's depth, items in flight, waiting consumers
// and, with req.Items, its ready items. A queue without items is empty, not
// an error.
func (c *Client) QueueStatus(ctx context.Context, req *catalogpb.QueueStatusRequest) (*catalogpb.QueueStatusResponse, error) {
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.QueueStatusResponse, error) {
		return c.queueClient().Status(ctx, req)
	})
}

// ListQueues lists queues by prefix, a page at a time.
func (c *Client) ListQueues(ctx context.Context, req *catalogpb.ListQueuesRequest) (*catalogpb.ListQueuesResponse, error) {
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.ListQueuesResponse, error) {
		return c.queueClient().List(ctx, req)
	})
}

// Enqueue appends payload to queue; the response carries the item's id.
// It is sent again only when the cluster had no leader: after another
// failure the item may or may not have been enqueued.
func (c *Client) Enqueue(ctx context.Context, queue string, payload []byte) (*catalogpb.EnqueueResponse, error) {
	req := &catalogpb.EnqueueRequest{Queue: queue, Payload: payload}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.EnqueueResponse, error) {
		return c.queueClient().Enqueue(ctx, req)
	})
}

// Ack removes item id of queue, which must be handed to lease (else
// ErrItemNotFound). It is retried like a read. When an attempt's answer was
// lost and a retry finds the item not handed to lease, the error wraps
// ErrItemNotFound and says so: the lost attempt may have removed the item,
// or may not have been applied (the lease ended and the item went back to
// the queue); the caller cannot tell which.
func (c *Client) Ack(ctx context.Context, queue string, id uint64, lease int64) (*catalogpb.AckResponse, error) {
	req := &catalogpb.AckRequest{Queue: queue, Id: id, Lease: lease}
	return invokeSettle(ctx, c, lostAck, func(ctx context.Context) (*catalogpb.AckResponse, error) {
		return c.queueClient().Ack(ctx, req)
	})
}

// ElectionLeader returns the election's leadership now (HasLeader false
// when it has none). It takes WithSerializable.
func (c *Client) ElectionLeader(ctx context.Context, name string, opts ...OpOption) (*catalogpb.LeaderResponse, error) {
	s, err := applyOptions("ElectionLeader", optSerializable, opts)
	if err != nil {
		return nil, err
	}
	req := &catalogpb.LeaderRequest{Name: name, Serializable: s.serializable}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.LeaderResponse, error) {
		return c.electionClient().Leader(ctx, req)
	})
}

// ObserveElection streams the election's leadership: the current one first,
// then each change (a new leader, a new value, no leader). When the stream
// breaks it reconnects, to any endpoint, and resumes: a leadership already
// delivered is not delivered again, and one older than the last delivered
// (from a member behind the others) is skipped; changes that came and went
// while disconnected are not replayed, the leadership after them is. The
// channel closes when ctx ends, the client is closed, or a server refuses
// the request (a bad name, a name used by a lock of another kind).
func (c *Client) ObserveElection(ctx context.Context, name string) <-chan *catalogpb.LeaderResponse {
	out := make(chan *catalogpb.LeaderResponse)
	go func() {
		defer close(out)
		var last *catalogpb.LeaderResponse
		for try := 0; ctx.Err() == nil; try++ {
			streamCtx, cancel := context.WithCancel(ctx)
			stream, err := c.electionClient().Observe(streamCtx, &catalogpb.LeaderRequest{Name: name})
			for err == nil {
				var resp *catalogpb.LeaderResponse
				if resp, err = stream.Recv(); err != nil {
					break
				}
				try = 0
				if sameLeadership(last, resp) || resp.GetHeader().GetRevision() < last.GetHeader().GetRevision() {
					continue
				}
				last = resp
				select {
				case out <- resp:
				case <-ctx.Done():
				}
			}
			cancel()
			if ctx.Err() != nil || c.isClosed() || observeRefused(toError(err)) {
				return
			}
			if c.sleep(ctx, c.backoff(try)) != nil {
				return
			}
		}
	}()
	return out
}

// observeRefused reports whether an Observe stream ended in a way a new
// stream would end too: a server's answer about the request (a bad name, a
// name that is not an election) rather than about reaching the cluster.
func observeRefused(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if definite(err) {
		return true
	}
	switch e.Code {
	case codes.InvalidArgument, codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// sameLeadership reports whether a and b show the same leadership: both
// none, or the same leader (lease and token) with the same value.
func sameLeadership(a, b *catalogpb.LeaderResponse) bool {
	if a == nil || b == nil {
		return false
	}
	if !a.GetHasLeader() || !b.GetHasLeader() {
		return a.GetHasLeader() == b.GetHasLeader()
	}
	return a.GetLeader().GetLease() == b.GetLeader().GetLease() &&
		a.GetLeader().GetToken() == b.GetLeader().GetToken() &&
		bytes.Equal(a.GetValue(), b.GetValue())
}

// Fence targets whether token is held now by a holder of the lock named
// name; compare it with a bool using "=" or "!=":
//
//	c.NewTxn(ctx).
//		If(sdk.Compare(sdk.Fence("jobs/lock", m.Token()), "=", true)).
//		Then(sdk.OpPut("jobs/state", "done")).
//		Commit()
//
// commits the Put only while the mutex still holds that token: a holder
// that was paused past its lease cannot write once the lock moved on.
func Fence(name string, token uint64) Cmp {
	return Cmp{pb: &catalogpb.Compare{
		Key:         []byte(name),
		Target:      catalogpb.Compare_FENCE,
		TargetUnion: &catalogpb.Compare_FenceToken{FenceToken: token},
	}}
}

// FenceItem is Fence for a queue item's delivery: it names the item by its
// key "queue/id" and the token it was handed out with (item.Token). A
// transaction conditioned on Compare(FenceItem(item), "=", true) commits
// only while the item is still handed to that delivery: not once it was
// acked, nor once the consumer's lease ended and it went back to the queue
// (a redelivery has a higher token).
func FenceItem(item *catalogpb.QueueItem) Cmp {
	return Fence(item.GetQueue()+"/"+strconv.FormatUint(item.GetId(), 10), item.GetToken())
}

// cloneLeaderKey returns a copy of k (nil for nil).
func cloneLeaderKey(k *catalogpb.LeaderKey) *catalogpb.LeaderKey {
	if k == nil {
		return nil
	}
	return proto.Clone(k).(*catalogpb.LeaderKey)
}
