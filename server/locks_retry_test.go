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

// An earlier attempt whose proposal is applied after its retry's (a late
// duplicate through another member) finds its waiter id retired by the
// retry's retry_of: it is answered WAIT_SUPERSEDED and changes nothing, so
// the hold stays the retry's and the cancel the earlier attempt's member
// proposes (naming the earlier id) does not release it.
func TestLockLateEarlierAttemptIsSupersededAndItsCancelChangesNothing(t *testing.T) {
	c := startCoordNode(t)
	a := grant(t, c.lease, 30)
	b := grant(t, c.lease, 30)
	first := c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a, WaiterId: 5})
	retry := c.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a, WaiterId: 6, RetryOf: []uint64{5}})
	if retry.Token != first.Token {
		t.Fatalf("retry got token %d, want the hold's token %d", retry.Token, first.Token)
	}
	revBefore := retry.Header.GetRevision()

	_, err := c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: a, WaiterId: 5})
	wantCode(t, err, codes.Aborted, "WAIT_SUPERSEDED", "waiter id 5 is an earlier attempt", `lock "m" as waiter id 6`)
	c.s.cancelWait(catalogpb.CancelWaitCommand_LOCK, "m", a, 5)

	st := getLock(t, c, "m")
	if h := st.GetHolders(); len(h) != 1 || h[0].GetLease() != a || h[0].GetToken() != first.Token || h[0].GetWaiterId() != 6 ||
		len(h[0].GetRetiredWaiterIds()) != 1 || h[0].GetRetiredWaiterIds()[0] != 5 {
		t.Fatalf("holders after the late attempt and its cancel = %v, want lease %d with token %d (waiter 6, retired [5])", h, a, first.Token)
	}
	if st.GetModRevision() != revBefore {
		t.Errorf("lock moved from revision %d to %d; the late attempt and its cancel must change nothing", revBefore, st.GetModRevision())
	}
	fence, err := c.lock.Fence(t.Context(), &catalogpb.FenceRequest{Name: "m", Token: first.Token})
	if err != nil || !fence.Valid {
		t.Fatalf("fence of token %d: %v, %v; want valid", first.Token, fence, err)
	}

	// The same for a wait: lease b's retry waits (queued first, naming the
	// earlier attempt 20); the earlier attempt, applied late, is answered at
	// once, without waiting, and the retry keeps its place and is granted.
	waiting := async(func() (*catalogpb.LockResponse, error) {
		return c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: b, WaiterId: 21, RetryOf: []uint64{20}})
	})
	waitWaiting(t, c.s, 1)
	_, err = c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: b, WaiterId: 20})
	wantCode(t, err, codes.Aborted, "WAIT_SUPERSEDED", "waiter id 20 is an earlier attempt", "now waits for", "as waiter id 21")
	c.s.cancelWait(catalogpb.CancelWaitCommand_LOCK, "m", b, 20)
	waitWaiting(t, c.s, 1)
	stillWaiting(t, waiting, "the retry's Lock")
	if w := getLock(t, c, "m").GetWaiters(); len(w) != 1 || w[0].GetLease() != b || w[0].GetWaiterId() != 21 {
		t.Fatalf("waiters = %v, want lease %d waiting as waiter 21", w, b)
	}
	if _, err := c.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "m", Lease: a, Token: first.Token}); err != nil {
		t.Fatal(err)
	}
	granted := awaitOK(t, waiting, "the retry's Lock")
	if !granted.Acquired || granted.Token <= first.Token {
		t.Fatalf("retry's Lock = %v, want granted with a token above %d", granted, first.Token)
	}

	long := make([]uint64, 17)
	for i := range long {
		long[i] = uint64(i + 100)
	}
	_, err = c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m2", Lease: a, WaiterId: 7, RetryOf: long})
	wantCode(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "lock retry_of must name at most 16 waiter ids", "got 17")
	_, err = c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m2", Lease: a, WaiterId: 7, RetryOf: []uint64{7}})
	wantCode(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "retry_of[0] is 7, this attempt's own waiter_id")
}

// Campaign passes retry_of through: a late earlier attempt of a Campaign
// is answered WAIT_SUPERSEDED and its cancel leaves the leadership alone.
func TestCampaignLateEarlierAttemptIsSuperseded(t *testing.T) {
	c := startCoordNode(t)
	a := grant(t, c.lease, 30)
	first, err := c.elect.Campaign(t.Context(), &catalogpb.CampaignRequest{Name: "e", Lease: a, Value: []byte("v"), WaiterId: 5})
	if err != nil {
		t.Fatal(err)
	}
	retry, err := c.elect.Campaign(t.Context(), &catalogpb.CampaignRequest{Name: "e", Lease: a, Value: []byte("v"), WaiterId: 6, RetryOf: []uint64{5}})
	if err != nil || retry.Leader.GetToken() != first.Leader.GetToken() {
		t.Fatalf("retry = %v, %v; want the leadership of token %d", retry, err, first.Leader.GetToken())
	}
	_, err = c.elect.Campaign(t.Context(), &catalogpb.CampaignRequest{Name: "e", Lease: a, Value: []byte("v"), WaiterId: 5})
	wantCode(t, err, codes.Aborted, "WAIT_SUPERSEDED", "waiter id 5 is an earlier attempt")
	c.s.cancelWait(catalogpb.CancelWaitCommand_LOCK, "e", a, 5)
	st := getLock(t, c, "e")
	if h := st.GetHolders(); len(h) != 1 || h[0].GetToken() != first.Leader.GetToken() || h[0].GetWaiterId() != 6 {
		t.Fatalf("holders = %v, want token %d (waiter 6)", h, first.Leader.GetToken())
	}
	_, err = c.elect.Campaign(t.Context(), &catalogpb.CampaignRequest{Name: "e", Lease: a, WaiterId: 9, RetryOf: []uint64{0}})
	wantCode(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "campaign retry_of[0] is 0")
}
