package locks

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
)

// A queue keeps one invariant between applies: when a consumer waits, no
// item is ready (an item that becomes ready is handed to the first waiting
// consumer in the same apply).

// DefaultStatusItems is how many ready items QueueStatus lists when asked
// for them with limit 0.
const DefaultStatusItems = 100

// QueueItemKey is a queue item's logical key in events and lease items:
// "queue/id", the id in decimal.
func QueueItemKey(queue string, id uint64) string {
	return queue + "/" + strconv.FormatUint(id, 10)
}

// SplitQueueItemKey splits a logical queue item key at its last '/'.
func SplitQueueItemKey(key string) (queue string, id uint64, ok bool) {
	i := strings.LastIndexByte(key, '/')
	if i <= 0 {
		return "", 0, false
	}
	id, err := strconv.ParseUint(key[i+1:], 10, 64)
	if err != nil || id == 0 {
		return "", 0, false
	}
	return key[:i], id, true
}

func queuePrefix(queue string) []byte {
	return append([]byte(queue), 0)
}

func itemKey(queue string, id uint64) []byte {
	k := make([]byte, 0, len(queue)+9)
	k = append(k, queue...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, id)
}

type itemChange struct {
	id        uint64
	prev, cur *catalogpb.QueueItem // nil: absent
}

// A queueOp is one apply's work on one queue: it writes as it goes (every
// check that can refuse the command is made before the first write) and
// records each item's state before and after, for one event per item.
type queueOp struct {
	tx       *bbolt.Tx
	rev, now int64
	name     string
	existed  bool
	prevRec  *catalogpb.QueueStatus
	rec      *catalogpb.QueueStatus
	queues   *bbolt.Bucket
	items    *bbolt.Bucket
	ready    *bbolt.Bucket
	changes  []*itemChange
}

func getQueueRecord(tx *bbolt.Tx, name string) (*catalogpb.QueueStatus, error) {
	rec := &catalogpb.QueueStatus{}
	found, err := getProto(tx.Bucket(QueuesBucket), []byte(name), rec)
	if err != nil || !found {
		return nil, err
	}
	return rec, nil
}

func loadQueue(tx *bbolt.Tx, rev, now int64, name string) (*queueOp, error) {
	q := &queueOp{
		tx: tx, rev: rev, now: now, name: name,
		queues: tx.Bucket(QueuesBucket),
		items:  tx.Bucket(QueueItemsBucket),
		ready:  tx.Bucket(QueueReadyBucket),
	}
	rec, err := getQueueRecord(tx, name)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		rec = &catalogpb.QueueStatus{Queue: name, NextId: 1}
	} else {
		q.existed = true
	}
	q.prevRec = rec
	q.rec = proto.CloneOf(rec)
	return q, nil
}

func getItem(tx *bbolt.Tx, queue string, id uint64) (*catalogpb.QueueItem, error) {
	it := &catalogpb.QueueItem{}
	found, err := getProto(tx.Bucket(QueueItemsBucket), itemKey(queue, id), it)
	if err != nil || !found {
		return nil, err
	}
	return it, nil
}

func (q *queueOp) item(id uint64) (*catalogpb.QueueItem, error) {
	return getItem(q.tx, q.name, id)
}

// record notes that item id went from before to after (nil: absent).
func (q *queueOp) record(id uint64, before, after *catalogpb.QueueItem) {
	for _, c := range q.changes {
		if c.id == id {
			c.cur = after
			return
		}
	}
	q.changes = append(q.changes, &itemChange{id: id, prev: before, cur: after})
}

func (q *queueOp) writeItem(before, it *catalogpb.QueueItem) error {
	if err := putProto(q.items, itemKey(q.name, it.Id), it); err != nil {
		return err
	}
	q.record(it.Id, before, it)
	return nil
}

// firstReady returns the lowest ready id.
func (q *queueOp) firstReady() (uint64, bool) {
	prefix := queuePrefix(q.name)
	k, _ := q.ready.Cursor().Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[len(prefix):]), true
}

func (q *queueOp) hasItems() bool {
	prefix := queuePrefix(q.name)
	k, _ := q.items.Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix)
}

