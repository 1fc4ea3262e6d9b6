package sdk

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

func lockRequests(f *coordFake) []*catalogpb.LockRequest {
	var out []*catalogpb.LockRequest
	for _, m := range f.got("Lock") {
		out = append(out, m.(*catalogpb.LockRequest))
	}
	return out
}

func granted(token uint64) func(context.Context, *catalogpb.LockRequest) (*catalogpb.LockResponse, error) {
	return func(context.Context, *catalogpb.LockRequest) (*catalogpb.LockResponse, error) {
		return &catalogpb.LockResponse{Header: coordHeader(), Acquired: true, Token: token}, nil
	}
}

// distinctWaiterIDs fails the test unless ids are non-zero and all
// different: each attempt of a blocking call has its own waiter id.
func distinctWaiterIDs(t *testing.T, what string, ids []uint64) {
	t.Helper()
	seen := map[uint64]bool{}
	for i, id := range ids {
		if id == 0 || seen[id] {
			t.Fatalf("%s attempt %d has waiter_id %d (all: %v), want a fresh non-zero id per attempt", what, i, id, ids)
		}
		seen[id] = true
	}
}

// TestLockRetriesUseFreshWaiterIDs: a Lock whose attempts fail without an
// answer about the wait (no server, no leader, a server timeout) is sent
// again by the same lease, which keeps the server's place in line, each
// attempt with its own waiter id: the cancel an earlier attempt's member
// proposes names that attempt's id and cannot release what a later one
// was granted.
func TestLockRetriesUseFreshWaiterIDs(t *testing.T) {
	f := startCoordFake(t)
	f.set(func(f *coordFake) {
		f.lock = failing([]error{
			errUnavailable,
			reasonErr(t, codes.Unavailable, catalogpb.ErrorReason_NO_LEADER, "no leader"),
			reasonErr(t, codes.DeadlineExceeded, catalogpb.ErrorReason_TIMEOUT, "proposal timed out"),
			reasonErr(t, codes.Unavailable, catalogpb.ErrorReason_STOPPED, "member stopping"),
		}, granted(17))
	})
	_, s := newFakeSession(t, f, Config{})
	m := NewMutex(s, "jobs")
	if err := m.Lock(t.Context()); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if m.Token() != 17 {
		t.Errorf("Token = %d, want 17", m.Token())
	}
	reqs := lockRequests(f)
	if len(reqs) != 5 {
		t.Fatalf("server got %d Lock attempts, want 5", len(reqs))
	}
	var ids []uint64
	for i, r := range reqs {
		ids = append(ids, r.GetWaiterId())
		if r.GetLease() != s.Lease() || r.GetName() != "jobs" ||
			r.GetKind() != catalogpb.LockKind_LOCK_KIND_MUTEX || r.GetTry() {
			t.Errorf("attempt %d = %v, want mutex \"jobs\" on lease %d", i, r, s.Lease())
		}
	}
	distinctWaiterIDs(t, "Lock", ids)

	if err := m.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if m.Token() != 0 {
		t.Errorf("Token after Unlock = %d, want 0", m.Token())
	}
	if err := m.Lock(t.Context()); err != nil {
		t.Fatalf("second Lock: %v", err)
	}
	reqs = lockRequests(f)
	ids = append(ids, reqs[len(reqs)-1].GetWaiterId())
	distinctWaiterIDs(t, "Lock", ids)
}

// TestLockRetriesAfterALateAttempt: once a Lock was retried, an answer of
// WAIT_SUPERSEDED may come from an earlier attempt of the same call whose
// proposal was applied after the retry's (its answer was lost, not its
// proposal) and which the retry's retry_of no longer names (more than 16
// attempts back; the server refuses a named one): the call sends one more
// attempt, which takes the wait back. It does so at most once per earlier
// attempt that failed that way.
func TestLockRetriesAfterALateAttempt(t *testing.T) {
	superseded := reasonErr(t, codes.Aborted, catalogpb.ErrorReason_WAIT_SUPERSEDED, "another call of the lease took over the wait")
	f := startCoordFake(t)
	f.set(func(f *coordFake) { f.lock = failing([]error{errUnavailable, superseded}, granted(5)) })
	_, s := newFakeSession(t, f, Config{})
	m := NewMutex(s, "jobs")
	if err := m.Lock(t.Context()); err != nil {
		t.Fatalf("Lock superseded after a retry = %v, want it taken back and granted", err)
	}
	reqs := lockRequests(f)
	if len(reqs) != 3 || m.Token() != 5 {
		t.Fatalf("%d attempts, token %d; want 3 attempts and token 5", len(reqs), m.Token())
	}
	checkRetryOf(t, reqs, 0)
	if err := m.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}

	// One attempt whose answer was lost explains one takeover, not two.
	f.set(func(f *coordFake) { f.lock = failing([]error{errUnavailable, superseded, superseded}, granted(6)) })
	if err := m.Lock(t.Context()); !errors.Is(err, ErrWaitSuperseded) {
		t.Fatalf("Lock superseded twice after one lost answer = %v, want ErrWaitSuperseded", err)
	}
	if n := len(lockRequests(f)) - len(reqs); n != 3 {
		t.Errorf("server got %d more attempts, want 3", n)
	}
}

