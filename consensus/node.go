package consensus

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Errors a Node returns to its callers.
var (
	ErrStopped  = errors.New("consensus: server stopped")
	ErrNoLeader = errors.New("consensus: no leader")
	ErrTimeout  = errors.New("consensus: request timed out")
	// ErrDataDirMismatch means the data dir was created for another cluster or member.
	ErrDataDirMismatch = errors.New("consensus: data dir belongs to another cluster")
	// ErrRemoved means this member was removed from the cluster.
	ErrRemoved = errors.New("consensus: this member was removed from the cluster")
	// ErrLeaderLost means the leader died while a proposal made here was in
	// flight: it may or may not be applied (a timeout, as etcd reports it).
	ErrLeaderLost = fmt.Errorf("%w, possibly due to the leader's failure: the write may or may not have been applied", ErrTimeout)
	// ErrDataLoss means this member's log lost entries it had acknowledged (its
	// data dir was wiped or restored from an old copy while it kept its identity).
	ErrDataLoss = errors.New("consensus: this member lost raft log entries it had acknowledged")
)

// readIndexRetry is how long one ReadIndex round waits before it asks again
// (the leader may have lost the request); readIndexTimeout bounds a round.
const (
	readIndexRetry   = 500 * time.Millisecond
	readIndexTimeout = 5 * time.Second
)

// snapshotCheckInterval is how often the apply loop checks, between
// applies, whether a snapshot is due.
const snapshotCheckInterval = 100 * time.Millisecond

// walMetadata identifies the member and cluster a WAL belongs to.
type walMetadata struct {
	MemberID  uint64 `json:"member_id"`
	ClusterID uint64 `json:"cluster_id"`
}

type proposal struct {
	id   uint64
	data []byte
}

// toApply is what a Ready hands to the apply loop. notifyc is signalled
// once the Ready's entries (and snapshot) are durable in the WAL, and for a
// snapshot once before that, when the snapshot itself is. confStates holds
// the configuration after each membership change among the entries, which
// raft adopted when the Ready was handled.
type toApply struct {
	entries    []raftpb.Entry
	snapshot   raftpb.Snapshot
	notifyc    chan struct{}
	confStates map[uint64]raftpb.ConfState
}

// readRound is one shared ReadIndex round: every reader that arrived while the
// previous round was in flight waits on the same done channel.
type readRound struct {
	done chan struct{}
	err  error
}

// A Node is one member of a raft group: it persists the log, exchanges
// messages with its peers and applies committed entries to a StateMachine.
type Node struct {
	cfg Config
	lg  *slog.Logger
	m   Metrics

	// rmu guards the raft node and what only its driver touches (see
	// drive.go).
	rmu         sync.Mutex
	rn          *raft.RawNode
	stopped     bool
	isLeader    bool
	synced      raftpb.HardState // the hard state last written
	held        []raftpb.Entry   // proposals held while a round is in flight
	heldIDs     []uint64         // their request ids (0: forwarded by a follower)
	holdArmed   bool
	holdTimer   *time.Timer
	holdExpired atomic.Bool
	dMsgs       []raftpb.Message
	dProps      []proposal
	dFns        []func(*raft.RawNode)

	inbox  inbox
	drivec chan struct{}

	// The apply queue (see pushApply); applyc wakes the apply loop.
	applyMu        sync.Mutex
	applyQ         []toApply
	applyc         chan struct{}
	applyThrottled atomic.Bool

	storage     *raft.MemoryStorage
	wal         *wal.WAL
	snapshotter *snap.Snapshotter
	transport   *GRPCTransport
	peerServer  *grpc.Server
	sm          StateMachine

	waits      *waitRegistry
	appliedW   *indexWait
	ids        *idGenerator
	readStateC chan raft.ReadState
	readWaitC  chan struct{}

	readMu    sync.Mutex
	nextRound *readRound

	leaderMu       sync.Mutex
	leaderChangedC chan struct{}

	lead     atomic.Uint64
	lastLead atomic.Uint64 // the last leader known, kept while there is none
	// leadSince is when this member last saw the leader change (unix ns).
	leadSince atomic.Int64
	term      atomic.Uint64
	committed atomic.Uint64
	applied   atomic.Uint64
	pending   atomic.Int64
	// termStart is, while this member leads, the index of the first entry
	// of its term (the empty entry a new leader appends); 0 otherwise.
	termStart atomic.Uint64
	// lastIndex is the index of the last entry written to the WAL; while
	// it is above the commit index, a round of appends is in flight.
	lastIndex atomic.Uint64

	// Owned by the apply loop.
	snapshotIndex uint64
	confState     raftpb.ConfState

	removedMu sync.RWMutex
	removed   map[uint64]bool

	// campaignSoon is set while a campaign for a dead leader is scheduled.
	campaignSoon atomic.Bool

	// failOnce records why the node stopped itself (removal, data loss, a
	// disk that refuses writes); failedc is closed then.
	failOnce sync.Once
	failErr  error
	failedc  chan struct{}

	stopOnce sync.Once
	stopc    chan struct{}
	wg       sync.WaitGroup
}

