package locks_test

import (
	"slices"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
)

// holderOf returns lease's holder of name, failing the test if it holds
// none.
func (s *store) holderOf(name string, leaseID int64) *catalogpb.LockOwner {
	s.t.Helper()
	for _, h := range s.getLock(name).GetHolders() {
		if h.Lease == leaseID {
			return h
		}
	}
	s.t.Fatalf("lease %d does not hold %q: %v", leaseID, name, s.getLock(name))
	return nil
}

func (s *store) wantFence(name string, token uint64, want bool) {
	s.t.Helper()
	s.view(func(tx *bbolt.Tx) error {
		valid, _, err := locks.Fence(tx, name, token)
		if valid != want {
			s.t.Errorf("fence %q token %d = %v, want %v", name, token, valid, want)
		}
		return err
	})
}

// TestLateEarlierAttemptAfterRetryGrant: attempt A1 (waiter 10) is granted
// but its answer is lost; the retry A2 (waiter 11, retry_of [10]) re-tags the
// hold and retires 10. A1's proposal applied again after that (a late
// duplicate from another member) changes nothing: it is refused with
// ErrSuperseded, try or not, and the hold stays tagged 11, so the cancel A1's
// member then proposes (naming 10) does not release it.
func TestLateEarlierAttemptAfterRetryGrant(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	a1, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 10})
	if !a1.Acquired {
		t.Fatalf("first attempt = %v, want granted", a1)
	}
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 20})

	a2, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 11, RetryOf: []uint64{10}})
	if !a2.Acquired || a2.Token != a1.Token {
		t.Fatalf("retry = %v, want the hold of token %d", a2, a1.Token)
	}
	wantEvents(t, evs, "PUT lock m")
	if h := evs[0].Lock.Holders[0]; h.WaiterId != 11 || !slices.Equal(h.RetiredWaiterIds, []uint64{10}) {
		t.Fatalf("holder after the retry = %v, want waiter 11 with retired [10]", h)
	}

	for _, try := range []bool{false, true} {
		s.refused(acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 10, Try: try}), locks.ErrSuperseded,
			`waiter id 10 is an earlier attempt of the call that now holds lock "m" as waiter id 11`)
	}
	before, rev := s.dump(), s.rev
	if evs := s.cancel(catalogpb.CancelWaitCommand_LOCK, "m", 1, 10); len(evs) != 0 {
		t.Fatalf("cancel of the earlier attempt gave events %q", eventSummary(evs))
	}
	s.unchanged(before, rev)
	if h := s.holderOf("m", 1); h.Token != a1.Token || h.WaiterId != 11 {
		t.Fatalf("holder = %v, want token %d waiter 11", h, a1.Token)
	}
	s.wantFence("m", a1.Token, true)
	s.wantLeaseItems(1, "lock:m")
	wantOwners(t, "waiters", s.getLock("m").Waiters, "2:0")

	// The same attempt again (same id) is still the idempotent retry.
	again, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 11, RetryOf: []uint64{10}})
	if !again.Acquired || again.Token != a1.Token || len(evs) != 0 {
		t.Fatalf("repeat of the retry = %v, events %q; want the hold, no change", again, eventSummary(evs))
	}

	// A third attempt names both: it takes over and retires both.
	a3, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 12, RetryOf: []uint64{10, 11}})
	if !a3.Acquired || a3.Token != a1.Token {
		t.Fatalf("third attempt = %v", a3)
	}
	if h := s.holderOf("m", 1); h.WaiterId != 12 || !slices.Equal(h.RetiredWaiterIds, []uint64{10, 11}) {
		t.Fatalf("holder = %v, want waiter 12 with retired [10 11]", h)
	}
	s.refused(acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 11, RetryOf: []uint64{10}}), locks.ErrSuperseded,
		"waiter id 11 is an earlier attempt", "as waiter id 12")

	// The current attempt's cancel still releases, and lease 2 is granted.
	evs = s.cancel(catalogpb.CancelWaitCommand_LOCK, "m", 1, 12)
	wantEvents(t, evs, "PUT lock m")
	if h := evs[0].Lock.Holders; len(h) != 1 || h[0].Lease != 2 || h[0].Token <= a1.Token {
		t.Fatalf("holders after the cancel = %v, want lease 2 with a token above %d", h, a1.Token)
	}
}

