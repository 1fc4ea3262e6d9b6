package registry

import (
	"github.com/catalogd/catalogd/api/catalogpb"
	"go.etcd.io/bbolt"
)

// Kinds of the registry's events and lease items, beside EventKind ("kv").
const (
	ServiceKind  = "service"
	InstanceKind = "instance"
	ShardMapKind = "shard_map"
)

// DeleteLeased deletes one item attached to a lease that is being revoked,
// at revision rev, and returns its events. ok is false when the item's kind
// is not the registry's (the caller hands it to the package that owns it).
// An item already gone returns no events.
func DeleteLeased(tx *bbolt.Tx, rev int64, leaseID int64, item *catalogpb.LeaseItem) (evs []*catalogpb.Event, ok bool, err error) {
	switch item.Kind {
	case EventKind:
		evs, err = deleteLeasedKey(tx, rev, leaseID, []byte(item.Key))
		return evs, true, err
	case InstanceKind:
		evs, err = deleteLeasedInstance(tx, rev, leaseID, item.Key)
		return evs, true, err
	}
	return nil, false, nil
}
