package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"github.com/catalogd/catalogd/locks"
	"github.com/catalogd/catalogd/registry"
)

// The coordination services (Lock, Election, Barrier, Queue) are thin
// handlers over the locks package: validate, propose a LocksCommand, and,
// for the calls that block, follow the name's events (lockNotifier) until
// the outcome. Holders and waiters are replicated state: a call that ends
// because its member stops leaves its wait in place, and the client's
// retry on another member with the same lease continues it (the SDK gives
// each attempt its own waiter_id and names the earlier ones in retry_of:
// the retry re-tags the wait or hold and retires those ids, so a cancel for
// an earlier attempt's id no longer matches it, and an earlier attempt
// applied late changes nothing instead of taking the place back).

// maxCoordListLimit is the most names one List returns.
const maxCoordListLimit = 10000

// cancelWaitTimeout bounds the best-effort proposal that removes the wait
// of a call whose client went away.
const cancelWaitTimeout = 5 * time.Second

// proposeLocks proposes one coordination write and returns what apply
// answered, of type R. Errors are not mapped.
func proposeLocks[R proto.Message](ctx context.Context, s *Server, cmd *catalogpb.LocksCommand) (R, error) {
	var zero R
	v, err := s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_Locks{Locks: cmd}})
	if err != nil {
		return zero, err
	}
	resp, ok := v.(R)
	if !ok {
		return zero, fmt.Errorf("server: apply returned %T for %T", v, cmd.Op)
	}
	return resp, nil
}

// setLocksHeader sets the header of a response of locks.Apply.
func setLocksHeader(m proto.Message, h *catalogpb.ResponseHeader) {
	switch r := m.(type) {
	case *catalogpb.LockResponse:
		r.Header = h
	case *catalogpb.UnlockResponse:
		r.Header = h
	case *catalogpb.ProclaimResponse:
		r.Header = h
	case *catalogpb.BarrierSetResponse:
		r.Header = h
	case *catalogpb.BarrierReleaseResponse:
		r.Header = h
	case *catalogpb.BarrierEnterResponse:
		r.Header = h
	case *catalogpb.BarrierLeaveResponse:
		r.Header = h
	case *catalogpb.EnqueueResponse:
		r.Header = h
	case *catalogpb.DequeueResponse:
		r.Header = h
	case *catalogpb.AckResponse:
		r.Header = h
	}
}

// newWaiterID returns id, or a random non-zero id when id is 0.
func newWaiterID(id uint64) uint64 {
	for id == 0 {
		id = rand.Uint64()
	}
	return id
}

// endWait is how a blocking call ends when following its name failed. When
// its client went away (ctx ended) and this member is not stopping, the
// call's wait is removed, best effort, so that it does not hold its place
// for a caller who is gone; on a stopping member the wait stays for the
// client's retry elsewhere.
func (s *Server) endWait(ctx context.Context, err error, target catalogpb.CancelWaitCommand_Target, name string, leaseID int64, waiterID uint64) error {
	if ctx.Err() != nil && !errors.Is(err, errServerStopping) && !s.stopping() {
		s.cancelWait(target, name, leaseID, waiterID)
		return toGRPCError(ctx.Err())
	}
	return toGRPCError(err)
}

func (s *Server) cancelWait(target catalogpb.CancelWaitCommand_Target, name string, leaseID int64, waiterID uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), min(cancelWaitTimeout, s.cfg.RequestTimeout))
	defer cancel()
	_, err := s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_Locks{Locks: &catalogpb.LocksCommand{
		Op: &catalogpb.LocksCommand_Cancel{Cancel: &catalogpb.CancelWaitCommand{Target: target, Name: name, Lease: leaseID, WaiterId: waiterID}},
	}}})
	if err != nil {
		s.lg.Warn("could not remove the wait of a cancelled call; it ends with its lease",
			"target", target, "name", name, "lease", leaseID, "waiter_id", waiterID, "err", err)
	}
}

