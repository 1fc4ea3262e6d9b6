package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
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
	// ids counts how often each request id was applied.
	ids map[uint64]int
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
		if sm.ids == nil {
			sm.ids = make(map[uint64]int)
		}
		sm.ids[results[i].ID]++
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
// startLoneVoter starts a single-voter node on dir with sm as its state
// machine.
func startLoneVoter(t *testing.T, dir string, sm *walCheckingSM) *Node {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(Config{
		ID: 1, ClusterID: 7,
		Peers:        []Peer{{ID: 1, Name: "n1", Addr: lis.Addr().String()}},
		DataDir:      dir,
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
	return n
}

func TestSingleVoterAppliesOnlyWhatTheWALHolds(t *testing.T) {
	sm := &walCheckingSM{}
	n := startLoneVoter(t, t.TempDir(), sm)
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

// A lone voter restarted with entries in its WAL beyond the commit index the
// WAL recorded (entries it had applied and answered before it died, the
// commit index not yet written) must not serve a linearizable read from
// before them: raft answers a lone voter's read index with the commit index
// it knows at once, so the read waits for the first entry of the new term,
// which commits them.
func TestSingleVoterReadAfterRestartSeesUnrecordedCommits(t *testing.T) {
	dir := t.TempDir()
	start := func(sm *walCheckingSM) *Node { return startLoneVoter(t, dir, sm) }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for round := range 5 {
		sm := &walCheckingSM{}
		n := start(sm)
		if err := n.WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n.LinearizableRead(ctx); err != nil {
			t.Fatal(err)
		}
		id := n.NewRequestID()
		if _, err := n.Propose(ctx, id, []byte(fmt.Sprint(id))); err != nil {
			t.Fatal(err)
		}
		n.Stop()

		// Append three entries past the recorded commit index, as a
		// member killed between answering them and writing the commit
		// index leaves its WAL.
		w, err := wal.Open(zap.NewNop(), filepath.Join(dir, "member", "wal"), walpb.Snapshot{})
		if err != nil {
			t.Fatal(err)
		}
		_, hs, ents, err := w.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		last := ents[len(ents)-1]
		extra := make([]raftpb.Entry, 3)
		for i := range extra {
			extra[i] = raftpb.Entry{Term: last.Term, Index: last.Index + uint64(i) + 1, Type: raftpb.EntryNormal}
		}
		if err := w.Save(hs, extra); err != nil {
			t.Fatal(err)
		}
		w.Close()
		want := extra[2].Index

		sm = &walCheckingSM{}
		n = start(sm)
		if err := n.WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n.LinearizableRead(ctx); err != nil {
			t.Fatal(err)
		}
		got := sm.AppliedIndex()
		n.Stop()
		if got < want {
			t.Fatalf("round %d: a linearizable read right after the restart returned with the state machine at index %d, before the WAL's entries up to %d (commit recorded at %d)", round, got, want, hs.Commit)
		}
	}
}
