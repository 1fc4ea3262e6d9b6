package locks_test

import (
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
)

func TestMutexFIFOGrantOrder(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3)

	resp, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 11})
	if !resp.Acquired || resp.Token != 1 {
		t.Fatalf("first acquire = acquired %v token %d, want acquired token 1", resp.Acquired, resp.Token)
	}
	wantEvents(t, evs, "PUT lock m")
	ev := evs[0]
	if ev.PrevLock != nil || ev.PrevKv != nil {
		t.Errorf("creating event has prev %v / %v", ev.PrevLock, ev.PrevKv)
	}
	if ev.Kv.CreateRevision != s.rev || ev.Lock.CreateRevision != s.rev || ev.Lock.ModRevision != s.rev {
		t.Errorf("event revisions kv %v lock create %d mod %d, want %d", ev.Kv, ev.Lock.CreateRevision, ev.Lock.ModRevision, s.rev)
	}
	h := ev.Lock.Holders[0]
	if h.Lease != 1 || h.Token != 1 || h.Permits != 1 || h.WaiterId != 11 || h.Revision != s.rev || h.UnixNano != s.now {
		t.Errorf("holder = %v", h)
	}
	if ev.Lock.Kind != catalogpb.LockKind_LOCK_KIND_MUTEX || ev.Lock.Limit != 1 {
		t.Errorf("kind %v limit %d, want MUTEX limit 1", ev.Lock.Kind, ev.Lock.Limit)
	}
	createRev := s.rev

	for _, l := range []int64{2, 3} {
		resp, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: l, WaiterId: uint64(l) * 11})
		if resp.Acquired || resp.Token != 0 {
			t.Fatalf("acquire by lease %d = acquired %v token %d, want queued", l, resp.Acquired, resp.Token)
		}
		wantEvents(t, evs, "PUT lock m")
		if evs[0].PrevLock == nil {
			t.Errorf("update event has no prev_lock")
		}
		if w := resp.State.Waiters[len(resp.State.Waiters)-1]; w.Revision != s.rev || w.Token != 0 {
			t.Errorf("waiter %v: want revision %d, token 0", w, s.rev)
		}
	}
	st := s.getLock("m")
	wantOwners(t, "holders", st.Holders, "1:1")
	wantOwners(t, "waiters", st.Waiters, "2:0", "3:0")
	s.wantLeaseItems(2, "lock:m")

	// Release passes the lock on to the head waiter in the same apply,
	// with a higher token: one event for the name.
	un, evs := s.mustRelease("m", 1, 1)
	wantEvents(t, evs, "PUT lock m")
	wantOwners(t, "holders after release", un.State.Holders, "2:2")
	wantOwners(t, "waiters after release", un.State.Waiters, "3:0")
	wantOwners(t, "prev holders", evs[0].PrevLock.Holders, "1:1")
	if evs[0].Kv.CreateRevision != createRev || evs[0].PrevKv.CreateRevision != createRev {
		t.Errorf("create revision moved: kv %v prev %v, want %d", evs[0].Kv, evs[0].PrevKv, createRev)
	}
	if g := un.State.Holders[0]; g.Revision != s.rev || g.UnixNano != s.now || g.WaiterId != 22 {
		t.Errorf("granted holder %v: want revision %d unix_nano %d waiter 22", g, s.rev, s.now)
	}
	s.wantLeaseItems(1)

	un, _ = s.mustRelease("m", 2, 2)
	wantOwners(t, "holders", un.State.Holders, "3:3")

	un, evs = s.mustRelease("m", 3, 3)
	if un.State != nil {
		t.Errorf("state after last release = %v, want nil", un.State)
	}
	wantEvents(t, evs, "DELETE lock m")
	if evs[0].Lock != nil || evs[0].PrevLock == nil || evs[0].PrevKv.GetCreateRevision() != createRev {
		t.Errorf("delete event lock %v prev %v prev_kv %v", evs[0].Lock, evs[0].PrevLock, evs[0].PrevKv)
	}
	if st := s.getLock("m"); st != nil {
		t.Errorf("lock after last release = %v, want gone", st)
	}
	for _, l := range []int64{1, 2, 3} {
		s.wantLeaseItems(l)
	}
}

