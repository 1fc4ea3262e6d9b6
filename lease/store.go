package lease

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// Buckets: leases maps an id (8 bytes, big endian) to its marshalled
// LeaseInfo; items holds one empty value per attached item, keyed by id, kind,
// a zero byte and the item's key, so a lease's items are one prefix scan.
var (
	Bucket      = []byte("leases")
	ItemsBucket = []byte("lease_items")
)

// EventKind is the kind of the events a grant or revoke emits.
const EventKind = "lease"

// Sentinel errors; the server maps them to gRPC codes.
var (
	ErrNotFound        = errors.New("lease: lease not found")
	ErrExists          = errors.New("lease: lease already exists")
	ErrTTLOutOfRange   = errors.New("lease: TTL out of range")
	ErrInvalidArgument = errors.New("lease: invalid argument")
)

// MaxTTLSeconds is the longest TTL a lease may have (one year).
const MaxTTLSeconds = 365 * 24 * 3600

// CreateBuckets creates the package's buckets; it is idempotent.
func CreateBuckets(tx *bbolt.Tx) error {
	for _, b := range [][]byte{Bucket, ItemsBucket} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("lease: create bucket %q: %w", b, err)
		}
	}
	return nil
}

func idKey(id int64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(id))
	return k
}

// Key returns the logical key of a lease in events: its id in decimal.
func Key(id int64) []byte { return []byte(strconv.FormatInt(id, 10)) }

// ValidateID checks a lease id given by a client.
func ValidateID(id int64) error {
	if id <= 0 {
		return fmt.Errorf("%w: lease id must be a positive integer, got %d", ErrInvalidArgument, id)
	}
	return nil
}

// Get returns the lease, or an error wrapping ErrNotFound.
func Get(tx *bbolt.Tx, id int64) (*catalogpb.LeaseInfo, error) {
	raw := tx.Bucket(Bucket).Get(idKey(id))
	if raw == nil {
		return nil, fmt.Errorf("%w: lease %d does not exist (it expired, was revoked or was never granted)", ErrNotFound, id)
	}
	l := &catalogpb.LeaseInfo{}
	if err := proto.Unmarshal(raw, l); err != nil {
		return nil, fmt.Errorf("lease: decode lease %d: %w", id, err)
	}
	return l, nil
}

// Exists reports whether lease id exists.
func Exists(tx *bbolt.Tx, id int64) bool {
	return tx.Bucket(Bucket).Get(idKey(id)) != nil
}

// ApplyGrant stores a new lease. The proposer chose the id; the TTL was
// checked against the server's bounds before proposing, and only its
// absolute range is checked here.
func ApplyGrant(tx *bbolt.Tx, rev int64, nowUnixNano int64, cmd *catalogpb.LeaseGrantCommand) (*catalogpb.LeaseGrantResponse, []*catalogpb.Event, error) {
	if err := ValidateID(cmd.Id); err != nil {
		return nil, nil, err
	}
	if cmd.TtlSeconds < 1 || cmd.TtlSeconds > MaxTTLSeconds {
		return nil, nil, fmt.Errorf("%w: ttl must be 1..%d seconds, got %d", ErrTTLOutOfRange, MaxTTLSeconds, cmd.TtlSeconds)
	}
	b := tx.Bucket(Bucket)
	if b.Get(idKey(cmd.Id)) != nil {
		return nil, nil, fmt.Errorf("%w: lease %d is already granted; choose another id or let the server choose (id 0)", ErrExists, cmd.Id)
	}
	l := &catalogpb.LeaseInfo{Id: cmd.Id, TtlSeconds: cmd.TtlSeconds, GrantRevision: rev, GrantUnixNano: nowUnixNano}
	raw, err := proto.Marshal(l)
	if err != nil {
		return nil, nil, fmt.Errorf("lease: encode lease %d: %w", cmd.Id, err)
	}
	if err := b.Put(idKey(cmd.Id), raw); err != nil {
		return nil, nil, fmt.Errorf("lease: store lease %d: %w", cmd.Id, err)
	}
	ev := &catalogpb.Event{
		Type:  catalogpb.Event_PUT,
		Kind:  EventKind,
		Kv:    &catalogpb.KeyValue{Key: Key(cmd.Id), CreateRevision: rev, ModRevision: rev, Version: 1},
		Lease: l,
	}
	return &catalogpb.LeaseGrantResponse{Id: cmd.Id, TtlSeconds: cmd.TtlSeconds}, []*catalogpb.Event{ev}, nil
}

