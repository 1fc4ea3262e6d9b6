package registry

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"go.etcd.io/bbolt"
)

// KVBucket is the bbolt bucket of the config store: key → marshalled
// catalogpb.KeyValue.
var KVBucket = []byte("kv")

// EventKind is the kind of every event the config store emits.
const EventKind = "kv"

var errNoBucket = fmt.Errorf("registry: bucket %q does not exist; call CreateBuckets when the database is opened", KVBucket)

// CreateBuckets creates the buckets the package writes to. It is idempotent,
// so the server may call it on every start.
func CreateBuckets(tx *bbolt.Tx) error {
	for _, name := range [][]byte{KVBucket, ServicesBucket, InstancesBucket, ShardMapsBucket} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("registry: create bucket %q: %w", name, err)
		}
	}
	return nil
}

func kvBucket(tx *bbolt.Tx) (*bbolt.Bucket, error) {
	if b := tx.Bucket(KVBucket); b != nil {
		return b, nil
	}
	return nil, errNoBucket
}

func checkRevision(rev int64) error {
	if rev <= 0 {
		return fmt.Errorf("registry: write revision must be positive, got %d", rev)
	}
	return nil
}

// The Apply functions share a contract:
//   - They validate the whole request first, so a refused request (an error
//     wrapping one of the sentinels) leaves tx unchanged.
//   - rev is the revision the write gets if it changes anything. Every event
//     and every written mod_revision carries rev. The caller moves the store
//     revision to rev iff the call returned events.
//   - Responses leave Header nil for the caller to fill. Responses and events
//     may share KeyValue messages: treat both as read-only.
//   - Any other error (a corrupt stored value, a bbolt failure) is an internal
//     error that may leave part of a txn written: the caller must roll tx back
//     and stop applying.

// ApplyPut writes one key. A put always changes the store, even with the
// value the key already holds (as in etcd): it returns exactly one event.
func ApplyPut(tx *bbolt.Tx, rev int64, req *catalogpb.PutRequest) (*catalogpb.PutResponse, []*catalogpb.Event, error) {
	if err := ValidatePut(req); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	b, err := kvBucket(tx)
	if err != nil {
		return nil, nil, err
	}
	if err := checkLease(tx, req); err != nil {
		return nil, nil, err
	}
	resp, ev, err := put(tx, b, rev, req)
	if err != nil {
		return nil, nil, err
	}
	return resp, []*catalogpb.Event{ev}, nil
}

// ApplyDelete deletes one key, or every key under a prefix (an empty prefix
// is every key). It returns one event per deleted key, in key order, and none
// when no key matched.
func ApplyDelete(tx *bbolt.Tx, rev int64, req *catalogpb.DeleteRequest) (*catalogpb.DeleteResponse, []*catalogpb.Event, error) {
	if err := ValidateDelete(req); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	b, err := kvBucket(tx)
	if err != nil {
		return nil, nil, err
	}
	return deleteRange(tx, b, rev, req)
}

// A FenceChecker answers whether token is held now by a holder of the lock
// named name. The server passes the locks package's answer: this package
// does not know about locks.
type FenceChecker func(tx *bbolt.Tx, name string, token uint64) (bool, error)

// ApplyTxn evaluates the compares, then runs the success ops if all hold and
// the failure ops otherwise, in order, each seeing the effects of the ones
// before it. All its writes share rev: the txn is one revision or none.
//
// Compares follow etcd: a missing key has create, mod revision and version 0,
// and a VALUE compare on a missing key never holds, whatever the result (no
// value can stand for "absent"); use EXISTS to test existence. A FENCE
// compare asks fence about the lock named by its key; with fence nil a txn
// holding one is refused.
func ApplyTxn(tx *bbolt.Tx, rev int64, req *catalogpb.TxnRequest, fence FenceChecker) (*catalogpb.TxnResponse, []*catalogpb.Event, error) {
	if err := ValidateTxn(req); err != nil {
		return nil, nil, err
	}
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	b, err := kvBucket(tx)
	if err != nil {
		return nil, nil, err
	}
	if fence == nil {
		for i, c := range req.Compare {
			if c.Target == catalogpb.Compare_FENCE {
				return nil, nil, fmt.Errorf("%w: txn compare %d: FENCE compares are not served by this store", ErrInvalidArgument, i)
			}
		}
	}
	succeeded := true
	for _, c := range req.Compare {
		holds, err := compareHolds(tx, b, c, fence)
		if err != nil {
			return nil, nil, err
		}
		if !holds {
			succeeded = false
			break
		}
	}
	ops := req.Success
	if !succeeded {
		ops = req.Failure
	}
	for _, op := range ops {
		if p, ok := op.Op.(*catalogpb.TxnOp_Put); ok {
			if err := checkLease(tx, p.Put); err != nil {
				return nil, nil, err
			}
		}
	}
	resp := &catalogpb.TxnResponse{Succeeded: succeeded, Responses: make([]*catalogpb.TxnOpResponse, len(ops))}
	var events []*catalogpb.Event
	for i, op := range ops {
		switch x := op.Op.(type) {
		case *catalogpb.TxnOp_Put:
			r, ev, err := put(tx, b, rev, x.Put)
			if err != nil {
				return nil, nil, err
			}
			events = append(events, ev)
			resp.Responses[i] = &catalogpb.TxnOpResponse{Response: &catalogpb.TxnOpResponse_Put{Put: r}}
		case *catalogpb.TxnOp_Delete:
			r, evs, err := deleteRange(tx, b, rev, x.Delete)
			if err != nil {
				return nil, nil, err
			}
			events = append(events, evs...)
			resp.Responses[i] = &catalogpb.TxnOpResponse{Response: &catalogpb.TxnOpResponse_Delete{Delete: r}}
		case *catalogpb.TxnOp_Get:
			r, err := rangeKeys(b, x.Get)
			if err != nil {
				return nil, nil, err
			}
			resp.Responses[i] = &catalogpb.TxnOpResponse{Response: &catalogpb.TxnOpResponse_Get{Get: r}}
		default:
			// ValidateTxn refused this already; reaching it is a bug here.
			return nil, nil, fmt.Errorf("registry: txn op %d of type %T passed validation", i, x)
		}
	}
	return resp, events, nil
}