// waitGone says why the wait of lease for name (what: "lock", "election",
// ...) is no longer in the state: the lease ended, or another call of the
// same lease took over or withdrew it.
func (s *Server) waitGone(what, name string, leaseID int64) error {
	exists := true
	if err := s.sm.view(func(tx *bbolt.Tx) error { exists = lease.Exists(tx, leaseID); return nil }); err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%w: lease %d ended while waiting for %s %q", locks.ErrLeaseNotFound, leaseID, what, name)
	}
	return fmt.Errorf("%w: the wait of lease %d for %s %q was taken over or withdrawn by another call of that lease", locks.ErrSuperseded, leaseID, what, name)
}

func consistencyOf(serializable bool) catalogpb.Consistency {
	if serializable {
		return catalogpb.Consistency_SERIALIZABLE
	}
	return catalogpb.Consistency_LINEARIZABLE
}

// validateCoordList checks the paging of a List call.
func validateCoordList(what, prefix, after string, limit int64) error {
	if err := locks.ValidatePrefix(what, prefix); err != nil {
		return err
	}
	if len(after) > locks.MaxNameBytes {
		return fmt.Errorf("%w: continue_after must be the last %s name of the previous page (at most %d bytes), got %d bytes",
			locks.ErrInvalidArgument, what, locks.MaxNameBytes, len(after))
	}
	if limit < 0 || limit > maxCoordListLimit {
		return fmt.Errorf("%w: limit must be 0..%d (0 means %d), got %d", registry.ErrInvalidLimit, maxCoordListLimit, locks.DefaultListLimit, limit)
	}
	return nil
}

// lockService implements catalogpb.LockServer.
type lockService struct {
	catalogpb.UnimplementedLockServer
	s *Server
}

// A lockOutcome is where a waiting call stands in a lock's state.
type lockOutcome int

const (
	lockWaiting lockOutcome = iota
	lockGranted
	lockSuperseded
	lockGone
)

// lockStanding finds the call (leaseID, waiterID) in st: the holder it is,
// if granted.
func lockStanding(st *catalogpb.LockState, leaseID int64, waiterID uint64) (lockOutcome, *catalogpb.LockOwner) {
	for _, h := range st.GetHolders() {
		if h.GetLease() == leaseID {
			if h.GetWaiterId() == waiterID {
				return lockGranted, h
			}
			return lockSuperseded, nil
		}
	}
	for _, w := range st.GetWaiters() {
		if w.GetLease() == leaseID {
			if w.GetWaiterId() == waiterID {
				return lockWaiting, nil
			}
			return lockSuperseded, nil
		}
	}
	return lockGone, nil
}

// acquire proposes req (a Lock or a Campaign) and, unless it was granted at
// once or was a try, waits until it is. It answers the granted holder and
// the state at the grant.
func (s *Server) acquire(ctx context.Context, what string, req *catalogpb.LockRequest) (*catalogpb.LockResponse, error) {
	req.WaiterId = newWaiterID(req.WaiterId)
	sub := s.coord.subscribe(locks.LockKind, req.Name)
	defer sub.close()
	resp, err := proposeLocks[*catalogpb.LockResponse](ctx, s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Acquire{Acquire: req}})
	if err != nil {
		// This includes ErrSuperseded from apply: the attempt is an earlier
		// one of a call whose later attempt (naming it in retry_of) took
		// the place; it changed nothing, and the cancel endWait may propose
		// names this attempt's id, which no longer matches the place.
		return nil, s.endWait(ctx, err, catalogpb.CancelWaitCommand_LOCK, req.Name, req.Lease, req.WaiterId)
	}
	if resp.Acquired || req.Try {
		resp.Header = s.header(resp.Header.GetRevision())
		return resp, nil
	}
	var out *catalogpb.LockResponse
	decide := func(rev int64, st *catalogpb.LockState) (bool, error) {
		switch standing, holder := lockStanding(st, req.Lease, req.WaiterId); standing {
		case lockGranted:
			out = &catalogpb.LockResponse{Header: s.header(rev), Acquired: true, Token: holder.GetToken(), State: st}
			return true, nil
		case lockSuperseded:
			return true, fmt.Errorf("%w: another call of lease %d (another waiter_id) took over its wait for %s %q", locks.ErrSuperseded, req.Lease, what, req.Name)
		case lockGone:
			return true, s.waitGone(what, req.Name, req.Lease)
		}
		return false, nil
	}
	err = s.follow(ctx, sub, resp.Header.GetRevision(),
		func(rev int64, evs []*catalogpb.Event) (bool, error) {
			// One event per name and revision: the last is the state after.
			return decide(rev, evs[len(evs)-1].GetLock())
		},
		func() (int64, bool, error) {
			st, rev, err := s.readLock(req.Name)
			if err != nil {
				return 0, true, err
			}
			done, err := decide(rev, st)
			return rev, done, err
		})
	if err != nil {
		return nil, s.endWait(ctx, err, catalogpb.CancelWaitCommand_LOCK, req.Name, req.Lease, req.WaiterId)
	}
	return out, nil
}

