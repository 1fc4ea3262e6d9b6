package tests

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/tests/framework"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCoordination runs the SDK's coordination helpers against a 3-member
// cluster: each subtest uses its own names, so they share one cluster.
func TestCoordination(t *testing.T) {
	c := framework.NewCluster(t, 3)
	c.WaitLeader(stepContext(t, electionWait))
	cli := c.Client(t)

	t.Run("MutexExclusion", func(t *testing.T) { testMutexExclusion(t, c, cli) })
	t.Run("MutexFIFO", func(t *testing.T) { testMutexFIFO(t, cli) })
	t.Run("RWMutex", func(t *testing.T) { testRWMutex(t, cli) })
	t.Run("Semaphore", func(t *testing.T) { testSemaphore(t, cli) })
	t.Run("Election", func(t *testing.T) { testElection(t, cli) })
	t.Run("Barrier", func(t *testing.T) { testBarrier(t, cli) })
	t.Run("DoubleBarrier", func(t *testing.T) { testDoubleBarrier(t, cli) })
	t.Run("QueueAtLeastOnce", func(t *testing.T) { testQueueAtLeastOnce(t, cli) })
	t.Run("FencedWrite", func(t *testing.T) { testFencedWrite(t, cli) })
	t.Run("BadInput", func(t *testing.T) { testCoordinationBadInput(t, cli) })
}

// fencedPut writes key=value in a transaction conditioned on cmp (a Fence),
// and reports whether it committed.
func fencedPut(ctx context.Context, t *testing.T, cli *sdk.Client, cmp sdk.Cmp, key, value string) bool {
	t.Helper()
	resp, err := cli.NewTxn(ctx).If(sdk.Compare(cmp, "=", true)).Then(sdk.OpPut(key, value)).Commit()
	if err != nil {
		t.Fatalf("fenced put of %s: %v", key, err)
	}
	return resp.GetSucceeded()
}

// newSession returns a session on cli, closed (its lease revoked) when t ends.
func newSession(t *testing.T, cli *sdk.Client) *sdk.Session {
	t.Helper()
	s, err := sdk.NewSession(stepContext(t, stepWait), cli)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// lockState reads lock name (nil when it has no holders or waiters).
func lockState(ctx context.Context, t *testing.T, cli *sdk.Client, name string) *catalogpb.LockState {
	t.Helper()
	resp, err := cli.GetLock(ctx, name)
	if err != nil {
		t.Fatalf("GetLock %q: %v", name, err)
	}
	return resp.GetState()
}

func ownerLeases(owners []*catalogpb.LockOwner) []int64 {
	leases := make([]int64, 0, len(owners))
	for _, o := range owners {
		leases = append(leases, o.GetLease())
	}
	return leases
}

// waitLockOwners waits until lock name has exactly these holders and
// waiters (leases, in order).
func waitLockOwners(t *testing.T, cli *sdk.Client, name string, holders, waiters []int64) {
	t.Helper()
	framework.Eventually(t, stepWait, fmt.Sprintf("lock %q held by %v with waiters %v", name, holders, waiters), func(ctx context.Context) error {
		resp, err := cli.GetLock(ctx, name)
		if err != nil {
			return err
		}
		st := resp.GetState()
		if gotH, gotW := ownerLeases(st.GetHolders()), ownerLeases(st.GetWaiters()); !slices.Equal(gotH, holders) || !slices.Equal(gotW, waiters) {
			return fmt.Errorf("held by %v, waiters %v", gotH, gotW)
		}
		return nil
	})
}

// goErr runs f in a goroutine and returns the channel of its error.
func goErr(f func() error) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	return errc
}

// recvErr waits for the error of a call started with goErr.
func recvErr(t *testing.T, errc <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-stepContext(t, stepWait).Done():
		t.Fatalf("%s did not return within %v", what, stepWait)
		return nil
	}
}