// Range reads one key, or the keys under a prefix (an empty prefix is every
// key), in key order, a page of at most limit keys at a time. Count is the
// number of keys in the whole range, whichever page is read. The request's
// consistency is the server's business and is ignored here.
func Range(tx *bbolt.Tx, req *catalogpb.GetRequest) (*catalogpb.GetResponse, error) {
	if err := ValidateGet(req); err != nil {
		return nil, err
	}
	b, err := kvBucket(tx)
	if err != nil {
		return nil, err
	}
	return rangeKeys(b, req)
}

// Count returns the number of keys in the config store. It walks every key:
// it is for status pages and tests, not for request paths.
func Count(tx *bbolt.Tx) int {
	b := tx.Bucket(KVBucket)
	if b == nil {
		return 0
	}
	// Bucket.Stats would be cheaper but reads committed pages only, so it
	// misses the writes of the transaction it runs in.
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}

// getKV reads and parses a key in place; found is false when it does not exist.
func getKV(b *bbolt.Bucket, key []byte) (s storedKV, found bool, err error) {
	data := b.Get(key)
	if data == nil {
		return s, false, nil
	}
	if s, err = parseKV(data); err != nil {
		return s, true, corrupt(key, err)
	}
	return s, true, nil
}

// put writes a validated put request whose lease checkLease found.
func put(tx *bbolt.Tx, b *bbolt.Bucket, rev int64, req *catalogpb.PutRequest) (*catalogpb.PutResponse, *catalogpb.Event, error) {
	old, found, err := getKV(b, req.Key)
	if err != nil {
		return nil, nil, err
	}
	ev := &catalogpb.Event{Type: catalogpb.Event_PUT, Kind: EventKind}
	createRev, version := rev, int64(1)
	if found {
		createRev, version = old.createRevision, old.version+1
		ev.PrevKv = old.clone(true)
	}
	kv, enc := encodeKV(req.Key, req.Value, createRev, rev, version, req.Lease)
	if err := b.Put(kv.Key, enc); err != nil {
		return nil, nil, fmt.Errorf("registry: put key %s: %w", quoteKey(req.Key), err)
	}
	if old.lease != req.Lease {
		if err := moveLease(tx, req.Key, old.lease, req.Lease); err != nil {
			return nil, nil, err
		}
	}
	ev.Kv = kv
	resp := &catalogpb.PutResponse{}
	if req.PrevKv {
		resp.PrevKv = ev.PrevKv
	}
	return resp, ev, nil
}

