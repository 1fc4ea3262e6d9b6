package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// walCheckingSM is a state machine that records, for every entry it is
// given, whether the node's raft storage (appended only after the WAL
// write) already held it.
type walCheckingSM struct {
	mu       sync.Mutex
	node     *Node
	applied  uint64
	unsaved  []uint64
	appliedN int
}

func (sm *walCheckingSM) AppliedIndex() uint64 {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.applied
}

func (sm *walCheckingSM) ApplyBatch(ents []raftpb.Entry, deliver func([]Result)) {
	last, err := sm.node.storage.LastIndex()
	results := make([]Result, len(ents))
	sm.mu.Lock()
	for i, e := range ents {
		if err != nil || e.Index > last {
			sm.unsaved = append(sm.unsaved, e.Index)
		}
		results[i] = Result{ID: requestIDOf(e)}
		sm.applied = e.Index
		sm.appliedN++
	}
	sm.mu.Unlock()
	deliver(results)
}

// requestIDOf reads the request id the test wrote as the entry's data.
func requestIDOf(e raftpb.Entry) uint64 {
	var id uint64
	if len(e.Data) > 0 {
		fmt.Sscanf(string(e.Data), "%d", &id)
	}
	return id
}

func (sm *walCheckingSM) ApplyConfChange(index uint64, _ raftpb.ConfChange, _ raftpb.ConfState) error {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.applied = index
	return nil
}
func (sm *walCheckingSM) Members() ([]Peer, error)          { return nil, nil }
func (sm *walCheckingSM) RemovedMembers() ([]uint64, error) { return nil, nil }
func (sm *walCheckingSM) OpenSnapshot() (SnapshotData, error) {
	return SnapshotData{}, errors.New("no snapshots in this test")
}
func (sm *walCheckingSM) RestoreDB(string) error { return errors.New("no snapshots in this test") }

// A single voter commits its own entries in the Ready that brings them to
// be written: they must be applied, and answered, only once the WAL holds
// them, or an answered write is lost if the process dies in between
// (etcd#14370).
func TestSingleVoterAppliesOnlyWhatTheWALHolds(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sm := &walCheckingSM{}
	n, err := NewNode(Config{
		ID: 1, ClusterID: 7,
		Peers:        []Peer{{ID: 1, Name: "n1", Addr: lis.Addr().String()}},
		DataDir:      t.TempDir(),
		TickInterval: 10 * time.Millisecond,
		StateMachine: sm,
		PeerListener: lis,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	sm.node = n
	n.Start()
	defer n.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	const writes = 200
	for i := 1; i <= writes; i++ {
		id := n.NewRequestID()
		if _, err := n.Propose(ctx, id, []byte(fmt.Sprint(id))); err != nil {
			t.Fatalf("proposal %d: %v", i, err)
		}
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.appliedN < writes {
		t.Fatalf("applied %d entries, want at least %d", sm.appliedN, writes)
	}
	if len(sm.unsaved) > 0 {
		t.Fatalf("%d entries were applied before the WAL held them (first: index %d)", len(sm.unsaved), sm.unsaved[0])
	}
}
