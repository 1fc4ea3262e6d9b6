package locks_test

import (
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
)

func enqueueCmd(q, payload string) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Enqueue{Enqueue: &catalogpb.EnqueueRequest{Queue: q, Payload: []byte(payload)}}}
}

func dequeueCmd(q string, l int64, waiter uint64, try bool) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Dequeue{Dequeue: &catalogpb.DequeueRequest{Queue: q, Lease: l, WaiterId: waiter, Try: try}}}
}

func dequeueRetryCmd(q string, l int64, waiter uint64, retryOf []uint64, try bool) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Dequeue{Dequeue: &catalogpb.DequeueRequest{Queue: q, Lease: l, WaiterId: waiter, RetryOf: retryOf, Try: try}}}
}

func ackCmd(q string, id uint64, l int64) *catalogpb.LocksCommand {
	return &catalogpb.LocksCommand{Op: &catalogpb.LocksCommand_Ack{Ack: &catalogpb.AckRequest{Queue: q, Id: id, Lease: l}}}
}

func (s *store) enqueue(q, payload string) (uint64, []*catalogpb.Event) {
	s.t.Helper()
	resp, evs, err := s.apply(enqueueCmd(q, payload))
	if err != nil {
		s.t.Fatalf("enqueue %s: %v", q, err)
	}
	return resp.(*catalogpb.EnqueueResponse).Id, evs
}

func (s *store) dequeue(q string, l int64, waiter uint64, try bool) (*catalogpb.QueueItem, []*catalogpb.Event) {
	s.t.Helper()
	resp, evs, err := s.apply(dequeueCmd(q, l, waiter, try))
	if err != nil {
		s.t.Fatalf("dequeue %s lease %d: %v", q, l, err)
	}
	return resp.(*catalogpb.DequeueResponse).Item, evs
}

// ids lists the ids of items.
func ids(items []*catalogpb.QueueItem) []uint64 {
	out := []uint64{}
	for _, it := range items {
		out = append(out, it.Id)
	}
	return out
}

// itemEvent is the summary of an event on item id of queue q.
func itemEvent(typ, q string, id uint64) string {
	return fmt.Sprintf("%s queue %s/%d", typ, q, id)
}

func TestQueueFIFO(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	var qids []uint64
	for i := 1; i <= 3; i++ {
		id, evs := s.enqueue("q", fmt.Sprintf("p%d", i))
		if id != uint64(s.rev) {
			t.Fatalf("enqueue %d got id %d, want its revision %d", i, id, s.rev)
		}
		if len(qids) > 0 && id <= qids[len(qids)-1] {
			t.Fatalf("enqueue %d got id %d, not above the previous id %d", i, id, qids[len(qids)-1])
		}
		wantEvents(t, evs, itemEvent("PUT", "q", id))
		it := evs[0].QueueItem
		if it.Id != id || it.Consumer != 0 || it.EnqueueRevision != s.rev || evs[0].Kv.CreateRevision != s.rev || evs[0].PrevQueueItem != nil {
			t.Errorf("enqueue event %v", evs[0])
		}
		qids = append(qids, id)
	}
	id1, id2, id3 := qids[0], qids[1], qids[2]
	it, evs := s.dequeue("q", 1, 10, false)
	if it.Id != id1 || string(it.Payload) != "p1" || it.Consumer != 1 || it.WaiterId != 10 || it.Deliveries != 1 || it.DeliveredUnixNano != s.now {
		t.Fatalf("first dequeue = %v, want item %d", it, id1)
	}
	wantEvents(t, evs, itemEvent("PUT", "q", id1))
	if evs[0].PrevQueueItem.GetConsumer() != 0 || evs[0].PrevKv == nil {
		t.Errorf("hand-out event prev %v", evs[0].PrevQueueItem)
	}
	s.wantLeaseItems(1, fmt.Sprintf("queue_item:q/%d", id1))

	// A retry with the same waiter id returns the same item and changes nothing.
	before, rev := s.dump(), s.rev
	again, evs := s.dequeue("q", 1, 10, false)
	if again.Id != id1 || len(evs) != 0 {
		t.Fatalf("retry = %v, events %q", again, eventSummary(evs))
	}
	s.unchanged(before, rev)

	it2, _ := s.dequeue("q", 2, 20, true)
	if it2.Id != id2 {
		t.Fatalf("second dequeue = %v, want item %d", it2, id2)
	}
	st := s.status("q")
	if st.Depth != 1 || !slices.Equal(ids(st.InFlight), []uint64{id1, id2}) || !slices.Equal(ids(st.Ready), []uint64{id3}) || st.NextId <= id3 {
		t.Fatalf("status = %v, want %d and %d in flight, %d ready, next_id above %d", st, id1, id2, id3, id3)
	}
	nextID := st.NextId

	// Ack deletes the item; ids go on increasing.
	evs = s.must(ackCmd("q", id1, 1))
	wantEvents(t, evs, itemEvent("DELETE", "q", id1))
	if evs[0].QueueItem != nil || evs[0].PrevQueueItem.GetId() != id1 {
		t.Errorf("ack event %v", evs[0])
	}
	s.wantLeaseItems(1)
	if id4, _ := s.enqueue("q", "p4"); id4 <= id3 || id4 < nextID {
		t.Fatalf("id after an ack = %d, want above %d and at least next_id %d", id4, id3, nextID)
	}
	if it, _ := s.dequeue("q", 1, 11, true); it.Id != id3 {
		t.Fatalf("dequeue = %v, want item %d", it, id3)
	}
}