// NewNode opens (or creates) the WAL and snapshots in cfg.DataDir and builds a
// Node ready to Start. A data dir that belongs to another cluster or member is
// refused with ErrDataDirMismatch.
func NewNode(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:            cfg,
		lg:             cfg.Logger,
		m:              cfg.Metrics,
		sm:             cfg.StateMachine,
		storage:        raft.NewMemoryStorage(),
		waits:          newWaitRegistry(),
		ids:            newIDGenerator(cfg.ID, time.Now()),
		drivec:         make(chan struct{}, 1),
		applyc:         make(chan struct{}, 1),
		readStateC:     make(chan raft.ReadState, 1),
		readWaitC:      make(chan struct{}, 1),
		nextRound:      &readRound{done: make(chan struct{})},
		leaderChangedC: make(chan struct{}),
		removed:        make(map[uint64]bool),
		failedc:        make(chan struct{}),
		stopc:          make(chan struct{}),
	}
	waldir := filepath.Join(cfg.DataDir, "member", "wal")
	snapdir := filepath.Join(cfg.DataDir, "member", "snap")
	if err := os.MkdirAll(snapdir, 0o700); err != nil {
		return nil, fmt.Errorf("create snapshot dir %s: %w", snapdir, err)
	}
	n.snapshotter = snap.New(zap.NewNop(), snapdir)

	rcfg := &raft.Config{
		ID:              cfg.ID,
		ElectionTick:    cfg.ElectionTicks,
		HeartbeatTick:   cfg.HeartbeatTicks,
		Storage:         n.storage,
		MaxSizePerMsg:   cfg.MaxSizePerMsg,
		MaxInflightMsgs: cfg.MaxInflightMsgs,
		CheckQuorum:     true,
		PreVote:         true,
		Logger:          raftLogger{cfg.Logger.With("component", "raft")},
		// A removed leader steps down at once instead of leading a
		// configuration it is not part of until its lease runs out.
		StepDownOnRemoval: true,
	}

	var peers []Peer
	if !wal.Exist(waldir) {
		md, _ := json.Marshal(walMetadata{MemberID: cfg.ID, ClusterID: cfg.ClusterID})
		w, err := wal.Create(zap.NewNop(), waldir, md)
		if err != nil {
			return nil, fmt.Errorf("create wal in %s: %w", waldir, err)
		}
		n.wal = w
		rn, err := raft.NewRawNode(rcfg)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("start raft: %w", err)
		}
		n.rn = rn
		// A joining member starts empty: the leader sends the
		// configuration (in a snapshot or the log).
		if !cfg.Join {
			rpeers := make([]raft.Peer, 0, len(cfg.Peers))
			for _, p := range cfg.Peers {
				ctx, _ := json.Marshal(p)
				rpeers = append(rpeers, raft.Peer{ID: p.ID, Context: ctx})
			}
			if err := rn.Bootstrap(rpeers); err != nil {
				w.Close()
				return nil, fmt.Errorf("bootstrap raft: %w", err)
			}
		}
		peers = cfg.Peers
	} else {
		if err := n.replayWAL(waldir); err != nil {
			return nil, err
		}
		rn, err := raft.NewRawNode(rcfg)
		if err != nil {
			n.wal.Close()
			return nil, fmt.Errorf("restart raft: %w", err)
		}
		n.rn = rn
		ms, err := n.sm.Members()
		if err != nil {
			return nil, fmt.Errorf("read members: %w", err)
		}
		peers = ms
	}
	n.holdTimer = time.AfterFunc(time.Hour, n.holdOver)
	n.holdTimer.Stop()
	n.applied.Store(n.sm.AppliedIndex())
	n.appliedW = newIndexWait(n.applied.Load())
	if err := n.loadRemoved(); err != nil {
		return nil, err
	}

	// The peer server exists before any peer is added: adding one may dial it
	// at once, and a peer that refuses this member (it was removed) makes
	// the node fail, which stops the peer server.
	n.peerServer = grpc.NewServer(ServerOptions()...)
	n.transport = NewGRPCTransport(TransportConfig{
		ID:          cfg.ID,
		ClusterID:   cfg.ClusterID,
		Handler:     n,
		Logger:      cfg.Logger.With("component", "transport"),
		Drop:        cfg.Drop,
		DialTimeout: time.Second,
		IsRemoved:   n.isRemoved,
		OnRemoved:   func(by uint64) { n.fail(fmt.Errorf("%w: member %x refuses its messages", ErrRemoved, by)) },
		OnPeerDown:  n.peerDown,
	})
	n.transport.Register(n.peerServer)
	for _, p := range peers {
		if p.ID != cfg.ID {
			n.transport.AddPeer(p.ID, p.Addr)
		}
	}
	return n, nil
}

// HasWAL reports whether dataDir holds a WAL, i.e. whether a node started
// on it restarts rather than starts.
func HasWAL(dataDir string) bool {
	return wal.Exist(filepath.Join(dataDir, "member", "wal"))
}

