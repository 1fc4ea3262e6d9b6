package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

func fenceTxn(name string, token uint64, result catalogpb.Compare_Result, key, value string) *catalogpb.TxnRequest {
	return &catalogpb.TxnRequest{
		Compare: []*catalogpb.Compare{{Target: catalogpb.Compare_FENCE, Result: result, Key: []byte(name),
			TargetUnion: &catalogpb.Compare_FenceToken{FenceToken: token}}},
		Success: []*catalogpb.TxnOp{{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{Key: []byte(key), Value: []byte(value)}}}},
	}
}

func TestFenceCompareRefusesAWriteOnceTheLockMovedOn(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	first := c.mustLock(t, &catalogpb.LockRequest{Name: "register", Lease: a})
	eq := catalogpb.Compare_EQUAL
	resp, err := c.kv.Txn(t.Context(), fenceTxn("register", first.Token, eq, "reg", "from a"))
	if err != nil || !resp.Succeeded {
		t.Fatalf("fenced write by the holder: %v, %v", resp, err)
	}
	second := async(func() (*catalogpb.LockResponse, error) {
		return c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "register", Lease: b})
	})
	waitLock(t, c, "register", "b waits", holdersAndWaiters([]int64{a}, []int64{b}))
	if _, err := c.lease.Revoke(t.Context(), &catalogpb.LeaseRevokeRequest{Id: a}); err != nil {
		t.Fatal(err)
	}
	got := awaitOK(t, second, "b's Lock")

	// a, paused past its lease, writes with its stale token: refused.
	resp, err = c.kv.Txn(t.Context(), fenceTxn("register", first.Token, eq, "reg", "stale write from a"))
	if err != nil || resp.Succeeded {
		t.Fatalf("fenced write with a stale token: %v, %v", resp, err)
	}
	resp, err = c.kv.Txn(t.Context(), fenceTxn("register", first.Token, catalogpb.Compare_NOT_EQUAL, "stale", "a's token is stale"))
	if err != nil || !resp.Succeeded {
		t.Fatalf("NOT_EQUAL on a stale token: %v, %v", resp, err)
	}
	resp, err = c.kv.Txn(t.Context(), fenceTxn("register", got.Token, eq, "reg", "from b"))
	if err != nil || !resp.Succeeded {
		t.Fatalf("fenced write by the new holder: %v, %v", resp, err)
	}
	kv, err := c.kv.Get(t.Context(), &catalogpb.GetRequest{Key: []byte("reg")})
	if err != nil || len(kv.Kvs) != 1 || string(kv.Kvs[0].Value) != "from b" {
		t.Fatalf("register: %v, %v", kv, err)
	}

	_, err = c.kv.Txn(t.Context(), fenceTxn("register", got.Token, catalogpb.Compare_GREATER, "reg", "x"))
	wantCode(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "FENCE takes result EQUAL")
	_, err = c.kv.Txn(t.Context(), fenceTxn("bad\x01name", got.Token, eq, "reg", "x"))
	wantCode(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "FENCE compare", "control character")
}

