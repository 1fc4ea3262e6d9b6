package server

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A retry of a blocking call carries a new waiter id (the SDK gives each
// attempt its own): it takes over the hold, wait or handed-out item of the
// attempt whose answer was lost, and the cancel that attempt's member then
// proposes (its client went away) names the old id and changes nothing.

func TestLockRetryWithANewWaiterIDSurvivesTheStaleCancel(t *testing.T) {
	c := startCoordNode(t)
	a := grant(t, c.lease, 30)
	first := c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a, WaiterId: 5})
	retry := c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a, WaiterId: 6})
	if retry.Token != first.Token {
		t.Fatalf("retry got token %d, want the hold's token %d", retry.Token, first.Token)
	}
	// The first attempt's member cancels it, naming waiter id 5.
	c.s.cancelWait(catalogpb.CancelWaitCommand_LOCK, "m", a, 5)
	st := getLock(t, c, "m")
	if h := st.GetHolders(); len(h) != 1 || h[0].GetLease() != a || h[0].GetToken() != first.Token || h[0].GetWaiterId() != 6 {
		t.Fatalf("holders after the stale cancel = %v, want lease %d with token %d (waiter 6)", h, a, first.Token)
	}
	fence, err := c.lock.Fence(t.Context(), &catalogpb.FenceRequest{Name: "m", Token: first.Token})
	if err != nil || !fence.Valid {
		t.Fatalf("fence of token %d after the stale cancel: %v, %v; want valid", first.Token, fence, err)
	}
}

func TestQueueRetryOfAnswersTheItemAgainAndSurvivesTheStaleCancel(t *testing.T) {
	c := startCoordNode(t)
	a := grant(t, c.lease, 30)
	enq, err := c.queue.Enqueue(t.Context(), &catalogpb.EnqueueRequest{Queue: "work", Payload: []byte("job")})
	if err != nil {
		t.Fatal(err)
	}
	// The first attempt is handed the item; its answer is lost.
	lost, err := c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: a, WaiterId: 10})
	if err != nil || lost.Item.GetId() != enq.Id {
		t.Fatalf("first attempt: %v, %v", lost, err)
	}
	retry, err := c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: a, WaiterId: 11, RetryOf: []uint64{10}})
	if err != nil {
		t.Fatal(err)
	}
	if it := retry.Item; it.GetId() != enq.Id || it.GetWaiterId() != 11 || it.GetDeliveries() != 1 {
		t.Fatalf("retry answered %v, want item %d re-tagged with waiter 11, delivered once", it, enq.Id)
	}
	c.s.cancelWait(catalogpb.CancelWaitCommand_QUEUE, "work", a, 10)
	st, err := c.queue.Status(t.Context(), &catalogpb.QueueStatusRequest{Queue: "work"})
	if err != nil {
		t.Fatal(err)
	}
	if f := st.Status.GetInFlight(); len(f) != 1 || f[0].GetId() != enq.Id || f[0].GetConsumer() != a || f[0].GetWaiterId() != 11 || st.Status.GetDepth() != 0 {
		t.Fatalf("status after the stale cancel = %v, want item %d still handed to lease %d (waiter 11)", st.Status, enq.Id, a)
	}
	if _, err := c.queue.Ack(t.Context(), &catalogpb.AckRequest{Queue: "work", Id: enq.Id, Lease: a}); err != nil {
		t.Fatalf("ack after the stale cancel: %v", err)
	}

	// retry_of is bounded and names non-zero ids.
	long := make([]uint64, 17)
	for i := range long {
		long[i] = uint64(i + 1)
	}
	_, err = c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: a, WaiterId: 12, RetryOf: long})
	wantCode(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "retry_of must name at most 16 waiter ids", "got 17")
	_, err = c.queue.Dequeue(t.Context(), &catalogpb.DequeueRequest{Queue: "work", Lease: a, WaiterId: 12, RetryOf: []uint64{0}, Try: true})
	wantCode(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "retry_of[0] is 0")
}