func TestQueueHandOutToWaitingConsumer(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	// try on an empty queue: nothing, and no queue record.
	before, rev := s.dump(), s.rev
	if it, evs := s.dequeue("q", 1, 1, true); it != nil || len(evs) != 0 {
		t.Fatalf("try on an empty queue = %v, %q", it, eventSummary(evs))
	}
	s.unchanged(before, rev)

	it, evs := s.dequeue("q", 1, 5, false)
	if it != nil {
		t.Fatalf("dequeue on an empty queue = %v", it)
	}
	wantEvents(t, evs, "PUT queue q")
	if c := evs[0].QueueConsumers; len(c) != 1 || c[0].Lease != 1 || c[0].WaiterId != 5 || c[0].Revision != s.rev {
		t.Fatalf("consumers = %v", c)
	}
	s.wantLeaseItems(1, "queue:q")
	s.dequeue("q", 2, 6, false)

	// The same lease again with another waiter id: keeps its place.
	_, evs = s.dequeue("q", 1, 7, false)
	wantEvents(t, evs, "PUT queue q")
	if c := evs[0].QueueConsumers; len(c) != 2 || c[0].Lease != 1 || c[0].WaiterId != 7 {
		t.Fatalf("consumers after supersede = %v", c)
	}

	x, evs := s.enqueue("q", "x")
	wantEvents(t, evs, itemEvent("PUT", "q", x), "PUT queue q")
	if it := evs[0].QueueItem; it.Id != x || it.Consumer != 1 || it.WaiterId != 7 || it.Deliveries != 1 || evs[0].PrevQueueItem != nil {
		t.Fatalf("enqueued item = %v, want %d handed to lease 1 (waiter 7)", it, x)
	}
	if c := evs[1].QueueConsumers; len(c) != 1 || c[0].Lease != 2 {
		t.Fatalf("consumers after hand-out = %v", c)
	}
	s.wantLeaseItems(1, fmt.Sprintf("queue_item:q/%d", x))
	// The consumer's retry finds its item.
	if it, evs := s.dequeue("q", 1, 7, false); it.GetId() != x || len(evs) != 0 {
		t.Fatalf("retry = %v, %q", it, eventSummary(evs))
	}
	y, evs := s.enqueue("q", "y")
	wantEvents(t, evs, itemEvent("PUT", "q", y), "DELETE queue q")
	if it := evs[0].QueueItem; it.Id != y || it.Consumer != 2 || it.WaiterId != 6 {
		t.Fatalf("enqueued item = %v, want %d handed to lease 2 (waiter 6)", it, y)
	}
	if len(evs[1].QueueConsumers) != 0 {
		t.Errorf("consumers on delete = %v", evs[1].QueueConsumers)
	}
	st := s.status("q")
	if st.Depth != 0 || !slices.Equal(ids(st.InFlight), []uint64{x, y}) || len(st.Consumers) != 0 {
		t.Fatalf("status = %v", st)
	}
	s.must(ackCmd("q", x, 1))
	s.must(ackCmd("q", y, 2))
	s.wantLeaseItems(1)
	s.wantLeaseItems(2)
	// Empty, the queue no longer exists.
	var n int
	s.view(func(tx *bbolt.Tx) error {
		qs, _, err := locks.ListQueues(tx, "", "", 0)
		n = len(qs)
		return err
	})
	if n != 0 {
		t.Fatalf("%d queues listed after the last ack", n)
	}
	if st := s.status("q"); st.NextId != 1 || st.Depth != 0 || len(st.InFlight) != 0 || len(st.Consumers) != 0 {
		t.Fatalf("status of a gone queue = %v", st)
	}
}

