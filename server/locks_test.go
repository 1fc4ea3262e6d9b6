package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// coord holds clients of every service the coordination tests use, on one
// member.
type coord struct {
	s     *Server
	lock  catalogpb.LockClient
	elect catalogpb.ElectionClient
	bar   catalogpb.BarrierClient
	queue catalogpb.QueueClient
	lease catalogpb.LeaseClient
	kv    catalogpb.KVClient
}

func coordOn(t *testing.T, s *Server) *coord {
	t.Helper()
	conn := dialServer(t, s)
	return &coord{
		s:     s,
		lock:  catalogpb.NewLockClient(conn),
		elect: catalogpb.NewElectionClient(conn),
		bar:   catalogpb.NewBarrierClient(conn),
		queue: catalogpb.NewQueueClient(conn),
		lease: catalogpb.NewLeaseClient(conn),
		kv:    catalogpb.NewKVClient(conn),
	}
}

func startCoordNode(t *testing.T) *coord {
	t.Helper()
	return coordOn(t, startSingleNode(t, singleNodeConfig(t, "c", t.TempDir())))
}

// A callResult is what a call run in the background answered.
type callResult[T any] struct {
	resp T
	err  error
}

// async runs call in the background; its result arrives on the channel.
func async[T any](call func() (T, error)) <-chan callResult[T] {
	c := make(chan callResult[T], 1)
	go func() {
		resp, err := call()
		c <- callResult[T]{resp, err}
	}()
	return c
}

func await[T any](t *testing.T, c <-chan callResult[T], what string) callResult[T] {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not return", what)
	}
	panic("unreachable")
}

func awaitOK[T any](t *testing.T, c <-chan callResult[T], what string) T {
	t.Helper()
	r := await(t, c, what)
	if r.err != nil {
		t.Fatalf("%s: %v", what, r.err)
	}
	return r.resp
}

// stillWaiting fails the test if the call has returned.
func stillWaiting[T any](t *testing.T, c <-chan callResult[T], what string) {
	t.Helper()
	select {
	case r := <-c:
		t.Fatalf("%s returned while it should wait: %v, %v", what, r.resp, r.err)
	default:
	}
}

// waitWaiting waits until n calls wait on s.
func waitWaiting(t *testing.T, s *Server, n int64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d calls waiting on %s", n, s.cfg.Name), func() error {
		if got := s.coord.waiting.Load(); got != n {
			return fmt.Errorf("%d waiting", got)
		}
		return nil
	})
}

func wantCode(t *testing.T, err error, code codes.Code, reason string, msg ...string) {
	t.Helper()
	if status.Code(err) != code || reasonOf(err) != reason {
		t.Fatalf("error %v: want %v %s", err, code, reason)
	}
	for _, m := range msg {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not say %q", err, m)
		}
	}
}

func getLock(t *testing.T, c *coord, name string) *catalogpb.LockState {
	t.Helper()
	resp, err := c.lock.Get(t.Context(), &catalogpb.GetLockRequest{Name: name})
	if err != nil {
		t.Fatalf("get lock %q: %v", name, err)
	}
	return resp.State
}

// waitLock waits until lock name's state satisfies cond.
func waitLock(t *testing.T, c *coord, name, what string, cond func(*catalogpb.LockState) error) *catalogpb.LockState {
	t.Helper()
	var st *catalogpb.LockState
	waitFor(t, 10*time.Second, what, func() error {
		resp, err := c.lock.Get(t.Context(), &catalogpb.GetLockRequest{Name: name})
		if err != nil {
			return err
		}
		st = resp.State
		return cond(st)
	})
	return st
}

func owners(os []*catalogpb.LockOwner) []int64 {
	var out []int64
	for _, o := range os {
		out = append(out, o.Lease)
	}
	return out
}

// holdersAndWaiters is a condition on a lock's holders and waiters (leases).
func holdersAndWaiters(holders, waiters []int64) func(*catalogpb.LockState) error {
	return func(st *catalogpb.LockState) error {
		if !slices.Equal(owners(st.GetHolders()), holders) || !slices.Equal(owners(st.GetWaiters()), waiters) {
			return fmt.Errorf("holders %v waiters %v, want %v and %v", owners(st.GetHolders()), owners(st.GetWaiters()), holders, waiters)
		}
		return nil
	}
}

func (c *coord) mustLock(t *testing.T, req *catalogpb.LockRequest) *catalogpb.LockResponse {
	t.Helper()
	resp, err := c.lock.Lock(t.Context(), req)
	if err != nil {
		t.Fatalf("lock %q with lease %d: %v", req.Name, req.Lease, err)
	}
	if !resp.Acquired || resp.Token == 0 {
		t.Fatalf("lock %q with lease %d answered %v", req.Name, req.Lease, resp)
	}
	return resp
}

