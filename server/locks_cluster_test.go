package server

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// TestLockWaiterKeepsItsPlaceAcrossALeaderFailover: locks through a
// follower; a waiter whose member (the leader) stops reconnects to another
// member with the same lease and waiter_id and is granted before the
// waiter queued after it.
func TestLockWaiterKeepsItsPlaceAcrossALeaderFailover(t *testing.T) {
	cluster := newTestCluster(t, 3)
	lead := cluster.leader()
	var followers []*Server
	for _, s := range cluster.servers {
		if s != lead {
			followers = append(followers, s)
		}
	}
	f1, f2 := coordOn(t, followers[0]), coordOn(t, followers[1])
	onLead := coordOn(t, lead)
	a, b, d := grant(t, f1.lease, 10), grant(t, f1.lease, 10), grant(t, f1.lease, 10)

	held := f1.mustLock(t, &catalogpb.LockRequest{Name: "m", Lease: a})
	const waiterID = 77
	lockB := func(c *coord) <-chan callResult[*catalogpb.LockResponse] {
		return async(func() (*catalogpb.LockResponse, error) {
			return c.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: b, WaiterId: waiterID})
		})
	}
	first := lockB(onLead)
	st := waitLock(t, f2, "m", "b waits on the leader", holdersAndWaiters([]int64{a}, []int64{b}))
	place := st.Waiters[0].Revision
	lockD := async(func() (*catalogpb.LockResponse, error) {
		return f2.lock.Lock(t.Context(), &catalogpb.LockRequest{Name: "m", Lease: d})
	})
	waitLock(t, f2, "m", "d waits behind b", holdersAndWaiters([]int64{a}, []int64{b, d}))

	cluster.stop(lead.cfg.Name)
	r := await(t, first, "b's Lock on the stopped leader")
	wantCode(t, r.err, codes.Unavailable, "STOPPED", "same lease and waiter_id")

	// b's client retries on another member, with the same lease and
	// waiter_id, until its call waits there (an election may be under way).
	var retry <-chan callResult[*catalogpb.LockResponse]
	waitFor(t, 15*time.Second, "b's retry waits on a follower", func() error {
		if retry != nil {
			select {
			case r := <-retry:
				if c := status.Code(r.err); c != codes.Unavailable && c != codes.DeadlineExceeded {
					t.Fatalf("b's retry: %v, %v", r.resp, r.err)
				}
				retry = nil
			default:
			}
		}
		if retry == nil {
			retry = lockB(f1)
		}
		if n := f1.s.coord.waiting.Load(); n != 1 {
			return fmt.Errorf("%d calls waiting", n)
		}
		return nil
	})
	st = waitLock(t, f1, "m", "b and d still wait", holdersAndWaiters([]int64{a}, []int64{b, d}))
	if w := st.Waiters[0]; w.Revision != place || w.WaiterId != waiterID {
		t.Errorf("b's wait after the failover: %v; it was queued at revision %d", w, place)
	}

	if _, err := f2.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "m", Lease: a, Token: held.Token}); err != nil {
		t.Fatal(err)
	}
	gotB := awaitOK(t, retry, "b's retried Lock")
	if gotB.Token <= held.Token {
		t.Fatalf("b granted %v after token %d", gotB, held.Token)
	}
	stillWaiting(t, lockD, "d's Lock")
	if _, err := f1.lock.Unlock(t.Context(), &catalogpb.UnlockRequest{Name: "m", Lease: b, Token: gotB.Token}); err != nil {
		t.Fatal(err)
	}
	if gotD := awaitOK(t, lockD, "d's Lock"); gotD.Token <= gotB.Token {
		t.Errorf("d granted %v after token %d", gotD, gotB.Token)
	}
}