// TestQueueIDsAfterRefill: a queue that drained (its record deleted) and
// filled again does not reuse ids, so an Ack of an old id retried by the
// lease it was handed to cannot settle the new item.
func TestQueueIDsAfterRefill(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	var old []uint64
	for _, p := range []string{"a", "b"} {
		id, _ := s.enqueue("q", p)
		old = append(old, id)
	}
	for i, id := range old {
		it, _ := s.dequeue("q", 1, uint64(i+1), true)
		if it.GetId() != id {
			t.Fatalf("dequeue %d = %v, want item %d", i, it, id)
		}
		s.must(ackCmd("q", id, 1))
	}
	s.view(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(locks.QueuesBucket).Get([]byte("q")); v != nil {
			t.Fatalf("queue record still stored after draining: %x", v)
		}
		return nil
	})
	s.wantLeaseItems(1)

	id, evs := s.enqueue("q", "c")
	for _, o := range old {
		if id <= o {
			t.Fatalf("id after refill = %d, not above earlier id %d", id, o)
		}
	}
	wantEvents(t, evs, itemEvent("PUT", "q", id))
	it, _ := s.dequeue("q", 1, 3, true)
	if it.GetId() != id || string(it.Payload) != "c" || it.Consumer != 1 {
		t.Fatalf("dequeue after refill = %v, want item %d handed to lease 1", it, id)
	}
	s.wantLeaseItems(1, fmt.Sprintf("queue_item:q/%d", id))

	// A late (retried) Ack of an old item by the same lease.
	for _, o := range old {
		s.refused(ackCmd("q", o, 1), locks.ErrItemNotFound, fmt.Sprintf(`queue "q" has no item %d handed to lease 1`, o), "does not exist")
	}
	st := s.status("q")
	if !slices.Equal(ids(st.InFlight), []uint64{id}) || st.InFlight[0].Consumer != 1 || st.Depth != 0 {
		t.Fatalf("status after refused acks = %v, want only item %d, in flight to lease 1", st, id)
	}
	s.wantLeaseItems(1, fmt.Sprintf("queue_item:q/%d", id))
	s.must(ackCmd("q", id, 1))
}

func TestAckRefused(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	a, _ := s.enqueue("q", "a")
	b, _ := s.enqueue("q", "b")
	if it, _ := s.dequeue("q", 1, 1, true); it.GetId() != a {
		t.Fatalf("dequeue = %v, want item %d", it, a)
	}
	missing := b + 100 // no command reaches that revision here
	s.refused(ackCmd("q", a, 2), locks.ErrItemNotFound, fmt.Sprintf(`queue "q" has no item %d handed to lease 2`, a), "handed to lease 1")
	s.refused(ackCmd("q", missing, 1), locks.ErrItemNotFound, fmt.Sprintf(`queue "q" has no item %d handed to lease 1`, missing), "does not exist")
	s.refused(ackCmd("q", b, 1), locks.ErrItemNotFound, fmt.Sprintf(`queue "q" has no item %d handed to lease 1`, b), "is ready")
	s.refused(ackCmd("other", a, 1), locks.ErrItemNotFound, fmt.Sprintf(`queue "other" has no item %d handed to lease 1`, a), "does not exist")
	s.refused(dequeueCmd("q", 99, 1, false), locks.ErrLeaseNotFound, "lease 99 not found")
	s.must(ackCmd("q", a, 1))
	s.refused(ackCmd("q", a, 1), locks.ErrItemNotFound, fmt.Sprintf(`queue "q" has no item %d handed to lease 1`, a), "does not exist")
}