func TestTokensStrictlyIncrease(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	var tokens []uint64
	take := func(name string, l int64) uint64 {
		t.Helper()
		tok := s.lock(name, l)
		if tok == 0 {
			t.Fatalf("lock %s by lease %d queued", name, l)
		}
		tokens = append(tokens, tok)
		return tok
	}
	a := take("a", 1)
	b := take("b", 2)
	s.mustRelease("a", 1, a)
	s.mustRelease("b", 2, b)
	// "a" was deleted; used again it goes on from the counter.
	a2 := take("a", 2)
	sem, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "s", Lease: 1, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Limit: 2})
	tokens = append(tokens, sem.Token)
	s.mustRelease("a", 2, a2)
	take("a", 1)
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("tokens %v do not strictly increase", tokens)
		}
	}
	if got := s.lastToken(); got != tokens[len(tokens)-1] {
		t.Errorf("LastToken = %d, want %d", got, tokens[len(tokens)-1])
	}
}

func TestIdempotentReacquire(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	first, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 5})
	before, rev := s.dump(), s.rev
	again, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 5})
	if !again.Acquired || again.Token != first.Token || len(evs) != 0 {
		t.Fatalf("retry = acquired %v token %d events %q; want acquired, token %d, no events", again.Acquired, again.Token, eventSummary(evs), first.Token)
	}
	s.unchanged(before, rev)
	try, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 5, Try: true})
	if !try.Acquired || try.Token != first.Token || len(evs) != 0 {
		t.Fatalf("try by the holder = %v, events %q", try, eventSummary(evs))
	}
	// Another waiter id takes the hold over: same token, new waiter id.
	other, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 6})
	if !other.Acquired || other.Token != first.Token {
		t.Fatalf("re-acquire with another waiter id = %v", other)
	}
	wantEvents(t, evs, "PUT lock m")
	if got := evs[0].Lock.Holders[0].WaiterId; got != 6 {
		t.Errorf("holder waiter id = %d, want 6", got)
	}
	if s.lastToken() != first.Token {
		t.Errorf("re-acquire took a token: last %d", s.lastToken())
	}
	// The same lease asking for another mode or other permits is refused.
	s.grant(2)
	s.mustAcquire(&catalogpb.LockRequest{Name: "rw", Lease: 2, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK, Mode: catalogpb.LockMode_LOCK_MODE_SHARED})
	s.refused(acquireCmd(&catalogpb.LockRequest{Name: "rw", Lease: 2, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK}),
		locks.ErrInvalidArgument, "lease 2 already holds", "SHARED")
}

func TestWaiterSupersede(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3)
	s.lock("m", 1)
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 7})
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 3, WaiterId: 9})

	before, rev := s.dump(), s.rev
	resp, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 7})
	if resp.Acquired || len(evs) != 0 {
		t.Fatalf("retry with the same waiter id = %v, events %q; want queued, no change", resp, eventSummary(evs))
	}
	s.unchanged(before, rev)

	resp, evs = s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 8})
	wantEvents(t, evs, "PUT lock m")
	if resp.Acquired {
		t.Fatalf("superseding call acquired")
	}
	wantOwners(t, "waiters", resp.State.Waiters, "2:0", "3:0")
	if w := resp.State.Waiters[0]; w.WaiterId != 8 {
		t.Errorf("head waiter id = %d, want 8 (the newer call)", w.WaiterId)
	}
	if got := evs[0].PrevLock.Waiters[0].WaiterId; got != 7 {
		t.Errorf("prev waiter id = %d, want 7", got)
	}
	// A try by a lease that waits changes nothing.
	before, rev = s.dump(), s.rev
	resp, evs = s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 10, Try: true})
	if resp.Acquired || len(evs) != 0 {
		t.Fatalf("try by a waiter = %v, events %q", resp, eventSummary(evs))
	}
	s.unchanged(before, rev)
}

