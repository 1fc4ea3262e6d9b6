package consensus

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// startGroup starts a group of size members on loopback with cfg's
// ProposalHold, and waits for a leader.
func startGroup(t *testing.T, size int, hold time.Duration) ([]*Node, []*walCheckingSM) {
	t.Helper()
	lns := make([]net.Listener, size)
	peers := make([]Peer, size)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		peers[i] = Peer{ID: uint64(i + 1), Name: fmt.Sprintf("n%d", i+1), Addr: ln.Addr().String()}
	}
	nodes := make([]*Node, size)
	sms := make([]*walCheckingSM, size)
	for i := range nodes {
		sms[i] = &walCheckingSM{}
		n, err := NewNode(Config{
			ID: uint64(i + 1), ClusterID: 7,
			Peers:        peers,
			DataDir:      t.TempDir(),
			TickInterval: 10 * time.Millisecond,
			ProposalHold: hold,
			StateMachine: sms[i],
			PeerListener: lns[i],
			Logger:       slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		sms[i].node = n
		nodes[i] = n
	}
	for _, n := range nodes {
		n.Start()
		t.Cleanup(n.Stop)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return nodes, sms
}

// With a hold far longer than the test, every proposal must still commit:
// a held batch is released by the commit of the round in flight, never by
// the timer, and a proposal that finds no round in flight is not held. The
// proposals come from every member at once (the followers' are forwarded to
// the leader, which batches them with its own) and, then, one at a time
// from a follower.
func TestProposalHoldReleasesOnCommitNotOnTimer(t *testing.T) {
	nodes, sms := startGroup(t, 3, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const workers, each = 8, 10
	var mu sync.Mutex
	var proposed []uint64
	propose := func(n *Node) error {
		id := n.NewRequestID()
		r, err := n.Propose(ctx, id, []byte(fmt.Sprint(id)))
		if err == nil {
			err = r.Err
		}
		if err != nil {
			return err
		}
		mu.Lock()
		proposed = append(proposed, id)
		mu.Unlock()
		return nil
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(nodes)*workers)
	for _, n := range nodes {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if err := propose(n); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("concurrent proposal: %v", err)
	}
	var follower *Node
	for _, n := range nodes {
		if n.Leader() != n.ID() {
			follower = n
			break
		}
	}
	for i := range 20 {
		if err := propose(follower); err != nil {
			t.Fatalf("lone proposal %d through a follower: %v", i, err)
		}
	}

	want := len(nodes)*workers*each + 20
	if len(proposed) != want {
		t.Fatalf("%d proposals answered, want %d", len(proposed), want)
	}
	// Every member applies every proposal exactly once.
	for i, sm := range sms {
		missing := func() (uint64, int) {
			sm.mu.Lock()
			defer sm.mu.Unlock()
			for _, id := range proposed {
				if c := sm.ids[id]; c != 1 {
					return id, c
				}
			}
			return 0, 1
		}
		for {
			id, c := missing()
			if c == 1 {
				break
			}
			if c > 1 || ctx.Err() != nil {
				t.Fatalf("member %d applied proposal %x %d times, want once", i+1, id, c)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
