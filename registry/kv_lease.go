package registry

import (
	"fmt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"go.etcd.io/bbolt"
)

// Config keys may live by a lease: a put with a lease attaches the key to it
// (lease item kind "kv", item key the config key), and the key is deleted in
// the apply that revokes the lease. A put that changes the key's lease, or a
// delete, detaches it from its old lease.

// checkLease refuses a put whose lease does not exist. Writes check every
// put's lease before they change anything.
func checkLease(tx *bbolt.Tx, req *catalogpb.PutRequest) error {
	if req.Lease == 0 || lease.Exists(tx, req.Lease) {
		return nil
	}
	return fmt.Errorf("%w: put of key %s names lease %d, which does not exist (it expired, was revoked or was never granted); grant one first, or use lease 0 for none",
		ErrLeaseNotFound, quoteKey(req.Key), req.Lease)
}

// moveLease moves key from lease from to lease to (either may be 0: none).
func moveLease(tx *bbolt.Tx, key []byte, from, to int64) error {
	if from != 0 {
		if err := lease.Detach(tx, from, EventKind, string(key)); err != nil {
			return err
		}
	}
	if to != 0 {
		if err := lease.Attach(tx, to, EventKind, string(key)); err != nil {
			return err
		}
	}
	return nil
}

// deleteLeasedKey deletes key, attached to lease leaseID that is being
// revoked, at revision rev and returns its delete event. A key that is gone,
// or that was put again with another lease since, is left alone and gives
// no event. The caller (lease.ApplyRevoke) drops the lease's item index.
func deleteLeasedKey(tx *bbolt.Tx, rev int64, leaseID int64, key []byte) ([]*catalogpb.Event, error) {
	if err := checkRevision(rev); err != nil {
		return nil, err
	}
	b, err := kvBucket(tx)
	if err != nil {
		return nil, err
	}
	s, found, err := getKV(b, key)
	if err != nil || !found || s.lease != leaseID {
		return nil, err
	}
	prev := s.clone(true)
	if err := b.Delete(prev.Key); err != nil {
		return nil, fmt.Errorf("registry: delete key %s of revoked lease %d: %w", quoteKey(key), leaseID, err)
	}
	return []*catalogpb.Event{{
		Type:   catalogpb.Event_DELETE,
		Kind:   EventKind,
		Kv:     &catalogpb.KeyValue{Key: prev.Key, ModRevision: rev},
		PrevKv: prev,
	}}, nil
}