// replayWAL loads the newest snapshot and the WAL after it into raft's storage.
func (n *Node) replayWAL(waldir string) error {
	walSnaps, err := wal.ValidSnapshotEntries(zap.NewNop(), waldir)
	if err != nil {
		return fmt.Errorf("read wal snapshots in %s: %w", waldir, err)
	}
	snapshot, err := n.snapshotter.LoadNewestAvailable(walSnaps)
	if err != nil && !errors.Is(err, snap.ErrNoSnapshot) {
		return fmt.Errorf("load snapshot: %w", err)
	}
	walsnap := walpb.Snapshot{}
	if snapshot != nil {
		walsnap.Index, walsnap.Term = snapshot.Metadata.Index, snapshot.Metadata.Term
		walsnap.ConfState = &snapshot.Metadata.ConfState
	}
	w, err := wal.Open(zap.NewNop(), waldir, walsnap)
	if err != nil {
		return fmt.Errorf("open wal in %s: %w", waldir, err)
	}
	mdb, hs, ents, err := w.ReadAll()
	if err != nil {
		w.Close()
		return fmt.Errorf("read wal in %s: %w", waldir, err)
	}
	var md walMetadata
	if err := json.Unmarshal(mdb, &md); err != nil {
		w.Close()
		return fmt.Errorf("read wal metadata in %s: %w", waldir, err)
	}
	if md.ClusterID != n.cfg.ClusterID || md.MemberID != n.cfg.ID {
		w.Close()
		return fmt.Errorf("%w: %s holds member %x of cluster %x, but this server is member %x of cluster %x (check --name and --initial-cluster, or use another --data-dir)",
			ErrDataDirMismatch, n.cfg.DataDir, md.MemberID, md.ClusterID, n.cfg.ID, n.cfg.ClusterID)
	}
	n.wal = w
	if snapshot != nil {
		if err := n.storage.ApplySnapshot(*snapshot); err != nil {
			return fmt.Errorf("apply snapshot: %w", err)
		}
		n.snapshotIndex = snapshot.Metadata.Index
		n.confState = snapshot.Metadata.ConfState
		// A crash between persisting a received snapshot and restoring its
		// database leaves the database behind the snapshot: restore it now.
		if snapshot.Metadata.Index > n.sm.AppliedIndex() {
			path, err := n.snapshotter.DBFilePath(snapshot.Metadata.Index)
			if err != nil {
				return fmt.Errorf("state machine is behind snapshot %d and its database is missing: %w", snapshot.Metadata.Index, err)
			}
			if err := n.sm.RestoreDB(path); err != nil {
				return fmt.Errorf("restore database of snapshot %d: %w", snapshot.Metadata.Index, err)
			}
		}
	}
	if err := n.storage.SetHardState(hs); err != nil {
		return fmt.Errorf("set hard state: %w", err)
	}
	if err := n.storage.Append(ents); err != nil {
		return fmt.Errorf("append wal entries: %w", err)
	}
	n.term.Store(hs.Term)
	n.committed.Store(hs.Commit)
	return nil
}

// Start runs the node's loops and serves the peer transport.
func (n *Node) Start() {
	n.wg.Add(4)
	go func() { defer n.wg.Done(); n.silentPeersLoop() }()
	go func() { defer n.wg.Done(); n.driveLoop() }()
	go func() { defer n.wg.Done(); n.applyLoop() }()
	go func() { defer n.wg.Done(); n.readLoop() }()
	if n.cfg.PeerListener != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.transport.Serve(n.cfg.PeerListener, n.peerServer); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				n.lg.Error("peer server stopped", "err", err)
			}
		}()
	}
}

// Stop stops the node: pending proposals and reads fail with ErrStopped.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		close(n.stopc)
		// A driver that holds rmu finishes its Ready; none starts after.
		n.rmu.Lock()
		n.stopped = true
		n.holdTimer.Stop()
		n.rmu.Unlock()
		n.peerServer.Stop()
		n.transport.Stop()
		n.wg.Wait()
		n.waits.failAll(ErrStopped)
		if err := n.wal.Close(); err != nil {
			n.lg.Warn("close wal", "err", err)
		}
	})
}

// offerReadState hands rs to the read loop without ever blocking the Ready
// loop: a read state nobody took (an answer to an abandoned round) is replaced.
func (n *Node) offerReadState(rs raft.ReadState) {
	for {
		select {
		case n.readStateC <- rs:
			return
		default:
			select {
			case <-n.readStateC:
			default:
			}
		}
	}
}

func hasConfChange(ents []raftpb.Entry) bool {
	for i := range ents {
		if ents[i].Type == raftpb.EntryConfChange || ents[i].Type == raftpb.EntryConfChangeV2 {
			return true
		}
	}
	return false
}

func (n *Node) fatal(what string, err error) {
	n.lg.Error("raft loop stopped: cannot persist", "what", what, "err", err)
	n.fail(fmt.Errorf("consensus: %s: %w", what, err))
}

// fail stops the node on its own account; Failed and Err tell its owner why.
func (n *Node) fail(err error) {
	n.failOnce.Do(func() {
		n.failErr = err
		close(n.failedc)
		go n.Stop()
	})
}

// Failed returns a channel closed when the node stopped itself: it was
// removed from the cluster, found its log lost, or could not persist. Err
// then says why.
func (n *Node) Failed() <-chan struct{} { return n.failedc }

// Err returns why the node stopped itself, once Failed is closed.
func (n *Node) Err() error {
	select {
	case <-n.failedc:
		return n.failErr
	default:
		return nil
	}
}

func (n *Node) loadRemoved() error {
	ids, err := n.sm.RemovedMembers()
	if err != nil {
		return fmt.Errorf("read removed members: %w", err)
	}
	n.removedMu.Lock()
	defer n.removedMu.Unlock()
	for _, id := range ids {
		n.removed[id] = true
	}
	return nil
}

func (n *Node) isRemoved(id uint64) bool {
	n.removedMu.RLock()
	defer n.removedMu.RUnlock()
	return n.removed[id]
}