func TestElectionCampaignAndObserveSeeEveryChangeInOrder(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	stream, err := c.elect.Observe(t.Context(), &catalogpb.LeaderRequest{Name: "e"})
	if err != nil {
		t.Fatal(err)
	}
	observed := make(chan *catalogpb.LeaderResponse, 16)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(observed)
				return
			}
			observed <- resp
		}
	}()
	next := func(what string) *catalogpb.LeaderResponse {
		t.Helper()
		r, ok := <-observed
		if !ok {
			t.Fatalf("observe ended before %s", what)
		}
		return r
	}
	if r := next("the first answer"); r.HasLeader {
		t.Fatalf("first answer of an election nobody runs: %v", r)
	}

	ca, err := c.elect.Campaign(t.Context(), &catalogpb.CampaignRequest{Name: "e", Lease: a, Value: []byte("a:1")})
	if err != nil {
		t.Fatal(err)
	}
	if ca.Leader.GetLease() != a || ca.Leader.GetToken() == 0 || ca.Leader.GetRevision() != ca.Header.Revision || string(ca.Value) != "a:1" {
		t.Fatalf("a's campaign: %v", ca)
	}
	campaignB := async(func() (*catalogpb.CampaignResponse, error) {
		return c.elect.Campaign(t.Context(), &catalogpb.CampaignRequest{Name: "e", Lease: b, Value: []byte("b:1")})
	})
	waitLock(t, c, "e", "b is a candidate", holdersAndWaiters([]int64{a}, []int64{b}))
	if _, err := c.elect.Proclaim(t.Context(), &catalogpb.ProclaimRequest{Leader: ca.Leader, Value: []byte("a:2")}); err != nil {
		t.Fatal(err)
	}
	stale := proto.CloneOf(ca.Leader)
	stale.Token += 100
	_, err = c.elect.Proclaim(t.Context(), &catalogpb.ProclaimRequest{Leader: stale, Value: []byte("x")})
	wantCode(t, err, codes.FailedPrecondition, "LOCK_NOT_HELD", fmt.Sprintf("token %d", stale.Token))
	leader, err := c.elect.Leader(t.Context(), &catalogpb.LeaderRequest{Name: "e"})
	if err != nil || !leader.HasLeader || leader.Leader.GetLease() != a || string(leader.Value) != "a:2" || leader.Candidates != 1 {
		t.Fatalf("leader: %v, %v", leader, err)
	}
	if _, err := c.elect.Resign(t.Context(), &catalogpb.ResignRequest{Leader: ca.Leader}); err != nil {
		t.Fatal(err)
	}
	cb := awaitOK(t, campaignB, "b's campaign")
	if cb.Leader.GetLease() != b || cb.Leader.GetToken() <= ca.Leader.GetToken() || string(cb.Value) != "b:1" {
		t.Fatalf("b's campaign: %v", cb)
	}
	if _, err := c.lease.Revoke(t.Context(), &catalogpb.LeaseRevokeRequest{Id: b}); err != nil {
		t.Fatal(err)
	}

	type change struct {
		has   bool
		lease int64
		token uint64
		value string
	}
	want := []change{
		{true, a, ca.Leader.Token, "a:1"},
		{true, a, ca.Leader.Token, "a:2"},
		{true, b, cb.Leader.Token, "b:1"},
		{false, 0, 0, ""},
	}
	var prevRev int64
	for i, w := range want {
		r := next(fmt.Sprintf("change %d", i))
		got := change{r.HasLeader, r.Leader.GetLease(), r.Leader.GetToken(), string(r.Value)}
		if got != w {
			t.Errorf("change %d: %+v, want %+v", i, got, w)
		}
		if r.Header.GetRevision() <= prevRev {
			t.Errorf("change %d at revision %d, after %d", i, r.Header.GetRevision(), prevRev)
		}
		prevRev = r.Header.GetRevision()
	}
	if prevRev != c.revision(t) {
		t.Errorf("the last change is at revision %d, the store at %d", prevRev, c.revision(t))
	}

	// An election name in use as a mutex is refused.
	c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: grant(t, c.lease, 30)})
	_, err = c.elect.Leader(t.Context(), &catalogpb.LeaderRequest{Name: "m"})
	wantCode(t, err, codes.FailedPrecondition, "LOCK_KIND_MISMATCH", "not an election")
}