func TestTryChangesNothing(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3)
	resp, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, Try: true})
	if !resp.Acquired || resp.Token == 0 {
		t.Fatalf("try on a free lock = %v, want acquired", resp)
	}
	before, rev := s.dump(), s.rev
	resp, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, Try: true})
	if resp.Acquired || resp.Token != 0 || len(evs) != 0 {
		t.Fatalf("try on a held lock = %v, events %q", resp, eventSummary(evs))
	}
	wantOwners(t, "state holders", resp.State.Holders, "1:1")
	s.unchanged(before, rev)
	s.wantLeaseItems(2)

	// A reader that would be compatible with the holders is still refused
	// while a writer waits (no barging).
	rw := func(l int64, mode catalogpb.LockMode, try bool) *catalogpb.LockResponse {
		r, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "rw", Lease: l, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK, Mode: mode, Try: try})
		return r
	}
	rw(1, catalogpb.LockMode_LOCK_MODE_SHARED, false)
	rw(2, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE, false)
	before, rev = s.dump(), s.rev
	if r := rw(3, catalogpb.LockMode_LOCK_MODE_SHARED, true); r.Acquired {
		t.Fatalf("try reader behind a waiting writer acquired")
	}
	s.unchanged(before, rev)
}

func TestRWLockNoWriterStarvation(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3, 4, 5)
	req := func(l int64, mode catalogpb.LockMode) *catalogpb.LockResponse {
		t.Helper()
		r, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "rw", Lease: l, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK, Mode: mode})
		return r
	}
	shared, excl := catalogpb.LockMode_LOCK_MODE_SHARED, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE
	r1 := req(1, shared)
	r2 := req(2, shared)
	if !r1.Acquired || !r2.Acquired {
		t.Fatalf("readers do not share: %v %v", r1, r2)
	}
	if w := req(3, excl); w.Acquired {
		t.Fatalf("writer acquired while readers hold")
	}
	if r := req(4, shared); r.Acquired {
		t.Fatalf("reader barged past a waiting writer")
	}
	req(5, shared)
	st := s.getLock("rw")
	wantOwners(t, "holders", st.Holders, "1:1", "2:2")
	wantOwners(t, "waiters", st.Waiters, "3:0", "4:0", "5:0")
	if st.Limit != 0 || st.Kind != catalogpb.LockKind_LOCK_KIND_RWLOCK {
		t.Errorf("rw lock kind %v limit %d", st.Kind, st.Limit)
	}

	un, _ := s.mustRelease("rw", 1, r1.Token)
	wantOwners(t, "holders after one reader left", un.State.Holders, "2:2")
	un, _ = s.mustRelease("rw", 2, r2.Token)
	wantOwners(t, "holders after the readers left", un.State.Holders, "3:3")
	if un.State.Holders[0].Mode != excl {
		t.Errorf("writer holds in mode %v", un.State.Holders[0].Mode)
	}
	// The writer leaves: both waiting readers are granted in one apply.
	un, evs := s.mustRelease("rw", 3, 3)
	wantEvents(t, evs, "PUT lock rw")
	wantOwners(t, "holders after the writer left", un.State.Holders, "4:4", "5:5")
	wantOwners(t, "waiters", un.State.Waiters)
}