func (n *Node) setLeader(lead uint64, isLeader bool) {
	if old := n.lead.Swap(lead); old == lead {
		return
	}
	n.leadSince.Store(time.Now().UnixNano())
	if lead != 0 {
		n.lastLead.Store(lead)
	}
	if lead != 0 {
		addCounter(n.m.LeaderChanges, 1)
	}
	setGauge(n.m.HasLeader, b2f(lead != 0))
	setGauge(n.m.IsLeader, b2f(isLeader))
	n.leaderMu.Lock()
	close(n.leaderChangedC)
	n.leaderChangedC = make(chan struct{})
	n.leaderMu.Unlock()
}

// LeaderChanged returns a channel closed at the next change of leader (to
// another member, or to none).
func (n *Node) LeaderChanged() <-chan struct{} { return n.leaderChanged() }

// leaderChanged returns a channel closed at the next change of leader.
func (n *Node) leaderChanged() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderChangedC
}

// applyLoop applies what the Ready loop committed, in order. Everything
// queued when it wakes is applied together: one state machine commit (and its
// fsync) covers several Readies, so batches grow with the load.
func (n *Node) applyLoop() {
	// The state machine may make applied entries durable after it applied
	// them (a batched commit), and a snapshot waits for that: look again
	// now and then, so a burst of writes followed by quiet is compacted
	// too, not only at the next apply.
	snapTicker := time.NewTicker(snapshotCheckInterval)
	defer snapTicker.Stop()
	var aps []toApply
	for {
		select {
		case <-snapTicker.C:
			n.maybeSnapshot()
		case <-n.applyc:
			if aps = n.takeApply(aps); len(aps) > 0 {
				n.applyAll(aps)
				clear(aps)
			}
		case <-n.stopc:
			return
		}
	}
}

func (n *Node) applyAll(aps []toApply) {
	var ents []raftpb.Entry
	var confStates map[uint64]raftpb.ConfState
	for _, ap := range aps {
		if !raft.IsEmptySnap(ap.snapshot) {
			n.applyEntries(ents, confStates)
			ents = nil
			// The Ready loop signals once the snapshot is on disk.
			select {
			case <-ap.notifyc:
			case <-n.stopc:
				return
			}
			if err := n.restoreSnapshot(ap.snapshot); err != nil {
				n.fatal("restore snapshot", err)
				return
			}
		}
		// Copied into a slice of our own: the entries belong to raft.
		ents = append(ents, ap.entries...)
		for idx, cs := range ap.confStates {
			if confStates == nil {
				confStates = make(map[uint64]raftpb.ConfState)
			}
			confStates[idx] = cs
		}
	}
	n.applyEntries(ents, confStates)
	// Snapshot only what the WAL holds: wait for the Readies' writes.
	for _, ap := range aps {
		select {
		case <-ap.notifyc:
		case <-n.stopc:
			return
		}
	}
	n.maybeSnapshot()
}

func (n *Node) restoreSnapshot(s raftpb.Snapshot) error {
	idx := s.Metadata.Index
	if idx <= n.applied.Load() {
		return nil
	}
	path, err := n.snapshotter.DBFilePath(idx)
	if err != nil {
		return fmt.Errorf("database of snapshot %d: %w", idx, err)
	}
	if err := n.sm.RestoreDB(path); err != nil {
		return fmt.Errorf("restore database of snapshot %d: %w", idx, err)
	}
	n.confState = s.Metadata.ConfState
	n.snapshotIndex = idx
	applied := max(n.sm.AppliedIndex(), idx)
	ms, err := n.sm.Members()
	if err != nil {
		return fmt.Errorf("read members after restore: %w", err)
	}
	for _, p := range ms {
		if p.ID != n.cfg.ID {
			n.transport.AddPeer(p.ID, p.Addr)
		}
	}
	if err := n.loadRemoved(); err != nil {
		return err
	}
	n.setApplied(applied)
	n.lg.Info("restored snapshot", "index", idx, "applied", applied)
	return nil
}

func (n *Node) applyEntries(ents []raftpb.Entry, confStates map[uint64]raftpb.ConfState) {
	batch := make([]raftpb.Entry, 0, len(ents))
	flush := func() {
		if len(batch) == 0 {
			return
		}
		n.sm.ApplyBatch(batch, func(results []Result) {
			for _, r := range results {
				if r.ID != 0 {
					n.waits.trigger(r.ID, r)
				}
			}
		})
		n.setApplied(batch[len(batch)-1].Index)
		batch = batch[:0]
	}
	for i := range ents {
		e := ents[i]
		if e.Type == raftpb.EntryNormal {
			if e.Index > n.applied.Load() {
				batch = append(batch, e)
			}
			continue
		}
		flush()
		cs, ok := confStates[e.Index]
		if !ok {
			n.lg.Error("membership change without the configuration raft adopted", "index", e.Index)
			continue
		}
		n.applyConfChange(e, cs)
	}
	flush()
}