func TestBarrierSimpleWaitReturnsOnRelease(t *testing.T) {
	c := startCoordNode(t)
	if _, err := c.bar.Wait(t.Context(), &catalogpb.BarrierWaitRequest{Name: "b"}); err != nil {
		t.Fatalf("wait on a barrier not set: %v", err)
	}
	if _, err := c.bar.Set(t.Context(), &catalogpb.BarrierSetRequest{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	waits := make([]<-chan callResult[*catalogpb.BarrierWaitResponse], 3)
	for i := range waits {
		waits[i] = async(func() (*catalogpb.BarrierWaitResponse, error) {
			return c.bar.Wait(t.Context(), &catalogpb.BarrierWaitRequest{Name: "b"})
		})
	}
	waitWaiting(t, c.s, 3)
	for i, w := range waits {
		stillWaiting(t, w, fmt.Sprintf("wait %d", i))
	}
	rel, err := c.bar.Release(t.Context(), &catalogpb.BarrierReleaseRequest{Name: "b"})
	if err != nil || !rel.Released {
		t.Fatalf("release: %v, %v", rel, err)
	}
	for i, w := range waits {
		if got := awaitOK(t, w, fmt.Sprintf("wait %d", i)); got.Header.Revision != rel.Header.Revision {
			t.Errorf("wait %d returned at revision %d, the release is %d", i, got.Header.Revision, rel.Header.Revision)
		}
	}
	if rel, err := c.bar.Release(t.Context(), &catalogpb.BarrierReleaseRequest{Name: "b"}); err != nil || rel.Released {
		t.Errorf("second release: %v, %v", rel, err)
	}

	// A barrier set with a lease is released when the lease ends.
	l := grant(t, c.lease, 30)
	if _, err := c.bar.Set(t.Context(), &catalogpb.BarrierSetRequest{Name: "b", Lease: l}); err != nil {
		t.Fatal(err)
	}
	w := async(func() (*catalogpb.BarrierWaitResponse, error) {
		return c.bar.Wait(t.Context(), &catalogpb.BarrierWaitRequest{Name: "b"})
	})
	waitWaiting(t, c.s, 1)
	if _, err := c.lease.Revoke(t.Context(), &catalogpb.LeaseRevokeRequest{Id: l}); err != nil {
		t.Fatal(err)
	}
	awaitOK(t, w, "wait on a leased barrier")
}

func TestBarrierDoubleEnterAndLeaveWithThreeParticipants(t *testing.T) {
	c := startCoordNode(t)
	var ps []int64
	for range 3 {
		ps = append(ps, grant(t, c.lease, 30))
	}
	enter := func(l int64) <-chan callResult[*catalogpb.BarrierEnterResponse] {
		return async(func() (*catalogpb.BarrierEnterResponse, error) {
			return c.bar.Enter(t.Context(), &catalogpb.BarrierEnterRequest{Name: "phase", Lease: l, Count: 3})
		})
	}
	e0 := enter(ps[0])
	waitWaiting(t, c.s, 1)
	e1 := enter(ps[1])
	waitWaiting(t, c.s, 2)
	stillWaiting(t, e0, "the first Enter")
	stillWaiting(t, e1, "the second Enter")

	_, err := c.bar.Enter(t.Context(), &catalogpb.BarrierEnterRequest{Name: "phase", Lease: ps[2], Count: 4})
	wantCode(t, err, codes.FailedPrecondition, "BARRIER_MISMATCH", "expects 3 participants")
	last := awaitOK(t, enter(ps[2]), "the last Enter")
	for i, ch := range []<-chan callResult[*catalogpb.BarrierEnterResponse]{e0, e1} {
		got := awaitOK(t, ch, fmt.Sprintf("Enter %d", i))
		if !got.State.GetOpen() || len(got.State.GetParticipants()) != 3 || got.Header.Revision != last.Header.Revision {
			t.Errorf("Enter %d: %v (opened at %d)", i, got, last.Header.Revision)
		}
	}
	if !last.State.Open || last.State.OpenRevision != last.Header.Revision {
		t.Errorf("the last Enter: %v", last)
	}
	late := grant(t, c.lease, 30)
	_, err = c.bar.Enter(t.Context(), &catalogpb.BarrierEnterRequest{Name: "phase", Lease: late, Count: 3})
	wantCode(t, err, codes.FailedPrecondition, "BARRIER_MISMATCH", "is open")
	_, err = c.bar.Leave(t.Context(), &catalogpb.BarrierLeaveRequest{Name: "phase", Lease: late})
	wantCode(t, err, codes.FailedPrecondition, "BARRIER_NOT_ENTERED", fmt.Sprintf("lease %d has not entered", late))

	leave := func(l int64) <-chan callResult[*catalogpb.BarrierLeaveResponse] {
		return async(func() (*catalogpb.BarrierLeaveResponse, error) {
			return c.bar.Leave(t.Context(), &catalogpb.BarrierLeaveRequest{Name: "phase", Lease: l})
		})
	}
	l0 := leave(ps[0])
	waitWaiting(t, c.s, 1)
	l1 := leave(ps[1])
	waitWaiting(t, c.s, 2)
	stillWaiting(t, l0, "the first Leave")
	stillWaiting(t, l1, "the second Leave")
	lastLeave := awaitOK(t, leave(ps[2]), "the last Leave")
	for i, ch := range []<-chan callResult[*catalogpb.BarrierLeaveResponse]{l0, l1} {
		if got := awaitOK(t, ch, fmt.Sprintf("Leave %d", i)); got.Header.Revision != lastLeave.Header.Revision {
			t.Errorf("Leave %d returned at %d, the barrier was deleted at %d", i, got.Header.Revision, lastLeave.Header.Revision)
		}
	}
	if got, err := c.bar.Get(t.Context(), &catalogpb.GetBarrierRequest{Name: "phase"}); err != nil || got.State != nil {
		t.Errorf("barrier after every participant left: %v, %v", got, err)
	}

	// Leave before the barrier opened withdraws at once, and ends the
	// withdrawn participant's Enter.
	e := async(func() (*catalogpb.BarrierEnterResponse, error) {
		return c.bar.Enter(t.Context(), &catalogpb.BarrierEnterRequest{Name: "phase2", Lease: ps[0], Count: 2})
	})
	waitWaiting(t, c.s, 1)
	if _, err := c.bar.Leave(t.Context(), &catalogpb.BarrierLeaveRequest{Name: "phase2", Lease: ps[0]}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, await(t, e, "the withdrawn Enter").err, codes.Aborted, "WAIT_SUPERSEDED")
	if got, err := c.bar.Get(t.Context(), &catalogpb.GetBarrierRequest{Name: "phase2"}); err != nil || got.State != nil {
		t.Errorf("barrier after its only participant withdrew: %v, %v", got, err)
	}
}

func TestQueueDequeueBlocksAndALostConsumerRequeues(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	deqA := async(func() (*catalogpb.DequeueResponse, error) {
		return c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: a})
	})
	waitWaiting(t, c.s, 1)
	stillWaiting(t, deqA, "a's Dequeue on an empty queue")
	enq, err := c.queue.Enqueue(t.Context(), &catalogpb.EnqueueRequest{Queue: "work", Payload: []byte("job 1")})
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	id := enq.Id
	gotA := awaitOK(t, deqA, "a's Dequeue")
	if it := gotA.Item; it.GetId() != id || it.GetConsumer() != a || it.GetDeliveries() != 1 || string(it.GetPayload()) != "job 1" ||
		gotA.Header.Revision != enq.Header.Revision {
		t.Fatalf("a got %v (enqueued at %d)", gotA, enq.Header.Revision)
	}

	deqB := async(func() (*catalogpb.DequeueResponse, error) {
		return c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: b})
	})
	waitWaiting(t, c.s, 1)
	st, err := c.queue.Status(t.Context(), &catalogpb.QueueStatusRequest{Queue: "work"})
	if err != nil || st.Status.Depth != 0 || len(st.Status.InFlight) != 1 || len(st.Status.Consumers) != 1 || st.Status.Consumers[0].Lease != b {
		t.Fatalf("status with one item in flight and b waiting: %v, %v", st, err)
	}
	// a dies before acknowledging: the item goes to b.
	revoke, err := c.lease.Revoke(t.Context(), &catalogpb.LeaseRevokeRequest{Id: a})
	if err != nil {
		t.Fatal(err)
	}
	gotB := awaitOK(t, deqB, "b's Dequeue")
	if it := gotB.Item; it.GetId() != id || it.GetConsumer() != b || it.GetDeliveries() != 2 || gotB.Header.Revision != revoke.Header.Revision {
		t.Fatalf("b got %v (a revoked at %d)", gotB, revoke.Header.Revision)
	}
	if gotA.Item.GetToken() == 0 || gotB.Item.GetToken() <= gotA.Item.GetToken() {
		t.Errorf("waiting consumers got delivery tokens %d then %d, want increasing from above 0", gotA.Item.GetToken(), gotB.Item.GetToken())
	}
	_, err = c.queue.Ack(t.Context(), &catalogpb.AckRequest{Queue: "work", Id: id, Lease: a})
	wantCode(t, err, codes.NotFound, "QUEUE_ITEM_NOT_FOUND", fmt.Sprintf("no item %d handed to lease", id))
	if _, err := c.queue.Ack(t.Context(), &catalogpb.AckRequest{Queue: "work", Id: id, Lease: b}); err != nil {
		t.Fatal(err)
	}
	_, err = c.queue.Ack(t.Context(), &catalogpb.AckRequest{Queue: "work", Id: id, Lease: b})
	wantCode(t, err, codes.NotFound, "QUEUE_ITEM_NOT_FOUND")

	// Ready items go out in order; a try on an empty queue answers at once.
	var ids []uint64
	for i := range 2 {
		enq, err := c.queue.Enqueue(t.Context(), &catalogpb.EnqueueRequest{Queue: "work", Payload: []byte(fmt.Sprintf("job %d", i+2))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, enq.Id)
	}
	for _, want := range ids {
		r, err := c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: b, Try: true})
		if err != nil || r.Item.GetId() != want {
			t.Fatalf("dequeue: %v, %v; want item %d", r, err, want)
		}
		if _, err := c.queue.Ack(t.Context(), &catalogpb.AckRequest{Queue: "work", Id: want, Lease: b}); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: b, Try: true}); err != nil || r.Item != nil {
		t.Fatalf("try on an empty queue: %v, %v", r, err)
	}
}

