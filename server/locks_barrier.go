package server

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
)

// barrierService implements catalogpb.BarrierServer.
type barrierService struct {
	catalogpb.UnimplementedBarrierServer
	s *Server
}

func (b *barrierService) Set(ctx context.Context, req *catalogpb.BarrierSetRequest) (*catalogpb.BarrierSetResponse, error) {
	if err := locks.ValidateBarrierSetRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := proposeLocks[*catalogpb.BarrierSetResponse](ctx, b.s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierSet{BarrierSet: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = b.s.header(resp.Header.GetRevision())
	return resp, nil
}

func (b *barrierService) Release(ctx context.Context, req *catalogpb.BarrierReleaseRequest) (*catalogpb.BarrierReleaseResponse, error) {
	if err := locks.ValidateBarrierReleaseRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := proposeLocks[*catalogpb.BarrierReleaseResponse](ctx, b.s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierRelease{BarrierRelease: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = b.s.header(resp.Header.GetRevision())
	return resp, nil
}

// readBarrier reads a barrier from this member's store as it is now.
func (s *Server) readBarrier(name string) (st *catalogpb.BarrierState, rev int64, err error) {
	err = s.sm.view(func(tx *bbolt.Tx) error {
		rev = readRevision(tx)
		st, err = locks.GetBarrier(tx, name)
		return err
	})
	return st, rev, err
}

// lastBarrier is the state after the last of a revision's barrier events
// (nil: deleted).
func lastBarrier(evs []*catalogpb.Event) *catalogpb.BarrierState {
	return evs[len(evs)-1].GetBarrier()
}

func isParticipant(st *catalogpb.BarrierState, leaseID int64) bool {
	return participant(st, leaseID) != nil
}

// participant returns lease leaseID's participation in st, or nil.
func participant(st *catalogpb.BarrierState, leaseID int64) *catalogpb.BarrierParticipant {
	for _, p := range st.GetParticipants() {
		if p.GetLease() == leaseID {
			return p
		}
	}
	return nil
}

// Wait returns once the simple barrier is not set: at once if it is not,
// else when it is released (or the lease that set it ends).
func (b *barrierService) Wait(ctx context.Context, req *catalogpb.BarrierWaitRequest) (*catalogpb.BarrierWaitResponse, error) {
	s := b.s
	if err := locks.ValidateBarrierWaitRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	sub := s.coord.subscribe(locks.BarrierKind, req.Name)
	defer sub.close()
	var st *catalogpb.BarrierState
	rev, _, err := s.read(ctx, catalogpb.Consistency_LINEARIZABLE, func(tx *bbolt.Tx) (err error) {
		st, err = locks.GetBarrier(tx, req.Name)
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	released := func(st *catalogpb.BarrierState) (bool, error) {
		if st != nil && st.GetKind() != catalogpb.BarrierKind_BARRIER_KIND_SIMPLE {
			return true, fmt.Errorf("%w: barrier %q is a %s barrier; Wait is for SIMPLE barriers (a DOUBLE barrier's Enter waits)",
				locks.ErrKindMismatch, req.Name, st.GetKind())
		}
		return st == nil, nil
	}
	if done, err := released(st); done {
		if err != nil {
			return nil, toGRPCError(err)
		}
		return &catalogpb.BarrierWaitResponse{Header: s.header(rev)}, nil
	}
	err = s.follow(ctx, sub, rev,
		func(r int64, evs []*catalogpb.Event) (bool, error) {
			rev = r
			return released(lastBarrier(evs))
		},
		func() (int64, bool, error) {
			st, r, err := s.readBarrier(req.Name)
			if err != nil {
				return 0, true, err
			}
			rev = r
			done, err := released(st)
			return r, done, err
		})
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &catalogpb.BarrierWaitResponse{Header: s.header(rev)}, nil
}

// Enter enters the double barrier and waits until it opens (count
// participants entered).
func (b *barrierService) Enter(ctx context.Context, req *catalogpb.BarrierEnterRequest) (*catalogpb.BarrierEnterResponse, error) {
	s := b.s
	if err := locks.ValidateBarrierEnterRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	sub := s.coord.subscribe(locks.BarrierKind, req.Name)
	defer sub.close()
	resp, err := proposeLocks[*catalogpb.BarrierEnterResponse](ctx, s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierEnter{BarrierEnter: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = s.header(resp.Header.GetRevision())
	if resp.GetState().GetOpen() {
		return resp, nil
	}
	created := resp.GetState().GetCreateRevision()
	decide := func(rev int64, st *catalogpb.BarrierState) (bool, error) {
		if st == nil || st.GetCreateRevision() != created || !isParticipant(st, req.Lease) {
			return true, s.waitGone("barrier", req.Name, req.Lease)
		}
		if st.GetOpen() {
			resp = &catalogpb.BarrierEnterResponse{Header: s.header(rev), State: st, Token: participant(st, req.Lease).GetToken()}
			return true, nil
		}
		return false, nil
	}
	err = s.follow(ctx, sub, resp.Header.GetRevision(),
		func(rev int64, evs []*catalogpb.Event) (bool, error) { return decide(rev, lastBarrier(evs)) },
		func() (int64, bool, error) {
			st, rev, err := s.readBarrier(req.Name)
			if err != nil {
				return 0, true, err
			}
			done, err := decide(rev, st)
			return rev, done, err
		})
	if err != nil {
		// The participant stays when the client goes: it is replicated
		// state, and a retry with the same lease continues the wait. A
		// client giving up calls Leave.
		return nil, toGRPCError(err)
	}
	return resp, nil
}

// Leave leaves the double barrier and, if it was open, waits until every
// participant has left.
func (b *barrierService) Leave(ctx context.Context, req *catalogpb.BarrierLeaveRequest) (*catalogpb.BarrierLeaveResponse, error) {
	s := b.s
	if err := locks.ValidateBarrierLeaveRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	sub := s.coord.subscribe(locks.BarrierKind, req.Name)
	defer sub.close()
	resp, err := proposeLocks[*catalogpb.BarrierLeaveResponse](ctx, s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierLeave{BarrierLeave: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	left := resp.Header.GetRevision()
	// created is the create revision of the open barrier left, 0 until the
	// leave's own event says.
	var created int64
	decide := func(rev int64, ev *catalogpb.Event) bool {
		if rev == left && created == 0 {
			if ev.GetType() == catalogpb.Event_DELETE || !ev.GetPrevBarrier().GetOpen() {
				return true // the last to leave, or a withdrawal before it opened
			}
			created = ev.GetBarrier().GetCreateRevision()
			return false
		}
		if created == 0 {
			return false
		}
		st := ev.GetBarrier()
		return st == nil || st.GetCreateRevision() != created
	}
	err = s.follow(ctx, sub, left-1,
		func(rev int64, evs []*catalogpb.Event) (bool, error) {
			done := decide(rev, evs[len(evs)-1])
			if done {
				resp.Header = s.header(rev)
			}
			return done, nil
		},
		func() (int64, bool, error) {
			st, rev, err := s.readBarrier(req.Name)
			if err != nil {
				return 0, true, err
			}
			if created == 0 && st.GetOpen() && st.GetCreateRevision() < left {
				created = st.GetCreateRevision()
			}
			done := st == nil || created == 0 || st.GetCreateRevision() != created
			if done {
				resp.Header = s.header(rev)
			}
			return rev, done, nil
		})
	if err != nil {
		return nil, toGRPCError(err)
	}
	return resp, nil
}

func (b *barrierService) Get(ctx context.Context, req *catalogpb.GetBarrierRequest) (*catalogpb.GetBarrierResponse, error) {
	if err := locks.ValidateName("barrier", req.GetName()); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &catalogpb.GetBarrierResponse{}
	rev, _, err := b.s.read(ctx, consistencyOf(req.GetSerializable()), func(tx *bbolt.Tx) (err error) {
		resp.State, err = locks.GetBarrier(tx, req.GetName())
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = b.s.header(rev)
	return resp, nil
}

func (b *barrierService) List(ctx context.Context, req *catalogpb.ListBarriersRequest) (*catalogpb.ListBarriersResponse, error) {
	if err := validateCoordList("barrier", req.GetPrefix(), req.GetContinueAfter(), req.GetLimit()); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &catalogpb.ListBarriersResponse{}
	rev, _, err := b.s.read(ctx, consistencyOf(req.GetSerializable()), func(tx *bbolt.Tx) (err error) {
		resp.Barriers, resp.More, err = locks.ListBarriers(tx, req.GetPrefix(), req.GetContinueAfter(), int(req.GetLimit()))
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = b.s.header(rev)
	return resp, nil
}
