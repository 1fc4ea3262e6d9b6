package lease

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
)

func openStore(t *testing.T) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "lease.db"), 0o600, &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(CreateBuckets); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestGrantAttachRevoke(t *testing.T) {
	db := openStore(t)
	err := db.Update(func(tx *bbolt.Tx) error {
		resp, evs, err := ApplyGrant(tx, 5, 1234, &catalogpb.LeaseGrantCommand{Id: 9, TtlSeconds: 10})
		if err != nil {
			return err
		}
		if resp.Id != 9 || resp.TtlSeconds != 10 || len(evs) != 1 || evs[0].Type != catalogpb.Event_PUT ||
			string(evs[0].Kv.Key) != "9" || evs[0].Lease.GrantRevision != 5 || evs[0].Lease.GrantUnixNano != 1234 {
			t.Errorf("grant: %v %v", resp, evs)
		}
		if _, _, err := ApplyGrant(tx, 6, 0, &catalogpb.LeaseGrantCommand{Id: 9, TtlSeconds: 10}); !errors.Is(err, ErrExists) {
			t.Errorf("second grant: %v", err)
		}
		for _, bad := range []*catalogpb.LeaseGrantCommand{{Id: 0, TtlSeconds: 10}, {Id: 1, TtlSeconds: 0}, {Id: 1, TtlSeconds: MaxTTLSeconds + 1}} {
			if _, _, err := ApplyGrant(tx, 6, 0, bad); err == nil {
				t.Errorf("grant %v accepted", bad)
			}
		}
		if _, _, err := ApplyGrant(tx, 6, 0, &catalogpb.LeaseGrantCommand{Id: 10, TtlSeconds: 5}); err != nil {
			return err
		}
		for _, it := range [][2]string{{"kv", "b"}, {"instance", "svc/1"}, {"kv", "a"}} {
			if err := Attach(tx, 9, it[0], it[1]); err != nil {
				return err
			}
		}
		if err := Attach(tx, 11, "kv", "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("attach to an unknown lease: %v", err)
		}
		if err := Detach(tx, 9, "kv", "b"); err != nil {
			return err
		}
		items, err := Items(tx, 9)
		if err != nil {
			return err
		}
		var got []string
		for _, it := range items {
			got = append(got, it.Kind+":"+it.Key)
		}
		if strings.Join(got, ",") != "instance:svc/1,kv:a" || CountItems(tx, 9) != 2 || CountItems(tx, 10) != 0 {
			t.Errorf("items %v", got)
		}
		ev, err := ApplyRevoke(tx, 7, 9)
		if err != nil {
			return err
		}
		if ev.Type != catalogpb.Event_DELETE || ev.Kv.ModRevision != 7 || ev.PrevKv.CreateRevision != 5 || ev.Lease.Id != 9 {
			t.Errorf("revoke event %v", ev)
		}
		if Exists(tx, 9) || CountItems(tx, 9) != 0 {
			t.Error("revoke left the lease or its items")
		}
		if CountItems(tx, 10) != 0 || !Exists(tx, 10) {
			t.Error("revoke touched another lease")
		}
		if _, err := ApplyRevoke(tx, 8, 9); !errors.Is(err, ErrNotFound) {
			t.Errorf("second revoke: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestList(t *testing.T) {
	db := openStore(t)
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, id := range []int64{3, 1, 7, 5} {
			if _, _, err := ApplyGrant(tx, id, 0, &catalogpb.LeaseGrantCommand{Id: id, TtlSeconds: 10}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bbolt.Tx) error {
		page, more, err := List(tx, 0, 2)
		if err != nil || !more || len(page) != 2 || page[0].Id != 1 || page[1].Id != 3 {
			t.Errorf("first page %v more %v %v", page, more, err)
		}
		page, more, err = List(tx, 3, 2)
		if err != nil || more || len(page) != 2 || page[0].Id != 5 || page[1].Id != 7 {
			t.Errorf("second page %v more %v %v", page, more, err)
		}
		if n := Count(tx); n != 4 {
			t.Errorf("Count = %d", n)
		}
		return nil
	})
}
