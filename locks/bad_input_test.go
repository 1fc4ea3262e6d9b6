package locks_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
)

// TestBadInput is the list, and more: each refused with the right
// error, a message that says what was wrong, and nothing changed.
func TestBadInput(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	tok := s.lock("m", 1)
	s.mustRelease("m", 1, tok)
	s.lock("m", 2)
	s.mustAcquire(&catalogpb.LockRequest{Name: "sem", Lease: 1, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Limit: 2})
	s.must(enterCmd("d", 1, 2))
	qid, _ := s.enqueue("q", "x")
	s.dequeue("q", 1, 1, false)
	missing := qid + 100 // no command reaches that revision here

	long := strings.Repeat("n", 600)
	cases := []struct {
		name   string
		cmd    *catalogpb.LocksCommand
		target error
		parts  []string
	}{
		{"unlock with a stale token", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Release{Release: &catalogpb.UnlockRequest{Name: "m", Lease: 1, Token: tok}}},
			locks.ErrNotHeld, []string{"token 1 does not hold lock \"m\"; current holders: [2]"}},
		{"leave without enter", leaveCmd("d", 2), locks.ErrNotEntered, []string{"lease 2 has not entered barrier \"d\""}},
		{"ack of an unknown item", ackCmd("q", missing, 1), locks.ErrItemNotFound, []string{fmt.Sprintf("queue \"q\" has no item %d handed to lease 1", missing)}},
		{"more permits than the semaphore has", acquireCmd(&catalogpb.LockRequest{Name: "sem", Lease: 2, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Permits: 3}),
			locks.ErrPermitsExceeded, []string{"semaphore \"sem\" has 2 permits; cannot take 3"}},
		{"more permits than the limit given", acquireCmd(&catalogpb.LockRequest{Name: "new", Lease: 2, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Permits: 3, Limit: 2}),
			locks.ErrPermitsExceeded, []string{"has 2 permits; cannot take 3"}},
		{"lock with a lease that does not exist", acquireCmd(&catalogpb.LockRequest{Name: "m2", Lease: 5}), locks.ErrLeaseNotFound, []string{"lease 5 not found"}},
		{"enter with a lease that does not exist", enterCmd("d2", 5, 1), locks.ErrLeaseNotFound, []string{"lease 5 not found"}},
		{"set with a lease that does not exist", setCmd("s", 5), locks.ErrLeaseNotFound, []string{"lease 5 not found"}},
		{"dequeue with a lease that does not exist", dequeueCmd("q", 5, 1, false), locks.ErrLeaseNotFound, []string{"lease 5 not found"}},
		{"long name", acquireCmd(&catalogpb.LockRequest{Name: long, Lease: 1}), locks.ErrInvalidArgument, []string{"lock name must be 1..512 bytes, got 600"}},
		{"empty name", enqueueCmd("", "x"), locks.ErrInvalidArgument, []string{"queue name must be 1..512 bytes, got 0"}},
		{"control character", setCmd("a\x00b", 0), locks.ErrInvalidArgument, []string{"control character", "U+0000"}},
		{"invalid UTF-8", setCmd("a\xffb", 0), locks.ErrInvalidArgument, []string{"not valid UTF-8"}},
		{"lease 0", acquireCmd(&catalogpb.LockRequest{Name: "x"}), locks.ErrInvalidArgument, []string{"positive lease id, got 0"}},
		{"negative lease", dequeueCmd("q", -3, 1, false), locks.ErrInvalidArgument, []string{"got -3"}},
		{"unknown kind", acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 1, Kind: 9}), locks.ErrInvalidArgument, []string{"lock kind must be"}},
		{"unknown mode", acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 1, Mode: 5}), locks.ErrInvalidArgument, []string{"lock mode must be"}},
		{"shared mutex", acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 1, Mode: catalogpb.LockMode_LOCK_MODE_SHARED}), locks.ErrInvalidArgument, []string{"SHARED is for RWLOCK"}},
		{"mutex permits", acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 1, Permits: 2}), locks.ErrInvalidArgument, []string{"permits are for semaphores"}},
		{"mutex limit", acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 1, Limit: 3}), locks.ErrInvalidArgument, []string{"limit is for semaphores"}},
		{"mutex value", acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 1, Value: []byte("v")}), locks.ErrInvalidArgument, []string{"value is for election"}},
		{"semaphore limit too large", acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 1, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Limit: locks.MaxPermits + 1}),
			locks.ErrInvalidArgument, []string{"semaphore limit must be 1..1073741824"}},
		{"negative permits", acquireCmd(&catalogpb.LockRequest{Name: "x", Lease: 1, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Limit: 2, Permits: -1}),
			locks.ErrInvalidArgument, []string{"permits must be"}},
		{"value too large", acquireCmd(&catalogpb.LockRequest{Name: "e", Lease: 1, Kind: catalogpb.LockKind_LOCK_KIND_ELECTION, Value: make([]byte, locks.MaxValueBytes+1)}),
			locks.ErrInvalidArgument, []string{"election value must be at most 65536 bytes, got 65537"}},
		{"payload too large", enqueueCmd("q", strings.Repeat("p", locks.MaxPayloadBytes+1)), locks.ErrInvalidArgument, []string{"payload must be at most 1048576 bytes"}},
		{"barrier count 0", enterCmd("d", 1, 0), locks.ErrInvalidArgument, []string{"count must be 1..", "got 0"}},
		{"barrier count mismatch", enterCmd("d", 2, 3), locks.ErrBarrierMismatch, []string{"expects 2 participants", "count 3"}},
		{"ack id 0", ackCmd("q", 0, 1), locks.ErrInvalidArgument, []string{"ack id"}},
		{"dequeue retry_of too long", dequeueRetryCmd("q", 1, 50, make17(), false), locks.ErrInvalidArgument,
			[]string{"retry_of must name at most 16 waiter ids", "got 17"}},
		{"dequeue retry_of with 0", dequeueRetryCmd("q", 1, 50, []uint64{3, 0}, false), locks.ErrInvalidArgument,
			[]string{"retry_of[1] is 0"}},
		{"unlock token 0", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Release{Release: &catalogpb.UnlockRequest{Name: "m", Lease: 2}}},
			locks.ErrInvalidArgument, []string{"token must be"}},
		{"cancel bad target", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Cancel{Cancel: &catalogpb.CancelWaitCommand{Target: 7, Name: "m", Lease: 1}}},
			locks.ErrInvalidArgument, []string{"cancel target"}},
		{"cancel lease 0", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Cancel{Cancel: &catalogpb.CancelWaitCommand{Name: "m"}}},
			locks.ErrInvalidArgument, []string{"lease"}},
		{"kind mismatch", acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 1, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Limit: 1}),
			locks.ErrKindMismatch, []string{"MUTEX", "SEMAPHORE"}},
		// Nil and missing sub-messages: refused, never a panic.
		{"nil command", nil, locks.ErrInvalidArgument, []string{"missing"}},
		{"no op", &catalogpb.LocksCommand{}, locks.ErrInvalidArgument, []string{"no operation"}},
		{"nil acquire", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Acquire{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"nil release", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Release{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"nil cancel", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Cancel{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"nil proclaim", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Proclaim{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"proclaim without leader", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Proclaim{Proclaim: &catalogpb.ProclaimRequest{}}},
			locks.ErrInvalidArgument, []string{"leader key is missing"}},
		{"nil barrier set", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierSet{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"nil barrier release", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierRelease{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"nil barrier enter", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierEnter{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"nil barrier leave", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_BarrierLeave{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"nil enqueue", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Enqueue{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"nil dequeue", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Dequeue{}}, locks.ErrInvalidArgument, []string{"missing"}},
		{"nil ack", &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Ack{}}, locks.ErrInvalidArgument, []string{"missing"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.t = t
			s.refused(c.cmd, c.target, c.parts...)
		})
	}
}

// make17 returns 17 non-zero waiter ids, one more than retry_of may name.
func make17() []uint64 {
	out := make([]uint64, 17)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

func TestValidateForHandlers(t *testing.T) {
	if err := locks.ValidateLockRequest(&catalogpb.LockRequest{Name: "e", Lease: 1, Kind: catalogpb.LockKind_LOCK_KIND_ELECTION}); err == nil {
		t.Errorf("Lock accepted kind ELECTION")
	}
	if err := locks.ValidateLockRequest(&catalogpb.LockRequest{Name: "m", Lease: 1}); err != nil {
		t.Errorf("plain mutex request refused: %v", err)
	}
	if err := locks.ValidateCampaignRequest(&catalogpb.CampaignRequest{Name: "e", Lease: 1, Value: []byte("v")}); err != nil {
		t.Errorf("campaign refused: %v", err)
	}
	if err := locks.ValidateCommand(locks.CampaignCommand(&catalogpb.CampaignRequest{Name: "e", Lease: 1}, 3)); err != nil {
		t.Errorf("campaign command refused: %v", err)
	}
	for _, err := range []error{
		locks.ValidateCampaignRequest(nil),
		locks.ValidateResignRequest(&catalogpb.ResignRequest{}),
		locks.ValidateProclaimRequest(nil),
		locks.ValidateBarrierWaitRequest(&catalogpb.BarrierWaitRequest{}),
		locks.ValidateListLimit(-1),
		locks.ValidatePrefix("lock", strings.Repeat("p", 513)),
		locks.ValidateName("lock", "tab\there"),
	} {
		wantErr(t, err, locks.ErrInvalidArgument)
	}
	// A resign command built from a nil request is refused by Apply, not a panic.
	wantErr(t, locks.ValidateCommand(locks.ResignCommand(nil)), locks.ErrInvalidArgument)
	if err := locks.ValidateName("lock", "ünïcode/ok name"); err != nil {
		t.Errorf("valid name refused: %v", err)
	}
}

func TestDeleteLeasedEdges(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	_, err := s.update(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
		if evs, ok, err := locks.DeleteLeased(tx, rev, s.now, 1, nil); ok || err != nil || evs != nil {
			t.Errorf("DeleteLeased(nil) = %v %v %v", evs, ok, err)
		}
		if _, ok, err := locks.DeleteLeased(tx, rev, s.now, 1, &catalogpb.LeaseItem{Kind: "kv", Key: "k"}); ok || err != nil {
			t.Errorf("DeleteLeased(kv) ok %v err %v, want not ours", ok, err)
		}
		for _, it := range []*catalogpb.LeaseItem{
			{Kind: locks.LockKind, Key: "gone"},
			{Kind: locks.BarrierKind, Key: "gone"},
			{Kind: locks.QueueKind, Key: "gone"},
			{Kind: locks.QueueItemKind, Key: "gone/3"},
		} {
			if evs, ok, err := locks.DeleteLeased(tx, rev, s.now, 1, it); !ok || err != nil || len(evs) != 0 {
				t.Errorf("DeleteLeased(%v) of a gone item = %q %v %v", it, eventSummary(evs), ok, err)
			}
		}
		if _, ok, err := locks.DeleteLeased(tx, rev, s.now, 1, &catalogpb.LeaseItem{Kind: locks.QueueItemKind, Key: "noid"}); !ok || err == nil {
			t.Errorf("DeleteLeased of a malformed queue item key: ok %v err %v", ok, err)
		}
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// An item of another lease is left alone.
	s.grant(2)
	s.lock("m", 1)
	s.must(setCmd("b", 1))
	s.must(enterCmd("d", 1, 2))
	qid, _ := s.enqueue("q", "x")
	if it, _ := s.dequeue("q", 1, 1, false); it.GetId() != qid {
		t.Fatalf("dequeue = %v, want item %d", it, qid)
	}
	s.dequeue("q", 1, 2, false)
	before, rev := s.dump(), s.rev
	_, err = s.update(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
		for _, it := range []*catalogpb.LeaseItem{
			{Kind: locks.LockKind, Key: "m"},
			{Kind: locks.BarrierKind, Key: "b"},
			{Kind: locks.BarrierKind, Key: "d"},
			{Kind: locks.QueueKind, Key: "q"},
			{Kind: locks.QueueItemKind, Key: fmt.Sprintf("q/%d", qid)},
		} {
			if evs, _, err := locks.DeleteLeased(tx, rev, s.now, 2, it); err != nil || len(evs) != 0 {
				t.Errorf("DeleteLeased by lease 2 of lease 1's %v = %q %v", it, eventSummary(evs), err)
			}
		}
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.unchanged(before, rev)
}

func TestMissingBuckets(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "empty.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, _, err := locks.Apply(tx, 1, 0, enqueueCmd("q", "x")); err == nil || !strings.Contains(err.Error(), "CreateBuckets") {
			t.Errorf("Apply without buckets: %v", err)
		}
		if err := locks.CreateBuckets(tx); err != nil {
			return err
		}
		// Lease buckets are still missing.
		if _, _, err := locks.Apply(tx, 1, 0, acquireCmd(&catalogpb.LockRequest{Name: "m", Lease: 1})); err == nil || !strings.Contains(err.Error(), "lease") {
			t.Errorf("Apply without lease buckets: %v", err)
		}
		if _, _, err := locks.Apply(tx, 0, 0, enqueueCmd("q", "x")); err == nil {
			t.Errorf("Apply at revision 0 accepted")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeterministic runs one history on two stores: the same events, the
// same bytes stored.
func TestDeterministic(t *testing.T) {
	run := func() (map[string]string, []string) {
		s := newStore(t)
		s.grant(1, 2, 3)
		var log []string
		note := func(evs []*catalogpb.Event) {
			for _, ev := range evs {
				b, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
				if err != nil {
					t.Fatal(err)
				}
				log = append(log, fmt.Sprintf("%x", b))
			}
		}
		for i := range 3 {
			l := int64(i%3 + 1)
			_, evs := s.mustAcquire(&catalogpb.LockRequest{Name: "rw", Lease: l, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK, Mode: catalogpb.LockMode(i % 2)})
			note(evs)
			_, evs = s.enqueue("q", fmt.Sprint(i))
			note(evs)
			_, evs = s.dequeue("q", l, uint64(i), false)
			note(evs)
		}
		note(s.revoke(1))
		note(s.must(enterCmd("d", 2, 2)))
		note(s.revoke(2))
		return s.dump(), log
	}
	d1, l1 := run()
	d2, l2 := run()
	if !slices.Equal(l1, l2) {
		t.Fatalf("event logs differ")
	}
	if len(d1) != len(d2) {
		t.Fatalf("stores differ in size")
	}
	for k, v := range d1 {
		if d2[k] != v {
			t.Fatalf("stores differ at %q", k)
		}
	}
}
