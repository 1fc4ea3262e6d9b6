package locks_test

import (
	"slices"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/locks"
)

func (s *store) fence(name string, token uint64) (bool, []uint64) {
	s.t.Helper()
	var valid bool
	var cur []uint64
	s.view(func(tx *bbolt.Tx) error {
		var err error
		valid, cur, err = locks.Fence(tx, name, token)
		return err
	})
	return valid, cur
}

// Each delivery of a queue item gets a new token from the counter lock
// grants use. Fence on the item's key holds it until the item is acked or
// goes back to the queue; the next delivery's token is higher.
func TestQueueDeliveryTokens(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2)
	id, _ := s.enqueue("jobs", "a")
	key := locks.QueueItemKey("jobs", id)
	if ok, cur := s.fence(key, 1); ok || len(cur) != 0 {
		t.Fatalf("Fence of a ready item = %v %v, want false and no tokens", ok, cur)
	}
	lockTok := s.lock("m", 2) // the counter is shared with lock grants
	first, _ := s.dequeue("jobs", 1, 7, true)
	if first.GetToken() <= lockTok || first.GetToken() != s.lastToken() {
		t.Fatalf("delivery token %d, want the counter's next after the lock's %d (counter %d)", first.GetToken(), lockTok, s.lastToken())
	}
	if ok, cur := s.fence(key, first.Token); !ok || !slices.Equal(cur, []uint64{first.Token}) {
		t.Fatalf("Fence(%s, delivery token) = %v %v, want true [%d]", key, ok, cur, first.Token)
	}
	if ok, _ := s.fence("jobs", first.Token); ok {
		t.Errorf("Fence on the queue's name with an item's token is valid; the item's key names it")
	}
	if st := s.status("jobs"); len(st.GetInFlight()) != 1 || st.GetInFlight()[0].GetToken() != first.Token {
		t.Errorf("Status in flight = %v, want the item with token %d", st.GetInFlight(), first.Token)
	}

	// The consumer's lease dies: the item goes back, its token with it.
	s.revoke(1)
	if ok, cur := s.fence(key, first.Token); ok || len(cur) != 0 {
		t.Fatalf("Fence after the consumer's lease died = %v %v, want false and no tokens", ok, cur)
	}
	if st := s.status("jobs"); len(st.GetReady()) != 1 || st.GetReady()[0].GetToken() != 0 {
		t.Errorf("ready items %v, want the item back without a token", st.GetReady())
	}
	second, _ := s.dequeue("jobs", 2, 8, true)
	if second.GetId() != id || second.GetToken() <= first.Token {
		t.Fatalf("redelivery: item %d token %d, want item %d with a token above %d", second.GetId(), second.GetToken(), id, first.Token)
	}
	if ok, cur := s.fence(key, first.Token); ok || !slices.Equal(cur, []uint64{second.Token}) {
		t.Fatalf("Fence(first delivery's token) = %v %v, want false [%d]", ok, cur, second.Token)
	}
	s.must(ackCmd("jobs", id, 2))
	if ok, cur := s.fence(key, second.Token); ok || len(cur) != 0 {
		t.Fatalf("Fence after Ack = %v %v, want false and no tokens", ok, cur)
	}
}

// A simple barrier's setting and each participation in a double barrier
// get a token; Fence on the barrier's name holds it while it stands.
func TestBarrierTokens(t *testing.T) {
	s := newStore(t)
	s.grant(1, 2, 3)

	resp, _, err := s.apply(setCmd("gate", 1))
	if err != nil {
		t.Fatal(err)
	}
	set := resp.(*catalogpb.BarrierSetResponse).GetToken()
	if set == 0 || set != s.lastToken() || s.getBarrier("gate").GetToken() != set {
		t.Fatalf("Set token %d, barrier's %d, counter %d: want one new token", set, s.getBarrier("gate").GetToken(), s.lastToken())
	}
	again, _, err := s.apply(setCmd("gate", 2))
	if err != nil {
		t.Fatal(err)
	}
	if got := again.(*catalogpb.BarrierSetResponse).GetToken(); got != set || s.lastToken() != set {
		t.Errorf("Set of a set barrier answered token %d (counter %d), want the setting's %d and no new token", got, s.lastToken(), set)
	}
	if ok, _ := s.fence("gate", set); !ok {
		t.Fatalf("Fence(gate, setting token) not valid while set")
	}
	s.must(releaseBarrierCmd("gate"))
	if ok, cur := s.fence("gate", set); ok || len(cur) != 0 {
		t.Fatalf("Fence after Release = %v %v, want false and no tokens", ok, cur)
	}

	enter := func(l int64) uint64 {
		t.Helper()
		resp, _, err := s.apply(enterCmd("dbl", l, 2))
		if err != nil {
			t.Fatal(err)
		}
		return resp.(*catalogpb.BarrierEnterResponse).GetToken()
	}
	t2 := enter(2)
	if again := enter(2); again != t2 {
		t.Errorf("a second Enter of the same lease answered token %d, want its participation's %d", again, t2)
	}
	t3 := enter(3)
	if t2 <= set || t3 <= t2 {
		t.Fatalf("participation tokens %d, %d after the setting's %d: want strictly increasing", t2, t3, set)
	}
	if ok, cur := s.fence("dbl", t2); !ok || !slices.Equal(cur, []uint64{t2, t3}) {
		t.Fatalf("Fence(dbl, %d) = %v %v, want true [%d %d]", t2, ok, cur, t2, t3)
	}
	s.must(leaveCmd("dbl", 2))
	if ok, cur := s.fence("dbl", t2); ok || !slices.Equal(cur, []uint64{t3}) {
		t.Fatalf("Fence after Leave = %v %v, want false [%d]", ok, cur, t3)
	}
	s.revoke(3)
	if ok, cur := s.fence("dbl", t3); ok || len(cur) != 0 {
		t.Fatalf("Fence after the participant's lease died = %v %v, want false and no tokens", ok, cur)
	}
}