// deleteRange deletes the keys of a validated delete request, detaching
// each from its lease.
func deleteRange(tx *bbolt.Tx, b *bbolt.Bucket, rev int64, req *catalogpb.DeleteRequest) (*catalogpb.DeleteResponse, []*catalogpb.Event, error) {
	var prev []*catalogpb.KeyValue
	if req.Prefix {
		c := b.Cursor()
		for k, v := c.Seek(req.Key); k != nil && bytes.HasPrefix(k, req.Key); k, v = c.Next() {
			s, err := parseKV(v)
			if err != nil {
				return nil, nil, corrupt(k, err)
			}
			prev = append(prev, s.clone(true))
		}
	} else {
		s, found, err := getKV(b, req.Key)
		if err != nil {
			return nil, nil, err
		}
		if found {
			prev = []*catalogpb.KeyValue{s.clone(true)}
		}
	}
	resp := &catalogpb.DeleteResponse{Deleted: int64(len(prev))}
	if len(prev) == 0 {
		return resp, nil, nil
	}
	// Deleting after the scan, not through the cursor, because deleting under
	// a bbolt cursor makes its Next skip keys.
	events := make([]*catalogpb.Event, len(prev))
	for i, kv := range prev {
		if err := b.Delete(kv.Key); err != nil {
			return nil, nil, fmt.Errorf("registry: delete key %s: %w", quoteKey(kv.Key), err)
		}
		if kv.Lease != 0 {
			if err := lease.Detach(tx, kv.Lease, EventKind, string(kv.Key)); err != nil {
				return nil, nil, err
			}
		}
		events[i] = &catalogpb.Event{
			Type:   catalogpb.Event_DELETE,
			Kind:   EventKind,
			Kv:     &catalogpb.KeyValue{Key: kv.Key, ModRevision: rev},
			PrevKv: kv,
		}
	}
	if req.PrevKv {
		resp.PrevKvs = prev
	}
	return resp, events, nil
}

// rangeKeys serves a validated get request.
func rangeKeys(b *bbolt.Bucket, req *catalogpb.GetRequest) (*catalogpb.GetResponse, error) {
	resp := &catalogpb.GetResponse{}
	if !req.Prefix {
		// A single key fits in one page: a token can only name the key itself
		// (validation checked), so it changes nothing.
		s, found, err := getKV(b, req.Key)
		if err != nil {
			return nil, err
		}
		if !found {
			return resp, nil
		}
		resp.Count = 1
		if !req.CountOnly {
			resp.Kvs = []*catalogpb.KeyValue{s.clone(!req.KeysOnly)}
		}
		return resp, nil
	}

	start := req.Key
	if len(req.ContinueToken) > 0 {
		next, err := decodeContinueToken(req.ContinueToken, req.Key, true)
		if err != nil {
			return nil, err
		}
		start = next
	}
	limit := req.Limit
	if limit == 0 {
		limit = MaxRangeLimit
	}
	inRange := func(k []byte) bool { return k != nil && bytes.HasPrefix(k, req.Key) }

	c := b.Cursor()
	k, v := c.Seek(req.Key)
	// Keys before start were on earlier pages; they still count.
	for ; inRange(k) && bytes.Compare(k, start) < 0; k, v = c.Next() {
		resp.Count++
	}
	if !req.CountOnly {
		for ; inRange(k); k, v = c.Next() {
			if int64(len(resp.Kvs)) == limit {
				resp.More = true
				resp.NextToken = encodeContinueToken(req.Key, true, k)
				break
			}
			s, err := parseKV(v)
			if err != nil {
				return nil, corrupt(k, err)
			}
			resp.Kvs = append(resp.Kvs, s.clone(!req.KeysOnly))
			resp.Count++
		}
	}
	for ; inRange(k); k, _ = c.Next() {
		resp.Count++
	}
	return resp, nil
}

// compareHolds evaluates one validated compare against the store.
func compareHolds(tx *bbolt.Tx, b *bbolt.Bucket, c *catalogpb.Compare, fence FenceChecker) (bool, error) {
	if c.Target == catalogpb.Compare_FENCE {
		valid, err := fence(tx, string(c.Key), c.GetFenceToken())
		if err != nil {
			return false, err
		}
		return valid == (c.Result == catalogpb.Compare_EQUAL), nil
	}
	s, found, err := getKV(b, c.Key)
	if err != nil {
		return false, err
	}
	var cmp int
	switch c.Target {
	case catalogpb.Compare_EXISTS:
		holds := found == c.GetExists()
		if c.Result == catalogpb.Compare_NOT_EQUAL {
			holds = !holds
		}
		return holds, nil
	case catalogpb.Compare_VALUE:
		if !found {
			return false, nil
		}
		cmp = bytes.Compare(s.value, c.GetValue())
	case catalogpb.Compare_MOD:
		cmp = compareInt(s.modRevision, c.GetModRevision())
	case catalogpb.Compare_CREATE:
		cmp = compareInt(s.createRevision, c.GetCreateRevision())
	case catalogpb.Compare_VERSION:
		cmp = compareInt(s.version, c.GetVersion())
	default:
		return false, errors.New("registry: compare target passed validation but is unknown")
	}
	switch c.Result {
	case catalogpb.Compare_EQUAL:
		return cmp == 0, nil
	case catalogpb.Compare_GREATER:
		return cmp > 0, nil
	case catalogpb.Compare_LESS:
		return cmp < 0, nil
	case catalogpb.Compare_NOT_EQUAL:
		return cmp != 0, nil
	}
	return false, errors.New("registry: compare result passed validation but is unknown")
}

func compareInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