// applyConfChange applies a membership change, which raft adopted when its
// Ready was handled (always: raft's view is rebuilt from the log on restart),
// to the state machine (once); cs is the configuration after it.
func (n *Node) applyConfChange(e raftpb.Entry, cs raftpb.ConfState) {
	n.confState = cs
	if e.Type != raftpb.EntryConfChange {
		n.lg.Warn("joint-consensus conf changes are not supported; applied to raft only", "index", e.Index)
		if e.Index > n.applied.Load() {
			n.setApplied(e.Index)
		}
		return
	}
	var cc raftpb.ConfChange
	if err := cc.Unmarshal(e.Data); err != nil {
		n.lg.Error("undecodable conf change", "index", e.Index, "err", err)
		return
	}
	if e.Index <= n.applied.Load() {
		return
	}
	if err := n.sm.ApplyConfChange(e.Index, cc, cs); err != nil {
		n.lg.Error("apply conf change", "index", e.Index, "err", err)
	}
	switch cc.Type {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		var p Peer
		if err := json.Unmarshal(cc.Context, &p); err == nil && p.ID != n.cfg.ID && p.Addr != "" {
			n.transport.AddPeer(p.ID, p.Addr)
		}
		n.lg.Info("member added", "id", fmtID(cc.NodeID), "name", p.Name, "peer", p.Addr,
			"learner", cc.Type == raftpb.ConfChangeAddLearnerNode, "index", e.Index)
	case raftpb.ConfChangeRemoveNode:
		n.removedMu.Lock()
		n.removed[cc.NodeID] = true
		n.removedMu.Unlock()
		n.lg.Info("member removed", "id", fmtID(cc.NodeID), "index", e.Index)
		if cc.NodeID != n.cfg.ID {
			n.transport.RemovePeer(cc.NodeID)
		}
	}
	n.setApplied(e.Index)
	if cc.ID != 0 {
		n.waits.trigger(cc.ID, Result{ID: cc.ID, Value: cs})
	}
	if cc.Type == raftpb.ConfChangeRemoveNode && cc.NodeID == n.cfg.ID {
		n.fail(fmt.Errorf("%w at raft index %d", ErrRemoved, e.Index))
	}
}

// ProposeConfChange replicates a membership change and waits until this
// member has applied it, returning the configuration after it. Raft takes one
// change at a time: one proposed while another is pending is dropped by the
// leader, and the wait then ends with ctx.
func (n *Node) ProposeConfChange(ctx context.Context, cc raftpb.ConfChange) (raftpb.ConfState, error) {
	select {
	case <-n.stopc:
		return raftpb.ConfState{}, ErrStopped
	default:
	}
	if n.lead.Load() == 0 {
		return raftpb.ConfState{}, ErrNoLeader
	}
	cc.ID = n.ids.next()
	ch := n.waits.register(cc.ID)
	var perr error
	if err := n.withRaft(func(rn *raft.RawNode) { perr = rn.ProposeConfChange(cc) }); err != nil {
		n.waits.cancel(cc.ID)
		return raftpb.ConfState{}, err
	}
	if perr != nil {
		n.waits.cancel(cc.ID)
		return raftpb.ConfState{}, fmt.Errorf("%w: %v", ErrNoLeader, perr)
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return raftpb.ConfState{}, r.Err
		}
		cs, _ := r.Value.(raftpb.ConfState)
		return cs, nil
	case <-ctx.Done():
		n.waits.cancel(cc.ID)
		return raftpb.ConfState{}, ctx.Err()
	case <-n.stopc:
		return raftpb.ConfState{}, ErrStopped
	}
}

func (n *Node) setApplied(idx uint64) {
	n.applied.Store(idx)
	n.appliedW.advance(idx)
	setGauge(n.m.AppliedIndex, float64(idx))
}

// maybeSnapshot takes a raft snapshot and compacts the log once SnapshotCount
// entries were applied since the last one. The snapshot holds no data: the
// state machine's database is sent alongside it when a follower needs it.
func (n *Node) maybeSnapshot() {
	// The snapshot may release WAL entries only up to what the state
	// machine made durable, which may trail what it applied.
	applied := min(n.applied.Load(), n.sm.AppliedIndex())
	if applied-n.snapshotIndex <= n.cfg.SnapshotCount {
		return
	}
	last, err := n.storage.LastIndex()
	if err != nil || applied > last {
		return
	}
	s, err := n.storage.CreateSnapshot(applied, &n.confState, nil)
	if err != nil {
		if !errors.Is(err, raft.ErrSnapOutOfDate) {
			n.lg.Error("create snapshot", "index", applied, "err", err)
		}
		return
	}
	if err := n.snapshotter.SaveSnap(s); err != nil {
		n.lg.Error("save snapshot", "index", applied, "err", err)
		return
	}
	if err := n.wal.SaveSnapshot(walpb.Snapshot{Index: s.Metadata.Index, Term: s.Metadata.Term, ConfState: &s.Metadata.ConfState}); err != nil {
		n.lg.Error("save snapshot in wal", "index", applied, "err", err)
		return
	}
	n.snapshotIndex = applied
	addCounter(n.m.SnapshotsSaved, 1)
	if applied > n.cfg.CatchUpEntries {
		compactTo := applied - n.cfg.CatchUpEntries
		if err := n.storage.Compact(compactTo); err != nil && !errors.Is(err, raft.ErrCompacted) {
			n.lg.Error("compact raft log", "index", compactTo, "err", err)
		}
	}
	if err := n.wal.ReleaseLockTo(s.Metadata.Index); err != nil {
		n.lg.Warn("release wal files", "index", s.Metadata.Index, "err", err)
	}
	if err := n.snapshotter.ReleaseSnapDBs(s); err != nil {
		n.lg.Warn("release snapshot databases", "err", err)
	}
	n.lg.Debug("snapshot saved", "index", applied)
}

// NewRequestID returns an id unique to this member for a proposal.
func (n *Node) NewRequestID() uint64 { return n.ids.next() }