// testMutexExclusion: sessions on clients of different members take one
// mutex in turn; no two hold it at once, each grant's token is higher than
// the one before, and a token is valid (Fence) exactly while it holds.
func testMutexExclusion(t *testing.T, c *framework.Cluster, cli *sdk.Client) {
	const name, workers, rounds = "excl", 4, 3
	var (
		inside atomic.Int32
		mu     sync.Mutex
		tokens []uint64
	)
	ctx := stepContext(t, 3*stepWait)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		s := newSession(t, c.Client(t, w%c.Size()))
		m := sdk.NewMutex(s, name)
		wg.Go(func() {
			for range rounds {
				if err := m.Lock(ctx); err != nil {
					errc <- fmt.Errorf("worker %d Lock: %w", w, err)
					return
				}
				if n := inside.Add(1); n != 1 {
					errc <- fmt.Errorf("worker %d holds the mutex with %d others", w, n-1)
				}
				tok := m.Token()
				mu.Lock()
				tokens = append(tokens, tok)
				mu.Unlock()
				if ok, err := cli.Fence(ctx, name, tok); err != nil || !ok {
					errc <- fmt.Errorf("worker %d: Fence(%d) while holding = %v, %v; want valid", w, tok, ok, err)
				}
				inside.Add(-1)
				if err := m.Unlock(ctx); err != nil {
					errc <- fmt.Errorf("worker %d Unlock: %w", w, err)
					return
				}
				if ok, err := cli.Fence(ctx, name, tok); err != nil || ok {
					errc <- fmt.Errorf("worker %d: Fence(%d) after Unlock = %v, %v; want invalid", w, tok, ok, err)
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if len(tokens) != workers*rounds {
		t.Fatalf("%d grants, want %d", len(tokens), workers*rounds)
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("grant tokens in order %v: not strictly increasing at %d", tokens, i)
		}
	}
	if st := lockState(ctx, t, cli, name); st != nil {
		t.Errorf("lock after every Unlock = %v, want gone", st)
	}
}

// testMutexFIFO: waiters are granted in arrival order, each with a higher
// token, in the same step as the release; TryLock while held changes
// nothing.
func testMutexFIFO(t *testing.T, cli *sdk.Client) {
	const name = "fifo"
	ctx := stepContext(t, stepWait)
	sa, sb, sc := newSession(t, cli), newSession(t, cli), newSession(t, cli)
	a, b, cm := sdk.NewMutex(sa, name), sdk.NewMutex(sb, name), sdk.NewMutex(sc, name)
	if err := a.Lock(ctx); err != nil {
		t.Fatalf("a Lock: %v", err)
	}
	bErr := goErr(func() error { return b.Lock(ctx) })
	waitLockOwners(t, cli, name, []int64{sa.Lease()}, []int64{sb.Lease()})
	cErr := goErr(func() error { return cm.Lock(ctx) })
	waitLockOwners(t, cli, name, []int64{sa.Lease()}, []int64{sb.Lease(), sc.Lease()})

	other := sdk.NewMutex(newSession(t, cli), name)
	if err := other.TryLock(ctx); !errors.Is(err, sdk.ErrLocked) {
		t.Fatalf("TryLock of a held mutex = %v, want ErrLocked", err)
	}
	waitLockOwners(t, cli, name, []int64{sa.Lease()}, []int64{sb.Lease(), sc.Lease()})

	aTok := a.Token()
	if err := a.Unlock(ctx); err != nil {
		t.Fatalf("a Unlock: %v", err)
	}
	if err := recvErr(t, bErr, "b's Lock"); err != nil {
		t.Fatalf("b Lock: %v", err)
	}
	st := lockState(ctx, t, cli, name)
	if got := ownerLeases(st.GetWaiters()); !slices.Equal(got, []int64{sc.Lease()}) {
		t.Errorf("after a's Unlock the waiters are %v, want c's lease only", got)
	}
	if b.Token() <= aTok {
		t.Errorf("b's token %d is not above a's %d", b.Token(), aTok)
	}
	bTok := b.Token()
	if err := b.Unlock(ctx); err != nil {
		t.Fatalf("b Unlock: %v", err)
	}
	if err := recvErr(t, cErr, "c's Lock"); err != nil {
		t.Fatalf("c Lock: %v", err)
	}
	if cm.Token() <= bTok {
		t.Errorf("c's token %d is not above b's %d", cm.Token(), bTok)
	}
	if err := cm.Unlock(ctx); err != nil {
		t.Fatalf("c Unlock: %v", err)
	}
}

// testRWMutex: readers share the lock; a writer waits for them, and a
// reader arriving after the writer waits for the writer (no barging).
func testRWMutex(t *testing.T, cli *sdk.Client) {
	const name = "rw"
	ctx := stepContext(t, stepWait)
	s1, s2, sw, s3 := newSession(t, cli), newSession(t, cli), newSession(t, cli), newSession(t, cli)
	r1, r2, w, r3 := sdk.NewRWMutex(s1, name), sdk.NewRWMutex(s2, name), sdk.NewRWMutex(sw, name), sdk.NewRWMutex(s3, name)
	if err := r1.RLock(ctx); err != nil {
		t.Fatalf("r1 RLock: %v", err)
	}
	if err := r2.RLock(ctx); err != nil {
		t.Fatalf("r2 RLock while r1 reads: %v", err)
	}
	if r1.Token() == r2.Token() || r1.Token() == 0 || r2.Token() == 0 {
		t.Errorf("readers' tokens %d and %d, want two distinct grants", r1.Token(), r2.Token())
	}
	wErr := goErr(func() error { return w.Lock(ctx) })
	waitLockOwners(t, cli, name, []int64{s1.Lease(), s2.Lease()}, []int64{sw.Lease()})
	if err := r3.TryRLock(ctx); !errors.Is(err, sdk.ErrLocked) {
		t.Fatalf("TryRLock behind a waiting writer = %v, want ErrLocked", err)
	}
	r3Err := goErr(func() error { return r3.RLock(ctx) })
	waitLockOwners(t, cli, name, []int64{s1.Lease(), s2.Lease()}, []int64{sw.Lease(), s3.Lease()})

	if err := r1.Unlock(ctx); !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Errorf("Unlock (write) of a read hold = %v, want ErrInvalidArgument", err)
	}
	readTok := max(r1.Token(), r2.Token())
	for i, r := range []*sdk.RWMutex{r1, r2} {
		if err := r.RUnlock(ctx); err != nil {
			t.Fatalf("r%d RUnlock: %v", i+1, err)
		}
	}
	if err := recvErr(t, wErr, "the writer's Lock"); err != nil {
		t.Fatalf("writer Lock: %v", err)
	}
	waitLockOwners(t, cli, name, []int64{sw.Lease()}, []int64{s3.Lease()})
	if w.Token() <= readTok {
		t.Errorf("writer's token %d is not above the readers' %d", w.Token(), readTok)
	}
	wTok := w.Token()
	if err := w.Unlock(ctx); err != nil {
		t.Fatalf("writer Unlock: %v", err)
	}
	if err := recvErr(t, r3Err, "r3's RLock"); err != nil {
		t.Fatalf("r3 RLock: %v", err)
	}
	if r3.Token() <= wTok {
		t.Errorf("r3's token %d is not above the writer's %d", r3.Token(), wTok)
	}
	if err := r3.RUnlock(ctx); err != nil {
		t.Fatalf("r3 RUnlock: %v", err)
	}
}

// testSemaphore: holders share the permits up to the limit; a waiter is
// granted when enough are released; the limit is fixed.
func testSemaphore(t *testing.T, cli *sdk.Client) {
	const name = "pool"
	ctx := stepContext(t, stepWait)
	s1, s2, s3, s4 := newSession(t, cli), newSession(t, cli), newSession(t, cli), newSession(t, cli)
	p1, p2, p3, p4 := sdk.NewSemaphore(s1, name, 3), sdk.NewSemaphore(s2, name, 3), sdk.NewSemaphore(s3, name, 3), sdk.NewSemaphore(s4, name, 3)
	if err := p1.Acquire(ctx, 2); err != nil {
		t.Fatalf("Acquire 2 of 3: %v", err)
	}
	if err := p2.Acquire(ctx, 1); err != nil {
		t.Fatalf("Acquire the third permit: %v", err)
	}
	if err := p4.TryAcquire(ctx, 1); !errors.Is(err, sdk.ErrLocked) {
		t.Fatalf("TryAcquire with no permit left = %v, want ErrLocked", err)
	}
	if err := p4.Acquire(ctx, 4); !errors.Is(err, sdk.ErrPermitsExceeded) {
		t.Fatalf("Acquire 4 of 3 = %v, want ErrPermitsExceeded", err)
	}
	if err := sdk.NewSemaphore(s4, name, 5).Acquire(ctx, 1); !errors.Is(err, sdk.ErrPermitsExceeded) {
		t.Fatalf("Acquire with another limit = %v, want ErrPermitsExceeded", err)
	}
	p3Err := goErr(func() error { return p3.Acquire(ctx, 2) })
	waitLockOwners(t, cli, name, []int64{s1.Lease(), s2.Lease()}, []int64{s3.Lease()})
	if err := p2.Release(ctx); err != nil {
		t.Fatalf("Release 1: %v", err)
	}
	// 2 permits held, 1 free: the waiter asking for 2 still waits.
	waitLockOwners(t, cli, name, []int64{s1.Lease()}, []int64{s3.Lease()})
	p1Tok := p1.Token()
	if err := p1.Release(ctx); err != nil {
		t.Fatalf("Release 2: %v", err)
	}
	if err := recvErr(t, p3Err, "Acquire of 2 permits"); err != nil {
		t.Fatalf("Acquire 2 after the release: %v", err)
	}
	if p3.Permits() != 2 || p3.Token() <= p1Tok {
		t.Errorf("waiter holds %d permits with token %d, want 2 and a higher token", p3.Permits(), p3.Token())
	}
	st := lockState(ctx, t, cli, name)
	if st.GetKind() != catalogpb.LockKind_LOCK_KIND_SEMAPHORE || st.GetLimit() != 3 || len(st.GetHolders()) != 1 || st.GetHolders()[0].GetPermits() != 2 {
		t.Errorf("semaphore state = %v, want limit 3 with one holder of 2 permits", st)
	}
	if err := p3.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

// nextLeadership waits for the next leadership Observe delivers.
func nextLeadership(t *testing.T, ch <-chan *catalogpb.LeaderResponse) *catalogpb.LeaderResponse {
	t.Helper()
	select {
	case resp, ok := <-ch:
		if !ok {
			t.Fatal("Observe's channel closed")
		}
		return resp
	case <-stepContext(t, stepWait).Done():
		t.Fatal("no leadership change observed")
		return nil
	}
}

func checkLeadership(t *testing.T, got *catalogpb.LeaderResponse, lease int64, value string) {
	t.Helper()
	if lease == 0 {
		if got.GetHasLeader() {
			t.Fatalf("observed leader %v, want none", got)
		}
		return
	}
	if !got.GetHasLeader() || got.GetLeader().GetLease() != lease || string(got.GetValue()) != value {
		t.Fatalf("observed %v, want lease %d leading with %q", got, lease, value)
	}
}

// testElection: one leader at a time, with its token and value; Observe
// sees the value change, the handover after Resign and after the leader's
// session ends, and the election without a leader.
func testElection(t *testing.T, cli *sdk.Client) {
	const name = "elect"
	ctx := stepContext(t, 3*stepWait)
	s1, s2, s3 := newSession(t, cli), newSession(t, cli), newSession(t, cli)
	e1, e2, e3 := sdk.NewElection(s1, name), sdk.NewElection(s2, name), sdk.NewElection(s3, name)
	if err := e1.Campaign(ctx, []byte("a")); err != nil {
		t.Fatalf("e1 Campaign: %v", err)
	}
	obs := cli.ObserveElection(ctx, name)
	first := nextLeadership(t, obs)
	checkLeadership(t, first, s1.Lease(), "a")
	if first.GetLeader().GetToken() != e1.Token() || e1.Token() == 0 {
		t.Errorf("observed token %d, e1 holds %d", first.GetLeader().GetToken(), e1.Token())
	}

	e2Err := goErr(func() error { return e2.Campaign(ctx, []byte("b")) })
	waitLockOwners(t, cli, name, []int64{s1.Lease()}, []int64{s2.Lease()})
	if err := e1.Proclaim(ctx, []byte("a2")); err != nil {
		t.Fatalf("Proclaim: %v", err)
	}
	got := nextLeadership(t, obs)
	checkLeadership(t, got, s1.Lease(), "a2")
	if got.GetLeader().GetToken() != e1.Token() {
		t.Errorf("Proclaim changed the token to %d, want %d", got.GetLeader().GetToken(), e1.Token())
	}

	if err := e1.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	if err := recvErr(t, e2Err, "e2's Campaign"); err != nil {
		t.Fatalf("e2 Campaign: %v", err)
	}
	got = nextLeadership(t, obs)
	checkLeadership(t, got, s2.Lease(), "b")
	if got.GetLeader().GetToken() != e2.Token() || e2.Token() <= first.GetLeader().GetToken() {
		t.Errorf("after Resign: observed token %d, e2 holds %d, want equal and above %d",
			got.GetLeader().GetToken(), e2.Token(), first.GetLeader().GetToken())
	}
	if err := e1.Proclaim(ctx, []byte("stale")); !errors.Is(err, sdk.ErrNotHeld) {
		t.Errorf("Proclaim after Resign = %v, want ErrNotHeld", err)
	}

	e3Err := goErr(func() error { return e3.Campaign(ctx, []byte("c")) })
	waitLockOwners(t, cli, name, []int64{s2.Lease()}, []int64{s3.Lease()})
	// The leader's session ends: its lease is revoked.
	if err := s2.Close(); err != nil {
		t.Fatalf("close the leader's session: %v", err)
	}
	if err := recvErr(t, e3Err, "e3's Campaign"); err != nil {
		t.Fatalf("e3 Campaign: %v", err)
	}
	got = nextLeadership(t, obs)
	checkLeadership(t, got, s3.Lease(), "c")
	if got.GetLeader().GetToken() <= e2.Token() {
		t.Errorf("after the leader's session ended: token %d, want above %d", got.GetLeader().GetToken(), e2.Token())
	}
	leader, err := e3.Leader(ctx)
	if err != nil {
		t.Fatalf("Leader: %v", err)
	}
	checkLeadership(t, leader, s3.Lease(), "c")

	if err := e3.Resign(ctx); err != nil {
		t.Fatalf("e3 Resign: %v", err)
	}
	checkLeadership(t, nextLeadership(t, obs), 0, "")
	if leader, err := cli.ElectionLeader(ctx, name); err != nil || leader.GetHasLeader() {
		t.Errorf("Leader with no candidate = %v, %v; want no leader", leader, err)
	}
}

// testBarrier: Wait returns only once the barrier is released, or once the
// lease it was set with ends.
func testBarrier(t *testing.T, cli *sdk.Client) {
	ctx := stepContext(t, stepWait)
	b := sdk.NewBarrier(cli, "gate")
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("Wait on a barrier not set: %v", err)
	}
	if err := b.Hold(ctx); err != nil {
		t.Fatalf("Hold: %v", err)
	}
	setToken := b.Token()
	if setToken == 0 || !fencedPut(ctx, t, cli, sdk.Fence("gate", setToken), "gate-work", "while set") {
		t.Fatalf("the barrier's setting token %d does not fence a write while it is set", setToken)
	}
	var releasing atomic.Bool
	waitErr := goErr(func() error {
		err := sdk.NewBarrier(cli, "gate").Wait(ctx)
		if err == nil && !releasing.Load() {
			return errors.New("Wait returned before the barrier was released")
		}
		return err
	})
	framework.Eventually(t, stepWait, "barrier set", func(ctx context.Context) error {
		resp, err := cli.GetBarrier(ctx, "gate")
		if err != nil || resp.GetState() == nil {
			return fmt.Errorf("barrier %v, %v", resp.GetState(), err)
		}
		return nil
	})
	releasing.Store(true)
	released, err := b.Release(ctx)
	if err != nil || !released {
		t.Fatalf("Release = %v, %v; want released", released, err)
	}
	if err := recvErr(t, waitErr, "Wait"); err != nil {
		t.Fatal(err)
	}
	if released, err := b.Release(ctx); err != nil || released {
		t.Errorf("Release of a barrier not set = %v, %v; want false", released, err)
	}
	if fencedPut(ctx, t, cli, sdk.Fence("gate", setToken), "gate-work", "after release") {
		t.Errorf("a write fenced by the released barrier's token %d committed", setToken)
	}

	// A barrier set with a session's lease goes with the lease.
	s := newSession(t, cli)
	leased := sdk.NewBarrier(cli, "leased-gate")
	if err := leased.HoldWithLease(ctx, s.Lease()); err != nil {
		t.Fatalf("HoldWithLease: %v", err)
	}
	var closing atomic.Bool
	waitErr = goErr(func() error {
		err := leased.Wait(ctx)
		if err == nil && !closing.Load() {
			return errors.New("Wait returned before the session ended")
		}
		return err
	})
	closing.Store(true)
	if err := s.Close(); err != nil {
		t.Fatalf("close the session: %v", err)
	}
	if err := recvErr(t, waitErr, "Wait on a leased barrier"); err != nil {
		t.Fatal(err)
	}
}

// testDoubleBarrier: no participant passes Enter before all 3 have
// entered, nor Leave before all 3 have left; an open barrier takes no one
// else.
func testDoubleBarrier(t *testing.T, cli *sdk.Client) {
	const name, count = "step", 3
	ctx := stepContext(t, 2*stepWait)
	var entering, leaving atomic.Int32
	var wg sync.WaitGroup
	errc := make(chan error, 2*count)
	allIn := make(chan struct{})
	var barriers []*sdk.DoubleBarrier
	for i := range count {
		b := sdk.NewDoubleBarrier(newSession(t, cli), name, count)
		barriers = append(barriers, b)
		wg.Go(func() {
			entering.Add(1)
			if err := b.Enter(ctx); err != nil {
				errc <- fmt.Errorf("participant %d Enter: %w", i, err)
				return
			}
			if n := entering.Load(); n != count {
				errc <- fmt.Errorf("participant %d passed Enter with %d of %d entering", i, n, count)
			}
			<-allIn
			leaving.Add(1)
			if err := b.Leave(ctx); err != nil {
				errc <- fmt.Errorf("participant %d Leave: %w", i, err)
				return
			}
			if n := leaving.Load(); n != count {
				errc <- fmt.Errorf("participant %d passed Leave with %d of %d leaving", i, n, count)
			}
		})
	}
	framework.Eventually(t, stepWait, "barrier open", func(ctx context.Context) error {
		resp, err := cli.GetBarrier(ctx, name)
		if err != nil {
			return err
		}
		if st := resp.GetState(); !st.GetOpen() || len(st.GetParticipants()) != count || st.GetKind() != catalogpb.BarrierKind_BARRIER_KIND_DOUBLE {
			return fmt.Errorf("barrier %v", st)
		}
		return nil
	})
	// Each participation has its own token, valid while inside.
	seen := map[uint64]bool{}
	for i, b := range barriers {
		framework.Eventually(t, stepWait, "participant's token", func(context.Context) error {
			if b.Token() == 0 {
				return fmt.Errorf("participant %d has no token yet", i)
			}
			return nil
		})
		if seen[b.Token()] || !fencedPut(ctx, t, cli, sdk.Fence(name, b.Token()), "step-work", "inside") {
			t.Errorf("participant %d's token %d: repeated or not valid inside the barrier", i, b.Token())
		}
		seen[b.Token()] = true
	}
	late := newSession(t, cli)
	if err := sdk.NewDoubleBarrier(late, name, count).Enter(ctx); !errors.Is(err, sdk.ErrBarrierMismatch) {
		t.Errorf("Enter into an open barrier = %v, want ErrBarrierMismatch", err)
	}
	if err := sdk.NewDoubleBarrier(late, name, count).Leave(ctx); !errors.Is(err, sdk.ErrNotEntered) {
		t.Errorf("Leave without Enter = %v, want ErrNotEntered", err)
	}
	close(allIn)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if resp, err := cli.GetBarrier(ctx, name); err != nil || resp.GetState() != nil {
		t.Errorf("barrier after everyone left = %v, %v; want gone", resp.GetState(), err)
	}
	// The name is free again, with another count.
	s := newSession(t, cli)
	if err := sdk.NewDoubleBarrier(s, name, 1).Enter(ctx); err != nil {
		t.Fatalf("Enter a barrier of 1 on the freed name: %v", err)
	}
	if err := sdk.NewDoubleBarrier(newSession(t, cli), name, 2).Enter(ctx); !errors.Is(err, sdk.ErrBarrierMismatch) {
		t.Errorf("Enter with another count = %v, want ErrBarrierMismatch", err)
	}
	if err := sdk.NewDoubleBarrier(s, name, 1).Leave(ctx); err != nil {
		t.Fatalf("Leave a barrier of 1: %v", err)
	}
}

// testQueueAtLeastOnce: items are handed out in order, each to one
// consumer; an item whose consumer's session ends before Ack goes back to
// the head and is handed out again; a waiting Dequeue gets the next item
// enqueued.
func testQueueAtLeastOnce(t *testing.T, cli *sdk.Client) {
	const name = "jobs"
	ctx := stepContext(t, 2*stepWait)
	sa, sb := newSession(t, cli), newSession(t, cli)
	qa, qb := sdk.NewQueue(sa, name), sdk.NewQueue(sb, name)
	var ids []uint64
	for _, p := range []string{"p1", "p2", "p3"} {
		id, err := qa.Enqueue(ctx, []byte(p))
		if err != nil {
			t.Fatalf("Enqueue %s: %v", p, err)
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) || ids[0] == 0 || ids[0] == ids[1] {
		t.Fatalf("item ids %v, want increasing", ids)
	}
	itemA, err := qa.Dequeue(ctx)
	if err != nil {
		t.Fatalf("a Dequeue: %v", err)
	}
	itemB, err := qb.Dequeue(ctx)
	if err != nil {
		t.Fatalf("b Dequeue: %v", err)
	}
	if itemA.GetId() != ids[0] || string(itemA.GetPayload()) != "p1" || itemB.GetId() != ids[1] || itemA.GetConsumer() != sa.Lease() {
		t.Fatalf("dequeued %v and %v, want p1 to a and p2 to b", itemA, itemB)
	}
	st, err := qa.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.GetDepth() != 1 || len(st.GetInFlight()) != 2 {
		t.Errorf("status %v, want depth 1 and 2 in flight", st)
	}

	// a dies before its Ack: p1 goes back to the head.
	if err := sa.Close(); err != nil {
		t.Fatalf("close a's session: %v", err)
	}
	if err := qb.Ack(ctx, itemB.GetId()); err != nil {
		t.Fatalf("b Ack: %v", err)
	}
	again, err := qb.Dequeue(ctx)
	if err != nil {
		t.Fatalf("b Dequeue after a died: %v", err)
	}
	if again.GetId() != ids[0] || string(again.GetPayload()) != "p1" || again.GetDeliveries() != 2 || again.GetConsumer() != sb.Lease() {
		t.Fatalf("dequeued %v, want p1 again (2nd delivery) to b", again)
	}
	// a's delivery token no longer fences; b's does, until b acks.
	if again.GetToken() <= itemA.GetToken() || itemA.GetToken() == 0 {
		t.Errorf("delivery tokens %d then %d, want increasing", itemA.GetToken(), again.GetToken())
	}
	if fencedPut(ctx, t, cli, sdk.FenceItem(itemA), "p1-result", "from a, after its session ended") {
		t.Errorf("a write fenced by a's delivery of p1 committed after a's session ended")
	}
	if !fencedPut(ctx, t, cli, sdk.FenceItem(again), "p1-result", "from b") {
		t.Errorf("a write fenced by b's delivery of p1 was refused")
	}
	if err := qb.Ack(ctx, again.GetId()); err != nil {
		t.Fatalf("Ack p1: %v", err)
	}
	if fencedPut(ctx, t, cli, sdk.FenceItem(again), "p1-result", "from b, after its Ack") {
		t.Errorf("a write fenced by an acked delivery committed")
	}
	if err := qb.Ack(ctx, again.GetId()); !errors.Is(err, sdk.ErrItemNotFound) {
		t.Errorf("second Ack of p1 = %v, want ErrItemNotFound", err)
	}
	third, err := qb.TryDequeue(ctx)
	if err != nil || third.GetId() != ids[2] {
		t.Fatalf("TryDequeue = %v, %v; want p3", third, err)
	}
	if err := qb.Ack(ctx, third.GetId()); err != nil {
		t.Fatalf("Ack p3: %v", err)
	}
	if none, err := qb.TryDequeue(ctx); err != nil || none != nil {
		t.Fatalf("TryDequeue of an empty queue = %v, %v; want nothing", none, err)
	}

	// A waiting consumer gets the next item as it is enqueued.
	sc := newSession(t, cli)
	qc := sdk.NewQueue(sc, name)
	type result struct {
		item *catalogpb.QueueItem
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		item, err := qc.Dequeue(ctx)
		resc <- result{item, err}
	}()
	framework.Eventually(t, stepWait, "consumer waiting", func(ctx context.Context) error {
		st, err := qc.Status(ctx)
		if err != nil {
			return err
		}
		if len(st.GetConsumers()) != 1 || st.GetConsumers()[0].GetLease() != sc.Lease() {
			return fmt.Errorf("consumers %v", st.GetConsumers())
		}
		return nil
	})
	id4, err := qb.Enqueue(ctx, []byte("p4"))
	if err != nil {
		t.Fatalf("Enqueue p4: %v", err)
	}
	select {
	case r := <-resc:
		if r.err != nil || r.item.GetId() != id4 || string(r.item.GetPayload()) != "p4" {
			t.Fatalf("waiting Dequeue = %v, %v; want p4", r.item, r.err)
		}
		if err := qc.Ack(ctx, id4); err != nil {
			t.Fatalf("Ack p4: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the waiting Dequeue did not get p4")
	}
	st, err = qc.Status(ctx)
	if err != nil || st.GetDepth() != 0 || len(st.GetInFlight()) != 0 || len(st.GetConsumers()) != 0 {
		t.Errorf("status after every Ack = %v, %v; want empty", st, err)
	}
}

// testFencedWrite: a KV write guarded by Fence(lock, token) commits while
// the token holds and is refused once the lock moved on to another holder.
func testFencedWrite(t *testing.T, cli *sdk.Client) {
	const lock, key = "register-lock", "register"
	ctx := stepContext(t, stepWait)
	// A short TTL: the session hears of its lease's end at its next
	// renewal, a third of the TTL later.
	s1, err := sdk.NewSession(ctx, cli, sdk.WithSessionTTL(3*time.Second))
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	defer s1.Close()
	s2 := newSession(t, cli)
	m1, m2 := sdk.NewMutex(s1, lock), sdk.NewMutex(s2, lock)
	fencedPut := func(token uint64, value string) bool {
		t.Helper()
		resp, err := cli.NewTxn(ctx).
			If(sdk.Compare(sdk.Fence(lock, token), "=", true)).
			Then(sdk.OpPut(key, value)).
			Commit()
		if err != nil {
			t.Fatalf("fenced put with token %d: %v", token, err)
		}
		return resp.GetSucceeded()
	}
	if err := m1.Lock(ctx); err != nil {
		t.Fatalf("m1 Lock: %v", err)
	}
	t1 := m1.Token()
	if !fencedPut(t1, "v1") {
		t.Fatalf("fenced put with the holder's token %d was refused", t1)
	}
	m2Err := goErr(func() error { return m2.Lock(ctx) })
	waitLockOwners(t, cli, lock, []int64{s1.Lease()}, []int64{s2.Lease()})
	// The holder "pauses" past its lease: the lease ends, the lock moves on.
	if _, err := cli.Revoke(ctx, s1.Lease()); err != nil {
		t.Fatalf("revoke m1's lease: %v", err)
	}
	if err := recvErr(t, m2Err, "m2's Lock"); err != nil {
		t.Fatalf("m2 Lock: %v", err)
	}
	t2 := m2.Token()
	if t2 <= t1 {
		t.Fatalf("m2's token %d is not above m1's %d", t2, t1)
	}
	select {
	case <-m1.Done():
	case <-ctx.Done():
		t.Fatal("m1's Done not closed after its lease was revoked")
	}
	if fencedPut(t1, "stale") {
		t.Fatalf("a fenced put with the stale token %d was accepted", t1)
	}
	if ok, err := cli.Fence(ctx, lock, t1); err != nil || ok {
		t.Errorf("Fence(stale %d) = %v, %v; want false", t1, ok, err)
	}
	if !fencedPut(t2, "v2") {
		t.Fatalf("fenced put with the new holder's token %d was refused", t2)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.GetKvs()) != 1 || string(resp.GetKvs()[0].GetValue()) != "v2" {
		t.Fatalf("register = %v, %v; want v2", resp.GetKvs(), err)
	}
	// Not-held is also what a fenced compare says to NOT_EQUAL.
	txn, err := cli.NewTxn(ctx).If(sdk.Compare(sdk.Fence(lock, t1), "!=", true)).Commit()
	if err != nil || !txn.GetSucceeded() {
		t.Errorf("Fence(stale) != true = %v, %v; want true", txn.GetSucceeded(), err)
	}
	if err := m2.Unlock(ctx); err != nil {
		t.Fatalf("m2 Unlock: %v", err)
	}
}

// testCoordinationBadInput: each mistake is refused with its own error and
// changes nothing.
func testCoordinationBadInput(t *testing.T, cli *sdk.Client) {
	ctx := stepContext(t, stepWait)
	s := newSession(t, cli)
	m := sdk.NewMutex(s, "bad-input")
	if err := m.Lock(ctx); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if err := sdk.NewRWMutex(newSession(t, cli), "bad-input").TryLock(ctx); !errors.Is(err, sdk.ErrKindMismatch) {
		t.Errorf("RW lock on a mutex's name = %v, want ErrKindMismatch", err)
	}
	if err := sdk.NewElection(newSession(t, cli), "bad-input").Campaign(ctx, nil); !errors.Is(err, sdk.ErrKindMismatch) {
		t.Errorf("Campaign on a mutex's name = %v, want ErrKindMismatch", err)
	}
	if err := sdk.NewMutex(s, strings.Repeat("n", 600)).Lock(ctx); !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Errorf("Lock of a 600-byte name = %v, want ErrInvalidArgument", err)
	}
	if _, err := cli.Ack(ctx, "no-such-queue", 7, s.Lease()); !errors.Is(err, sdk.ErrItemNotFound) {
		t.Errorf("Ack of an unknown item = %v, want ErrItemNotFound", err)
	}
	if _, err := sdk.NewSession(ctx, cli, sdk.WithSessionLease(987654321)); !errors.Is(err, sdk.ErrLeaseNotFound) {
		t.Errorf("session on a lease that does not exist = %v, want ErrLeaseNotFound", err)
	}
	// A lease that does not exist, on the wire.
	_, err := catalogpb.NewLockClient(cli.Conn()).Lock(ctx, &catalogpb.LockRequest{Name: "bad-input-2", Lease: 987654321})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Lock on a lease that does not exist = %v, want NotFound (LEASE_NOT_FOUND)", err)
	}
	// Nothing changed: the mutex is held as before, and the other names do not exist.
	st := lockState(ctx, t, cli, "bad-input")
	if got := ownerLeases(st.GetHolders()); !slices.Equal(got, []int64{s.Lease()}) || len(st.GetWaiters()) != 0 || st.GetKind() != catalogpb.LockKind_LOCK_KIND_MUTEX {
		t.Errorf("lock after the refused calls = %v, want held by lease %d alone", st, s.Lease())
	}
	if st := lockState(ctx, t, cli, "bad-input-2"); st != nil {
		t.Errorf("lock refused for a missing lease exists: %v", st)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// TestCoordinationLockSurvivesLeaderKill: two sessions wait for a mutex,
// one connected only to the leader, one only to a follower. The leader is
// killed and restarted while they wait; the holder unlocks meanwhile. Both
// waits survive: each Lock returns, in line order, with its place kept and
// a token above the one before. An election observer connected only to the
// leader resumes after the restart without repeating what it delivered.
func TestCoordinationLockSurvivesLeaderKill(t *testing.T) {
	const name = "failover"
	c := framework.NewCluster(t, 3)
	leader := c.WaitLeader(stepContext(t, electionWait))
	follower := c.Others(leader)[0]
	ctx := stepContext(t, 3*electionWait)

	holder := sdk.NewMutex(newSession(t, c.Client(t)), name)
	if err := holder.Lock(ctx); err != nil {
		t.Fatalf("holder Lock: %v", err)
	}
	viaLeader := newSession(t, c.Client(t, leader))
	viaFollower := newSession(t, c.Client(t, follower))
	w1, w2 := sdk.NewMutex(viaLeader, name), sdk.NewMutex(viaFollower, name)
	cli := c.Client(t, c.Others(leader)...)
	w1Err := goErr(func() error { return w1.Lock(ctx) })
	waitLockOwners(t, cli, name, []int64{holderLease(t, cli, name)}, []int64{viaLeader.Lease()})
	w2Err := goErr(func() error { return w2.Lock(ctx) })
	waitLockOwners(t, cli, name, []int64{holderLease(t, cli, name)}, []int64{viaLeader.Lease(), viaFollower.Lease()})

	// An observer connected only to the leader follows an election.
	eA := sdk.NewElection(newSession(t, cli), name+"-election")
	if err := eA.Campaign(ctx, []byte("A")); err != nil {
		t.Fatalf("Campaign A: %v", err)
	}
	obs := c.Client(t, leader).ObserveElection(ctx, name+"-election")
	checkLeadership(t, nextLeadership(t, obs), eA.Key().GetLease(), "A")

	c.Kill(leader)
	c.WaitLeader(stepContext(t, electionWait), c.Others(leader)...)
	// The leadership changes while the observer cannot reach anyone.
	if err := eA.Resign(ctx); err != nil {
		t.Fatalf("Resign A: %v", err)
	}
	eB := sdk.NewElection(newSession(t, cli), name+"-election")
	if err := eB.Campaign(ctx, []byte("B")); err != nil {
		t.Fatalf("Campaign B: %v", err)
	}
	hTok := holder.Token()
	if err := holder.Unlock(ctx); err != nil {
		t.Fatalf("holder Unlock after the leader died: %v", err)
	}
	// The first waiter is granted in the release's apply, while its client
	// cannot reach anyone.
	st := lockState(ctx, t, cli, name)
	if got := ownerLeases(st.GetHolders()); !slices.Equal(got, []int64{viaLeader.Lease()}) {
		t.Fatalf("after the release the holders are %v, want the first waiter's lease %d", got, viaLeader.Lease())
	}
	c.Restart(leader)
	if err := recvErr(t, w1Err, "the Lock of the session connected to the killed leader"); err != nil {
		t.Fatalf("Lock through the killed leader: %v", err)
	}
	if w1.Token() <= hTok || w1.Token() != st.GetHolders()[0].GetToken() {
		t.Fatalf("first waiter's token %d, want the granted %d (above %d)", w1.Token(), st.GetHolders()[0].GetToken(), hTok)
	}
	select {
	case err := <-w2Err:
		t.Fatalf("second waiter's Lock returned (%v) while the first holds", err)
	default:
	}
	if err := w1.Unlock(ctx); err != nil {
		t.Fatalf("first waiter Unlock: %v", err)
	}
	if err := recvErr(t, w2Err, "the Lock of the session connected to a follower"); err != nil {
		t.Fatalf("Lock through a follower: %v", err)
	}
	if w2.Token() <= w1.Token() {
		t.Errorf("second waiter's token %d is not above %d", w2.Token(), w1.Token())
	}
	if err := w2.Unlock(ctx); err != nil {
		t.Fatalf("second waiter Unlock: %v", err)
	}

	// The observer reconnected to the restarted member and resumed with the
	// leadership of now, not the one it had delivered.
	checkLeadership(t, nextLeadership(t, obs), eB.Key().GetLease(), "B")
	if err := eB.Resign(ctx); err != nil {
		t.Fatalf("Resign B: %v", err)
	}
	checkLeadership(t, nextLeadership(t, obs), 0, "")
}

// holderLease returns the lease holding lock name.
func holderLease(t *testing.T, cli *sdk.Client, name string) int64 {
	t.Helper()
	st := lockState(stepContext(t, stepWait), t, cli, name)
	if len(st.GetHolders()) != 1 {
		t.Fatalf("lock %q holders %v, want one", name, st.GetHolders())
	}
	return st.GetHolders()[0].GetLease()
}