// handOut gives ready item id to consumer c.
func (q *queueOp) handOut(id uint64, c *catalogpb.QueueConsumer) (*catalogpb.QueueItem, error) {
	before, err := q.item(id)
	if err != nil {
		return nil, err
	}
	if before == nil {
		return nil, fmt.Errorf("locks: queue %s indexes item %d as ready, but the item does not exist", quote(q.name), id)
	}
	it := proto.CloneOf(before)
	it.Consumer = c.Lease
	it.WaiterId = c.WaiterId
	it.Deliveries++
	it.DeliveredUnixNano = q.now
	if it.Token, err = nextToken(q.tx); err != nil {
		return nil, err
	}
	if err := lease.Attach(q.tx, c.Lease, QueueItemKind, QueueItemKey(q.name, id)); err != nil {
		return nil, err
	}
	if err := q.ready.Delete(itemKey(q.name, id)); err != nil {
		return nil, fmt.Errorf("locks: unindex ready item %d of queue %s: %w", id, quote(q.name), err)
	}
	return it, q.writeItem(before, it)
}

// putBack makes handed-out item it ready again; being older than the items
// enqueued since, it goes to the head of the queue.
func (q *queueOp) putBack(it *catalogpb.QueueItem) error {
	if err := lease.Detach(q.tx, it.Consumer, QueueItemKind, QueueItemKey(q.name, it.Id)); err != nil {
		return err
	}
	back := proto.CloneOf(it)
	back.Consumer = 0
	back.WaiterId = 0
	back.Token = 0
	if err := q.ready.Put(itemKey(q.name, it.Id), nil); err != nil {
		return fmt.Errorf("locks: index ready item %d of queue %s: %w", it.Id, quote(q.name), err)
	}
	return q.writeItem(it, back)
}

// dispatch hands ready items to waiting consumers, oldest of each first.
func (q *queueOp) dispatch() error {
	for len(q.rec.Consumers) > 0 {
		id, ok := q.firstReady()
		if !ok {
			return nil
		}
		c := q.rec.Consumers[0]
		q.rec.Consumers = q.rec.Consumers[1:]
		if err := lease.Detach(q.tx, c.Lease, QueueKind, q.name); err != nil {
			return err
		}
		if !lease.Exists(q.tx, c.Lease) {
			// A consumer outlives its lease only if a revoke missed it;
			// never hand it an item no one would ever ack.
			continue
		}
		if _, err := q.handOut(id, c); err != nil {
			return err
		}
	}
	return nil
}

func (q *queueOp) consumerIndex(leaseID int64) int {
	for i, c := range q.rec.Consumers {
		if c.Lease == leaseID {
			return i
		}
	}
	return -1
}

func (q *queueOp) removeConsumer(i int) error {
	c := q.rec.Consumers[i]
	q.rec.Consumers = append(q.rec.Consumers[:i:i], q.rec.Consumers[i+1:]...)
	return lease.Detach(q.tx, c.Lease, QueueKind, q.name)
}

// handedTo returns the items of this queue handed to lease leaseID under
// one of waiterIDs, in id order.
func (q *queueOp) handedTo(leaseID int64, waiterIDs ...uint64) ([]*catalogpb.QueueItem, error) {
	items, err := lease.Items(q.tx, leaseID)
	if err != nil {
		return nil, err
	}
	var out []*catalogpb.QueueItem
	for _, li := range items {
		if li.Kind != QueueItemKind {
			continue
		}
		queue, id, ok := SplitQueueItemKey(li.Key)
		if !ok || queue != q.name {
			continue
		}
		it, err := q.item(id)
		if err != nil {
			return nil, err
		}
		if it != nil && it.Consumer == leaseID && containsID(waiterIDs, it.WaiterId) {
			out = append(out, it)
		}
	}
	// lease items come in key order ("q/10" before "q/9"): sort by id.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Id < out[j-1].Id; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, nil
}