// ApplyRevoke deletes the lease and its item index and returns the lease's
// delete event. The caller deletes the items themselves first (it knows
// every kind; this package does not), in the same transaction.
func ApplyRevoke(tx *bbolt.Tx, rev int64, id int64) (*catalogpb.Event, error) {
	l, err := Get(tx, id)
	if err != nil {
		return nil, err
	}
	if err := tx.Bucket(Bucket).Delete(idKey(id)); err != nil {
		return nil, fmt.Errorf("lease: delete lease %d: %w", id, err)
	}
	ib := tx.Bucket(ItemsBucket)
	prefix := idKey(id)
	var keys [][]byte
	c := ib.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := ib.Delete(k); err != nil {
			return nil, fmt.Errorf("lease: delete item of lease %d: %w", id, err)
		}
	}
	return &catalogpb.Event{
		Type:   catalogpb.Event_DELETE,
		Kind:   EventKind,
		Kv:     &catalogpb.KeyValue{Key: Key(id), ModRevision: rev},
		PrevKv: &catalogpb.KeyValue{Key: Key(id), CreateRevision: l.GrantRevision, ModRevision: l.GrantRevision, Version: 1},
		Lease:  l,
	}, nil
}

func itemKey(id int64, kind, key string) []byte {
	k := make([]byte, 0, 8+len(kind)+1+len(key))
	k = append(k, idKey(id)...)
	k = append(k, kind...)
	k = append(k, 0)
	return append(k, key...)
}

// Attach records that item (kind, key) lives by lease id. It fails with
// ErrNotFound when the lease does not exist.
func Attach(tx *bbolt.Tx, id int64, kind, key string) error {
	if !Exists(tx, id) {
		return fmt.Errorf("%w: lease %d does not exist (grant one first, or use lease 0 for none)", ErrNotFound, id)
	}
	if err := tx.Bucket(ItemsBucket).Put(itemKey(id, kind, key), nil); err != nil {
		return fmt.Errorf("lease: attach %s %q to lease %d: %w", kind, key, id, err)
	}
	return nil
}

// Detach forgets that item (kind, key) lives by lease id; detaching what is
// not attached does nothing.
func Detach(tx *bbolt.Tx, id int64, kind, key string) error {
	if id == 0 {
		return nil
	}
	if err := tx.Bucket(ItemsBucket).Delete(itemKey(id, kind, key)); err != nil {
		return fmt.Errorf("lease: detach %s %q from lease %d: %w", kind, key, id, err)
	}
	return nil
}

// Items lists what is attached to lease id, in (kind, key) order.
func Items(tx *bbolt.Tx, id int64) ([]*catalogpb.LeaseItem, error) {
	prefix := idKey(id)
	var out []*catalogpb.LeaseItem
	c := tx.Bucket(ItemsBucket).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		rest := k[8:]
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return nil, fmt.Errorf("lease: corrupt item key %x of lease %d", k, id)
		}
		out = append(out, &catalogpb.LeaseItem{Kind: string(rest[:i]), Key: string(rest[i+1:])})
	}
	return out, nil
}

// CountItems returns how many items are attached to lease id.
func CountItems(tx *bbolt.Tx, id int64) int64 {
	prefix := idKey(id)
	var n int64
	c := tx.Bucket(ItemsBucket).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		n++
	}
	return n
}

// ForEach calls fn for every lease in id order; fn's error stops the walk.
func ForEach(tx *bbolt.Tx, fn func(l *catalogpb.LeaseInfo) error) error {
	return tx.Bucket(Bucket).ForEach(func(k, v []byte) error {
		l := &catalogpb.LeaseInfo{}
		if err := proto.Unmarshal(v, l); err != nil {
			return fmt.Errorf("lease: decode lease %x: %w", k, err)
		}
		return fn(l)
	})
}

// List returns up to limit leases with ids above after, in id order, and
// whether more follow.
func List(tx *bbolt.Tx, after int64, limit int) ([]*catalogpb.LeaseInfo, bool, error) {
	var out []*catalogpb.LeaseInfo
	c := tx.Bucket(Bucket).Cursor()
	k, v := c.Seek(idKey(after + 1))
	if after < 0 {
		k, v = c.First()
	}
	for ; k != nil; k, v = c.Next() {
		if len(out) == limit {
			return out, true, nil
		}
		l := &catalogpb.LeaseInfo{}
		if err := proto.Unmarshal(v, l); err != nil {
			return nil, false, fmt.Errorf("lease: decode lease %x: %w", k, err)
		}
		out = append(out, l)
	}
	return out, false, nil
}

// Count returns the number of leases.
func Count(tx *bbolt.Tx) int {
	return tx.Bucket(Bucket).Stats().KeyN
}