// TestLateEarlierAttemptAfterRetryQueued: the retry is applied first and
// queues a new waiter, which stores its retry_of; the earlier attempt,
// applied after it, finds its id retired and changes nothing; the waiter
// keeps its place and id, and is granted as the retry's.
func TestLateEarlierAttemptAfterRetryQueued(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3)
	held := s.lock("m", 1)
	a2, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 21, RetryOf: []uint64{20}})
	if a2.Acquired {
		t.Fatalf("retry = %v, want queued", a2)
	}
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 3, WaiterId: 30})
	if w := s.getLock("m").Waiters[0]; w.WaiterId != 21 || !slices.Equal(w.RetiredWaiterIds, []uint64{20}) {
		t.Fatalf("new waiter = %v, want waiter 21 with retired [20]", w)
	}
	s.refused(acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 20}), locks.ErrSuperseded,
		`waiter id 20 is an earlier attempt of the call that now waits for lock "m" as waiter id 21`)
	if evs := s.cancel(catalogpb.CancelWaitCommand_LOCK, "m", 2, 20); len(evs) != 0 {
		t.Fatalf("cancel of the earlier attempt gave events %q", eventSummary(evs))
	}
	wantOwners(t, "waiters", s.getLock("m").Waiters, "2:0", "3:0")

	_, evs := s.mustRelease("m", 1, held)
	if h := evs[0].Lock.Holders; len(h) != 1 || h[0].Lease != 2 || h[0].WaiterId != 21 || !slices.Equal(h[0].RetiredWaiterIds, []uint64{20}) {
		t.Fatalf("holders after the release = %v, want lease 2 (waiter 21, retired [20])", h)
	}
	// Granted, the retired id is still stale.
	s.refused(acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 2, WaiterId: 20}), locks.ErrSuperseded, "now holds")

	// A try that finds nothing to hold stores nothing either.
	try, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "t", Lease: 3, WaiterId: 40, RetryOf: []uint64{39}, Try: true})
	if !try.Acquired || len(evs) != 1 || !slices.Equal(evs[0].Lock.Holders[0].RetiredWaiterIds, []uint64{39}) {
		t.Fatalf("try on a free lock = %v, events %v; want granted with retired [39]", try, evs)
	}
}

// TestAnotherCallSupersedesRetired: the retired ids are the latest
// attempt's retry_of. Another call of the lease (its own waiter id, not
// naming the current one) takes the place over and starts a new list; the
// superseded call's attempts are then not retired and may take it back
// (that call then sees WAIT_SUPERSEDED, as before retry_of existed).
func TestAnotherCallSupersedesRetired(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 11, RetryOf: []uint64{10}})
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 50})
	if h := s.holderOf("m", 1); h.WaiterId != 50 || len(h.RetiredWaiterIds) != 0 {
		t.Fatalf("holder = %v, want waiter 50 without retired ids", h)
	}
	back, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 10})
	if !back.Acquired || s.holderOf("m", 1).WaiterId != 10 {
		t.Fatalf("old call's attempt = %v, want it to take the hold over", back)
	}
}

// TestRetiredIDsBounded: an owner keeps at most MaxRetryOf retired ids, the
// newest attempt's retry_of without duplicates; an attempt that fell out of
// that window is no longer known as stale.
func TestRetiredIDsBounded(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	var ids []uint64
	for i := range 20 {
		id := uint64(100 + i)
		earlier := ids
		if len(earlier) > locks.MaxRetryOf {
			earlier = earlier[len(earlier)-locks.MaxRetryOf:]
		}
		resp, _ := s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: id, RetryOf: earlier})
		if !resp.Acquired {
			t.Fatalf("attempt %d = %v", i, resp)
		}
		h := s.holderOf("m", 1)
		if h.WaiterId != id || !slices.Equal(h.RetiredWaiterIds, earlier) || len(h.RetiredWaiterIds) > locks.MaxRetryOf {
			t.Fatalf("attempt %d: holder = %v, want waiter %d retired %v", i, h, id, earlier)
		}
		ids = append(ids, id)
	}
	// 119 holds; 103..118 are retired; 100..102 are out of the window.
	s.refused(acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 103}), locks.ErrSuperseded, "waiter id 103")
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 102})
	if h := s.holderOf("m", 1); h.WaiterId != 102 {
		t.Fatalf("holder = %v, want waiter 102 (out of the retired window)", h)
	}

	// Duplicates in retry_of are stored once.
	s.mustAcquire(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 7, RetryOf: []uint64{5, 6, 5, 6, 5}})
	if h := s.holderOf("m", 1); !slices.Equal(h.RetiredWaiterIds, []uint64{5, 6}) {
		t.Fatalf("retired = %v, want [5 6]", h.RetiredWaiterIds)
	}
}