// TestLockAndCampaignRetriesCarryRetryOf: every retry of a Lock (of a
// Mutex, an RWMutex, a Semaphore) or a Campaign names the waiter ids of the
// call's earlier attempts in retry_of, the most recent 16, so that the
// server retires them: an earlier attempt applied after the retry changes
// nothing. A new call starts without retry_of.
func TestLockAndCampaignRetriesCarryRetryOf(t *testing.T) {
	lost := make([]error, 20)
	for i := range lost {
		lost[i] = errUnavailable
	}
	helpers := []struct {
		name string
		lock func(*Session, string) (func(context.Context) error, func(context.Context) error)
	}{
		{"mutex", func(s *Session, n string) (func(context.Context) error, func(context.Context) error) {
			m := NewMutex(s, n)
			return m.Lock, m.TryLock
		}},
		{"rwmutex", func(s *Session, n string) (func(context.Context) error, func(context.Context) error) {
			m := NewRWMutex(s, n)
			return m.RLock, m.TryLock
		}},
		{"semaphore", func(s *Session, n string) (func(context.Context) error, func(context.Context) error) {
			m := NewSemaphore(s, n, 3)
			return func(ctx context.Context) error { return m.Acquire(ctx, 2) },
				func(ctx context.Context) error { return m.TryAcquire(ctx, 1) }
		}},
	}
	for _, h := range helpers {
		t.Run(h.name, func(t *testing.T) {
			f := startCoordFake(t)
			f.set(func(f *coordFake) { f.lock = failing(lost, granted(9)) })
			_, s := newFakeSession(t, f, Config{})
			lock, _ := h.lock(s, "jobs")
			if err := lock(t.Context()); err != nil {
				t.Fatalf("lock: %v", err)
			}
			reqs := lockRequests(f)
			if len(reqs) != len(lost)+1 {
				t.Fatalf("server got %d Lock attempts, want %d", len(reqs), len(lost)+1)
			}
			checkRetryOf(t, reqs, 0)
			if got := reqs[len(reqs)-1].GetRetryOf(); len(got) != maxRetryOf {
				t.Errorf("last attempt names %d earlier attempts, want %d", len(got), maxRetryOf)
			}

			// A new call (on a new helper: the first one holds) starts
			// afresh, and so do the retries of a try.
			f.set(func(f *coordFake) { f.lock = failing([]error{errUnavailable}, granted(10)) })
			_, try := h.lock(s, "other")
			if err := try(t.Context()); err != nil {
				t.Fatalf("try: %v", err)
			}
			all := lockRequests(f)
			next := all[len(reqs):]
			if len(next) != 2 || !next[0].GetTry() || len(next[0].GetRetryOf()) != 0 {
				t.Fatalf("try attempts = %v, want two, the first without retry_of", next)
			}
			checkRetryOf(t, next, 0)
			distinctWaiterIDs(t, "Lock", []uint64{reqs[0].GetWaiterId(), next[0].GetWaiterId()})
		})
	}

	t.Run("campaign", func(t *testing.T) {
		f := startCoordFake(t)
		f.set(func(f *coordFake) {
			f.campaign = failing(lost, func(_ context.Context, req *catalogpb.CampaignRequest) (*catalogpb.CampaignResponse, error) {
				return &catalogpb.CampaignResponse{Header: coordHeader(), Leader: &catalogpb.LeaderKey{Name: req.Name, Lease: req.Lease, Token: 4}}, nil
			})
		})
		_, s := newFakeSession(t, f, Config{})
		if err := NewElection(s, "e").Campaign(t.Context(), []byte("v")); err != nil {
			t.Fatalf("Campaign: %v", err)
		}
		var reqs []*catalogpb.CampaignRequest
		for _, m := range f.got("Campaign") {
			reqs = append(reqs, m.(*catalogpb.CampaignRequest))
		}
		if len(reqs) != len(lost)+1 {
			t.Fatalf("server got %d Campaign attempts, want %d", len(reqs), len(lost)+1)
		}
		checkRetryOf(t, reqs, 0)
	})
}

// TestLockAnswersAreNotRetried: an answer about the wait itself ends the
// call after one attempt, mapped to its sentinel.
func TestLockAnswersAreNotRetried(t *testing.T) {
	tests := []struct {
		reason catalogpb.ErrorReason
		code   codes.Code
		want   error
	}{
		{catalogpb.ErrorReason_WAIT_SUPERSEDED, codes.Aborted, ErrWaitSuperseded},
		{catalogpb.ErrorReason_LOCK_KIND_MISMATCH, codes.FailedPrecondition, ErrKindMismatch},
		{catalogpb.ErrorReason_PERMITS_EXCEEDED, codes.FailedPrecondition, ErrPermitsExceeded},
		{catalogpb.ErrorReason_LEASE_NOT_FOUND, codes.NotFound, ErrLeaseNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.reason.String(), func(t *testing.T) {
			f := startCoordFake(t)
			serverErr := reasonErr(t, tt.code, tt.reason, "refused: "+tt.reason.String())
			f.set(func(f *coordFake) { f.lock = failing([]error{serverErr}, granted(1)) })
			_, s := newFakeSession(t, f, Config{})
			err := NewSemaphore(s, "pool", 3).Acquire(t.Context(), 2)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Acquire = %v, want %v", err, tt.want)
			}
			if n := len(f.got("Lock")); n != 1 {
				t.Errorf("server got %d attempts, want 1", n)
			}
			req := lockRequests(f)[0]
			if req.GetKind() != catalogpb.LockKind_LOCK_KIND_SEMAPHORE || req.GetLimit() != 3 || req.GetPermits() != 2 {
				t.Errorf("request = %v, want a semaphore of limit 3 asked for 2 permits", req)
			}
		})
	}
}

// TestLockEndsWithItsContext: cancelling or timing out a waiting Lock
// returns the context's own error after one attempt (a blocking call is
// never sent again on DeadlineExceeded), and the server sees the call
// cancelled; Config.RequestTimeout does not cut a wait short.
func TestLockEndsWithItsContext(t *testing.T) {
	f := startCoordFake(t)
	f.set(func(f *coordFake) { f.lock = hang[*catalogpb.LockRequest, *catalogpb.LockResponse] })
	_, s := newFakeSession(t, f, Config{RequestTimeout: 20 * time.Millisecond})
	m := NewMutex(s, "jobs")

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := m.Lock(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Lock with a deadline = %v, want context.DeadlineExceeded itself", err)
	}
	if n := len(f.got("Lock")); n != 1 {
		t.Errorf("server got %d Lock attempts, want 1 (not cut by RequestTimeout, not retried)", n)
	}

	calls := f.notifyCalls()
	ctx, cancel = context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- m.Lock(ctx) }()
	waitCallOf(t, calls, "Lock")
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Fatalf("cancelled Lock = %v, want context.Canceled itself", err)
	}
	if m.Token() != 0 {
		t.Errorf("Token after a cancelled Lock = %d, want 0", m.Token())
	}
}

