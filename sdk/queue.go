package sdk

import (
	"context"
	"fmt"
	"sync"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A Queue is a FIFO work queue consumed through a session: Dequeue hands an
// item to the session's lease and Ack removes it. An item whose consumer's
// lease ends before its Ack goes back to the head of the queue and is
// handed out again (at-least-once: QueueItem.Deliveries counts the times).
// Enqueue needs no session (Client.Enqueue).
//
// A Queue is one session's consumer on one queue: one Dequeue at a time.
// Its methods are safe for concurrent use.
type Queue struct {
	s    *Session
	name string

	mu sync.Mutex
	// cleanup closes when the removal of an abandoned Dequeue is over;
	// pending is an item that removal found handed out, returned by the
	// next Dequeue.
	cleanup <-chan struct{}
	pending *catalogpb.QueueItem
}

// NewQueue returns the consumer of queue name for s's lease.
func NewQueue(s *Session, name string) *Queue {
	return &Queue{s: s, name: name}
}

// Enqueue appends payload to the queue and returns the item's id (see
// Client.Enqueue).
func (q *Queue) Enqueue(ctx context.Context, payload []byte) (uint64, error) {
	resp, err := q.s.c.Enqueue(ctx, q.name, payload)
	if err != nil {
		return 0, fmt.Errorf("enqueue to %q: %w", q.name, err)
	}
	return resp.GetId(), nil
}

// Dequeue waits until an item is handed to the session and returns it, or
// returns ctx.Err() when ctx ends (the wait is removed, and an item handed
// out meanwhile goes back to the queue) or the session's Err when it ends.
// Like Mutex.Lock it rides out a lost connection without losing its place
// or the item handed out. Ack the item once it is processed. The item
// carries the fencing token of its delivery (item.Token): FenceItem(item)
// guards the writes its processing makes.
func (q *Queue) Dequeue(ctx context.Context) (*catalogpb.QueueItem, error) {
	return q.dequeue(ctx, false)
}

// TryDequeue returns the queue's first ready item, handed to the session,
// or nil when there is none; it does not wait.
func (q *Queue) TryDequeue(ctx context.Context) (*catalogpb.QueueItem, error) {
	return q.dequeue(ctx, true)
}

func (q *Queue) dequeue(ctx context.Context, try bool) (*catalogpb.QueueItem, error) {
	q.mu.Lock()
	cleanup := q.cleanup
	q.mu.Unlock()
	if err := awaitCleanup(ctx, cleanup); err != nil {
		return nil, err
	}
	q.mu.Lock()
	item := q.pending
	q.pending = nil
	q.mu.Unlock()
	if item != nil && q.s.Err() == nil {
		return item, nil
	}
	req := &catalogpb.DequeueRequest{Queue: q.name, Lease: q.s.id, Try: try}
	client := q.s.c.queueClient()
	// Each attempt has its own waiter id and names the earlier ones, so
	// that an item handed to an attempt whose answer was lost is answered
	// again (see waitAttempts).
	attempts := &waitAttempts{}
	resp, out, err := waitCall(ctx, q.s.c, q.s, func(ctx context.Context) (*catalogpb.DequeueResponse, error) {
		req.WaiterId, req.RetryOf = attempts.next()
		return client.Dequeue(ctx, req)
	})
	if err != nil {
		if out.abandoned && q.s.Err() == nil {
			q.abandon(req, attempts)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("dequeue from %q: %w", q.name, err)
	}
	if resp.GetItem() == nil && !try {
		return nil, fmt.Errorf("dequeue from %q: the server answered without an item", q.name)
	}
	return resp.GetItem(), nil
}

// abandon starts removing a Dequeue wait the request's attempts may have
// left. Each rejoin is a new attempt of the call, naming the earlier ones
// in retry_of: if an item was handed to one of them meanwhile, the server
// either gives it back (the rejoining call is cancelled) or hands it over
// again, re-tagged: then the next Dequeue returns it.
func (q *Queue) abandon(req *catalogpb.DequeueRequest, attempts *waitAttempts) {
	client := q.s.c.queueClient()
	done := q.s.cleanupWait(func(ctx context.Context) error {
		req.WaiterId, req.RetryOf = attempts.next()
		resp, err := client.Dequeue(ctx, req)
		if err != nil {
			return err
		}
		if item := resp.GetItem(); item != nil {
			q.mu.Lock()
			q.pending = item
			q.mu.Unlock()
		}
		return nil
	})
	q.mu.Lock()
	q.cleanup = done
	q.mu.Unlock()
}

// Ack removes item id, which must be handed to the session (else
// ErrItemNotFound): the work it stood for is done. It is retried after a
// lost answer; if the retry then finds the item not handed to the session,
// the error wraps ErrItemNotFound and says the lost attempt may or may not
// have been applied: it may have removed the item, or the lease may have
// ended meanwhile (even if the session did not see it yet) and the item
// gone back to the queue, to be handed out again.
func (q *Queue) Ack(ctx context.Context, id uint64) error {
	req := &catalogpb.AckRequest{Queue: q.name, Id: id, Lease: q.s.id}
	client := q.s.c.queueClient()
	_, err := invokeSettle(ctx, q.s.c, lostAck, func(ctx context.Context) (*catalogpb.AckResponse, error) {
		return client.Ack(ctx, req)
	})
	if err != nil {
		return fmt.Errorf("ack item %d of %q: %w", id, q.name, err)
	}
	return nil
}

// Status returns the queue's depth, items in flight and waiting consumers.
func (q *Queue) Status(ctx context.Context) (*catalogpb.QueueStatus, error) {
	resp, err := q.s.c.QueueStatus(ctx, &catalogpb.QueueStatusRequest{Queue: q.name})
	if err != nil {
		return nil, err
	}
	return resp.GetStatus(), nil
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// Done is closed when the session's lease is lost (or the session closed):
// the items handed to it and not acked have gone back to the queue.
func (q *Queue) Done() <-chan struct{} { return q.s.Done() }