// TestCampaignRetryOf: a Campaign's retry_of reaches the acquire it
// proposes, and an earlier attempt applied late does not take the
// leadership's place back.
func TestCampaignRetryOf(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	campaign := func(waiter uint64, retryOf ...uint64) *catalogpb.LocksCommand {
		return locks.CampaignCommand(&catalogpb.CampaignRequest{Name: "e", Lease: 1, Value: []byte("v"), RetryOf: retryOf}, waiter)
	}
	if got := campaign(2, 1).GetAcquire().GetRetryOf(); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("campaign command retry_of = %v, want [1]", got)
	}
	first, _, err := s.apply(campaign(1))
	if err != nil || !first.(*catalogpb.LockResponse).Acquired {
		t.Fatalf("campaign = %v, %v", first, err)
	}
	token := first.(*catalogpb.LockResponse).Token
	if _, _, err := s.apply(campaign(2, 1)); err != nil {
		t.Fatal(err)
	}
	s.refused(campaign(1), locks.ErrSuperseded, "waiter id 1 is an earlier attempt", `lock "e" as waiter id 2`)
	if evs := s.cancel(catalogpb.CancelWaitCommand_LOCK, "e", 1, 1); len(evs) != 0 {
		t.Fatalf("cancel of the earlier attempt gave events %q", eventSummary(evs))
	}
	if l := locks.LeaderOf(s.getLock("e")); !l.HasLeader || l.Leader.Token != token {
		t.Fatalf("leader = %v, want token %d", l, token)
	}
}

func TestRetryOfValidation(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	s.lock("m", 1)
	cases := []struct {
		name  string
		cmd   *catalogpb.LocksCommand
		parts []string
	}{
		{"too long", acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 50, RetryOf: make17()}),
			[]string{"lock retry_of must name at most 16 waiter ids of earlier attempts, got 17"}},
		{"a zero", acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 50, RetryOf: []uint64{3, 0}}),
			[]string{"lock retry_of[1] is 0"}},
		{"its own id", acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 1, WaiterId: 50, RetryOf: []uint64{3, 50}}),
			[]string{"lock retry_of[1] is 50, this attempt's own waiter_id"}},
		{"campaign too long", locks.CampaignCommand(&catalogpb.CampaignRequest{Name: "e", Lease: 1, RetryOf: make17()}, 50),
			[]string{"campaign retry_of must name at most 16", "got 17"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.t = t
			s.refused(c.cmd, locks.ErrInvalidArgument, c.parts...)
		})
	}
	s.t = t
	for _, c := range []struct {
		r    *catalogpb.CampaignRequest
		want string
	}{
		{&catalogpb.CampaignRequest{Name: "e", Lease: 1, RetryOf: make17()}, "campaign retry_of must name at most 16"},
		{&catalogpb.CampaignRequest{Name: "e", Lease: 1, RetryOf: []uint64{0}}, "campaign retry_of[0] is 0"},
		{&catalogpb.CampaignRequest{Name: "e", Lease: 1, WaiterId: 4, RetryOf: []uint64{4}}, "campaign retry_of[0] is 4, this attempt's own waiter_id"},
	} {
		wantErr(t, locks.ValidateCampaignRequest(c.r), locks.ErrInvalidArgument, c.want)
	}
	if err := locks.ValidateLockRequest(&catalogpb.LockRequest{Name: "m", Lease: 1, RetryOf: []uint64{1, 2}}); err != nil {
		t.Errorf("lock request with retry_of and waiter_id 0 (server picks) refused: %v", err)
	}
	if err := locks.ValidateCampaignRequest(&catalogpb.CampaignRequest{Name: "e", Lease: 1, WaiterId: 3, RetryOf: []uint64{1, 2}}); err != nil {
		t.Errorf("campaign with retry_of refused: %v", err)
	}
}
