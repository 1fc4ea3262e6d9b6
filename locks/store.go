package locks

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
)

// Buckets. Lock names, barrier names and queue names hold no control
// character, so the zero byte separates a queue's name from an item id.
var (
	// LocksBucket maps a lock name to its marshalled LockState.
	LocksBucket = []byte("locks")
	// MetaBucket holds the fencing token counter.
	MetaBucket = []byte("locks_meta")
	// BarriersBucket maps a barrier name to its marshalled BarrierState.
	BarriersBucket = []byte("barriers")
	// QueuesBucket maps a queue name to its record: a QueueStatus holding
	// only queue, next_id and consumers.
	QueuesBucket = []byte("queues")
	// QueueItemsBucket maps name\x00id (8 bytes, big endian) to a QueueItem.
	QueueItemsBucket = []byte("queue_items")
	// QueueReadyBucket indexes the ready items: name\x00id → empty.
	QueueReadyBucket = []byte("queue_ready")
)

var tokenKey = []byte("token")

var allBuckets = [][]byte{LocksBucket, MetaBucket, BarriersBucket, QueuesBucket, QueueItemsBucket, QueueReadyBucket}

// CreateBuckets creates the package's buckets; it is idempotent.
func CreateBuckets(tx *bbolt.Tx) error {
	for _, b := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("locks: create bucket %q: %w", b, err)
		}
	}
	return nil
}

// checkBuckets makes sure this package's buckets and the lease buckets
// exist, so that no later lookup meets a nil bucket.
func checkBuckets(tx *bbolt.Tx, withLeases bool) error {
	if tx == nil {
		return fmt.Errorf("locks: no transaction")
	}
	for _, b := range allBuckets {
		if tx.Bucket(b) == nil {
			return fmt.Errorf("locks: bucket %q does not exist; call locks.CreateBuckets when the database is opened", b)
		}
	}
	if withLeases && (tx.Bucket(lease.Bucket) == nil || tx.Bucket(lease.ItemsBucket) == nil) {
		return fmt.Errorf("locks: lease buckets do not exist; call lease.CreateBuckets when the database is opened")
	}
	return nil
}

func checkRevision(rev int64) error {
	if rev <= 0 {
		return fmt.Errorf("locks: write revision must be positive, got %d", rev)
	}
	return nil
}

// checkLeaseExists refuses a request naming a lease that does not exist.
func checkLeaseExists(tx *bbolt.Tx, id int64) error {
	if lease.Exists(tx, id) {
		return nil
	}
	return fmt.Errorf("%w: lease %d not found (it expired, was revoked or was never granted); grant a lease first", ErrLeaseNotFound, id)
}

func getProto(b *bbolt.Bucket, key []byte, m proto.Message) (found bool, err error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := proto.Unmarshal(raw, m); err != nil {
		return true, fmt.Errorf("locks: stored %T %s is corrupt: %w", m, quoteBytes(key), err)
	}
	return true, nil
}

func putProto(b *bbolt.Bucket, key []byte, m proto.Message) error {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("locks: encode %T %s: %w", m, quoteBytes(key), err)
	}
	if err := b.Put(key, raw); err != nil {
		return fmt.Errorf("locks: store %T %s: %w", m, quoteBytes(key), err)
	}
	return nil
}

func kvOf(key string, createRev, modRev int64) *catalogpb.KeyValue {
	return &catalogpb.KeyValue{Key: []byte(key), CreateRevision: createRev, ModRevision: modRev}
}

// LastToken returns the last fencing token handed out (0 before the first
// grant). Tokens are never reused.
func LastToken(tx *bbolt.Tx) uint64 {
	if tx == nil {
		return 0
	}
	b := tx.Bucket(MetaBucket)
	if b == nil {
		return 0
	}
	raw := b.Get(tokenKey)
	if len(raw) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(raw)
}

// nextToken draws the next fencing token from the counter lock grants use,
// for a queue delivery or a barrier's setting or participation.
func nextToken(tx *bbolt.Tx) (uint64, error) {
	token := LastToken(tx) + 1
	return token, putLastToken(tx, token)
}

func putLastToken(tx *bbolt.Tx, token uint64) error {
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, token)
	if err := tx.Bucket(MetaBucket).Put(tokenKey, v); err != nil {
		return fmt.Errorf("locks: store token counter: %w", err)
	}
	return nil
}

// maxQuoted bounds how much of a name an error message repeats.
const maxQuoted = 64

func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:maxQuoted]) + "..."
}

func quoteBytes(b []byte) string { return quote(string(b)) }

func kindName(k catalogpb.LockKind) string {
	return strings.TrimPrefix(k.String(), "LOCK_KIND_")
}

func modeName(m catalogpb.LockMode) string {
	return strings.TrimPrefix(m.String(), "LOCK_MODE_")
}

func barrierKindName(k catalogpb.BarrierKind) string {
	return strings.TrimPrefix(k.String(), "BARRIER_KIND_")
}

// listLimit turns a caller's limit into the number of entries to return.
func listLimit(limit int) (int, error) {
	switch {
	case limit < 0:
		return 0, fmt.Errorf("%w: limit must be 0 (server default %d) or positive, got %d", ErrInvalidArgument, DefaultListLimit, limit)
	case limit == 0:
		return DefaultListLimit, nil
	}
	return limit, nil
}