func TestQueueCancelledDequeueStopsWaiting(t *testing.T) {
	c := startCoordNode(t)
	a := grant(t, c.lease, 30)
	ctx, cancel := context.WithCancel(t.Context())
	deq := async(func() (*catalogpb.DequeueResponse, error) {
		return c.queue.Dequeue(ctx, &catalogpb.DequeueRequest{Queue: "work", Lease: a})
	})
	waitWaiting(t, c.s, 1)
	cancel()
	if r := await(t, deq, "cancelled Dequeue"); status.Code(r.err) != codes.Canceled {
		t.Fatalf("cancelled Dequeue: %v, %v", r.resp, r.err)
	}
	waitFor(t, 10*time.Second, "the consumer's wait removed", func() error {
		st, err := c.queue.Status(t.Context(), &catalogpb.QueueStatusRequest{Queue: "work"})
		if err != nil {
			return err
		}
		if len(st.Status.Consumers) != 0 {
			return fmt.Errorf("consumers %v", st.Status.Consumers)
		}
		return nil
	})
	// The next item stays ready rather than going to a consumer who left.
	if _, err := c.queue.Enqueue(t.Context(), &catalogpb.EnqueueRequest{Queue: "work"}); err != nil {
		t.Fatal(err)
	}
	st, err := c.queue.Status(t.Context(), &catalogpb.QueueStatusRequest{Queue: "work", Items: true})
	if err != nil || st.Status.Depth != 1 || len(st.Status.Ready) != 1 || len(st.Status.InFlight) != 0 {
		t.Fatalf("status: %v, %v", st, err)
	}
}