// TestLockEndedByTheServerOnTheDeadline: a server that ends the call on
// the deadline gRPC sent it, a moment before the caller's context expires,
// gets the same answer as the context's own end: ctx.Err(), no retry, and
// no cleanup (the server removed the wait itself).
func TestLockEndedByTheServerOnTheDeadline(t *testing.T) {
	f := startCoordFake(t)
	f.set(func(f *coordFake) {
		f.lock = func(ctx context.Context, _ *catalogpb.LockRequest) (*catalogpb.LockResponse, error) {
			deadline, ok := ctx.Deadline()
			if !ok {
				return nil, status.Error(codes.Internal, "fake: the call has no deadline")
			}
			time.Sleep(time.Until(deadline) - 100*time.Millisecond)
			return nil, status.Error(codes.DeadlineExceeded, "fake: deadline reached")
		}
	})
	_, s := newFakeSession(t, f, Config{})
	m := NewMutex(s, "jobs")
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := m.Lock(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Lock = %v, want context.DeadlineExceeded itself", err)
	}
	if n := len(f.got("Lock")); n != 1 {
		t.Errorf("server got %d Lock attempts, want 1", n)
	}
	m.l.mu.Lock()
	cleanup := m.l.cleanup
	m.l.mu.Unlock()
	if cleanup != nil {
		t.Errorf("a cleanup started for a wait the server removed")
	}
}

// TestAbandonedWaitIsRemoved: when the caller gives up while an earlier
// attempt's answer was lost, the server may still hold the wait: the SDK
// rejoins it (a new attempt, with its own waiter id, which takes the wait
// over) and, finding it granted meanwhile, releases that grant.
func TestAbandonedWaitIsRemoved(t *testing.T) {
	saved := cleanupHold
	cleanupHold = 200 * time.Millisecond
	t.Cleanup(func() { cleanupHold = saved })

	f := startCoordFake(t)
	f.set(func(f *coordFake) { f.lock = failing([]error{errUnavailable}, granted(23)) })
	c, s := newFakeSession(t, f, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The caller gives up while the client waits to retry.
	c.sleep = func(context.Context, time.Duration) error {
		cancel()
		return context.Canceled
	}
	calls := f.notifyCalls()
	m := NewMutex(s, "jobs")
	if err := m.Lock(ctx); err != context.Canceled {
		t.Fatalf("Lock = %v, want context.Canceled", err)
	}
	waitCallOf(t, calls, "Unlock")
	reqs := lockRequests(f)
	if len(reqs) != 2 {
		t.Fatalf("Lock requests = %v, want the abandoned call rejoined once", reqs)
	}
	checkRetryOf(t, reqs, 0)
	if reqs[1].GetLease() != s.Lease() || reqs[1].GetName() != "jobs" {
		t.Errorf("rejoin = %v, want \"jobs\" on lease %d", reqs[1], s.Lease())
	}
	unlock := f.got("Unlock")[0].(*catalogpb.UnlockRequest)
	if unlock.GetToken() != 23 || unlock.GetName() != "jobs" || unlock.GetLease() != s.Lease() {
		t.Errorf("cleanup Unlock = %v, want token 23 of \"jobs\" on lease %d", unlock, s.Lease())
	}
	if m.Token() != 0 {
		t.Errorf("Token = %d after an abandoned Lock, want 0", m.Token())
	}
}

// TestTryLock: a try that cannot be granted fails with ErrLocked.
func TestTryLock(t *testing.T) {
	f := startCoordFake(t)
	f.set(func(f *coordFake) {
		f.lock = func(context.Context, *catalogpb.LockRequest) (*catalogpb.LockResponse, error) {
			return &catalogpb.LockResponse{Header: coordHeader(), State: &catalogpb.LockState{
				Name: "jobs", Holders: []*catalogpb.LockOwner{{Lease: 9, Token: 5}},
			}}, nil
		}
	})
	_, s := newFakeSession(t, f, Config{})
	m := NewRWMutex(s, "jobs")
	err := m.TryRLock(t.Context())
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("TryRLock = %v, want ErrLocked", err)
	}
	req := lockRequests(f)[0]
	if !req.GetTry() || req.GetMode() != catalogpb.LockMode_LOCK_MODE_SHARED || req.GetKind() != catalogpb.LockKind_LOCK_KIND_RWLOCK {
		t.Errorf("request = %v, want a shared try on an RW lock", req)
	}
	if m.Token() != 0 {
		t.Errorf("Token = %d, want 0", m.Token())
	}
}

