package registry

// STUB: replaced by the lease work.

import (
	"errors"

	"github.com/catalogd/catalogd/api/catalogpb"
	"go.etcd.io/bbolt"
)

func deleteLeasedKey(tx *bbolt.Tx, rev int64, leaseID int64, key []byte) ([]*catalogpb.Event, error) {
	return nil, errors.New("not built")
}