// TestLockBadInput: each refused call answers its reason and changes
// nothing.
func TestLockBadInputChangesNothing(t *testing.T) {
	c := startCoordNode(t)
	l := grant(t, c.lease, 30)
	other := grant(t, c.lease, 30)
	held := c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: l})
	c.mustLock(t, &catalogpb.LockRequest{Name: "sem", Lease: l, Kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, Limit: 2})
	if _, err := c.bar.Set(t.Context(), &catalogpb.BarrierSetRequest{Name: "simple"}); err != nil {
		t.Fatal(err)
	}
	const missing = 424242
	semaphore := catalogpb.LockKind_LOCK_KIND_SEMAPHORE
	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
		msg    string
	}{
		{"unlock with a stale token", func() error {
			_, err := c.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "m", Lease: l, Token: held.Token + 50})
			return err
		}, codes.FailedPrecondition, "LOCK_NOT_HELD", fmt.Sprintf("current holders: [%d]", held.Token)},
		{"unlock by another lease", func() error {
			_, err := c.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "m", Lease: other, Token: held.Token})
			return err
		}, codes.FailedPrecondition, "LOCK_NOT_HELD", "not lease"},
		{"lock with a lease that does not exist", func() error {
			_, err := c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m2", Lease: missing})
			return err
		}, codes.NotFound, "LEASE_NOT_FOUND", "lease 424242"},
		{"campaign with a lease that does not exist", func() error {
			_, err := c.elect.Campaign(t.Context(), &catalogpb.CampaignRequest{Name: "e", Lease: missing})
			return err
		}, codes.NotFound, "LEASE_NOT_FOUND", "lease 424242"},
		{"dequeue with a lease that does not exist", func() error {
			_, err := c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "q", Lease: missing})
			return err
		}, codes.NotFound, "LEASE_NOT_FOUND", "lease 424242"},
		{"enter with a lease that does not exist", func() error {
			_, err := c.bar.Enter(t.Context(), &catalogpb.BarrierEnterRequest{Name: "d", Lease: missing, Count: 2})
			return err
		}, codes.NotFound, "LEASE_NOT_FOUND", "lease 424242"},
		{"semaphore asked for more permits than it has", func() error {
			_, err := c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "sem", Lease: other, Kind: semaphore, Permits: 3})
			return err
		}, codes.FailedPrecondition, "PERMITS_EXCEEDED", "has 2 permits; cannot take 3"},
		{"semaphore with another limit", func() error {
			_, err := c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "sem", Lease: other, Kind: semaphore, Limit: 5})
			return err
		}, codes.FailedPrecondition, "PERMITS_EXCEEDED", "limit of 2 permits"},
		{"mutex used as an RW lock", func() error {
			_, err := c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: other, Kind: catalogpb.LockKind_LOCK_KIND_RWLOCK})
			return err
		}, codes.FailedPrecondition, "LOCK_KIND_MISMATCH", "MUTEX"},
		{"election through Lock", func() error {
			_, err := c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "e", Lease: l, Kind: catalogpb.LockKind_LOCK_KIND_ELECTION})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT", "Election.Campaign"},
		{"name too long", func() error {
			_, err := c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: strings.Repeat("n", 513), Lease: l})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT", "1..512 bytes, got 513"},
		{"leave without enter", func() error {
			_, err := c.bar.Leave(t.Context(), &catalogpb.BarrierLeaveRequest{Name: "d", Lease: l})
			return err
		}, codes.FailedPrecondition, "BARRIER_NOT_ENTERED", "has not entered"},
		{"enter a simple barrier", func() error {
			_, err := c.bar.Enter(t.Context(), &catalogpb.BarrierEnterRequest{Name: "simple", Lease: l, Count: 2})
			return err
		}, codes.FailedPrecondition, "LOCK_KIND_MISMATCH", "SIMPLE"},
		{"ack of an unknown item", func() error {
			_, err := c.queue.Ack(t.Context(), &catalogpb.AckRequest{Queue: "q", Id: 7, Lease: l})
			return err
		}, codes.NotFound, "QUEUE_ITEM_NOT_FOUND", "no item 7"},
		{"payload too large", func() error {
			_, err := c.queue.Enqueue(t.Context(), &catalogpb.EnqueueRequest{Queue: "q", Payload: make([]byte, 1<<20+1)})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT", "at most 1048576 bytes"},
		{"list limit too large", func() error {
			_, err := c.lock.List(t.Context(), &catalogpb.ListLocksRequest{Limit: 10001})
			return err
		}, codes.InvalidArgument, "INVALID_LIMIT", "limit must be 0..10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.revision(t)
			wantCode(t, tt.call(), tt.code, tt.reason, tt.msg)
			if after := c.revision(t); after != before {
				t.Errorf("revision moved from %d to %d", before, after)
			}
		})
	}
	st := getLock(t, c, "m")
	if len(st.Holders) != 1 || st.Holders[0].Token != held.Token || len(st.Waiters) != 0 {
		t.Errorf("lock m after the refused calls: %v", st)
	}
}