func TestSemaphore(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3, 4)
	sem := func(l, permits, limit int64) *catalogpb.LockRequest {
		return &catalogpb.LockRequest{Name: "s", Lease: l, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Permits: permits, Limit: limit}
	}
	s.refused(acquireCmd(sem(1, 1, 0)), locks.ErrInvalidArgument, `semaphore "s" does not exist`, "limit")
	r1, _ := s.mustAcquire(sem(1, 2, 3))
	if !r1.Acquired || r1.State.Limit != 3 {
		t.Fatalf("first acquire = %v", r1)
	}
	if r, _ := s.mustAcquire(sem(2, 2, 3)); r.Acquired {
		t.Fatalf("2 permits granted with 1 left")
	}
	// One permit would fit, but lease 2 waits first: FIFO.
	if r, _ := s.mustAcquire(sem(3, 1, 0)); r.Acquired {
		t.Fatalf("1 permit barged past a waiter")
	}
	s.refused(acquireCmd(sem(4, 1, 5)), locks.ErrPermitsExceeded, "limit of 3 permits", "limit 5")
	s.refused(acquireCmd(sem(4, 4, 0)), locks.ErrPermitsExceeded, "has 3 permits", "cannot take 4")
	s.refused(acquireCmd(sem(4, 4, 3)), locks.ErrPermitsExceeded, "cannot take 4")

	un, _ := s.mustRelease("s", 1, r1.Token)
	wantOwners(t, "holders", un.State.Holders, "2:2", "3:3")
	var held int64
	for _, h := range un.State.Holders {
		held += h.Permits
	}
	if held != 3 {
		t.Errorf("permits held = %d, want 3", held)
	}
	// After the semaphore is gone its limit may change.
	s.mustRelease("s", 2, 2)
	s.mustRelease("s", 3, 3)
	if r, _ := s.mustAcquire(sem(4, 5, 5)); !r.Acquired || r.State.Limit != 5 {
		t.Fatalf("new semaphore with limit 5 = %v", r)
	}
}

func TestKindMismatch(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	s.lock("x", 1)
	s.refused(acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 2, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK}),
		locks.ErrKindMismatch, `lock "x" is a MUTEX`, "RWLOCK")
	s.refused(acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 2, Kind: catalogpb.LockKind_LOCK_KIND_ELECTION}),
		locks.ErrKindMismatch, "ELECTION")
	s.refused(&catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Proclaim{Proclaim: &catalogpb.ProclaimRequest{
		Leader: &catalogpb.LeaderKey{Name: "x", Lease: 1, Token: 1}, Value: []byte("v")}}},
		locks.ErrKindMismatch, "not an ELECTION")
}

func TestElection(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	campaign := func(l int64, v string) *catalogpb.LockResponse {
		t.Helper()
		resp, _, err := s.apply(locks.CampaignCommand(&catalogpb.CampaignRequest{Name: "e", Lease: l, Value: []byte(v)}, uint64(l)))
		if err != nil {
			t.Fatalf("campaign lease %d: %v", l, err)
		}
		return resp.(*catalogpb.LockResponse)
	}
	proclaim := func(key *catalogpb.LeaderKey, v string) *catalogpb.LocksCommand {
		return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Proclaim{Proclaim: &catalogpb.ProclaimRequest{Leader: key, Value: []byte(v)}}}
	}
	c1 := campaign(1, "a")
	if !c1.Acquired {
		t.Fatalf("first candidate not leader: %v", c1)
	}
	if c2 := campaign(2, "b"); c2.Acquired {
		t.Fatalf("second candidate leader too")
	}
	ld := locks.LeaderOf(s.getLock("e"))
	if !ld.HasLeader || ld.Leader.Lease != 1 || ld.Leader.Token != c1.Token || string(ld.Value) != "a" || ld.Candidates != 1 {
		t.Fatalf("leader = %v", ld)
	}
	if ld.Leader.Revision != c1.State.Holders[0].Revision {
		t.Errorf("leader revision %d, want %d", ld.Leader.Revision, c1.State.Holders[0].Revision)
	}
	key := ld.Leader

	_, evs, err := s.apply(proclaim(key, "c"))
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "PUT lock e")
	if got, prev := string(evs[0].Lock.Holders[0].Value), string(evs[0].PrevLock.Holders[0].Value); got != "c" || prev != "a" {
		t.Errorf("proclaim value %q prev %q, want c, a", got, prev)
	}
	before, rev := s.dump(), s.rev
	if _, evs, err := s.apply(proclaim(key, "c")); err != nil || len(evs) != 0 {
		t.Fatalf("proclaim of the same value: %v, events %q", err, eventSummary(evs))
	}
	s.unchanged(before, rev)
	s.refused(proclaim(&catalogpb.LeaderKey{Name: "e", Lease: 1, Token: key.Token + 10}, "z"), locks.ErrNotHeld, "does not lead", "current leader tokens: [1]")
	s.refused(proclaim(&catalogpb.LeaderKey{Name: "e", Lease: 2, Token: key.Token}, "z"), locks.ErrNotHeld)

	// Resign is a release of the leader key.
	_, evs, err = s.apply(locks.ResignCommand(&catalogpb.ResignRequest{Leader: key}))
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "PUT lock e")
	ld = locks.LeaderOf(evs[0].Lock)
	if ld.Leader.GetLease() != 2 || ld.Leader.Token <= key.Token || string(ld.Value) != "b" || ld.Candidates != 0 {
		t.Fatalf("leader after resign = %v", ld)
	}
	s.refused(proclaim(key, "stale"), locks.ErrNotHeld, "token 1")
	s.refused(locks.ResignCommand(&catalogpb.ResignRequest{Leader: key}), locks.ErrNotHeld, "token 1", "current holders: [2]")
	if ld := locks.LeaderOf(nil); ld.HasLeader {
		t.Errorf("LeaderOf(nil) = %v", ld)
	}
}

