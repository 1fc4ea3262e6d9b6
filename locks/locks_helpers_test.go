package locks_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"github.com/catalogd/catalogd/locks"
)

// A store drives the package as the state machine does: one bbolt
// transaction per command, the revision moving iff the command returned
// events, time entering as a number.
type store struct {
	t   *testing.T
	db  *bbolt.DB
	rev int64
	now int64
}

func newStore(t *testing.T) *store {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "locks.db"), 0o600, &bbolt.Options{NoSync: true, NoFreelistSync: true})
	if err != nil {
		t.Fatalf("open bbolt: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *bbolt.Tx) error {
		if err := locks.CreateBuckets(tx); err != nil {
			return err
		}
		return lease.CreateBuckets(tx)
	})
	if err != nil {
		t.Fatalf("create buckets: %v", err)
	}
	return &store{t: t, db: db, now: 1_000_000_000}
}

// update runs fn in one transaction at the next revision. The transaction
// commits even when fn fails: a refused command must have written nothing,
// and unchanged proves it.
func (s *store) update(fn func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error)) ([]*catalogpb.Event, error) {
	s.t.Helper()
	var events []*catalogpb.Event
	var applyErr error
	s.now += 1000
	err := s.db.Update(func(tx *bbolt.Tx) error {
		events, applyErr = fn(tx, s.rev+1)
		return nil
	})
	if err != nil {
		s.t.Fatalf("bbolt update: %v", err)
	}
	if applyErr != nil && len(events) > 0 {
		s.t.Errorf("refused command returned %d events", len(events))
	}
	if applyErr == nil && len(events) > 0 {
		s.rev++
	}
	for _, ev := range events {
		if ev.Kv.GetModRevision() != s.rev {
			s.t.Errorf("event %s %s carries mod revision %d, want %d", ev.Kind, ev.Kv.GetKey(), ev.Kv.GetModRevision(), s.rev)
		}
	}
	return events, applyErr
}

func (s *store) apply(cmd *catalogpb.LocksCommand) (proto.Message, []*catalogpb.Event, error) {
	s.t.Helper()
	var resp proto.Message
	evs, err := s.update(func(tx *bbolt.Tx, rev int64) (evs []*catalogpb.Event, err error) {
		resp, evs, err = locks.Apply(tx, rev, s.now, cmd)
		if err != nil && resp != nil {
			s.t.Errorf("refused command returned response %v", resp)
		}
		return evs, err
	})
	return resp, evs, err
}

func (s *store) view(fn func(tx *bbolt.Tx) error) {
	s.t.Helper()
	if err := s.db.View(fn); err != nil {
		s.t.Fatal(err)
	}
}

func (s *store) grant(ids ...int64) {
	s.t.Helper()
	for _, id := range ids {
		_, err := s.update(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
			_, evs, err := lease.ApplyGrant(tx, rev, s.now, &catalogpb.LeaseGrantCommand{Id: id, TtlSeconds: 10})
			return evs, err
		})
		if err != nil {
			s.t.Fatalf("grant lease %d: %v", id, err)
		}
	}
}

// revoke revokes a lease as the server does: DeleteLeased for each of its
// items, then lease.ApplyRevoke, in one apply.
func (s *store) revoke(id int64) []*catalogpb.Event {
	s.t.Helper()
	evs, err := s.update(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
		items, err := lease.Items(tx, id)
		if err != nil {
			return nil, err
		}
		var all []*catalogpb.Event
		for _, it := range items {
			evs, ok, err := locks.DeleteLeased(tx, rev, s.now, id, it)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("item %s:%s of lease %d not handled", it.Kind, it.Key, id)
			}
			all = append(all, evs...)
		}
		ev, err := lease.ApplyRevoke(tx, rev, id)
		if err != nil {
			return nil, err
		}
		return append(all, ev), nil
	})
	if err != nil {
		s.t.Fatalf("revoke lease %d: %v", id, err)
	}
	return evs
}

func acquireCmd(r *catalogpb.LockRequest) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Acquire{Acquire: r}}
}

func (s *store) acquire(r *catalogpb.LockRequest) (*catalogpb.LockResponse, []*catalogpb.Event, error) {
	s.t.Helper()
	resp, evs, err := s.apply(acquireCmd(r))
	if err != nil {
		return nil, evs, err
	}
	return resp.(*catalogpb.LockResponse), evs, nil
}

func (s *store) mustAcquire(r *catalogpb.LockRequest) (*catalogpb.LockResponse, []*catalogpb.Event) {
	s.t.Helper()
	resp, evs, err := s.acquire(r)
	if err != nil {
		s.t.Fatalf("acquire %v: %v", r, err)
	}
	return resp, evs
}

// lock takes mutex name for leaseID and returns the token (0 if queued).
func (s *store) lock(name string, leaseID int64) uint64 {
	s.t.Helper()
	resp, _ := s.mustAcquire(&catalogpb.LockRequest{Name: name, Lease: leaseID, WaiterId: uint64(leaseID)})
	return resp.Token
}