// readLock reads a lock's state from this member's store as it is now.
func (s *Server) readLock(name string) (st *catalogpb.LockState, rev int64, err error) {
	err = s.sm.view(func(tx *bbolt.Tx) error {
		rev = readRevision(tx)
		st, err = locks.GetLock(tx, name)
		return err
	})
	return st, rev, err
}

func (l *lockService) Lock(ctx context.Context, req *catalogpb.LockRequest) (*catalogpb.LockResponse, error) {
	if err := locks.ValidateLockRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	return l.s.acquire(ctx, "lock", proto.CloneOf(req))
}

func (l *lockService) Unlock(ctx context.Context, req *catalogpb.UnlockRequest) (*catalogpb.UnlockResponse, error) {
	if err := locks.ValidateUnlockRequest(req); err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := proposeLocks[*catalogpb.UnlockResponse](ctx, l.s, &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Release{Release: req}})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = l.s.header(resp.Header.GetRevision())
	return resp, nil
}

func (l *lockService) Fence(ctx context.Context, req *catalogpb.FenceRequest) (*catalogpb.FenceResponse, error) {
	if err := locks.ValidateName("lock", req.GetName()); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &catalogpb.FenceResponse{}
	rev, _, err := l.s.read(ctx, consistencyOf(req.GetSerializable()), func(tx *bbolt.Tx) (err error) {
		resp.Valid, resp.Current, err = locks.Fence(tx, req.GetName(), req.GetToken())
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = l.s.header(rev)
	return resp, nil
}

func (l *lockService) Get(ctx context.Context, req *catalogpb.GetLockRequest) (*catalogpb.GetLockResponse, error) {
	if err := locks.ValidateName("lock", req.GetName()); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &catalogpb.GetLockResponse{}
	rev, _, err := l.s.read(ctx, consistencyOf(req.GetSerializable()), func(tx *bbolt.Tx) (err error) {
		resp.State, err = locks.GetLock(tx, req.GetName())
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = l.s.header(rev)
	return resp, nil
}

func (l *lockService) List(ctx context.Context, req *catalogpb.ListLocksRequest) (*catalogpb.ListLocksResponse, error) {
	if err := validateCoordList("lock", req.GetPrefix(), req.GetContinueAfter(), req.GetLimit()); err != nil {
		return nil, toGRPCError(err)
	}
	switch k := req.GetKind(); k {
	case catalogpb.LockKind_LOCK_KIND_UNSPECIFIED, catalogpb.LockKind_LOCK_KIND_MUTEX, catalogpb.LockKind_LOCK_KIND_RWLOCK,
		catalogpb.LockKind_LOCK_KIND_SEMAPHORE, catalogpb.LockKind_LOCK_KIND_ELECTION:
	default:
		return nil, toGRPCError(fmt.Errorf("%w: kind must be UNSPECIFIED (every kind), MUTEX, RWLOCK, SEMAPHORE or ELECTION, got %d",
			locks.ErrInvalidArgument, int32(k)))
	}
	resp := &catalogpb.ListLocksResponse{}
	rev, _, err := l.s.read(ctx, consistencyOf(req.GetSerializable()), func(tx *bbolt.Tx) (err error) {
		resp.Locks, resp.More, err = locks.ListLocks(tx, req.GetPrefix(), req.GetKind(), req.GetContinueAfter(), int(req.GetLimit()))
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = l.s.header(rev)
	return resp, nil
}