func (c *coord) revision(t *testing.T) int64 {
	t.Helper()
	resp, err := c.kv.Get(t.Context(), &catalogpb.GetRequest{Key: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func TestLockBlocksUntilUnlockWithAHigherToken(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	first := c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a})
	if first.Header.GetMemberId() != c.s.ID() || first.State.GetKind() != catalogpb.LockKind_LOCK_KIND_MUTEX {
		t.Errorf("first grant: %v", first)
	}

	second := async(func() (*catalogpb.LockResponse, error) {
		return c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: b})
	})
	waitLock(t, c, "m", "b waits behind a", holdersAndWaiters([]int64{a}, []int64{b}))
	waitWaiting(t, c.s, 1)
	stillWaiting(t, second, "b's Lock")

	// A try by a third lease answers at once, and changes nothing.
	tryLease := grant(t, c.lease, 30)
	rev := c.revision(t)
	if resp, err := c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: tryLease, Try: true}); err != nil || resp.Acquired {
		t.Fatalf("try lock of a held mutex: %v, %v", resp, err)
	}
	if got := c.revision(t); got != rev {
		t.Errorf("revision %d after a refused try, want %d", got, rev)
	}

	unlock, err := c.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "m", Lease: a, Token: first.Token})
	if err != nil {
		t.Fatal(err)
	}
	got := awaitOK(t, second, "b's Lock")
	if !got.Acquired || got.Token <= first.Token {
		t.Fatalf("b's grant %v: want a token above %d", got, first.Token)
	}
	// The release and the next grant are one revision.
	if got.Header.Revision != unlock.Header.Revision {
		t.Errorf("b granted at revision %d, a released at %d", got.Header.Revision, unlock.Header.Revision)
	}
	if holder := unlock.State.GetHolders(); len(holder) != 1 || holder[0].Lease != b || holder[0].Token != got.Token {
		t.Errorf("state after the unlock: %v", unlock.State)
	}
	for _, tt := range []struct {
		token uint64
		valid bool
	}{{first.Token, false}, {got.Token, true}} {
		resp, err := c.lock.Fence(t.Context(), &catalogpb.FenceRequest{Name: "m", Token: tt.token})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Valid != tt.valid || !slices.Equal(resp.Current, []uint64{got.Token}) {
			t.Errorf("fence of token %d: %v, want valid %v, current [%d]", tt.token, resp, tt.valid, got.Token)
		}
	}
	if metricValue(t, c.s, "catalogd_lock_grants_total") != 2 {
		t.Errorf("catalogd_lock_grants_total = %v, want 2", metricValue(t, c.s, "catalogd_lock_grants_total"))
	}
}

func TestLockRevokeOfTheHolderGrantsTheWaiterInTheSameRevision(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	first := c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a})
	second := async(func() (*catalogpb.LockResponse, error) {
		return c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: b})
	})
	waitLock(t, c, "m", "b waits", holdersAndWaiters([]int64{a}, []int64{b}))
	revoke, err := c.lease.Revoke(t.Context(), &catalogpb.LeaseRevokeRequest{Id: a})
	if err != nil {
		t.Fatal(err)
	}
	if len(revoke.Items) != 1 || revoke.Items[0].Kind != "lock" || revoke.Items[0].Key != "m" {
		t.Errorf("revoke items: %v", revoke.Items)
	}
	got := awaitOK(t, second, "b's Lock")
	if got.Token <= first.Token || got.Header.Revision != revoke.Header.Revision {
		t.Fatalf("b granted %v; a held token %d; revoke at revision %d", got, first.Token, revoke.Header.Revision)
	}
	h := got.State.GetHolders()
	if len(h) != 1 || h[0].Lease != b || h[0].Revision != revoke.Header.Revision {
		t.Errorf("holders after the revoke: %v", h)
	}
	// The revoke's revision holds the lock's event and the lease's.
	batch := revokeBatch(t, c.s, a)
	var kinds []string
	for _, ev := range batch.Events {
		kinds = append(kinds, ev.Kind)
	}
	if !slices.Equal(kinds, []string{"lock", "lease"}) {
		t.Errorf("revoke's events: %v", describeEvents(batch.Events))
	}
}

