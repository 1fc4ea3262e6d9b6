package registry

// STUB: replaced by the registry work.

import (
	"errors"

	"github.com/catalogd/catalogd/api/catalogpb"
	"go.etcd.io/bbolt"
)

func deleteLeasedInstance(tx *bbolt.Tx, rev int64, leaseID int64, key string) ([]*catalogpb.Event, error) {
	return nil, errors.New("not built")
}