// Propose replicates data (a command carrying request id id) and waits until
// this member has applied it, returning the state machine's result.
// ErrNoLeader means the proposal was not accepted and was not applied.
func (n *Node) Propose(ctx context.Context, id uint64, data []byte) (Result, error) {
	select {
	case <-n.stopc:
		return Result{}, ErrStopped
	default:
	}
	if n.lead.Load() == 0 {
		addCounter(n.m.ProposalsFailed, 1)
		return Result{}, ErrNoLeader
	}
	ch := n.waits.register(id)
	setGauge(n.m.ProposalsPending, float64(n.pending.Add(1)))
	defer func() { setGauge(n.m.ProposalsPending, float64(n.pending.Add(-1))) }()
	if lead := n.lead.Load(); lead != n.cfg.ID && lead != 0 && n.transport.PeerActive(lead) {
		// A follower forwards the proposal straight to the leader, as raft
		// would from its next Ready, without waiting for the Ready in hand
		// (an append being written to its disk) to be done.
		n.transport.Send([]raftpb.Message{{Type: raftpb.MsgProp, From: n.cfg.ID, To: lead, Entries: []raftpb.Entry{{Data: data}}}})
	} else {
		n.inbox.addProp(proposal{id: id, data: data})
		n.kick()
	}
	select {
	case r := <-ch:
		if r.Err != nil && (errors.Is(r.Err, ErrNoLeader) || errors.Is(r.Err, ErrStopped)) {
			addCounter(n.m.ProposalsFailed, 1)
		}
		return r, nil
	case <-ctx.Done():
		n.waits.cancel(id)
		addCounter(n.m.ProposalsFailed, 1)
		return Result{}, ctx.Err()
	case <-n.stopc:
		return Result{}, ErrStopped
	}
}

// LinearizableRead returns once this member has applied every entry committed
// before the call: reads after it see every write acknowledged before it.
// Concurrent callers share one ReadIndex round.
func (n *Node) LinearizableRead(ctx context.Context) error {
	n.readMu.Lock()
	r := n.nextRound
	n.readMu.Unlock()
	select {
	case n.readWaitC <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopc:
		return ErrStopped
	}
}

func (n *Node) readLoop() {
	for {
		select {
		case <-n.readWaitC:
		case <-n.stopc:
			return
		}
		n.readMu.Lock()
		r := n.nextRound
		n.nextRound = &readRound{done: make(chan struct{})}
		n.readMu.Unlock()

		start := time.Now()
		idx, err := n.readIndex()
		if err == nil {
			// A lone voter answers a read index at once with the commit
			// index it knows, which after a restart may stop short of
			// entries of earlier terms that were answered before the
			// commit index reached the WAL; they are committed with the
			// first entry of its own term, so the read waits for that too
			// (a leader of several voters answers only after it).
			if ts := n.termStart.Load(); ts > idx && n.lead.Load() == n.cfg.ID {
				idx = ts
			}
			select {
			case <-n.appliedW.wait(idx):
			case <-n.stopc:
				err = ErrStopped
			}
		}
		observe(n.m.ReadIndexSeconds, time.Since(start).Seconds())
		r.err = err
		close(r.done)
	}
}

// readIndex asks the leader for the commit index that is safe to read at.
func (n *Node) readIndex() (uint64, error) {
	id := n.ids.next()
	rctx := make([]byte, 8)
	binary.BigEndian.PutUint64(rctx, id)
	deadline := time.NewTimer(readIndexTimeout)
	defer deadline.Stop()
	retry := time.NewTicker(readIndexRetry)
	defer retry.Stop()
	ask := func() error {
		if n.lead.Load() == 0 {
			return ErrNoLeader
		}
		return n.withRaft(func(rn *raft.RawNode) { rn.ReadIndex(rctx) })
	}
	if err := ask(); err != nil {
		return 0, err
	}
	for {
		select {
		case rs := <-n.readStateC:
			if len(rs.RequestCtx) == 8 && binary.BigEndian.Uint64(rs.RequestCtx) == id {
				return rs.Index, nil
			}
		case <-n.leaderChanged():
			if err := ask(); err != nil {
				return 0, err
			}
		case <-retry.C:
			if err := ask(); err != nil {
				return 0, err
			}
		case <-deadline.C:
			return 0, fmt.Errorf("%w: no read index from the leader within %v", ErrTimeout, readIndexTimeout)
		case <-n.stopc:
			return 0, ErrStopped
		}
	}
}

// Process implements Handler.
func (n *Node) Process(ctx context.Context, m raftpb.Message) error {
	if m.Type == raftpb.MsgHeartbeat {
		// The leader's heartbeat carries a commit index no higher than what
		// this member acknowledged, and it acknowledges only what its WAL
		// holds. A commit beyond the log means the WAL lost acknowledged
		// entries: raft would panic on it; stop with the reason instead.
		if last, err := n.storage.LastIndex(); err == nil && m.Commit > last {
			err := fmt.Errorf("%w: leader %x says index %d is committed here, but this member's log ends at %d (was %s wiped or replaced?); remove the member (catctl member remove %x) and add it back with --join and an empty data dir",
				ErrDataLoss, m.From, m.Commit, last, n.cfg.DataDir, n.cfg.ID)
			n.lg.Error("stopping: raft log lost", "err", err)
			n.fail(err)
			return err
		}
	}
	if n.inbox.addMsg(m) > maxInboxMsgs {
		// The node is behind: wait until it stepped what is queued.
		return n.withRaft(func(*raft.RawNode) {})
	}
	n.kick()
	return nil
}

// ReportUnreachable implements Handler. The transport may call it from
// within a Send the driver makes: it is queued for the drive loop.
func (n *Node) ReportUnreachable(id uint64) {
	n.inbox.addFn(func(rn *raft.RawNode) { rn.ReportUnreachable(id) })
	n.pokeDrive()
}