func TestLockCancelledCallRemovesItsWaiter(t *testing.T) {
	c := startCoordNode(t)
	a, b, d := grant(t, c.lease, 30), grant(t, c.lease, 30), grant(t, c.lease, 30)
	c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a})
	ctx, cancel := context.WithCancel(t.Context())
	second := async(func() (*catalogpb.LockResponse, error) {
		return c.lock.Lock(ctx, &catalogpb.LockRequest{Name: "m", Lease: b})
	})
	waitLock(t, c, "m", "b waits", holdersAndWaiters([]int64{a}, []int64{b}))
	third := async(func() (*catalogpb.LockResponse, error) {
		return c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: d})
	})
	waitLock(t, c, "m", "b and d wait", holdersAndWaiters([]int64{a}, []int64{b, d}))
	cancel()
	if r := await(t, second, "cancelled Lock"); status.Code(r.err) != codes.Canceled {
		t.Fatalf("cancelled Lock answered %v, %v", r.resp, r.err)
	}
	waitLock(t, c, "m", "b's wait removed", holdersAndWaiters([]int64{a}, []int64{d}))
	ttl, err := c.lease.TimeToLive(t.Context(), &catalogpb.LeaseTimeToLiveRequest{Id: b, Items: true})
	if err != nil || len(ttl.Items) != 0 {
		t.Errorf("lease b's items after the cancel: %v, %v", ttl.GetItems(), err)
	}
	stillWaiting(t, third, "d's Lock")

	// A deadline ends a wait the same way.
	dctx, dcancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer dcancel()
	_, err = c.lock.Lock(dctx, &catalogpb.LockRequest{Name: "m", Lease: b})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Lock past its deadline: %v", err)
	}
	waitLock(t, c, "m", "b's second wait removed", holdersAndWaiters([]int64{a}, []int64{d}))
}

func TestLockWaitSupersededByAnotherCallOfTheLease(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	held := c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a})
	older := async(func() (*catalogpb.LockResponse, error) {
		return c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: b, WaiterId: 1})
	})
	st := waitLock(t, c, "m", "b waits", holdersAndWaiters([]int64{a}, []int64{b}))
	place := st.Waiters[0].Revision
	newer := async(func() (*catalogpb.LockResponse, error) {
		return c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: b, WaiterId: 2})
	})
	r := await(t, older, "the older Lock")
	wantCode(t, r.err, codes.Aborted, "WAIT_SUPERSEDED", "took over")
	st = waitLock(t, c, "m", "b waits as call 2", holdersAndWaiters([]int64{a}, []int64{b}))
	if st.Waiters[0].WaiterId != 2 || st.Waiters[0].Revision != place {
		t.Errorf("b's wait after the takeover: %v (queued at %d)", st.Waiters[0], place)
	}
	if _, err := c.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "m", Token: held.Token}); err != nil {
		t.Fatal(err)
	}
	if got := awaitOK(t, newer, "the newer Lock"); got.Token <= held.Token {
		t.Errorf("newer call granted %v", got)
	}
}

func TestLockReadWriteAndSemaphore(t *testing.T) {
	c := startCoordNode(t)
	r1, r2, w, r3 := grant(t, c.lease, 30), grant(t, c.lease, 30), grant(t, c.lease, 30), grant(t, c.lease, 30)
	rw := func(l int64, mode catalogpb.LockMode) *catalogpb.LockRequest {
		return &catalogpb.LockRequest{Name: "rw", Lease: l, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK, Mode: mode}
	}
	shared, excl := catalogpb.LockMode_LOCK_MODE_SHARED, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE
	t1 := c.mustLock(t, rw(r1, shared))
	t2 := c.mustLock(t, rw(r2, shared))
	writer := async(func() (*catalogpb.LockResponse, error) { return c.lock.Lock(t.Context(), rw(w, excl)) })
	waitLock(t, c, "rw", "the writer waits", holdersAndWaiters([]int64{r1, r2}, []int64{w}))
	// A reader arriving after the writer waits too: writers are not starved.
	reader := async(func() (*catalogpb.LockResponse, error) { return c.lock.Lock(t.Context(), rw(r3, shared)) })
	waitLock(t, c, "rw", "the late reader waits", holdersAndWaiters([]int64{r1, r2}, []int64{w, r3}))
	for _, tok := range []uint64{t1.Token, t2.Token} {
		if _, err := c.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "rw", Token: tok}); err != nil {
			t.Fatal(err)
		}
	}
	wt := awaitOK(t, writer, "the writer")
	stillWaiting(t, reader, "the late reader")
	if _, err := c.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "rw", Token: wt.Token}); err != nil {
		t.Fatal(err)
	}
	if rt := awaitOK(t, reader, "the late reader"); rt.Token <= wt.Token {
		t.Errorf("reader token %d after writer token %d", rt.Token, wt.Token)
	}

	sem := func(l, permits int64) *catalogpb.LockRequest {
		return &catalogpb.LockRequest{Name: "sem", Lease: l, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Limit: 3, Permits: permits}
	}
	c.mustLock(t, sem(r1, 2))
	blocked := async(func() (*catalogpb.LockResponse, error) { return c.lock.Lock(t.Context(), sem(r2, 2)) })
	waitLock(t, c, "sem", "2 permits wait behind 2 of 3 taken", holdersAndWaiters([]int64{r1}, []int64{r2}))
	if resp, err := c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "sem", Lease: w, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Permits: 1, Try: true}); err != nil || resp.Acquired {
		t.Errorf("a try behind a waiter must not barge: %v, %v", resp, err)
	}
	if _, err := c.lease.Revoke(t.Context(), &catalogpb.LeaseRevokeRequest{Id: r1}); err != nil {
		t.Fatal(err)
	}
	awaitOK(t, blocked, "the semaphore's waiter")
}