func TestQueueLeaseEnd(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3, 4)
	a, _ := s.enqueue("q", "a")
	b, _ := s.enqueue("q", "b")
	if it, _ := s.dequeue("q", 1, 1, false); it.GetId() != a {
		t.Fatalf("lease 1 got %v, want item %d", it, a)
	}
	if it, _ := s.dequeue("q", 2, 2, false); it.GetId() != b {
		t.Fatalf("lease 2 got %v, want item %d", it, b)
	}
	s.dequeue("q", 3, 3, false) // waits

	// Lease 1 ends: item a goes back to the head and on to lease 3.
	evs := s.revoke(1)
	wantEvents(t, evs, itemEvent("PUT", "q", a), "DELETE queue q", "DELETE lease 1")
	it := evs[0].QueueItem
	if it.Id != a || it.Consumer != 3 || it.WaiterId != 3 || it.Deliveries != 2 || evs[0].PrevQueueItem.Consumer != 1 {
		t.Fatalf("item after its consumer's lease ended = %v (prev %v)", it, evs[0].PrevQueueItem)
	}
	s.wantLeaseItems(3, fmt.Sprintf("queue_item:q/%d", a))

	// Lease 2 ends with no one waiting: item b is ready at the head, before
	// items enqueued since.
	c, _ := s.enqueue("q", "c")
	evs = s.revoke(2)
	wantEvents(t, evs, itemEvent("PUT", "q", b), "DELETE lease 2")
	if it := evs[0].QueueItem; it.Id != b || it.Consumer != 0 || it.WaiterId != 0 || it.Deliveries != 1 {
		t.Fatalf("item put back = %v", it)
	}
	if st := s.status("q"); !slices.Equal(ids(st.Ready), []uint64{b, c}) || st.Depth != 2 {
		t.Fatalf("ready after put back = %v, want [%d %d]", ids(st.Ready), b, c)
	}
	if it, _ := s.dequeue("q", 4, 4, true); it.Id != b || it.Deliveries != 2 {
		t.Fatalf("dequeue after put back = %v, want item %d delivered twice", it, b)
	}

	// A waiting consumer's lease ends: it stops waiting.
	s.grant(5)
	s.must(ackCmd("q", a, 3))
	s.must(ackCmd("q", b, 4))
	if it, _ := s.dequeue("q", 4, 4, true); it.GetId() != c {
		t.Fatalf("dequeue = %v, want item %d", it, c)
	}
	s.dequeue("q", 5, 5, false)
	evs = s.revoke(5)
	wantEvents(t, evs, "DELETE queue q", "DELETE lease 5")
	if st := s.status("q"); len(st.Consumers) != 0 {
		t.Fatalf("consumers after revoke = %v", st.Consumers)
	}
}

