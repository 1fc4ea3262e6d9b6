package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A Barrier holds its waiters back while it is set: Hold sets it, Release
// removes it, Wait returns once it is not set. It needs no session; a
// barrier set with HoldWithLease is released when that lease ends. Its
// methods are safe for concurrent use.
type Barrier struct {
	c     *Client
	name  string
	token atomic.Uint64
}

// NewBarrier returns the simple barrier on name.
func NewBarrier(c *Client, name string) *Barrier {
	return &Barrier{c: c, name: name}
}

// Hold sets the barrier (setting a set barrier changes nothing).
func (b *Barrier) Hold(ctx context.Context) error { return b.HoldWithLease(ctx, 0) }

// HoldWithLease sets the barrier attached to lease (for example a
// Session's): it is released when the lease ends, if not before.
func (b *Barrier) HoldWithLease(ctx context.Context, lease int64) error {
	req := &catalogpb.BarrierSetRequest{Name: b.name, Lease: lease}
	client := b.c.barrierClient()
	resp, err := invokeSettle(ctx, b.c, nil, func(ctx context.Context) (*catalogpb.BarrierSetResponse, error) {
		return client.Set(ctx, req)
	})
	if err != nil {
		return fmt.Errorf("set barrier %q: %w", b.name, err)
	}
	b.token.Store(resp.GetToken())
	return nil
}

// Token returns the fencing token of the barrier's setting, as the last
// Hold answered it (0 before one): Fence(b.Name(), b.Token()) holds until
// the barrier is released, so work guarded by it stops once it is.
func (b *Barrier) Token() uint64 { return b.token.Load() }

// Release removes the barrier, letting its waiters through; released is
// false when it was not set (then nothing changes), which is also what a
// retry reports after an attempt whose answer was lost released it.
func (b *Barrier) Release(ctx context.Context) (released bool, err error) {
	req := &catalogpb.BarrierReleaseRequest{Name: b.name}
	client := b.c.barrierClient()
	resp, err := invokeSettle(ctx, b.c, nil, func(ctx context.Context) (*catalogpb.BarrierReleaseResponse, error) {
		return client.Release(ctx, req)
	})
	if err != nil {
		return false, fmt.Errorf("release barrier %q: %w", b.name, err)
	}
	return resp.GetReleased(), nil
}

// Wait returns once the barrier is not set (at once if it is not), or with
// ctx.Err() when ctx ends. A lost connection is ridden out.
func (b *Barrier) Wait(ctx context.Context) error {
	req := &catalogpb.BarrierWaitRequest{Name: b.name}
	client := b.c.barrierClient()
	_, _, err := waitCall(ctx, b.c, nil, func(ctx context.Context) (*catalogpb.BarrierWaitResponse, error) {
		return client.Wait(ctx, req)
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("wait on barrier %q: %w", b.name, err)
	}
	return nil
}

// Name returns the barrier's name.
func (b *Barrier) Name() string { return b.name }

// A DoubleBarrier lets count sessions start and finish a step together:
// Enter waits until count sessions have entered, Leave waits until all of
// them have left. Once open, the barrier takes no one else until all have
// left (it is then gone, and the name may be used again). A session whose
// lease ends leaves. Its methods are safe for concurrent use.
type DoubleBarrier struct {
	s     *Session
	name  string
	count int64

	mu sync.Mutex
	// createRev is the revision the barrier entered was created at.
	createRev int64
	// token is the fencing token of the participation Enter answered.
	token uint64
}

// NewDoubleBarrier returns the double barrier on name for count
// participants, entered through s's lease.
func NewDoubleBarrier(s *Session, name string, count int64) *DoubleBarrier {
	return &DoubleBarrier{s: s, name: name, count: count}
}

// Enter joins the barrier and waits until count participants have joined.
// A count other than the barrier's, or a barrier already open without this
// session, fails with ErrBarrierMismatch. If ctx ends first it returns
// ctx.Err() and the session stays a participant: call Leave (or end the
// session) to withdraw.
func (b *DoubleBarrier) Enter(ctx context.Context) error {
	if b.count < 1 {
		return fmt.Errorf("%w: enter barrier %q: count must be at least 1, got %d", ErrInvalidArgument, b.name, b.count)
	}
	req := &catalogpb.BarrierEnterRequest{Name: b.name, Lease: b.s.id, Count: b.count}
	client := b.s.c.barrierClient()
	resp, _, err := waitCall(ctx, b.s.c, b.s, func(ctx context.Context) (*catalogpb.BarrierEnterResponse, error) {
		return client.Enter(ctx, req)
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("enter barrier %q: %w", b.name, err)
	}
	b.mu.Lock()
	b.createRev = resp.GetState().GetCreateRevision()
	b.token = resp.GetToken()
	b.mu.Unlock()
	return nil
}

// Token returns the fencing token of the session's participation, as the
// last Enter answered it (0 before one): Fence(b.Name(), b.Token()) holds
// until the session leaves or its lease ends.
func (b *DoubleBarrier) Token() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.token
}

// Leave leaves the barrier and waits until every participant has left.
// Leave without Enter fails with ErrNotEntered.
func (b *DoubleBarrier) Leave(ctx context.Context) error {
	req := &catalogpb.BarrierLeaveRequest{Name: b.name, Lease: b.s.id}
	client := b.s.c.barrierClient()
	_, out, err := waitCall(ctx, b.s.c, b.s, func(ctx context.Context) (*catalogpb.BarrierLeaveResponse, error) {
		return client.Leave(ctx, req)
	})
	b.mu.Lock()
	createRev := b.createRev
	b.mu.Unlock()
	if err != nil && out.retried && createRev != 0 && errors.Is(err, ErrNotEntered) {
		// An attempt whose answer was lost had left: wait as it would have.
		err = b.awaitGone(ctx, createRev)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("leave barrier %q: %w", b.name, err)
	}
	return nil
}

// awaitGone waits until the barrier created at createRev no longer exists.
func (b *DoubleBarrier) awaitGone(ctx context.Context, createRev int64) error {
	resp, err := b.s.c.GetBarrier(ctx, b.name)
	if err != nil {
		return err
	}
	if st := resp.GetState(); st == nil || st.GetCreateRevision() != createRev {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	filter := WatchFilter{Filter: catalogpb.WatchCreateRequest_BARRIER, Key: []byte(b.name)}
	for wr := range b.s.c.Watch(ctx, filter, WithStartRevision(resp.GetHeader().GetRevision()+1)) {
		if wr.Err != nil {
			return wr.Err
		}
		for _, ev := range wr.Events {
			if ev.GetType() == catalogpb.Event_DELETE || ev.GetBarrier().GetCreateRevision() != createRev {
				return nil
			}
		}
	}
	return ctx.Err()
}

// Name returns the barrier's name.
func (b *DoubleBarrier) Name() string { return b.name }

// Count returns the number of participants the barrier waits for.
func (b *DoubleBarrier) Count() int64 { return b.count }

// Done is closed when the session's lease is lost (or the session closed):
// the session has then left the barrier.
func (b *DoubleBarrier) Done() <-chan struct{} { return b.s.Done() }
