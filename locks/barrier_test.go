package locks_test

import (
	"slices"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
)

func setCmd(name string, l int64) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierSet{BarrierSet: &catalogpb.BarrierSetRequest{Name: name, Lease: l}}}
}

func releaseBarrierCmd(name string) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierRelease{BarrierRelease: &catalogpb.BarrierReleaseRequest{Name: name}}}
}

func enterCmd(name string, l, count int64) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierEnter{BarrierEnter: &catalogpb.BarrierEnterRequest{Name: name, Lease: l, Count: count}}}
}

func leaveCmd(name string, l int64) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierLeave{BarrierLeave: &catalogpb.BarrierLeaveRequest{Name: name, Lease: l}}}
}

func (s *store) must(cmd *catalogpb.LocksCommand) []*catalogpb.Event {
	s.t.Helper()
	_, evs, err := s.apply(cmd)
	if err != nil {
		s.t.Fatalf("%v: %v", cmd, err)
	}
	return evs
}

func TestSimpleBarrier(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	evs := s.must(setCmd("b", 1))
	wantEvents(t, evs, "PUT barrier b")
	b := evs[0].Barrier
	if b.Kind != catalogpb.BarrierKind_BARRIER_KIND_SIMPLE || b.Lease != 1 || b.CreateRevision != s.rev || b.ModRevision != s.rev {
		t.Fatalf("barrier = %v", b)
	}
	s.wantLeaseItems(1, "barrier:b")

	// Set again: no change, the first setter's lease stays.
	before, rev := s.dump(), s.rev
	if evs := s.must(setCmd("b", 2)); len(evs) != 0 {
		t.Fatalf("second set gave events %q", eventSummary(evs))
	}
	s.unchanged(before, rev)

	resp, evs, err := s.apply(releaseBarrierCmd("b"))
	if err != nil || !resp.(*catalogpb.BarrierReleaseResponse).Released {
		t.Fatalf("release = %v, %v", resp, err)
	}
	wantEvents(t, evs, "DELETE barrier b")
	if evs[0].PrevBarrier.GetLease() != 1 || evs[0].Barrier != nil {
		t.Errorf("delete event %v", evs[0])
	}
	s.wantLeaseItems(1)
	resp, evs, err = s.apply(releaseBarrierCmd("b"))
	if err != nil || resp.(*catalogpb.BarrierReleaseResponse).Released || len(evs) != 0 {
		t.Fatalf("release of an unset barrier = %v, %q, %v", resp, eventSummary(evs), err)
	}

	// Without a lease; and with a lease that ends.
	s.must(setCmd("nolease", 0))
	if b := s.getBarrier("nolease"); b == nil || b.Lease != 0 {
		t.Fatalf("barrier without lease = %v", b)
	}
	s.refused(setCmd("x", 99), locks.ErrLeaseNotFound, "lease 99 not found")
	s.must(setCmd("b", 2))
	evs = s.revoke(2)
	wantEvents(t, evs, "DELETE barrier b", "DELETE lease 2")
	if b := s.getBarrier("b"); b != nil {
		t.Fatalf("barrier after its lease ended = %v", b)
	}
}