func TestCancelLockWait(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3)
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 9})
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 5})
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 3, WaiterId: 6})

	// A waiter id that does not match changes nothing.
	before, rev := s.dump(), s.rev
	if evs := s.cancel(catalogpb.CancelWaitCommand_LOCK, "m", 2, 99); len(evs) != 0 {
		t.Fatalf("mismatched cancel gave events %q", eventSummary(evs))
	}
	if evs := s.cancel(catalogpb.CancelWaitCommand_LOCK, "nolock", 2, 5); len(evs) != 0 {
		t.Fatalf("cancel on an absent lock gave events %q", eventSummary(evs))
	}
	s.unchanged(before, rev)

	evs := s.cancel(catalogpb.CancelWaitCommand_LOCK, "m", 2, 5)
	wantEvents(t, evs, "PUT lock m")
	wantOwners(t, "waiters", evs[0].Lock.Waiters, "3:0")
	s.wantLeaseItems(2)

	// The holder's call went away after it was granted: cancel releases.
	evs = s.cancel(catalogpb.CancelWaitCommand_LOCK, "m", 1, 9)
	wantEvents(t, evs, "PUT lock m")
	wantOwners(t, "holders", evs[0].Lock.Holders, "3:2")
	s.wantLeaseItems(1)
	evs = s.cancel(catalogpb.CancelWaitCommand_LOCK, "m", 3, 6)
	wantEvents(t, evs, "DELETE lock m")
	s.wantLeaseItems(3)
}

// TestStaleCancelAfterRetag: a re-acquire by the same lease with a new
// waiter id (a retry of a call whose answer was lost) re-tags the hold or
// the wait; the cancel the earlier attempt's member proposes, naming the
// old id, then changes nothing: the hold stays, the wait keeps its place.
func TestStaleCancelAfterRetag(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3)
	held, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 5})
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 7})
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 3, WaiterId: 9})

	retry, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 6})
	if !retry.Acquired || retry.Token != held.Token {
		t.Fatalf("re-acquire = %v, want the hold of token %d", retry, held.Token)
	}
	wantEvents(t, evs, "PUT lock m")
	wait, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 8})
	if wait.Acquired {
		t.Fatalf("re-acquire by a waiter = %v, want still queued", wait)
	}

	before, rev := s.dump(), s.rev
	for _, c := range []struct {
		lease  int64
		waiter uint64
	}{{1, 5}, {2, 7}} {
		if evs := s.cancel(catalogpb.CancelWaitCommand_LOCK, "m", c.lease, c.waiter); len(evs) != 0 {
			t.Fatalf("stale cancel of lease %d waiter %d gave events %q", c.lease, c.waiter, eventSummary(evs))
		}
	}
	s.unchanged(before, rev)
	st := s.getLock("m")
	wantOwners(t, "holders", st.Holders, fmt.Sprintf("1:%d", held.Token))
	wantOwners(t, "waiters", st.Waiters, "2:0", "3:0")
	if st.Holders[0].WaiterId != 6 || st.Waiters[0].WaiterId != 8 {
		t.Errorf("waiter ids = holder %d, head waiter %d; want 6 and 8", st.Holders[0].WaiterId, st.Waiters[0].WaiterId)
	}
	s.view(func(tx *bbolt.Tx) error {
		valid, _, err := locks.Fence(tx, "m", held.Token)
		if !valid {
			t.Errorf("token %d no longer fences after a stale cancel", held.Token)
		}
		return err
	})
	s.wantLeaseItems(1, "lock:m")

	// The cancel of the current attempt still works: it releases the hold,
	// and the waiter granted next is lease 2's retry (waiter 8).
	evs = s.cancel(catalogpb.CancelWaitCommand_LOCK, "m", 1, 6)
	wantEvents(t, evs, "PUT lock m")
	if h := evs[0].Lock.Holders; len(h) != 1 || h[0].Lease != 2 || h[0].WaiterId != 8 || h[0].Token <= held.Token {
		t.Fatalf("holders after the cancel = %v, want lease 2 (waiter 8) with a token above %d", h, held.Token)
	}
}