// TestUnlockSettles: an Unlock whose first answer was lost and whose retry
// finds the token not held succeeded; a first answer of ErrNotHeld is an
// error.
func TestUnlockSettles(t *testing.T) {
	f := startCoordFake(t)
	notHeld := reasonErr(t, codes.FailedPrecondition, catalogpb.ErrorReason_LOCK_NOT_HELD, `token 1 does not hold lock "jobs"`)
	f.set(func(f *coordFake) {
		f.unlock = failing([]error{errUnavailable, notHeld, notHeld}, func(context.Context, *catalogpb.UnlockRequest) (*catalogpb.UnlockResponse, error) {
			return &catalogpb.UnlockResponse{Header: coordHeader()}, nil
		})
	})
	_, s := newFakeSession(t, f, Config{})
	m := NewMutex(s, "jobs")
	if err := m.Lock(t.Context()); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if err := m.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock after a lost answer = %v, want success", err)
	}
	if n := len(f.got("Unlock")); n != 2 {
		t.Errorf("server got %d Unlock attempts, want 2", n)
	}
	if err := m.Unlock(t.Context()); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Unlock of a mutex not held = %v, want ErrNotHeld", err)
	}
	if err := m.Lock(t.Context()); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if err := m.Unlock(t.Context()); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Unlock answered LOCK_NOT_HELD = %v, want ErrNotHeld", err)
	}
	if m.Token() != 0 {
		t.Errorf("Token after a refused Unlock = %d, want 0 (the lock moved on)", m.Token())
	}
}

// TestSessionEndsWithItsLease: Done closes and Err matches
// ErrLeaseNotFound when renewals say the lease is gone, and a Lock waiting
// then returns that error; Close revokes the lease.
func TestSessionEndsWithItsLease(t *testing.T) {
	f := startCoordFake(t)
	gone := make(chan struct{})
	f.set(func(f *coordFake) {
		f.lock = hang[*catalogpb.LockRequest, *catalogpb.LockResponse]
		f.renew = func(int64) int64 {
			select {
			case <-gone:
				return 0
			default:
				return -1 // wait for the test
			}
		}
	})
	_, s := newFakeSession(t, f, Config{})
	if s.Lease() != 42 || s.TTL() != time.Minute {
		t.Fatalf("session lease %d TTL %v, want 42 and 1m", s.Lease(), s.TTL())
	}
	calls := f.notifyCalls()
	m := NewMutex(s, "jobs")
	errc := make(chan error, 1)
	go func() { errc <- m.Lock(t.Context()) }()
	waitCallOf(t, calls, "Lock")

	// The keep-alive sends its unanswered renewal again and hears the
	// lease is gone.
	close(gone)
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the lease was found gone")
	}
	if err := s.Err(); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("Err = %v, want ErrLeaseNotFound", err)
	}
	if err := <-errc; !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("waiting Lock = %v, want the session's ErrLeaseNotFound", err)
	}
	if err := m.Lock(t.Context()); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("Lock on an ended session = %v, want ErrLeaseNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if revokes := f.got("Revoke"); len(revokes) != 1 || revokes[0].(*catalogpb.LeaseRevokeRequest).GetId() != 42 {
		t.Errorf("Revoke requests = %v, want lease 42 once", revokes)
	}
}

// TestSessionPresumedExpired: a session whose renewals go unanswered for
// its TTL ends, its lease presumed expired.
func TestSessionPresumedExpired(t *testing.T) {
	f := startCoordFake(t)
	f.set(func(f *coordFake) {
		f.ttl = 1
		f.renew = func(int64) int64 { return -1 }
	})
	_, s := newFakeSession(t, f, Config{})
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed though no renewal was answered for the TTL")
	}
	if err := s.Err(); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("Err = %v, want ErrLeaseNotFound", err)
	}
}

func TestSessionOptions(t *testing.T) {
	f := startCoordFake(t)
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	for _, opts := range [][]SessionOption{
		{WithSessionTTL(0)},
		{WithSessionLease(-1)},
		{WithSessionTTL(time.Minute), WithSessionLease(7)},
	} {
		if _, err := NewSession(t.Context(), c, opts...); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("NewSession with bad options = %v, want ErrInvalidArgument", err)
		}
	}
	s, err := NewSession(t.Context(), c, WithSessionLease(7))
	if err != nil {
		t.Fatalf("NewSession(WithSessionLease(7)): %v", err)
	}
	if s.Lease() != 7 || len(f.got("Grant")) != 0 {
		t.Errorf("session on lease %d after %d grants, want lease 7 and no grant", s.Lease(), len(f.got("Grant")))
	}
	s.Orphan()
	if !errors.Is(s.Err(), ErrSessionClosed) {
		t.Errorf("Err after Orphan = %v, want ErrSessionClosed", s.Err())
	}
	if n := len(f.got("Revoke")); n != 0 {
		t.Errorf("Orphan revoked the lease (%d revokes)", n)
	}
}

// TestCampaignAndResign: Campaign rides out a lost connection, each attempt
// with its own waiter id; Resign sends the leader key and a retry that
// finds the leadership gone succeeded (it is not held either way).
func TestCampaignAndResign(t *testing.T) {
	f := startCoordFake(t)
	notHeld := reasonErr(t, codes.FailedPrecondition, catalogpb.ErrorReason_LOCK_NOT_HELD, "not held")
	f.set(func(f *coordFake) {
		f.campaign = failing([]error{errUnavailable}, func(_ context.Context, req *catalogpb.CampaignRequest) (*catalogpb.CampaignResponse, error) {
			return &catalogpb.CampaignResponse{Header: coordHeader(), Leader: &catalogpb.LeaderKey{Name: req.Name, Lease: req.Lease, Token: 31, Revision: 9}, Value: req.Value}, nil
		})
		f.resign = failing([]error{errUnavailable, notHeld}, func(context.Context, *catalogpb.ResignRequest) (*catalogpb.ResignResponse, error) {
			return &catalogpb.ResignResponse{Header: coordHeader()}, nil
		})
	})
	_, s := newFakeSession(t, f, Config{})
	e := NewElection(s, "leader")
	if err := e.Campaign(t.Context(), []byte("me")); err != nil {
		t.Fatalf("Campaign: %v", err)
	}
	reqs := f.got("Campaign")
	if len(reqs) != 2 {
		t.Fatalf("Campaign attempts = %v, want 2", reqs)
	}
	distinctWaiterIDs(t, "Campaign", []uint64{reqs[0].(*catalogpb.CampaignRequest).GetWaiterId(), reqs[1].(*catalogpb.CampaignRequest).GetWaiterId()})
	if e.Token() != 31 || string(e.Value()) != "me" || e.Key().GetRevision() != 9 {
		t.Errorf("after Campaign: token %d value %q key %v, want 31, \"me\", revision 9", e.Token(), e.Value(), e.Key())
	}
	if err := e.Campaign(t.Context(), []byte("again")); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Campaign while leading = %v, want ErrInvalidArgument", err)
	}
	if err := e.Resign(t.Context()); err != nil {
		t.Fatalf("Resign after a lost answer = %v, want success", err)
	}
	resign := f.got("Resign")[0].(*catalogpb.ResignRequest)
	if resign.GetLeader().GetToken() != 31 || resign.GetLeader().GetLease() != s.Lease() {
		t.Errorf("Resign sent %v, want the leader key of token 31", resign)
	}
	if e.Key() != nil || e.Token() != 0 {
		t.Errorf("after Resign: key %v token %d, want none", e.Key(), e.Token())
	}
	if err := e.Resign(t.Context()); err != nil {
		t.Errorf("Resign without leadership = %v, want nil", err)
	}
	if err := e.Proclaim(t.Context(), []byte("x")); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Proclaim without leadership = %v, want ErrNotHeld", err)
	}
}