func (s *store) release(name string, leaseID int64, token uint64) (*catalogpb.UnlockResponse, []*catalogpb.Event, error) {
	s.t.Helper()
	resp, evs, err := s.apply(&catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Release{Release: &catalogpb.UnlockRequest{Name: name, Lease: leaseID, Token: token}}})
	if err != nil {
		return nil, evs, err
	}
	return resp.(*catalogpb.UnlockResponse), evs, nil
}

func (s *store) mustRelease(name string, leaseID int64, token uint64) (*catalogpb.UnlockResponse, []*catalogpb.Event) {
	s.t.Helper()
	resp, evs, err := s.release(name, leaseID, token)
	if err != nil {
		s.t.Fatalf("release %s lease %d token %d: %v", name, leaseID, token, err)
	}
	return resp, evs
}

func (s *store) cancel(target catalogpb.CancelWaitCommand_Target, name string, leaseID int64, waiterID uint64) []*catalogpb.Event {
	s.t.Helper()
	_, evs, err := s.apply(&catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Cancel{Cancel: &catalogpb.CancelWaitCommand{
		Target: target, Name: name, Lease: leaseID, WaiterId: waiterID,
	}}})
	if err != nil {
		s.t.Fatalf("cancel %s %s lease %d waiter %d: %v", target, name, leaseID, waiterID, err)
	}
	return evs
}

func (s *store) getLock(name string) *catalogpb.LockState {
	s.t.Helper()
	var st *catalogpb.LockState
	s.view(func(tx *bbolt.Tx) error {
		var err error
		st, err = locks.GetLock(tx, name)
		return err
	})
	return st
}

func (s *store) getBarrier(name string) *catalogpb.BarrierState {
	s.t.Helper()
	var st *catalogpb.BarrierState
	s.view(func(tx *bbolt.Tx) error {
		var err error
		st, err = locks.GetBarrier(tx, name)
		return err
	})
	return st
}

func (s *store) status(queue string) *catalogpb.QueueStatus {
	s.t.Helper()
	var st *catalogpb.QueueStatus
	s.view(func(tx *bbolt.Tx) error {
		var err error
		st, err = locks.QueueStatus(tx, queue, true, 0)
		return err
	})
	return st
}

func (s *store) lastToken() uint64 {
	var tok uint64
	s.view(func(tx *bbolt.Tx) error {
		tok = locks.LastToken(tx)
		return nil
	})
	return tok
}

func (s *store) leaseItems(id int64) []string {
	s.t.Helper()
	var out []string
	s.view(func(tx *bbolt.Tx) error {
		items, err := lease.Items(tx, id)
		for _, it := range items {
			out = append(out, it.Kind+":"+it.Key)
		}
		return err
	})
	return out
}

func (s *store) wantLeaseItems(id int64, want ...string) {
	s.t.Helper()
	if got := s.leaseItems(id); !slices.Equal(got, want) {
		s.t.Errorf("lease %d items = %q, want %q", id, got, want)
	}
}

// dump returns every key and value of every bucket.
func (s *store) dump() map[string]string {
	s.t.Helper()
	out := map[string]string{}
	s.view(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"|"+string(k)] = string(v)
				return nil
			})
		})
	})
	return out
}

// unchanged fails the test when the store differs from before.
func (s *store) unchanged(before map[string]string, rev int64) {
	s.t.Helper()
	after := s.dump()
	if len(after) != len(before) {
		s.t.Errorf("store has %d entries, had %d before", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			s.t.Errorf("entry %q changed", k)
		}
	}
	if s.rev != rev {
		s.t.Errorf("revision moved from %d to %d", rev, s.rev)
	}
}

// refused runs cmd and checks that it fails with target, that the message
// holds every part, and that nothing changed.
func (s *store) refused(cmd *catalogpb.LocksCommand, target error, parts ...string) {
	s.t.Helper()
	before, rev := s.dump(), s.rev
	_, evs, err := s.apply(cmd)
	wantErr(s.t, err, target, parts...)
	if len(evs) != 0 {
		s.t.Errorf("refused command returned events %q", eventSummary(evs))
	}
	s.unchanged(before, rev)
}

func wantErr(t *testing.T, err, target error, parts ...string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want one wrapping %v", err, target)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

// eventSummary is "TYPE kind key" per event.
func eventSummary(evs []*catalogpb.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type.String()+" "+ev.Kind+" "+string(ev.Kv.GetKey()))
	}
	return out
}

func wantEvents(t *testing.T, evs []*catalogpb.Event, want ...string) {
	t.Helper()
	if got := eventSummary(evs); !slices.Equal(got, want) {
		t.Fatalf("events = %q, want %q", got, want)
	}
}

// owners summarizes holders or waiters as "lease:token".
func owners(os []*catalogpb.LockOwner) []string {
	out := []string{}
	for _, o := range os {
		out = append(out, fmt.Sprintf("%d:%d", o.Lease, o.Token))
	}
	return out
}

func wantOwners(t *testing.T, what string, got []*catalogpb.LockOwner, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if g := owners(got); !slices.Equal(g, want) {
		t.Errorf("%s = %q, want %q", what, g, want)
	}
}

func wantEqual(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}