func TestCancelWriterLetsReadersIn(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3)
	s.mustAcquire(&catalogpb.LockRequest{Name: "rw", Lease: 1, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK, Mode: catalogpb.LockMode_LOCK_MODE_SHARED})
	s.mustAcquire(&catalogpb.LockRequest{Name: "rw", Lease: 2, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK, WaiterId: 4})
	s.mustAcquire(&catalogpb.LockRequest{Name: "rw", Lease: 3, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK, Mode: catalogpb.LockMode_LOCK_MODE_SHARED})
	evs := s.cancel(catalogpb.CancelWaitCommand_LOCK, "rw", 2, 4)
	wantOwners(t, "holders", evs[0].Lock.Holders, "1:1", "3:2")
}

func TestRevokeLockOwners(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3)
	t1 := s.lock("m", 1)
	s.lock("m", 2)
	s.lock("m", 3)
	s.lock("other", 2)

	// The holder's lease ends: the next waiter gets the lock, with a higher
	// token, in the revoke's apply.
	evs := s.revoke(1)
	wantEvents(t, evs, "PUT lock m", "DELETE lease 1")
	wantOwners(t, "holders", evs[0].Lock.Holders, "2:3")
	if evs[0].Lock.Holders[0].Token <= t1 {
		t.Errorf("token %d after revoke not above %d", evs[0].Lock.Holders[0].Token, t1)
	}
	// A waiter's lease ends: it leaves the queue.
	evs = s.revoke(3)
	wantEvents(t, evs, "PUT lock m", "DELETE lease 3")
	wantOwners(t, "waiters", evs[0].Lock.Waiters)
	// The last owner's lease ends: both names are deleted.
	evs = s.revoke(2)
	wantEvents(t, evs, "DELETE lock m", "DELETE lock other", "DELETE lease 2")

	// An item already gone gives nothing.
	_, err := s.update(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
		evs, ok, err := locks.DeleteLeased(tx, rev, s.now, 2, &catalogpb.LeaseItem{Kind: locks.LockKind, Key: "m"})
		if !ok || len(evs) != 0 {
			t.Errorf("DeleteLeased of a gone hold = %q, ok %v", eventSummary(evs), ok)
		}
		return evs, err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReleaseRefused(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	tok := s.lock("m", 1)
	s.mustRelease("m", 1, tok)
	tok2 := s.lock("m", 2)
	rel := func(l int64, token uint64) *catalogpb.LocksCommand {
		return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Release{Release: &catalogpb.UnlockRequest{Name: "m", Lease: l, Token: token}}}
	}
	s.refused(rel(1, tok), locks.ErrNotHeld, "token 1 does not hold lock \"m\"; current holders: [2]")
	s.refused(rel(1, tok2), locks.ErrNotHeld, "held by lease 2, not lease 1")
	s.refused(&catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Release{Release: &catalogpb.UnlockRequest{Name: "none", Lease: 1, Token: 3}}},
		locks.ErrNotHeld, `lock "none"`, "no holders")
	s.refused(rel(1, 0), locks.ErrInvalidArgument, "token")
	// lease 0 releases a token whatever lease holds it.
	if _, _, err := s.release("m", 0, tok2); err != nil {
		t.Fatalf("release by token alone: %v", err)
	}
}

