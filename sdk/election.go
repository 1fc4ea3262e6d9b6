package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// An Election elects one leader among the sessions campaigning on a name,
// in arrival order. The leader's key carries a fencing token (as a Mutex's
// does) and a value it publishes with Proclaim; Observe follows the
// leadership. Leadership ends with Resign or with the session's lease (Done
// is then closed), and passes to the next candidate in the same step.
//
// An Election is one session's candidacy on one name: one Campaign at a
// time. Its methods are safe for concurrent use.
type Election struct {
	s    *Session
	name string

	mu     sync.Mutex
	leader *catalogpb.LeaderKey
	value  []byte
	// cleanup closes when the removal of an abandoned campaign is over.
	cleanup <-chan struct{}
}

// NewElection returns the election on name for s's lease.
func NewElection(s *Session, name string) *Election {
	return &Election{s: s, name: name}
}

// Campaign waits until the session leads the election, with value as the
// leader's value, ctx ends (it returns ctx.Err() and the candidacy is
// withdrawn) or the session ends (its Err). Like Mutex.Lock it rides out a
// lost connection without losing its place.
func (e *Election) Campaign(ctx context.Context, value []byte) error {
	e.mu.Lock()
	cleanup, leader := e.cleanup, e.leader
	e.mu.Unlock()
	if leader != nil {
		return fmt.Errorf("%w: election %q is already led by this session (token %d); Proclaim changes the value",
			ErrInvalidArgument, e.name, leader.GetToken())
	}
	if err := awaitCleanup(ctx, cleanup); err != nil {
		return err
	}
	req := &catalogpb.CampaignRequest{Name: e.name, Lease: e.s.id, Value: value}
	client := e.s.c.electionClient()
	// Each attempt has its own waiter id (see waitAttempts).
	attempts := &waitAttempts{}
	resp, out, err := waitCall(ctx, e.s.c, e.s, func(ctx context.Context) (*catalogpb.CampaignResponse, error) {
		req.WaiterId, req.RetryOf = attempts.next()
		return client.Campaign(ctx, req)
	})
	if err != nil {
		if out.abandoned && e.s.Err() == nil {
			e.abandon(req, attempts)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("campaign in election %q: %w", e.name, err)
	}
	e.mu.Lock()
	e.leader, e.value = resp.GetLeader(), resp.GetValue()
	e.mu.Unlock()
	return nil
}

// abandon starts withdrawing a candidacy the request's attempts may have
// left: each rejoin is a new attempt of the call (see locker.abandon).
func (e *Election) abandon(req *catalogpb.CampaignRequest, attempts *waitAttempts) {
	client := e.s.c.electionClient()
	done := e.s.cleanupWait(func(ctx context.Context) error {
		req.WaiterId, req.RetryOf = attempts.next()
		resp, err := client.Campaign(ctx, req)
		if err != nil {
			return err
		}
		_, err = invokeSettle(ctx, e.s.c, settleNotHeld, func(ctx context.Context) (*catalogpb.ResignResponse, error) {
			return client.Resign(ctx, &catalogpb.ResignRequest{Leader: resp.GetLeader()})
		})
		return err
	})
	e.mu.Lock()
	e.cleanup = done
	e.mu.Unlock()
}

// Proclaim sets the leader's value without an election. It fails with
// ErrNotHeld unless the session leads (a leadership lost meanwhile is
// forgotten).
func (e *Election) Proclaim(ctx context.Context, value []byte) error {
	e.mu.Lock()
	leader := e.leader
	e.mu.Unlock()
	if leader == nil {
		return fmt.Errorf("%w: proclaim in election %q: this session does not lead it", ErrNotHeld, e.name)
	}
	req := &catalogpb.ProclaimRequest{Leader: leader, Value: value}
	client := e.s.c.electionClient()
	_, err := invokeSettle(ctx, e.s.c, nil, func(ctx context.Context) (*catalogpb.ProclaimResponse, error) {
		return client.Proclaim(ctx, req)
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case err == nil:
		if e.leader == leader {
			e.value = value
		}
		return nil
	case errors.Is(err, ErrNotHeld) || errors.Is(err, ErrLeaseNotFound):
		if e.leader == leader {
			e.leader, e.value = nil, nil
		}
	}
	return fmt.Errorf("proclaim in election %q (token %d): %w", e.name, leader.GetToken(), err)
}

// Resign gives up the leadership; the next candidate leads in the same
// step. Without leadership it does nothing. A leadership lost meanwhile
// (the lease ended) fails with ErrNotHeld.
func (e *Election) Resign(ctx context.Context) error {
	e.mu.Lock()
	leader, cleanup := e.leader, e.cleanup
	e.mu.Unlock()
	if leader == nil {
		return awaitCleanup(ctx, cleanup)
	}
	req := &catalogpb.ResignRequest{Leader: leader}
	client := e.s.c.electionClient()
	_, err := invokeSettle(ctx, e.s.c, settleNotHeld, func(ctx context.Context) (*catalogpb.ResignResponse, error) {
		return client.Resign(ctx, req)
	})
	if err == nil || errors.Is(err, ErrNotHeld) || errors.Is(err, ErrLeaseNotFound) {
		e.mu.Lock()
		if e.leader == leader {
			e.leader, e.value = nil, nil
		}
		e.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("resign from election %q (token %d): %w", e.name, leader.GetToken(), err)
	}
	return nil
}

// Leader returns the election's leadership now (HasLeader false when it has
// none), whoever leads.
func (e *Election) Leader(ctx context.Context, opts ...OpOption) (*catalogpb.LeaderResponse, error) {
	return e.s.c.ElectionLeader(ctx, e.name, opts...)
}

// Observe streams the election's leadership: the current one, then every
// change, until ctx ends (see Client.ObserveElection).
func (e *Election) Observe(ctx context.Context) <-chan *catalogpb.LeaderResponse {
	return e.s.c.ObserveElection(ctx, e.name)
}

// Key returns the session's leader key (name, lease, token, revision), or
// nil when it does not lead.
func (e *Election) Key() *catalogpb.LeaderKey {
	e.mu.Lock()
	defer e.mu.Unlock()
	return cloneLeaderKey(e.leader)
}

// Token returns the fencing token of the session's leadership, 0 when it
// does not lead.
func (e *Election) Token() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leader.GetToken()
}

// Value returns the value the session leads with (nil when it does not).
func (e *Election) Value() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]byte(nil), e.value...)
}

// Name returns the election's name.
func (e *Election) Name() string { return e.name }

// Done is closed when the session's lease is lost (or the session closed):
// a leadership, if any, is then gone.
func (e *Election) Done() <-chan struct{} { return e.s.Done() }