func containsID(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func consumersEqual(a, b []*catalogpb.QueueConsumer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// finish stores the queue's record (or deletes it once the queue has
// neither items nor waiting consumers) and returns the apply's events: one
// per changed item, then one for the waiting consumers if they changed.
func (q *queueOp) finish() ([]*catalogpb.Event, error) {
	if !q.hasItems() && len(q.rec.Consumers) == 0 {
		if q.existed {
			if err := q.queues.Delete([]byte(q.name)); err != nil {
				return nil, fmt.Errorf("locks: delete queue %s: %w", quote(q.name), err)
			}
		}
	} else if !q.existed || !proto.Equal(q.prevRec, q.rec) {
		if err := putProto(q.queues, []byte(q.name), q.rec); err != nil {
			return nil, err
		}
	}
	var evs []*catalogpb.Event
	for _, c := range q.changes {
		if proto.Equal(c.prev, c.cur) {
			continue
		}
		key := QueueItemKey(q.name, c.id)
		ev := &catalogpb.Event{Kind: QueueKind, QueueItem: c.cur, PrevQueueItem: c.prev}
		if c.cur == nil {
			ev.Type = catalogpb.Event_DELETE
			ev.Kv = kvOf(key, 0, q.rev)
		} else {
			ev.Type = catalogpb.Event_PUT
			ev.Kv = kvOf(key, c.cur.EnqueueRevision, q.rev)
		}
		if c.prev != nil {
			ev.PrevKv = kvOf(key, c.prev.EnqueueRevision, 0)
		}
		evs = append(evs, ev)
	}
	if !consumersEqual(q.prevRec.Consumers, q.rec.Consumers) {
		ev := &catalogpb.Event{
			Type:           catalogpb.Event_PUT,
			Kind:           QueueKind,
			Kv:             kvOf(q.name, 0, q.rev),
			QueueConsumers: q.rec.Consumers,
		}
		if len(q.rec.Consumers) == 0 {
			ev.Type = catalogpb.Event_DELETE
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

func applyEnqueue(tx *bbolt.Tx, rev, now int64, req *catalogpb.EnqueueRequest) (*catalogpb.EnqueueResponse, []*catalogpb.Event, error) {
	q, err := loadQueue(tx, rev, now, req.Queue)
	if err != nil {
		return nil, nil, err
	}
	// The id is the Enqueue's revision: unique across queues and time, so an
	// Ack retried after a queue drained and refilled can never match a new
	// item, and increasing in enqueue order.
	id := uint64(rev)
	q.rec.NextId = id + 1
	it := &catalogpb.QueueItem{Queue: req.Queue, Id: id, Payload: req.Payload, EnqueueRevision: rev}
	if err := q.ready.Put(itemKey(q.name, id), nil); err != nil {
		return nil, nil, fmt.Errorf("locks: index ready item %d of queue %s: %w", id, quote(q.name), err)
	}
	if err := q.writeItem(nil, it); err != nil {
		return nil, nil, err
	}
	if err := q.dispatch(); err != nil {
		return nil, nil, err
	}
	evs, err := q.finish()
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.EnqueueResponse{Id: id}, evs, nil
}

func applyDequeue(tx *bbolt.Tx, rev, now int64, req *catalogpb.DequeueRequest) (*catalogpb.DequeueResponse, []*catalogpb.Event, error) {
	if err := checkLeaseExists(tx, req.Lease); err != nil {
		return nil, nil, err
	}
	q, err := loadQueue(tx, rev, now, req.Queue)
	if err != nil {
		return nil, nil, err
	}
	// A retry: an item handed to this lease for this call, under this
	// attempt's waiter id or an earlier attempt's (retry_of), is answered
	// again. It is re-tagged with this attempt's id, so that the cancel an
	// earlier attempt's member may still propose (naming the earlier id)
	// no longer matches it.
	call := append([]uint64{req.WaiterId}, req.RetryOf...)
	handed, err := q.handedTo(req.Lease, call...)
	if err != nil {
		return nil, nil, err
	}
	if len(handed) > 0 {
		it := handed[0]
		if it.WaiterId != req.WaiterId {
			before := it
			it = proto.CloneOf(before)
			it.WaiterId = req.WaiterId
			if err := q.writeItem(before, it); err != nil {
				return nil, nil, err
			}
		}
		// A wait an earlier attempt of the call left is over with it.
		if i := q.consumerIndex(req.Lease); i >= 0 && containsID(call, q.rec.Consumers[i].WaiterId) {
			if err := q.removeConsumer(i); err != nil {
				return nil, nil, err
			}
		}
		evs, err := q.finish()
		if err != nil {
			return nil, nil, err
		}
		return &catalogpb.DequeueResponse{Item: it}, evs, nil
	}
	i := q.consumerIndex(req.Lease)
	if id, ok := q.firstReady(); ok {
		if i >= 0 {
			// This call supersedes the lease's waiting one.
			if err := q.removeConsumer(i); err != nil {
				return nil, nil, err
			}
		}
		it, err := q.handOut(id, &catalogpb.QueueConsumer{Lease: req.Lease, WaiterId: req.WaiterId})
		if err != nil {
			return nil, nil, err
		}
		evs, err := q.finish()
		if err != nil {
			return nil, nil, err
		}
		return &catalogpb.DequeueResponse{Item: it}, evs, nil
	}
	if req.Try {
		return &catalogpb.DequeueResponse{}, nil, nil
	}
	if i >= 0 {
		q.rec.Consumers[i].WaiterId = req.WaiterId
	} else {
		if err := lease.Attach(tx, req.Lease, QueueKind, q.name); err != nil {
			return nil, nil, err
		}
		q.rec.Consumers = append(q.rec.Consumers, &catalogpb.QueueConsumer{Lease: req.Lease, WaiterId: req.WaiterId, Revision: rev})
	}
	evs, err := q.finish()
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.DequeueResponse{}, evs, nil
}

func applyAck(tx *bbolt.Tx, rev, now int64, req *catalogpb.AckRequest) (*catalogpb.AckResponse, []*catalogpb.Event, error) {
	it, err := getItem(tx, req.Queue, req.Id)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case it == nil:
		return nil, nil, fmt.Errorf("%w: queue %s has no item %d handed to lease %d; item %d does not exist (acknowledged already, or never enqueued)",
			ErrItemNotFound, quote(req.Queue), req.Id, req.Lease, req.Id)
	case it.Consumer == 0:
		return nil, nil, fmt.Errorf("%w: queue %s has no item %d handed to lease %d; item %d is ready, not handed out (Dequeue it first)",
			ErrItemNotFound, quote(req.Queue), req.Id, req.Lease, req.Id)
	case it.Consumer != req.Lease:
		return nil, nil, fmt.Errorf("%w: queue %s has no item %d handed to lease %d; it is handed to lease %d",
			ErrItemNotFound, quote(req.Queue), req.Id, req.Lease, it.Consumer)
	}
	q, err := loadQueue(tx, rev, now, req.Queue)
	if err != nil {
		return nil, nil, err
	}
	if err := lease.Detach(tx, it.Consumer, QueueItemKind, QueueItemKey(q.name, it.Id)); err != nil {
		return nil, nil, err
	}
	if err := q.items.Delete(itemKey(q.name, it.Id)); err != nil {
		return nil, nil, fmt.Errorf("locks: delete item %d of queue %s: %w", it.Id, quote(q.name), err)
	}
	q.record(it.Id, it, nil)
	evs, err := q.finish()
	if err != nil {
		return nil, nil, err
	}
	return &catalogpb.AckResponse{}, evs, nil
}

// cancelConsumer undoes a Dequeue call (lease, waiter_id) that went away:
// its wait, and the item handed to it, which goes back to the head.
func cancelConsumer(tx *bbolt.Tx, rev, now int64, c *catalogpb.CancelWaitCommand) ([]*catalogpb.Event, error) {
	q, err := loadQueue(tx, rev, now, c.Name)
	if err != nil {
		return nil, err
	}
	handed, err := q.handedTo(c.Lease, c.WaiterId)
	if err != nil {
		return nil, err
	}
	if i := q.consumerIndex(c.Lease); i >= 0 && q.rec.Consumers[i].WaiterId == c.WaiterId {
		if err := q.removeConsumer(i); err != nil {
			return nil, err
		}
	}
	for _, it := range handed {
		if err := q.putBack(it); err != nil {
			return nil, err
		}
	}
	if err := q.dispatch(); err != nil {
		return nil, err
	}
	return q.finish()
}

func deleteLeasedConsumer(tx *bbolt.Tx, rev, now, leaseID int64, name string) ([]*catalogpb.Event, error) {
	q, err := loadQueue(tx, rev, now, name)
	if err != nil {
		return nil, err
	}
	i := q.consumerIndex(leaseID)
	if i < 0 {
		return nil, nil
	}
	if err := q.removeConsumer(i); err != nil {
		return nil, err
	}
	return q.finish()
}

func deleteLeasedQueueItem(tx *bbolt.Tx, rev, now, leaseID int64, key string) ([]*catalogpb.Event, error) {
	name, id, ok := SplitQueueItemKey(key)
	if !ok {
		return nil, fmt.Errorf("locks: lease %d holds queue item %s, which is not queue/id", leaseID, quote(key))
	}
	it, err := getItem(tx, name, id)
	if err != nil || it == nil || it.Consumer != leaseID {
		return nil, err
	}
	q, err := loadQueue(tx, rev, now, name)
	if err != nil {
		return nil, err
	}
	// The lease's own waiting consumer goes too, whatever order the revoke
	// takes the lease's items in: the item must not go back to the lease.
	if i := q.consumerIndex(leaseID); i >= 0 {
		if err := q.removeConsumer(i); err != nil {
			return nil, err
		}
	}
	if err := q.putBack(it); err != nil {
		return nil, err
	}
	if err := q.dispatch(); err != nil {
		return nil, err
	}
	return q.finish()
}

// QueueStatus returns a queue's status: its ready depth, the items in
// flight, the waiting consumers, and with withReady the first limit ready
// items (0: DefaultStatusItems). A queue that does not exist has an empty
// status.
func QueueStatus(tx *bbolt.Tx, queue string, withReady bool, limit int) (*catalogpb.QueueStatus, error) {
	if err := ValidateName("queue", queue); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, fmt.Errorf("%w: limit must be 0 (default %d) or positive, got %d", ErrInvalidArgument, DefaultStatusItems, limit)
	}
	if limit == 0 {
		limit = DefaultStatusItems
	}
	if err := checkBuckets(tx, false); err != nil {
		return nil, err
	}
	rec, err := getQueueRecord(tx, queue)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return &catalogpb.QueueStatus{Queue: queue, NextId: 1}, nil
	}
	return statusOf(tx, rec, withReady, limit)
}

func statusOf(tx *bbolt.Tx, rec *catalogpb.QueueStatus, withReady bool, limit int) (*catalogpb.QueueStatus, error) {
	st := &catalogpb.QueueStatus{Queue: rec.Queue, NextId: rec.NextId, Consumers: rec.Consumers}
	prefix := queuePrefix(rec.Queue)
	c := tx.Bucket(QueueItemsBucket).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		it := &catalogpb.QueueItem{}
		if err := proto.Unmarshal(v, it); err != nil {
			return nil, fmt.Errorf("locks: stored queue item %x is corrupt: %w", k, err)
		}
		if it.Consumer != 0 {
			st.InFlight = append(st.InFlight, it)
			continue
		}
		st.Depth++
		if withReady && len(st.Ready) < limit {
			st.Ready = append(st.Ready, it)
		}
	}
	return st, nil
}

// ListQueues returns up to limit queues (0: DefaultListLimit) whose names
// start with prefix and come after after, in name order, each without its
// ready items, and whether more follow.
func ListQueues(tx *bbolt.Tx, prefix, after string, limit int) ([]*catalogpb.QueueStatus, bool, error) {
	n, err := listLimit(limit)
	if err != nil {
		return nil, false, err
	}
	if err := checkBuckets(tx, false); err != nil {
		return nil, false, err
	}
	var out []*catalogpb.QueueStatus
	more := false
	err = scanNames(tx.Bucket(QueuesBucket), prefix, after, func(k, v []byte) (bool, error) {
		if len(out) == n {
			more = true
			return false, nil
		}
		rec := &catalogpb.QueueStatus{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return false, fmt.Errorf("locks: stored queue %s is corrupt: %w", quoteBytes(k), err)
		}
		st, err := statusOf(tx, rec, false, 0)
		if err != nil {
			return false, err
		}
		out = append(out, st)
		return true, nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}