// ReportSnapshot implements Handler, as ReportUnreachable.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	n.inbox.addFn(func(rn *raft.RawNode) { rn.ReportSnapshot(id, status) })
	n.pokeDrive()
}

// OpenSnapshotDB implements Handler.
//
// The snapshot raft asks to send may predate the latest membership change
// (a learner just added is not in it, and raft would refuse it). As etcd
// does, the database is copied as it is now and the message describes that
// copy: its applied index, the term of that index and its configuration.
func (n *Node) OpenSnapshotDB(m raftpb.Message) (raftpb.Message, io.ReadCloser, int64, error) {
	snap, err := n.sm.OpenSnapshot()
	if err != nil {
		return m, nil, 0, err
	}
	if m.Snapshot == nil || snap.Index < m.Snapshot.Metadata.Index {
		return m, snap, snap.Size, nil
	}
	term, err := n.storage.Term(snap.Index)
	if err != nil || len(snap.ConfState.Voters) == 0 {
		// Compacted away meanwhile or no configuration recorded: send what
		// raft asked for (the copy is at or after it, which apply tolerates).
		return m, snap, snap.Size, nil
	}
	s := *m.Snapshot
	s.Metadata = raftpb.SnapshotMetadata{Index: snap.Index, Term: term, ConfState: snap.ConfState}
	m.Snapshot = &s
	return m, snap, snap.Size, nil
}

// ReceiveSnapshotDB implements Handler.
func (n *Node) ReceiveSnapshotDB(m raftpb.Message, r io.Reader) error {
	if m.Snapshot == nil {
		return errors.New("consensus: MsgSnap without snapshot")
	}
	_, err := n.snapshotter.SaveDBFrom(r, m.Snapshot.Metadata.Index)
	return err
}

// A Status is a point-in-time view of the node.
type Status struct {
	raft.Status
	// Applied is the state machine's applied index.
	Applied uint64
	// Active reports, per peer, whether its stream is up.
	Active map[uint64]bool
}

// Status returns the node's current raft status.
func (n *Node) Status() Status {
	return Status{Status: n.raftStatus(), Applied: n.applied.Load(), Active: n.transport.ActivePeers()}
}

func (n *Node) raftStatus() raft.Status {
	n.rmu.Lock()
	defer n.rmu.Unlock()
	return n.rn.Status()
}

// silentPeersLoop renews, while this member leads, the stream to every
// follower that has stopped answering although its stream looks up: raft
// would keep sending into a stream nobody reads. Raft clears a follower's
// RecentActive every election timeout and sets it again at its next answer,
// so a healthy follower is seen inactive only just after a clearing. The
// check runs every ElectionTicks/2+1 ticks, out of step with the clearing,
// and a follower must be inactive at two checks in a row.
func (n *Node) silentPeersLoop() {
	t := time.NewTicker(n.cfg.TickInterval * time.Duration(n.cfg.ElectionTicks/2+1))
	defer t.Stop()
	silent := map[uint64]bool{}
	leaderless := 0
	for {
		select {
		case <-t.C:
		case <-n.stopc:
			return
		}
		if n.lead.Load() == 0 {
			// Without a leader there is no progress to tell a silent peer
			// from a slow one; an election that has not ended after about
			// two election timeouts renews every stream instead (twice we
			// saw a stream whose messages never reached the peer's raft).
			if leaderless++; leaderless == 3 {
				n.lg.Warn("no leader for two election timeouts: renewing the raft streams to every peer")
				for _, p := range n.transport.peerIDs() {
					n.transport.ResetPeer(p)
				}
				leaderless = 0
			}
		} else {
			leaderless = 0
		}
		if n.lead.Load() != n.cfg.ID {
			clear(silent)
			continue
		}
		st := n.raftStatus()
		for id, pr := range st.Progress {
			if id == st.ID || pr.RecentActive || !n.transport.PeerActive(id) {
				delete(silent, id)
				continue
			}
			if silent[id] {
				n.lg.Warn("renewing the raft stream to a peer that does not answer over it", "peer", fmtID(id))
				n.transport.ResetPeer(id)
				delete(silent, id)
				continue
			}
			silent[id] = true
		}
	}
}

// peerDown is told by the transport that peer id's host refused a
// connection: its process is gone. If id led, waiting out an election
// timeout (1-2 s by default) before anyone campaigns gains nothing, so this
// member campaigns now, the way a leadership transfer does (no pre-vote, and
// voters grant it although they heard from the leader within their lease).
// That is safe: raft's safety does not rest on when elections start, and
// reads use ReadIndex, never the lease. A random delay of up to a tick lets
// one follower win before the others start.
func (n *Node) peerDown(id uint64) {
	lead := n.lead.Load()
	if id == n.cfg.ID || (lead != id && (lead != 0 || n.lastLead.Load() != id)) {
		return
	}
	// Proposals forwarded to the dead leader are lost unless it replicated
	// them first: their callers learn now that the outcome is unknown
	// rather than at their deadline.
	n.waits.failAll(ErrLeaderLost)
	if !n.campaignSoon.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(rand.N(n.cfg.TickInterval), func() {
		defer n.campaignSoon.Store(false)
		if l := n.lead.Load(); l != id && l != 0 {
			return // another member leads already
		}
		select {
		case <-n.stopc:
			return
		default:
		}
		n.lg.Info("leader's process is gone (its host refuses connections): campaigning now", "leader", fmtID(id))
		// Raft starts a transfer campaign on MsgTimeoutNow from its leader.
		_ = n.withRaft(func(rn *raft.RawNode) {
			_ = rn.Step(raftpb.Message{Type: raftpb.MsgTimeoutNow, From: id, To: n.cfg.ID, Term: n.term.Load()})
		})
	})
}