func TestFence(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	tok := s.lock("m", 1)
	s.lock("m", 2)
	fence := func(token uint64) (bool, []uint64) {
		var valid bool
		var cur []uint64
		s.view(func(tx *bbolt.Tx) error {
			var err error
			valid, cur, err = locks.Fence(tx, "m", token)
			return err
		})
		return valid, cur
	}
	if ok, cur := fence(tok); !ok || !slices.Equal(cur, []uint64{tok}) {
		t.Fatalf("Fence(holder token) = %v %v", ok, cur)
	}
	s.mustRelease("m", 1, tok)
	if ok, cur := fence(tok); ok || !slices.Equal(cur, []uint64{tok + 1}) {
		t.Fatalf("Fence(released token) = %v %v, want false [%d]", ok, cur, tok+1)
	}
	if ok, _ := fence(0); ok {
		t.Fatalf("Fence(0) valid")
	}
	s.view(func(tx *bbolt.Tx) error {
		ok, cur, err := locks.Fence(tx, "bad\x00name", 1)
		if ok || len(cur) != 0 || err != nil {
			t.Errorf("Fence of a name no lock can have = %v %v %v, want false, none, no error", ok, cur, err)
		}
		return nil
	})
	s.revoke(2)
	if ok, cur := fence(tok + 1); ok || len(cur) != 0 {
		t.Fatalf("Fence on a deleted lock = %v %v", ok, cur)
	}
}

func TestListLocks(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	for _, n := range []string{"a/1", "a/2", "a/3", "b/1"} {
		s.lock(n, 1)
	}
	s.mustAcquire(&catalogpb.LockRequest{Name: "a/4", Lease: 1, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Limit: 2})
	list := func(prefix string, kind catalogpb.LockKind, after string, limit int) ([]string, bool) {
		var names []string
		var more bool
		s.view(func(tx *bbolt.Tx) error {
			sts, m, err := locks.ListLocks(tx, prefix, kind, after, limit)
			for _, st := range sts {
				names = append(names, st.Name)
			}
			more = m
			return err
		})
		return names, more
	}
	cases := []struct {
		prefix, after string
		kind          catalogpb.LockKind
		limit         int
		want          []string
		more          bool
	}{
		{"", "", 0, 0, []string{"a/1", "a/2", "a/3", "a/4", "b/1"}, false},
		{"a/", "", 0, 2, []string{"a/1", "a/2"}, true},
		{"a/", "a/2", 0, 2, []string{"a/3", "a/4"}, false},
		{"a/", "", catalogpb.LockKind_LOCK_KIND_MUTEX, 3, []string{"a/1", "a/2", "a/3"}, false},
		{"", "", catalogpb.LockKind_LOCK_KIND_SEMAPHORE, 0, []string{"a/4"}, false},
		{"", "a/9", 0, 0, []string{"b/1"}, false},
		{"c", "", 0, 0, nil, false},
	}
	for _, c := range cases {
		got, more := list(c.prefix, c.kind, c.after, c.limit)
		if !slices.Equal(got, c.want) || more != c.more {
			t.Errorf("ListLocks(%q, %v, %q, %d) = %q more %v, want %q more %v", c.prefix, c.kind, c.after, c.limit, got, more, c.want, c.more)
		}
	}
	s.view(func(tx *bbolt.Tx) error {
		_, _, err := locks.ListLocks(tx, "", 0, "", -1)
		wantErr(t, err, locks.ErrInvalidArgument, "limit")
		return nil
	})
}