// A lease that waits as a consumer and holds an item: whatever order its
// items are deleted in, the item must not be handed back to it.
func TestQueueRevokeOrderIndependent(t *testing.T) {
	for _, order := range []string{"consumer first", "item first"} {
		t.Run(order, func(t *testing.T) {
			s := newStore(t)
			s.grant(1, 2)
			id, _ := s.enqueue("q", "a")
			s.dequeue("q", 1, 1, false)
			s.dequeue("q", 1, 2, false) // waits, with another call id
			s.dequeue("q", 2, 3, false) // waits
			key := fmt.Sprintf("q/%d", id)
			s.wantLeaseItems(1, "queue:q", "queue_item:"+key)
			items := []*catalogpb.LeaseItem{{Kind: locks.QueueKind, Key: "q"}, {Kind: locks.QueueItemKind, Key: key}}
			if order == "item first" {
				slices.Reverse(items)
			}
			_, err := s.update(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
				var all []*catalogpb.Event
				for _, it := range items {
					evs, _, err := locks.DeleteLeased(tx, rev, s.now, 1, it)
					if err != nil {
						return nil, err
					}
					all = append(all, evs...)
				}
				return all, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			st := s.status("q")
			if !slices.Equal(ids(st.InFlight), []uint64{id}) || st.InFlight[0].Consumer != 2 || len(st.Consumers) != 0 {
				t.Fatalf("status = %v, want item %d handed to lease 2", st, id)
			}
			s.wantLeaseItems(1)
			s.wantLeaseItems(2, "queue_item:"+key)
		})
	}
}

func TestQueueCancel(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	s.dequeue("q", 1, 5, false)
	before, rev := s.dump(), s.rev
	if evs := s.cancel(catalogpb.CancelWaitCommand_QUEUE, "q", 1, 6); len(evs) != 0 {
		t.Fatalf("mismatched cancel gave %q", eventSummary(evs))
	}
	if evs := s.cancel(catalogpb.CancelWaitCommand_QUEUE, "none", 1, 5); len(evs) != 0 {
		t.Fatalf("cancel on an absent queue gave %q", eventSummary(evs))
	}
	s.unchanged(before, rev)
	evs := s.cancel(catalogpb.CancelWaitCommand_QUEUE, "q", 1, 5)
	wantEvents(t, evs, "DELETE queue q")
	s.wantLeaseItems(1)

	// An item handed to the cancelled call goes back, and on to the next
	// waiting consumer.
	id, _ := s.enqueue("q", "a")
	s.dequeue("q", 1, 7, false)
	s.dequeue("q", 2, 8, false)
	evs = s.cancel(catalogpb.CancelWaitCommand_QUEUE, "q", 1, 7)
	wantEvents(t, evs, itemEvent("PUT", "q", id), "DELETE queue q")
	if it := evs[0].QueueItem; it.Id != id || it.Consumer != 2 || it.WaiterId != 8 || it.Deliveries != 2 {
		t.Fatalf("item after cancel = %v", it)
	}
	s.wantLeaseItems(1)
	s.wantLeaseItems(2, fmt.Sprintf("queue_item:q/%d", id))
	// Cancel with no one waiting: the item is ready again.
	evs = s.cancel(catalogpb.CancelWaitCommand_QUEUE, "q", 2, 8)
	wantEvents(t, evs, itemEvent("PUT", "q", id))
	if st := s.status("q"); st.Depth != 1 || len(st.InFlight) != 0 || !slices.Equal(ids(st.Ready), []uint64{id}) {
		t.Fatalf("status = %v", st)
	}
}

func TestListQueues(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	a1, _ := s.enqueue("a", "1")
	a2, _ := s.enqueue("a", "2")
	s.dequeue("a", 1, 1, true)
	s.enqueue("b", "1")
	s.dequeue("c", 1, 2, false)
	var got []string
	s.view(func(tx *bbolt.Tx) error {
		qs, more, err := locks.ListQueues(tx, "", "", 0)
		for _, q := range qs {
			got = append(got, fmt.Sprintf("%s depth=%d inflight=%d consumers=%d ready=%d", q.Queue, q.Depth, len(q.InFlight), len(q.Consumers), len(q.Ready)))
		}
		if more {
			t.Errorf("more with everything listed")
		}
		return err
	})
	want := []string{"a depth=1 inflight=1 consumers=0 ready=0", "b depth=1 inflight=0 consumers=0 ready=0", "c depth=0 inflight=0 consumers=1 ready=0"}
	if !slices.Equal(got, want) {
		t.Fatalf("ListQueues = %q, want %q", got, want)
	}
	s.view(func(tx *bbolt.Tx) error {
		qs, more, err := locks.ListQueues(tx, "", "a", 1)
		if err != nil || len(qs) != 1 || qs[0].Queue != "b" || !more {
			t.Errorf("ListQueues after a, limit 1 = %v more %v err %v", qs, more, err)
		}
		st, err := locks.QueueStatus(tx, "a", true, 0)
		if err != nil || !slices.Equal(ids(st.Ready), []uint64{a2}) || !slices.Equal(ids(st.InFlight), []uint64{a1}) {
			t.Errorf("QueueStatus(a) = %v, %v; want %d in flight, %d ready", st, err, a1, a2)
		}
		st, err = locks.QueueStatus(tx, "a", false, 0)
		if err != nil || len(st.Ready) != 0 || st.Depth != 1 {
			t.Errorf("QueueStatus(a) without items = %v, %v", st, err)
		}
		return nil
	})
}

func TestQueueItemKey(t *testing.T) {
	for _, c := range []struct {
		key   string
		queue string
		id    uint64
		ok    bool
	}{
		{"q/1", "q", 1, true},
		{"a/b/12", "a/b", 12, true},
		{"q/0", "", 0, false},
		{"q/x", "", 0, false},
		{"/1", "", 0, false},
		{"q", "", 0, false},
	} {
		q, id, ok := locks.SplitQueueItemKey(c.key)
		if q != c.queue || id != c.id || ok != c.ok {
			t.Errorf("SplitQueueItemKey(%q) = %q %d %v", c.key, q, id, ok)
		}
	}
	if k := locks.QueueItemKey("a/b", 12); k != "a/b/12" {
		t.Errorf("QueueItemKey = %q", k)
	}
}

func (s *store) dequeueRetry(q string, l int64, waiter uint64, retryOf ...uint64) (*catalogpb.QueueItem, []*catalogpb.Event) {
	s.t.Helper()
	resp, evs, err := s.apply(dequeueRetryCmd(q, l, waiter, retryOf, false))
	if err != nil {
		s.t.Fatalf("dequeue %s lease %d waiter %d retry_of %v: %v", q, l, waiter, retryOf, err)
	}
	return resp.(*catalogpb.DequeueResponse).Item, evs
}

// TestDequeueRetryOf: a Dequeue naming earlier attempts of its call in
// retry_of gets back the item handed to one of them, re-tagged with its own
// waiter id (deliveries and delivery time unchanged); the cancel an earlier
// attempt's member proposes then names an id the item no longer has and
// changes nothing, while a cancel of the current id still puts it back.
func TestDequeueRetryOf(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	x, _ := s.enqueue("q", "x")
	y, _ := s.enqueue("q", "y")
	first, _ := s.dequeue("q", 1, 10, false)
	if first.Id != x || first.WaiterId != 10 {
		t.Fatalf("dequeue = %v, want item %d for waiter 10", first, x)
	}

	// The answer was lost; the retry, waiter 11, names waiter 10.
	again, evs := s.dequeueRetry("q", 1, 11, 10)
	if again.GetId() != x || again.WaiterId != 11 || again.Consumer != 1 || again.Deliveries != 1 || again.DeliveredUnixNano != first.DeliveredUnixNano {
		t.Fatalf("retry = %v, want item %d re-tagged with waiter 11, delivered once at %d", again, x, first.DeliveredUnixNano)
	}
	wantEvents(t, evs, itemEvent("PUT", "q", x))
	if evs[0].PrevQueueItem.GetWaiterId() != 10 || evs[0].QueueItem.GetWaiterId() != 11 || evs[0].PrevKv == nil {
		t.Errorf("re-tag event = %v, want waiter 10 → 11 with prev", evs[0])
	}
	s.wantLeaseItems(1, fmt.Sprintf("queue_item:q/%d", x))

	// The stale cancel of waiter 10 changes nothing.
	before, rev := s.dump(), s.rev
	if evs := s.cancel(catalogpb.CancelWaitCommand_QUEUE, "q", 1, 10); len(evs) != 0 {
		t.Fatalf("stale cancel gave events %q", eventSummary(evs))
	}
	s.unchanged(before, rev)
	if st := s.status("q"); !slices.Equal(ids(st.InFlight), []uint64{x}) || st.InFlight[0].WaiterId != 11 || !slices.Equal(ids(st.Ready), []uint64{y}) {
		t.Fatalf("status after a stale cancel = %v, want %d in flight for waiter 11, %d ready", st, x, y)
	}

	// The same attempt again (waiter 11 itself) changes nothing.
	before, rev = s.dump(), s.rev
	if it, evs := s.dequeueRetry("q", 1, 11, 10); it.GetId() != x || len(evs) != 0 {
		t.Fatalf("repeated retry = %v, %q", it, eventSummary(evs))
	}
	s.unchanged(before, rev)

	// Another call of the lease, naming none of those ids, gets the next
	// item, not the one handed to the first call.
	if it, _ := s.dequeueRetry("q", 1, 12); it.GetId() != y {
		t.Fatalf("another call = %v, want item %d", it, y)
	}
	// The first call's third attempt names both earlier ones: item x.
	if it, _ := s.dequeueRetry("q", 1, 13, 10, 11); it.GetId() != x || it.WaiterId != 13 {
		t.Fatalf("third attempt = %v, want item %d re-tagged with waiter 13", it, x)
	}
	// A cancel of the current attempt still puts the item back.
	evs = s.cancel(catalogpb.CancelWaitCommand_QUEUE, "q", 1, 13)
	wantEvents(t, evs, itemEvent("PUT", "q", x))
	if it := evs[0].QueueItem; it.Consumer != 0 || it.WaiterId != 0 {
		t.Errorf("cancelled item = %v, want it ready", it)
	}
	s.wantLeaseItems(1, fmt.Sprintf("queue_item:q/%d", y))
	// retry_of does not reach items handed to other leases.
	if it, _ := s.dequeueRetry("q", 2, 20, 12); it.GetId() != x || it.Consumer != 2 || it.Deliveries != 2 {
		t.Fatalf("lease 2's dequeue = %v, want item %d, its second delivery", it, x)
	}
}

// TestDequeueRetryOfWaitingConsumer: a waiting consumer re-tagged by a
// retry is not removed by the earlier attempt's cancel, and the item then
// enqueued goes to the retry's waiter id. An item found for a call ends the
// wait an earlier attempt of it left.
func TestDequeueRetryOfWaitingConsumer(t *testing.T) {
	s := newStore(t)
	s.grant(1)
	if it, _ := s.dequeue("q", 1, 20, false); it != nil {
		t.Fatalf("dequeue on an empty queue = %v", it)
	}
	_, evs := s.dequeueRetry("q", 1, 21, 20)
	wantEvents(t, evs, "PUT queue q")
	if c := evs[0].QueueConsumers; len(c) != 1 || c[0].WaiterId != 21 {
		t.Fatalf("consumers after the retry = %v, want lease 1 with waiter 21", c)
	}
	before, rev := s.dump(), s.rev
	if evs := s.cancel(catalogpb.CancelWaitCommand_QUEUE, "q", 1, 20); len(evs) != 0 {
		t.Fatalf("stale cancel gave events %q", eventSummary(evs))
	}
	s.unchanged(before, rev)
	x, evs := s.enqueue("q", "x")
	if it := evs[0].QueueItem; it.Id != x || it.Consumer != 1 || it.WaiterId != 21 {
		t.Fatalf("enqueued item = %v, want it handed to lease 1, waiter 21", it)
	}

	// A wait left by an attempt of the call (waiter 31), while an item is
	// handed to another attempt of it (waiter 30): the next attempt gets
	// the item, and the wait goes.
	s.must(ackCmd("q", x, 1))
	s.dequeue("r", 1, 30, false)
	z, _ := s.enqueue("r", "z")
	s.dequeue("r", 1, 31, false)
	if st := s.status("r"); len(st.Consumers) != 1 || st.Consumers[0].WaiterId != 31 {
		t.Fatalf("status = %v, want lease 1 waiting with waiter 31", st)
	}
	it, evs := s.dequeueRetry("r", 1, 32, 30, 31)
	if it.GetId() != z || it.WaiterId != 32 {
		t.Fatalf("retry = %v, want item %d re-tagged with waiter 32", it, z)
	}
	wantEvents(t, evs, itemEvent("PUT", "r", z), "DELETE queue r")
	s.wantLeaseItems(1, fmt.Sprintf("queue_item:r/%d", z))
}