func TestLockWatchFilters(t *testing.T) {
	c := startCoordNode(t)
	tw := openWatchStream(t, c.s.ClientAddr())
	tw.mustCreate(&catalogpb.WatchCreateRequest{WatchId: 1, Filter: catalogpb.WatchCreateRequest_LOCK, Key: []byte("jobs/"), Prefix: true})
	tw.mustCreate(&catalogpb.WatchCreateRequest{WatchId: 2, Filter: catalogpb.WatchCreateRequest_QUEUE, Key: []byte("q/1")})
	tw.mustCreate(&catalogpb.WatchCreateRequest{WatchId: 3, Filter: catalogpb.WatchCreateRequest_BARRIER, Key: []byte("b")})
	l := grant(t, c.lease, 30)
	held := c.mustLock(t, &catalogpb.LockRequest{Name: "jobs/a", Lease: l})
	c.mustLock(t, &catalogpb.LockRequest{Name: "other", Lease: l})
	if _, err := c.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "jobs/a", Token: held.Token}); err != nil {
		t.Fatal(err)
	}
	// A queue named "q/1" (a name may hold '/') beside queue "q": the
	// watch on queue q/1 matches by the item's queue, not by cutting its
	// key "q/1/<id>", and sees its own item only.
	for _, q := range []string{"q", "q/1"} {
		if _, err := c.queue.Enqueue(t.Context(), &catalogpb.EnqueueRequest{Queue: q, Payload: []byte(q)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.bar.Set(t.Context(), &catalogpb.BarrierSetRequest{Name: "b"}); err != nil {
		t.Fatal(err)
	}

	locksSeen := eventsOf([]*catalogpb.WatchResponse{tw.next(1), tw.next(1)})
	if len(locksSeen) != 2 || locksSeen[0].Type != catalogpb.Event_PUT || locksSeen[0].Lock.GetName() != "jobs/a" ||
		locksSeen[1].Type != catalogpb.Event_DELETE || locksSeen[1].PrevLock.GetHolders()[0].GetToken() != held.Token {
		t.Errorf("lock watch: %v", locksSeen)
	}
	q := tw.next(2).Events
	if len(q) != 1 || q[0].QueueItem.GetQueue() != "q/1" || string(q[0].QueueItem.GetPayload()) != "q/1" {
		t.Errorf("queue watch: %v", q)
	}
	b := tw.next(3).Events
	if len(b) != 1 || b[0].Barrier.GetName() != "b" {
		t.Errorf("barrier watch: %v", b)
	}
}

func TestGraphQLCoordinationOnAServer(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	held := c.mustLock(t, &catalogpb.LockRequest{Name: "jobs/a", Lease: a})
	waiting := async(func() (*catalogpb.LockResponse, error) {
		return c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "jobs/a", Lease: b})
	})
	waitLock(t, c, "jobs/a", "b waits", holdersAndWaiters([]int64{a}, []int64{b}))
	ce, err := c.elect.Campaign(t.Context(), &catalogpb.CampaignRequest{Name: "leader", Lease: a, Value: []byte("host-a")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.bar.Enter(t.Context(), &catalogpb.BarrierEnterRequest{Name: "phase", Lease: a, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.queue.Enqueue(t.Context(), &catalogpb.EnqueueRequest{Queue: "work", Payload: []byte("j1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.queue.Enqueue(t.Context(), &catalogpb.EnqueueRequest{Queue: "work", Payload: []byte("j2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: b, Try: true}); err != nil {
		t.Fatal(err)
	}

	var data struct {
		Locks []struct {
			Name, Kind, Token string
			Waiters           []struct{ Lease string }
		}
		Lock      struct{ Holder struct{ Lease, Token string } }
		Elections []struct{ Name, Leader, Value, Token string }
		Barriers  []struct {
			Name string
			Open bool
		}
		Queues []struct {
			Name          string
			Depth         int
			InFlightCount int
			InFlight      []struct{ Id, Consumer string }
		}
	}
	errs := queryGraphQL(t, c.s, `{
		locks(kind: LOCK_KIND_MUTEX) { name kind token waiters { lease } }
		lock(name: "jobs/a") { holder { lease token } }
		elections { name leader value token }
		barriers { name open }
		queues { name depth inFlightCount inFlight { id consumer } }
	}`, &data)
	if len(errs) > 0 {
		t.Fatalf("graphql errors: %v", errs)
	}
	dec := func(v any) string { return fmt.Sprint(v) }
	if len(data.Locks) != 1 || data.Locks[0].Name != "jobs/a" || data.Locks[0].Token != dec(held.Token) ||
		len(data.Locks[0].Waiters) != 1 || data.Locks[0].Waiters[0].Lease != dec(b) {
		t.Errorf("locks: %+v", data.Locks)
	}
	if data.Lock.Holder.Lease != dec(a) || data.Lock.Holder.Token != dec(held.Token) {
		t.Errorf("lock: %+v", data.Lock)
	}
	if len(data.Elections) != 1 || data.Elections[0].Leader != dec(a) || data.Elections[0].Value != "host-a" || data.Elections[0].Token != dec(ce.Leader.Token) {
		t.Errorf("elections: %+v", data.Elections)
	}
	if len(data.Barriers) != 1 || !data.Barriers[0].Open {
		t.Errorf("barriers: %+v", data.Barriers)
	}
	if len(data.Queues) != 1 || data.Queues[0].Depth != 1 || data.Queues[0].InFlightCount != 1 || data.Queues[0].InFlight[0].Consumer != dec(b) {
		t.Errorf("queues: %+v", data.Queues)
	}
	stillWaiting(t, waiting, "b's Lock")
}

// A queue item's delivery and a double barrier's participation carry
// fencing tokens a KV transaction can compare on: a consumer whose lease
// died writes with its delivery's token and is refused.
func TestFenceCompareOnQueueDeliveriesAndBarrierParticipants(t *testing.T) {
	c := startCoordNode(t)
	a, b := grant(t, c.lease, 30), grant(t, c.lease, 30)
	eq := catalogpb.Compare_EQUAL
	enq, err := c.queue.Enqueue(t.Context(), &catalogpb.EnqueueRequest{Queue: "work", Payload: []byte("job")})
	if err != nil {
		t.Fatal(err)
	}
	key := enq.Id
	first, err := c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: a, Try: true})
	if err != nil || first.Item.GetToken() == 0 {
		t.Fatalf("dequeue: %v, %v; want an item with a token", first, err)
	}
	name := fmt.Sprintf("work/%d", key)
	resp, err := c.kv.Txn(t.Context(), fenceTxn(name, first.Item.Token, eq, "out", "from a"))
	if err != nil || !resp.Succeeded {
		t.Fatalf("fenced write by the consumer: %v, %v", resp, err)
	}
	if _, err := c.lease.Revoke(t.Context(), &catalogpb.LeaseRevokeRequest{Id: a}); err != nil {
		t.Fatal(err)
	}
	second, err := c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: b, Try: true})
	if err != nil || second.Item.GetId() != key || second.Item.GetToken() <= first.Item.Token {
		t.Fatalf("redelivery: %v, %v; want item %d with a token above %d", second, err, key, first.Item.Token)
	}
	resp, err = c.kv.Txn(t.Context(), fenceTxn(name, first.Item.Token, eq, "out", "stale write from a"))
	if err != nil || resp.Succeeded {
		t.Fatalf("fenced write with the first delivery's token: %v, %v; want refused", resp, err)
	}
	resp, err = c.kv.Txn(t.Context(), fenceTxn(name, second.Item.Token, eq, "out", "from b"))
	if err != nil || !resp.Succeeded {
		t.Fatalf("fenced write by the second consumer: %v, %v", resp, err)
	}

	enter, err := c.bar.Enter(t.Context(), &catalogpb.BarrierEnterRequest{Name: "phase", Lease: b, Count: 1})
	if err != nil || enter.Token <= second.Item.Token {
		t.Fatalf("enter: %v, %v; want a token above %d", enter, err, second.Item.Token)
	}
	resp, err = c.kv.Txn(t.Context(), fenceTxn("phase", enter.Token, eq, "phase-out", "inside"))
	if err != nil || !resp.Succeeded {
		t.Fatalf("fenced write by a participant: %v, %v", resp, err)
	}
	if _, err := c.bar.Leave(t.Context(), &catalogpb.BarrierLeaveRequest{Name: "phase", Lease: b}); err != nil {
		t.Fatal(err)
	}
	resp, err = c.kv.Txn(t.Context(), fenceTxn("phase", enter.Token, eq, "phase-out", "after leaving"))
	if err != nil || resp.Succeeded {
		t.Fatalf("fenced write after Leave: %v, %v; want refused", resp, err)
	}
}
