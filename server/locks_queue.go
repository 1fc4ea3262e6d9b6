package server

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
	"github.com/catalogd/catalogd/registry"
)

const (
	// defaultQueueItems and maxQueueItems bound the ready items one Status
	// lists.
	defaultQueueItems = 100
	maxQueueItems     = 10000
)

// queueService implements catalogpb.QueueServer.
type queueService struct {
	catalogpb.UnimplementedQueueServer
	s *Server
}

func (q *queueService) Enqueue(ctx context.Context, req *catalogpb.EnqueueRequest) (*catalogpb.EnqueueResponse, error) {
	if err := locks.ValidateEnqueueRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := proposeLocks[*catalogpb.EnqueueResponse](ctx, q.s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Enqueue{Enqueue: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = q.s.header(resp.Header.GetRevision())
	return resp, nil
}

// queueStanding finds the consumer (leaseID, waiterID) among the waiting
// consumers: waiting, superseded (its lease waits with another waiter_id)
// or gone.
func queueStanding(consumers []*catalogpb.QueueConsumer, leaseID int64, waiterID uint64) lockOutcome {
	for _, c := range consumers {
		if c.GetLease() == leaseID {
			if c.GetWaiterId() == waiterID {
				return lockWaiting
			}
			return lockSuperseded
		}
	}
	return lockGone
}

// Dequeue hands the caller the queue's first ready item, or waits until an
// item is handed to it.
func (q *queueService) Dequeue(ctx context.Context, req *catalogpb.DequeueRequest) (*catalogpb.DequeueResponse, error) {
	s := q.s
	if err := locks.ValidateDequeueRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	req = &catalogpb.DequeueRequest{Queue: req.Queue, Lease: req.Lease, WaiterId: newWaiterID(req.WaiterId), Try: req.Try, RetryOf: req.RetryOf}
	sub := s.coord.subscribe(locks.QueueKind, req.Queue)
	defer sub.close()
	resp, err := proposeLocks[*catalogpb.DequeueResponse](ctx, s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Dequeue{Dequeue: req}})
	if err != nil {
		return nil, s.endWait(ctx, err, catalogpb.CancelWaitCommand_QUEUE, req.Queue, req.Lease, req.WaiterId)
	}
	resp.Header = s.header(resp.Header.GetRevision())
	if resp.Item != nil || req.Try {
		return resp, nil
	}
	mine := func(it *catalogpb.QueueItem) bool {
		return it != nil && it.GetConsumer() == req.Lease && it.GetWaiterId() == req.WaiterId
	}
	superseded := func() error {
		return fmt.Errorf("%w: another Dequeue of lease %d (another waiter_id) took over its wait on queue %q", locks.ErrSuperseded, req.Lease, req.Queue)
	}
	err = s.follow(ctx, sub, resp.Header.GetRevision(),
		func(rev int64, evs []*catalogpb.Event) (bool, error) {
			// An item handed over and the consumer leaving the waiting
			// list are one revision: look at the items first.
			for _, ev := range evs {
				if it := ev.GetQueueItem(); mine(it) {
					resp = &catalogpb.DequeueResponse{Header: s.header(rev), Item: it}
					return true, nil
				}
			}
			// The waiting consumers as the revision left them.
			var consumers *catalogpb.Event
			for _, ev := range evs {
				if ev.GetQueueItem() == nil && ev.GetPrevQueueItem() == nil {
					consumers = ev
				}
			}
			if consumers == nil {
				return false, nil
			}
			switch queueStanding(consumers.GetQueueConsumers(), req.Lease, req.WaiterId) {
			case lockSuperseded:
				return true, superseded()
			case lockGone:
				return true, s.waitGone("queue", req.Queue, req.Lease)
			}
			return false, nil
		},
		func() (int64, bool, error) {
			var st *catalogpb.QueueStatus
			var rev int64
			err := s.sm.view(func(tx *bbolt.Tx) (err error) {
				rev = readRevision(tx)
				st, err = locks.QueueStatus(tx, req.Queue, false, 0)
				return err
			})
			if err != nil {
				return 0, true, err
			}
			for _, it := range st.GetInFlight() {
				if mine(it) {
					resp = &catalogpb.DequeueResponse{Header: s.header(rev), Item: it}
					return rev, true, nil
				}
			}
			switch queueStanding(st.GetConsumers(), req.Lease, req.WaiterId) {
			case lockSuperseded:
				return rev, true, superseded()
			case lockGone:
				return rev, true, s.waitGone("queue", req.Queue, req.Lease)
			}
			return rev, false, nil
		})
	if err != nil {
		return nil, s.endWait(ctx, err, catalogpb.CancelWaitCommand_QUEUE, req.Queue, req.Lease, req.WaiterId)
	}
	return resp, nil
}

func (q *queueService) Ack(ctx context.Context, req *catalogpb.AckRequest) (*catalogpb.AckResponse, error) {
	if err := locks.ValidateAckRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := proposeLocks[*catalogpb.AckResponse](ctx, q.s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Ack{Ack: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = q.s.header(resp.Header.GetRevision())
	return resp, nil
}

func (q *queueService) Status(ctx context.Context, req *catalogpb.QueueStatusRequest) (*catalogpb.QueueStatusResponse, error) {
	if err := locks.ValidateName("queue", req.GetQueue()); err != nil {
		return nil, toGRPCError(err)
	}
	limit := req.GetLimit()
	if limit < 0 || limit > maxQueueItems {
		return nil, toGRPCError(fmt.Errorf("%w: limit must be 0..%d ready items (0 means %d), got %d", registry.ErrInvalidLimit, maxQueueItems, defaultQueueItems, limit))
	}
	if limit == 0 {
		limit = defaultQueueItems
	}
	resp := &catalogpb.QueueStatusResponse{}
	rev, _, err := q.s.read(ctx, consistencyOf(req.GetSerializable()), func(tx *bbolt.Tx) (err error) {
		resp.Status, err = locks.QueueStatus(tx, req.GetQueue(), req.GetItems(), int(limit))
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = q.s.header(rev)
	return resp, nil
}

func (q *queueService) List(ctx context.Context, req *catalogpb.ListQueuesRequest) (*catalogpb.ListQueuesResponse, error) {
	if err := validateCoordList("queue", req.GetPrefix(), req.GetContinueAfter(), req.GetLimit()); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &catalogpb.ListQueuesResponse{}
	rev, _, err := q.s.read(ctx, consistencyOf(req.GetSerializable()), func(tx *bbolt.Tx) (err error) {
		resp.Queues, resp.More, err = locks.ListQueues(tx, req.GetPrefix(), req.GetContinueAfter(), int(req.GetLimit()))
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = q.s.header(rev)
	return resp, nil
}
