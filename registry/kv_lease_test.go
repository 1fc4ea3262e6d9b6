package registry

import (
	"slices"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"go.etcd.io/bbolt"
)

func (s *store) grant(id int64) {
	s.t.Helper()
	_, err := s.write(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
		_, evs, err := lease.ApplyGrant(tx, rev, 0, &catalogpb.LeaseGrantCommand{Id: id, TtlSeconds: 10})
		return evs, err
	})
	if err != nil {
		s.t.Fatalf("grant lease %d: %v", id, err)
	}
}

// items returns lease id's items as "kind:key".
func (s *store) items(id int64) []string {
	s.t.Helper()
	var out []string
	err := s.db.View(func(tx *bbolt.Tx) error {
		items, err := lease.Items(tx, id)
		for _, it := range items {
			out = append(out, it.Kind+":"+it.Key)
		}
		return err
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func leasedPut(key string, id int64) *catalogpb.PutRequest {
	return &catalogpb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: id}
}

func (s *store) mustPutReq(req *catalogpb.PutRequest) {
	s.t.Helper()
	if _, _, err := s.put(req); err != nil {
		s.t.Fatalf("put %q lease %d: %v", req.Key, req.Lease, err)
	}
}

func TestPutAttachesAndMovesKeysBetweenLeases(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	s.grant(2)
	s.mustPutReq(leasedPut("a", 1))
	s.mustPutReq(leasedPut("b", 1))
	if got := s.items(1); !slices.Equal(got, []string{"kv:a", "kv:b"}) {
		t.Fatalf("lease 1 items %v", got)
	}
	if kv := s.mustGet(&catalogpb.GetRequest{Key: []byte("a")}).Kvs[0]; kv.Lease != 1 {
		t.Errorf("stored lease %d, want 1", kv.Lease)
	}
	// Same lease again: still attached once.
	s.mustPutReq(leasedPut("a", 1))
	// Another lease: moves.
	s.mustPutReq(leasedPut("b", 2))
	// No lease: detached.
	s.mustPutReq(leasedPut("a", 0))
	if got := s.items(1); len(got) != 0 {
		t.Errorf("lease 1 items %v, want none", got)
	}
	if got := s.items(2); !slices.Equal(got, []string{"kv:b"}) {
		t.Errorf("lease 2 items %v, want [kv:b]", got)
	}
}

func TestDeletesDetachKeys(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	for _, k := range []string{"p/1", "p/2", "q", "r"} {
		s.mustPutReq(leasedPut(k, 1))
	}
	if _, _, err := s.del(&catalogpb.DeleteRequest{Key: []byte("p/"), Prefix: true}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.del(&catalogpb.DeleteRequest{Key: []byte("q")}); err != nil {
		t.Fatal(err)
	}
	if got := s.items(1); !slices.Equal(got, []string{"kv:r"}) {
		t.Fatalf("after deletes: items %v, want [kv:r]", got)
	}
	_, _, err := s.txn(&catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{{Op: &catalogpb.TxnOp_Delete{Delete: &catalogpb.DeleteRequest{Key: []byte("r")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.items(1); len(got) != 0 {
		t.Errorf("after txn delete: items %v", got)
	}
}

func TestTxnPutsAttach(t *testing.T) {
	s := newStore(t)
	s.grant(3)
	resp, _, err := s.txn(&catalogpb.TxnRequest{
		Success: []*catalogpb.TxnOp{{Op: &catalogpb.TxnOp_Put{Put: leasedPut("x", 3)}}},
		// The branch not taken may name an unknown lease: only the branch
		// that runs is checked (as in etcd).
		Failure: []*catalogpb.TxnOp{{Op: &catalogpb.TxnOp_Put{Put: leasedPut("y", 99)}}},
	})
	if err != nil || !resp.Succeeded {
		t.Fatalf("txn: %v %v", resp, err)
	}
	if got := s.items(3); !slices.Equal(got, []string{"kv:x"}) {
		t.Errorf("items %v", got)
	}
}

func TestRefusedLeasedPutChangesNothing(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	s.mustPutReq(leasedPut("a", 1))
	before := s.dump()
	_, _, err := s.put(leasedPut("a", 2))
	assertErr(t, err, ErrLeaseNotFound, "lease 2", `"a"`)
	_, _, err = s.txn(&catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{
		{Op: &catalogpb.TxnOp_Delete{Delete: &catalogpb.DeleteRequest{Key: []byte("a")}}},
		{Op: &catalogpb.TxnOp_Put{Put: leasedPut("b", 2)}},
	}})
	assertErr(t, err, ErrLeaseNotFound, "lease 2")
	_, _, err = s.put(leasedPut("a", -1))
	assertErr(t, err, ErrInvalidArgument, "lease must be 0 (none) or a positive lease id, got -1")
	if after := s.dump(); !slices.Equal(before, after) {
		t.Errorf("a refused put changed the store:\nbefore %v\nafter  %v", before, after)
	}
}

func TestDeleteLeasedKey(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	s.grant(2)
	s.mustPutReq(leasedPut("mine", 1))
	s.mustPutReq(leasedPut("moved", 1))
	s.mustPutReq(leasedPut("moved", 2))
	revoke := func(key string) []*catalogpb.Event {
		t.Helper()
		evs, err := s.write(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
			evs, ok, err := DeleteLeased(tx, rev, 1, &catalogpb.LeaseItem{Kind: EventKind, Key: key})
			if !ok {
				t.Fatalf("DeleteLeased does not know kind %q", EventKind)
			}
			return evs, err
		})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	rev := s.rev + 1
	evs := revoke("mine")
	if len(evs) != 1 {
		t.Fatalf("events %v, want one delete", evs)
	}
	ev := evs[0]
	if ev.Type != catalogpb.Event_DELETE || ev.Kind != EventKind || string(ev.Kv.Key) != "mine" || ev.Kv.ModRevision != rev ||
		ev.PrevKv == nil || string(ev.PrevKv.Value) != "v" || ev.PrevKv.Lease != 1 {
		t.Errorf("event %v", ev)
	}
	if n := len(s.mustGet(&catalogpb.GetRequest{Key: []byte("mine")}).Kvs); n != 0 {
		t.Errorf("key still there")
	}
	// Gone already, or put again with another lease: left alone.
	if evs := revoke("mine"); len(evs) != 0 {
		t.Errorf("second delete gave %v", evs)
	}
	if evs := revoke("moved"); len(evs) != 0 {
		t.Errorf("a key now on lease 2 was deleted with lease 1: %v", evs)
	}
	if n := len(s.mustGet(&catalogpb.GetRequest{Key: []byte("moved")}).Kvs); n != 1 {
		t.Errorf("key of lease 2 deleted")
	}
	_, ok, err := DeleteLeased(nil, 1, 1, &catalogpb.LeaseItem{Kind: "lock", Key: "x"})
	if ok || err != nil {
		t.Errorf("unknown kind: ok %v err %v, want not ok", ok, err)
	}
}