func leaderResp(rev int64, lease int64, token uint64, value string) *catalogpb.LeaderResponse {
	if lease == 0 {
		return &catalogpb.LeaderResponse{Header: &catalogpb.ResponseHeader{Revision: rev}}
	}
	return &catalogpb.LeaderResponse{
		Header:    &catalogpb.ResponseHeader{Revision: rev},
		HasLeader: true,
		Leader:    &catalogpb.LeaderKey{Name: "e", Lease: lease, Token: token},
		Value:     []byte(value),
	}
}

// TestObserveResumes: a broken Observe stream is opened again; the
// leadership it starts with, already delivered, is not delivered twice,
// and a stale answer is skipped.
func TestObserveResumes(t *testing.T) {
	f := startCoordFake(t)
	streams := [][]*catalogpb.LeaderResponse{
		{leaderResp(5, 0, 0, ""), leaderResp(6, 1, 10, "a")},
		{leaderResp(6, 1, 10, "a"), leaderResp(4, 0, 0, ""), leaderResp(8, 1, 10, "b")},
		{leaderResp(8, 1, 10, "b"), leaderResp(9, 2, 12, "c")},
	}
	f.set(func(f *coordFake) {
		n := 0
		f.observe = func(req *catalogpb.LeaderRequest, stream catalogpb.Election_ObserveServer) error {
			f.mu.Lock()
			i := n
			n++
			f.mu.Unlock()
			if i >= len(streams) {
				<-stream.Context().Done()
				return nil
			}
			for _, resp := range streams[i] {
				if err := stream.Send(resp); err != nil {
					return err
				}
			}
			return errUnavailable // the stream breaks
		}
	})
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := c.ObserveElection(ctx, "e")
	want := []*catalogpb.LeaderResponse{leaderResp(5, 0, 0, ""), leaderResp(6, 1, 10, "a"), leaderResp(8, 1, 10, "b"), leaderResp(9, 2, 12, "c")}
	for i, w := range want {
		select {
		case got := <-ch:
			if !proto.Equal(got, w) {
				t.Fatalf("observed #%d = %v, want %v", i, got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("observed %d of %d leaderships", i, len(want))
		}
	}
	cancel()
	for got := range ch {
		t.Errorf("observed %v after the last change", got)
	}
}

// TestObserveStopsWhenRefused: a name the server refuses closes the channel.
func TestObserveStopsWhenRefused(t *testing.T) {
	f := startCoordFake(t)
	f.set(func(f *coordFake) {
		f.observe = func(*catalogpb.LeaderRequest, catalogpb.Election_ObserveServer) error {
			return reasonErr(t, codes.FailedPrecondition, catalogpb.ErrorReason_LOCK_KIND_MISMATCH, `"e" is a mutex`)
		}
	})
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	for got := range c.ObserveElection(t.Context(), "e") {
		t.Errorf("observed %v from a refused stream", got)
	}
	if n := len(f.got("Observe")); n != 1 {
		t.Errorf("Observe opened %d times, want 1", n)
	}
}

// dequeueRequests returns the Dequeue requests f received, in order.
func dequeueRequests(f *coordFake) []*catalogpb.DequeueRequest {
	var out []*catalogpb.DequeueRequest
	for _, m := range f.got("Dequeue") {
		out = append(out, m.(*catalogpb.DequeueRequest))
	}
	return out
}

// An attemptRequest is a request of a blocking call that names its
// earlier attempts (Lock, Campaign, Dequeue).
type attemptRequest interface {
	GetWaiterId() uint64
	GetRetryOf() []uint64
}

// checkRetryOf fails the test unless each attempt (a Lock, Campaign or
// Dequeue request) has a fresh waiter id and names in retry_of the ids of
// the attempts before it (the most recent 16) since attempt from.
func checkRetryOf[R attemptRequest](t *testing.T, reqs []R, from int) {
	t.Helper()
	var ids []uint64
	for _, r := range reqs {
		ids = append(ids, r.GetWaiterId())
	}
	distinctWaiterIDs(t, "blocking call", ids)
	for i := from; i < len(reqs); i++ {
		want := ids[from:i]
		if len(want) > maxRetryOf {
			want = want[len(want)-maxRetryOf:]
		}
		got := reqs[i].GetRetryOf()
		if len(got) != len(want) {
			t.Fatalf("attempt %d retry_of = %v, want %v", i, got, want)
		}
		for j := range want {
			if got[j] != want[j] {
				t.Fatalf("attempt %d retry_of = %v, want %v", i, got, want)
			}
		}
	}
}

// TestDequeueRetries: Dequeue rides out a lost connection, each attempt
// with its own waiter id and naming the earlier attempts' ids in retry_of
// (the most recent 16), so that an item handed to one of them is answered
// again; the next call starts afresh.
func TestDequeueRetries(t *testing.T) {
	f := startCoordFake(t)
	lost := make([]error, 20)
	for i := range lost {
		lost[i] = errUnavailable
	}
	f.set(func(f *coordFake) {
		f.dequeue = failing(lost, func(_ context.Context, req *catalogpb.DequeueRequest) (*catalogpb.DequeueResponse, error) {
			return &catalogpb.DequeueResponse{Header: coordHeader(), Item: &catalogpb.QueueItem{Queue: req.Queue, Id: 1, Payload: []byte("job"), Consumer: req.Lease, WaiterId: req.WaiterId}}, nil
		})
	})
	_, s := newFakeSession(t, f, Config{})
	q := NewQueue(s, "q")
	item, err := q.Dequeue(t.Context())
	if err != nil {
		t.Fatalf("Dequeue: %v", err)
	}
	reqs := dequeueRequests(f)
	if len(reqs) != 21 || item.GetId() != 1 || string(item.GetPayload()) != "job" {
		t.Fatalf("Dequeue = %v after %d attempts, want item 1 after 21", item, len(reqs))
	}
	for i, r := range reqs {
		if r.GetQueue() != "q" || r.GetLease() != s.Lease() || r.GetTry() {
			t.Errorf("attempt %d = %v, want a waiting Dequeue of \"q\" by lease %d", i, r, s.Lease())
		}
	}
	checkRetryOf(t, reqs, 0)

	// A new call: a fresh id, no retry_of.
	if _, err := q.TryDequeue(t.Context()); err != nil {
		t.Fatalf("TryDequeue: %v", err)
	}
	reqs = dequeueRequests(f)
	last := reqs[len(reqs)-1]
	if !last.GetTry() || len(last.GetRetryOf()) != 0 {
		t.Errorf("next call = %v, want a try without retry_of", last)
	}
	checkRetryOf(t, reqs[len(reqs)-1:], 0)
	distinctWaiterIDs(t, "Dequeue", []uint64{reqs[0].GetWaiterId(), last.GetWaiterId()})
}

// TestAbandonedDequeueIsRemoved: a Dequeue given up after an attempt's
// answer was lost is rejoined as one more attempt of the call, which names
// the abandoned attempts in retry_of; an item it is answered (handed to
// one of them) is returned by the next Dequeue.
func TestAbandonedDequeueIsRemoved(t *testing.T) {
	saved := cleanupHold
	cleanupHold = 200 * time.Millisecond
	t.Cleanup(func() { cleanupHold = saved })

	f := startCoordFake(t)
	f.set(func(f *coordFake) {
		f.dequeue = failing([]error{errUnavailable}, func(_ context.Context, req *catalogpb.DequeueRequest) (*catalogpb.DequeueResponse, error) {
			return &catalogpb.DequeueResponse{Header: coordHeader(), Item: &catalogpb.QueueItem{Queue: req.Queue, Id: 7, Consumer: req.Lease, WaiterId: req.WaiterId}}, nil
		})
	})
	c, s := newFakeSession(t, f, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The caller gives up while the client waits to retry.
	c.sleep = func(context.Context, time.Duration) error {
		cancel()
		return context.Canceled
	}
	q := NewQueue(s, "q")
	if _, err := q.Dequeue(ctx); err != context.Canceled {
		t.Fatalf("Dequeue = %v, want context.Canceled", err)
	}
	item, err := q.Dequeue(t.Context())
	if err != nil {
		t.Fatalf("Dequeue after the cleanup: %v", err)
	}
	if item.GetId() != 7 {
		t.Fatalf("Dequeue after the cleanup = %v, want item 7 the rejoin was handed", item)
	}
	reqs := dequeueRequests(f)
	if len(reqs) != 2 {
		t.Fatalf("Dequeue requests = %v, want the abandoned attempt and its rejoin (the item then came from the rejoin)", reqs)
	}
	checkRetryOf(t, reqs, 0)
}

// TestAckAfterALostAnswer: an Ack whose first answer was lost and whose
// retry finds the item not handed to the session fails with an error that
// wraps ErrItemNotFound and says the lost attempt may or may not have been
// applied (the lease may have ended meanwhile and the item gone to another
// consumer); a first answer of ErrItemNotFound is a plain ErrItemNotFound.
func TestAckAfterALostAnswer(t *testing.T) {
	f := startCoordFake(t)
	notFound := reasonErr(t, codes.NotFound, catalogpb.ErrorReason_QUEUE_ITEM_NOT_FOUND, `queue "q" has no item 1 handed to lease 42`)
	f.set(func(f *coordFake) {
		f.ack = failing([]error{errUnavailable, notFound, notFound}, func(context.Context, *catalogpb.AckRequest) (*catalogpb.AckResponse, error) {
			return &catalogpb.AckResponse{Header: coordHeader()}, nil
		})
	})
	c, s := newFakeSession(t, f, Config{})
	q := NewQueue(s, "q")
	err := q.Ack(t.Context(), 1)
	if !errors.Is(err, ErrItemNotFound) {
		t.Fatalf("Ack after a lost answer = %v, want an error wrapping ErrItemNotFound", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "answer was lost") || !strings.Contains(msg, "may or may not have been applied") {
		t.Errorf("Ack after a lost answer says %q, want it to say the first answer was lost and the Ack may or may not have been applied", msg)
	}
	if n := len(f.got("Ack")); n != 2 {
		t.Errorf("server got %d Ack attempts, want 2", n)
	}
	err = q.Ack(t.Context(), 1)
	if !errors.Is(err, ErrItemNotFound) || strings.Contains(err.Error(), "answer was lost") {
		t.Fatalf("Ack answered QUEUE_ITEM_NOT_FOUND at once = %v, want a plain ErrItemNotFound", err)
	}
	if err := q.Ack(t.Context(), 1); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	for i, m := range f.got("Ack") {
		if r := m.(*catalogpb.AckRequest); r.GetQueue() != "q" || r.GetId() != 1 || r.GetLease() != s.Lease() {
			t.Errorf("Ack attempt %d = %v, want item 1 of \"q\" for lease %d", i, r, s.Lease())
		}
	}

	// Client.Ack says the same.
	f.set(func(f *coordFake) {
		f.ack = failing([]error{errUnavailable, notFound}, func(context.Context, *catalogpb.AckRequest) (*catalogpb.AckResponse, error) {
			return &catalogpb.AckResponse{Header: coordHeader()}, nil
		})
	})
	if _, err := c.Ack(t.Context(), "q", 1, s.Lease()); !errors.Is(err, ErrItemNotFound) || !strings.Contains(err.Error(), "answer was lost") {
		t.Errorf("Client.Ack after a lost answer = %v, want ErrItemNotFound saying the answer was lost", err)
	}
}

// TestLeaveAfterALostAnswer: a Leave whose answer was lost and whose retry
// is told the session is not a participant waits for the barrier to go,
// as the lost attempt would have.
func TestLeaveAfterALostAnswer(t *testing.T) {
	f := startCoordFake(t)
	notEntered := reasonErr(t, codes.FailedPrecondition, catalogpb.ErrorReason_BARRIER_NOT_ENTERED, "lease 42 did not enter")
	f.set(func(f *coordFake) {
		f.leave = failing([]error{errUnavailable, notEntered, notEntered}, func(context.Context, *catalogpb.BarrierLeaveRequest) (*catalogpb.BarrierLeaveResponse, error) {
			return &catalogpb.BarrierLeaveResponse{Header: coordHeader()}, nil
		})
	})
	_, s := newFakeSession(t, f, Config{})
	b := NewDoubleBarrier(s, "step", 2)
	if err := b.Enter(t.Context()); err != nil {
		t.Fatalf("Enter: %v", err)
	}
	// The fake's GetBarrier says the barrier is gone.
	if err := b.Leave(t.Context()); err != nil {
		t.Fatalf("Leave after a lost answer = %v, want success", err)
	}
	if n := len(f.got("GetBarrier")); n != 1 {
		t.Errorf("Leave read the barrier %d times, want 1", n)
	}
	if err := b.Leave(t.Context()); !errors.Is(err, ErrNotEntered) {
		t.Errorf("Leave without Enter = %v, want ErrNotEntered", err)
	}
}

// TestCoordinationErrorMapping: reasons 32..38 map to their sentinels and
// to no other.
func TestCoordinationErrorMapping(t *testing.T) {
	tests := []struct {
		reason catalogpb.ErrorReason
		code   codes.Code
		want   error
	}{
		{catalogpb.ErrorReason_LOCK_NOT_HELD, codes.FailedPrecondition, ErrNotHeld},
		{catalogpb.ErrorReason_LOCK_KIND_MISMATCH, codes.FailedPrecondition, ErrKindMismatch},
		{catalogpb.ErrorReason_PERMITS_EXCEEDED, codes.FailedPrecondition, ErrPermitsExceeded},
		{catalogpb.ErrorReason_BARRIER_NOT_ENTERED, codes.FailedPrecondition, ErrNotEntered},
		{catalogpb.ErrorReason_BARRIER_MISMATCH, codes.FailedPrecondition, ErrBarrierMismatch},
		{catalogpb.ErrorReason_QUEUE_ITEM_NOT_FOUND, codes.NotFound, ErrItemNotFound},
		{catalogpb.ErrorReason_WAIT_SUPERSEDED, codes.Aborted, ErrWaitSuperseded},
	}
	for _, tt := range tests {
		t.Run(tt.reason.String(), func(t *testing.T) {
			msg := "server says " + tt.reason.String()
			err := toError(reasonErr(t, tt.code, tt.reason, msg))
			if !errors.Is(err, tt.want) || err.Error() != msg {
				t.Fatalf("mapped %v to %v (%q), want %v with the server's message", tt.reason, err, err.Error(), tt.want)
			}
			for _, row := range errorTable {
				if row.err != tt.want && errors.Is(err, row.err) {
					t.Errorf("error also matches %v", row.err)
				}
			}
		})
	}
}

func TestFenceCmp(t *testing.T) {
	tests := []struct {
		op      string
		v       any
		want    catalogpb.Compare_Result
		wantErr bool
	}{
		{"=", true, catalogpb.Compare_EQUAL, false},
		{"==", true, catalogpb.Compare_EQUAL, false},
		{"!=", true, catalogpb.Compare_NOT_EQUAL, false},
		{"=", false, catalogpb.Compare_NOT_EQUAL, false},
		{"!=", false, catalogpb.Compare_EQUAL, false},
		{">", true, 0, true},
		{"=", 7, 0, true},
	}
	for _, tt := range tests {
		cmp := Compare(Fence("jobs", 12), tt.op, tt.v)
		if tt.wantErr {
			if !errors.Is(cmp.err, ErrInvalidArgument) {
				t.Errorf("Compare(Fence, %q, %v) error = %v, want ErrInvalidArgument", tt.op, tt.v, cmp.err)
			}
			continue
		}
		if cmp.err != nil {
			t.Fatalf("Compare(Fence, %q, %v): %v", tt.op, tt.v, cmp.err)
		}
		want := &catalogpb.Compare{Key: []byte("jobs"), Target: catalogpb.Compare_FENCE, Result: tt.want,
			TargetUnion: &catalogpb.Compare_FenceToken{FenceToken: 12}}
		if !proto.Equal(cmp.pb, want) {
			t.Errorf("Compare(Fence, %q, %v) = %v, want %v", tt.op, tt.v, cmp.pb, want)
		}
	}
}

// The helpers' Lock and Unlock go over one Lock.Stream per client, which
// carries the retries, the errors and the cancellations of the unary calls.
func TestLockCallsShareOneStream(t *testing.T) {
	f := startCoordFake(t)
	f.set(func(f *coordFake) {
		f.lockStream = true
		f.lock = failing([]error{
			errUnavailable,
			reasonErr(t, codes.Unavailable, catalogpb.ErrorReason_NO_LEADER, "no leader"),
		}, granted(17))
	})
	_, s := newFakeSession(t, f, Config{})
	m1, m2 := NewMutex(s, "a"), NewMutex(s, "b")
	if err := m1.Lock(t.Context()); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if err := m2.Lock(t.Context()); err != nil {
		t.Fatalf("second Lock: %v", err)
	}
	if m1.Token() != 17 || m2.Token() != 17 {
		t.Errorf("tokens %d and %d, want 17", m1.Token(), m2.Token())
	}
	if err := m1.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if n := len(lockRequests(f)); n != 4 {
		t.Errorf("server got %d Lock attempts, want 4 (two failed)", n)
	}
	if n := len(f.got("Unlock")); n != 1 {
		t.Errorf("server got %d Unlock calls, want 1", n)
	}
	opens, _ := streamCounts(f)
	if opens != 1 {
		t.Errorf("%d lock streams opened, want 1", opens)
	}
	// A refusal arrives with its reason, as from the unary call.
	f.set(func(f *coordFake) {
		f.unlock = func(context.Context, *catalogpb.UnlockRequest) (*catalogpb.UnlockResponse, error) {
			return nil, reasonErr(t, codes.FailedPrecondition, catalogpb.ErrorReason_LOCK_NOT_HELD, "token 17 does not hold b")
		}
	})
	if err := m2.Unlock(t.Context()); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Unlock of a lock that moved on: %v, want ErrNotHeld", err)
	}
}

// A stream that breaks under a call fails it as a lost connection: the call
// is retried on a new stream.
func TestLockStreamBrokenUnderACall(t *testing.T) {
	f := startCoordFake(t)
	f.set(func(f *coordFake) {
		f.lockStream = true
		f.lock = failing([]error{errBreakStream}, granted(5))
	})
	_, s := newFakeSession(t, f, Config{})
	m := NewMutex(s, "a")
	if err := m.Lock(t.Context()); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	reqs := lockRequests(f)
	if len(reqs) != 2 || m.Token() != 5 {
		t.Fatalf("%d attempts, token %d: want 2 attempts and token 5", len(reqs), m.Token())
	}
	distinctWaiterIDs(t, "Lock", []uint64{reqs[0].GetWaiterId(), reqs[1].GetWaiterId()})
	opens, _ := streamCounts(f)
	if opens != 2 {
		t.Errorf("%d lock streams opened, want 2", opens)
	}
}

// A Lock whose context ends cancels its call on the stream: the server's
// handler sees its context end (and would remove the wait).
func TestLockOverTheStreamEndsWithItsContext(t *testing.T) {
	f := startCoordFake(t)
	serverEnded := make(chan error, 1)
	f.set(func(f *coordFake) {
		f.lockStream = true
		f.lock = func(ctx context.Context, req *catalogpb.LockRequest) (*catalogpb.LockResponse, error) {
			<-ctx.Done()
			select {
			case serverEnded <- ctx.Err():
			default: // the cleanup's later calls
			}
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	})
	_, s := newFakeSession(t, f, Config{})
	m := NewMutex(s, "a")
	calls := f.notifyCalls()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Lock(ctx) }()
	waitCallOf(t, calls, "Lock")
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock after its context was cancelled: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Lock did not return after its context was cancelled")
	}
	select {
	case err := <-serverEnded:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("server's call ended with %v, want Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server's call was not cancelled")
	}
}

// FenceItem names a queue item by its key "queue/id" and its delivery's token.
func TestFenceItem(t *testing.T) {
	cmp := Compare(FenceItem(&catalogpb.QueueItem{Queue: "jobs/nightly", Id: 17, Token: 9}), "=", true)
	want := &catalogpb.Compare{Key: []byte("jobs/nightly/17"), Target: catalogpb.Compare_FENCE, Result: catalogpb.Compare_EQUAL,
		TargetUnion: &catalogpb.Compare_FenceToken{FenceToken: 9}}
	if cmp.err != nil || !proto.Equal(cmp.pb, want) {
		t.Fatalf("Compare(FenceItem(...)) = %v, %v; want %v", cmp.pb, cmp.err, want)
	}
}

// DoubleBarrier.Token is the token of the participation Enter answered.
func TestDoubleBarrierToken(t *testing.T) {
	f := startCoordFake(t)
	f.set(func(f *coordFake) {
		f.enter = func(_ context.Context, req *catalogpb.BarrierEnterRequest) (*catalogpb.BarrierEnterResponse, error) {
			return &catalogpb.BarrierEnterResponse{Header: coordHeader(), Token: 33,
				State: &catalogpb.BarrierState{Name: req.Name, Open: true, CreateRevision: 3}}, nil
		}
	})
	_, s := newFakeSession(t, f, Config{})
	b := NewDoubleBarrier(s, "step", 1)
	if b.Token() != 0 {
		t.Fatalf("Token before Enter = %d, want 0", b.Token())
	}
	if err := b.Enter(t.Context()); err != nil {
		t.Fatalf("Enter: %v", err)
	}
	if b.Token() != 33 {
		t.Errorf("Token after Enter = %d, want 33", b.Token())
	}
}