// PendingConfChange reports whether the log holds a membership change that
// is not applied yet here (raft drops a new one proposed meanwhile).
func (n *Node) PendingConfChange() bool {
	last, err := n.storage.LastIndex()
	if err != nil {
		return false
	}
	for lo := n.applied.Load() + 1; lo <= last; {
		ents, err := n.storage.Entries(lo, last+1, 4<<20)
		if err != nil || len(ents) == 0 {
			return false
		}
		for i := range ents {
			if ents[i].Type != raftpb.EntryNormal {
				return true
			}
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return false
}

// LeaderSince returns when this member last saw the leader change.
func (n *Node) LeaderSince() time.Time { return time.Unix(0, n.leadSince.Load()) }

// Leader returns the current leader's id (0 when none is known).
func (n *Node) Leader() uint64 { return n.lead.Load() }

// Term returns the current raft term.
func (n *Node) Term() uint64 { return n.term.Load() }

// CommitIndex returns the last commit index this member heard of.
func (n *Node) CommitIndex() uint64 { return n.committed.Load() }

// AppliedIndex returns this member's applied index.
func (n *Node) AppliedIndex() uint64 { return n.applied.Load() }

// ID returns this member's id.
func (n *Node) ID() uint64 { return n.cfg.ID }

// ClusterID returns the cluster's id.
func (n *Node) ClusterID() uint64 { return n.cfg.ClusterID }

// WaitLeader blocks until a leader is known.
func (n *Node) WaitLeader(ctx context.Context) error {
	for n.lead.Load() == 0 {
		select {
		case <-n.leaderChanged():
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopc:
			return ErrStopped
		}
	}
	return nil
}

// TransferLeadership hands leadership to the most caught-up healthy voter, if
// this member leads, and waits until the leader changed or ctx ends.
func (n *Node) TransferLeadership(ctx context.Context) error {
	return n.TransferLeadershipTo(ctx, 0)
}

// TransferLeadershipTo hands leadership to the voter target (0: the most
// caught-up healthy voter), if this member leads, and waits until the leader
// changed or ctx ends.
func (n *Node) TransferLeadershipTo(ctx context.Context, target uint64) error {
	st := n.raftStatus()
	if st.RaftState != raft.StateLeader {
		return nil
	}
	if target == 0 {
		active := n.transport.ActivePeers()
		var best uint64
		voters := 0
		for id, pr := range st.Progress {
			if id == st.ID || pr.IsLearner {
				continue
			}
			voters++
			if !active[id] {
				continue
			}
			if target == 0 || pr.Match > best {
				target, best = id, pr.Match
			}
		}
		if voters == 0 {
			return nil // a single-member cluster has nobody to hand over to
		}
		if target == 0 {
			return errors.New("consensus: no healthy voter to hand leadership to")
		}
	}
	changed := n.leaderChanged()
	transfer := func() error { return n.withRaft(func(rn *raft.RawNode) { rn.TransferLeader(target) }) }
	if err := transfer(); err != nil {
		return err
	}
	// The target ignores the leader's MsgTimeoutNow while it has a
	// membership change left to apply (a learner just promoted, say), and
	// raft abandons the transfer after an election timeout: ask again then.
	again := time.NewTicker(n.cfg.TickInterval * time.Duration(n.cfg.ElectionTicks))
	defer again.Stop()
	for {
		select {
		case <-changed:
			if l := n.lead.Load(); l != st.ID && l != 0 {
				return nil
			}
			changed = n.leaderChanged()
		case <-again.C:
			if n.lead.Load() == st.ID {
				if err := transfer(); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("hand leadership to %x: %w", target, ctx.Err())
		case <-n.stopc:
			return ErrStopped
		}
	}
}

func (c *Config) setDefaults() error {
	if c.ID == 0 {
		return errors.New("consensus: member id must not be 0")
	}
	if c.StateMachine == nil {
		return errors.New("consensus: no state machine")
	}
	if c.DataDir == "" {
		return errors.New("consensus: no data dir")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = 10000
	}
	if c.CatchUpEntries == 0 {
		c.CatchUpEntries = 5000
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = 1 << 20
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = 512
	}
	if c.MaxProposalBatch == 0 {
		c.MaxProposalBatch = 512
	}
	return nil
}

// An idGenerator makes request ids unique across members: the member id's low
// 16 bits, then the start time in milliseconds, then a counter (etcd's idutil).
type idGenerator struct {
	prefix uint64
	suffix atomic.Uint64
}

func newIDGenerator(member uint64, now time.Time) *idGenerator {
	g := &idGenerator{prefix: member << 48}
	g.suffix.Store(uint64(now.UnixMilli()) << 8 & (1<<48 - 1))
	return g
}

func (g *idGenerator) next() uint64 {
	return g.prefix | (g.suffix.Add(1) & (1<<48 - 1))
}

func observe(o Observer, v float64) {
	if o != nil {
		o.Observe(v)
	}
}

func addCounter(c Counter, v float64) {
	if c != nil {
		c.Add(v)
	}
}

func setGauge(g Gauge, v float64) {
	if g != nil {
		g.Set(v)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