func TestDoubleBarrier(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3, 4)
	evs := s.must(enterCmd("d", 1, 3))
	wantEvents(t, evs, "PUT barrier d")
	if b := evs[0].Barrier; b.Open || b.Count != 3 || len(b.Participants) != 1 || b.Kind != catalogpb.BarrierKind_BARRIER_KIND_DOUBLE {
		t.Fatalf("barrier after first enter = %v", b)
	}
	createRev := s.rev

	// Entering again is idempotent.
	before, rev := s.dump(), s.rev
	resp, evs, err := s.apply(enterCmd("d", 1, 3))
	if err != nil || len(evs) != 0 || len(resp.(*catalogpb.BarrierEnterResponse).State.Participants) != 1 {
		t.Fatalf("re-enter = %v, %q, %v", resp, eventSummary(evs), err)
	}
	s.unchanged(before, rev)

	s.refused(enterCmd("d", 2, 4), locks.ErrBarrierMismatch, "expects 3 participants", "count 4")
	s.refused(enterCmd("d", 99, 3), locks.ErrLeaseNotFound, "lease 99 not found")
	s.refused(leaveCmd("d", 2), locks.ErrNotEntered, "lease 2 has not entered barrier \"d\"")
	s.refused(leaveCmd("nobarrier", 2), locks.ErrNotEntered, "does not exist")
	s.refused(setCmd("d", 0), locks.ErrKindMismatch, "DOUBLE")
	s.refused(releaseBarrierCmd("d"), locks.ErrKindMismatch, "DOUBLE")

	s.must(enterCmd("d", 2, 3))
	resp, evs, err = s.apply(enterCmd("d", 3, 3))
	if err != nil {
		t.Fatal(err)
	}
	st := resp.(*catalogpb.BarrierEnterResponse).State
	if !st.Open || st.OpenRevision != s.rev || st.CreateRevision != createRev {
		t.Fatalf("barrier after the count entered = %v", st)
	}
	wantEvents(t, evs, "PUT barrier d")
	if evs[0].PrevBarrier.Open {
		t.Errorf("prev barrier already open")
	}
	s.refused(enterCmd("d", 4, 3), locks.ErrBarrierMismatch, "is open")
	// A participant entering again after it opened is still idempotent.
	if _, evs, err := s.apply(enterCmd("d", 2, 3)); err != nil || len(evs) != 0 {
		t.Fatalf("re-enter into the open barrier: %q, %v", eventSummary(evs), err)
	}
	for _, l := range []int64{1, 2, 3} {
		s.wantLeaseItems(l, "barrier:d")
	}

	evs = s.must(leaveCmd("d", 1))
	wantEvents(t, evs, "PUT barrier d")
	if !evs[0].Barrier.Open || len(evs[0].Barrier.Participants) != 2 {
		t.Errorf("barrier after one left = %v", evs[0].Barrier)
	}
	s.refused(leaveCmd("d", 1), locks.ErrNotEntered, "its participants are leases [2 3]")
	s.refused(enterCmd("d", 1, 3), locks.ErrBarrierMismatch, "is open")
	s.must(leaveCmd("d", 2))
	evs = s.must(leaveCmd("d", 3))
	wantEvents(t, evs, "DELETE barrier d")
	if s.getBarrier("d") != nil {
		t.Fatalf("barrier remains after every participant left")
	}
	for _, l := range []int64{1, 2, 3} {
		s.wantLeaseItems(l)
	}

	// Before it opens, Leave just withdraws; a fresh barrier may then take
	// another count once it is gone.
	s.must(enterCmd("w", 1, 2))
	evs = s.must(leaveCmd("w", 1))
	wantEvents(t, evs, "DELETE barrier w")
	s.must(enterCmd("w", 1, 5))
	if b := s.getBarrier("w"); b.Count != 5 {
		t.Fatalf("new barrier count = %d", b.Count)
	}
	s.refused(setCmd("w", 0), locks.ErrKindMismatch)
	s.must(setCmd("simple", 0))
	s.refused(enterCmd("simple", 1, 2), locks.ErrKindMismatch, "SIMPLE")
	s.refused(leaveCmd("simple", 1), locks.ErrKindMismatch, "SIMPLE")
}

func TestDoubleBarrierLeaseEnd(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	s.must(enterCmd("d", 1, 2))
	s.must(enterCmd("d", 2, 2))
	evs := s.revoke(1)
	wantEvents(t, evs, "PUT barrier d", "DELETE lease 1")
	if b := evs[0].Barrier; len(b.Participants) != 1 || b.Participants[0].Lease != 2 || !b.Open {
		t.Fatalf("barrier after a participant's lease ended = %v", b)
	}
	evs = s.revoke(2)
	wantEvents(t, evs, "DELETE barrier d", "DELETE lease 2")
}

func TestListBarriers(t *testing.T) {
	s := newStore(t)
	for _, n := range []string{"x/1", "x/2", "y"} {
		s.must(setCmd(n, 0))
	}
	var names []string
	var more bool
	s.view(func(tx *bbolt.Tx) error {
		bs, m, err := locks.ListBarriers(tx, "x/", "", 1)
		for _, b := range bs {
			names = append(names, b.Name)
		}
		more = m
		return err
	})
	if !slices.Equal(names, []string{"x/1"}) || !more {
		t.Fatalf("ListBarriers page 1 = %q more %v", names, more)
	}
	names = nil
	s.view(func(tx *bbolt.Tx) error {
		bs, m, err := locks.ListBarriers(tx, "x/", "x/1", 0)
		for _, b := range bs {
			names = append(names, b.Name)
		}
		more = m
		return err
	})
	if !slices.Equal(names, []string{"x/2"}) || more {
		t.Fatalf("ListBarriers page 2 = %q more %v", names, more)
	}
}