// scanNames walks the keys of b that start with prefix and come after
// after, in order, until fn returns false or an error.
func scanNames(b *bbolt.Bucket, prefix, after string, fn func(k, v []byte) (bool, error)) error {
	c := b.Cursor()
	start := prefix
	if after > start {
		start = after
	}
	for k, v := c.Seek([]byte(start)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
		if after != "" && string(k) <= after {
			continue
		}
		more, err := fn(k, v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// Apply applies one LocksCommand at revision rev; nowUnixNano is the
// proposer's clock. The response is, by operation: acquire → *LockResponse,
// release and cancel → *UnlockResponse, proclaim → *ProclaimResponse,
// barrier_set → *BarrierSetResponse, barrier_release →
// *BarrierReleaseResponse, barrier_enter → *BarrierEnterResponse,
// barrier_leave → *BarrierLeaveResponse, enqueue → *EnqueueResponse,
// dequeue → *DequeueResponse, ack → *AckResponse; headers are left nil.
//
// Apply checks everything before it writes anything: a refused command
// (an error wrapping one of the sentinels) leaves tx as it was, as the
// transaction is shared by a batch of commands. It is deterministic: the
// outcome depends only on the store, rev, nowUnixNano and cmd. It returns
// events iff it changed something; the caller moves the revision to rev iff
// there are events.
func Apply(tx *bbolt.Tx, rev, nowUnixNano int64, cmd *catalogpb.LocksCommand) (proto.Message, []*catalogpb.Event, error) {
	if err := checkRevision(rev); err != nil {
		return nil, nil, err
	}
	if err := checkBuckets(tx, true); err != nil {
		return nil, nil, err
	}
	if err := ValidateCommand(cmd); err != nil {
		return nil, nil, err
	}
	var (
		resp proto.Message
		evs  []*catalogpb.Event
		err  error
	)
	switch op := cmd.Op.(type) {
	case *catalogpb.LocksCommand_Acquire:
		var r *catalogpb.LockResponse
		r, evs, err = applyAcquire(tx, rev, nowUnixNano, op.Acquire)
		resp = r
	case *catalogpb.LocksCommand_Release:
		var r *catalogpb.UnlockResponse
		r, evs, err = applyRelease(tx, rev, nowUnixNano, op.Release)
		resp = r
	case *catalogpb.LocksCommand_Cancel:
		var r *catalogpb.UnlockResponse
		r, evs, err = applyCancel(tx, rev, nowUnixNano, op.Cancel)
		resp = r
	case *catalogpb.LocksCommand_Proclaim:
		var r *catalogpb.ProclaimResponse
		r, evs, err = applyProclaim(tx, rev, nowUnixNano, op.Proclaim)
		resp = r
	case *catalogpb.LocksCommand_BarrierSet:
		var r *catalogpb.BarrierSetResponse
		r, evs, err = applyBarrierSet(tx, rev, op.BarrierSet)
		resp = r
	case *catalogpb.LocksCommand_BarrierRelease:
		var r *catalogpb.BarrierReleaseResponse
		r, evs, err = applyBarrierRelease(tx, rev, op.BarrierRelease)
		resp = r
	case *catalogpb.LocksCommand_BarrierEnter:
		var r *catalogpb.BarrierEnterResponse
		r, evs, err = applyBarrierEnter(tx, rev, op.BarrierEnter)
		resp = r
	case *catalogpb.LocksCommand_BarrierLeave:
		var r *catalogpb.BarrierLeaveResponse
		r, evs, err = applyBarrierLeave(tx, rev, op.BarrierLeave)
		resp = r
	case *catalogpb.LocksCommand_Enqueue:
		var r *catalogpb.EnqueueResponse
		r, evs, err = applyEnqueue(tx, rev, nowUnixNano, op.Enqueue)
		resp = r
	case *catalogpb.LocksCommand_Dequeue:
		var r *catalogpb.DequeueResponse
		r, evs, err = applyDequeue(tx, rev, nowUnixNano, op.Dequeue)
		resp = r
	case *catalogpb.LocksCommand_Ack:
		var r *catalogpb.AckResponse
		r, evs, err = applyAck(tx, rev, nowUnixNano, op.Ack)
		resp = r
	default:
		return nil, nil, fmt.Errorf("%w: locks command has no operation", ErrInvalidArgument)
	}
	if err != nil {
		return nil, nil, err
	}
	return resp, evs, nil
}

// DeleteLeased removes one item attached to lease leaseID, which is being
// revoked, at revision rev, and returns its events: a hold or wait of a lock
// name (the next waiters are granted), a simple barrier set with the lease
// or a double barrier's participant, a consumer waiting in Dequeue, an item
// handed to the lease (it goes back to the head of its queue and on to a
// waiting consumer). ok is false for a kind that is not this package's. An
// item already gone gives no events.
func DeleteLeased(tx *bbolt.Tx, rev, nowUnixNano, leaseID int64, item *catalogpb.LeaseItem) (evs []*catalogpb.Event, ok bool, err error) {
	if item == nil {
		return nil, false, nil
	}
	switch item.Kind {
	case LockKind, BarrierKind, QueueKind, QueueItemKind:
	default:
		return nil, false, nil
	}
	if err := checkRevision(rev); err != nil {
		return nil, true, err
	}
	if err := checkBuckets(tx, true); err != nil {
		return nil, true, err
	}
	switch item.Kind {
	case LockKind:
		evs, err = deleteLeasedLock(tx, rev, nowUnixNano, leaseID, item.Key)
	case BarrierKind:
		evs, err = deleteLeasedBarrier(tx, rev, leaseID, item.Key)
	case QueueKind:
		evs, err = deleteLeasedConsumer(tx, rev, nowUnixNano, leaseID, item.Key)
	case QueueItemKind:
		evs, err = deleteLeasedQueueItem(tx, rev, nowUnixNano, leaseID, item.Key)
	}
	if err != nil {
		return nil, true, err
	}
	return evs, true, nil
}
