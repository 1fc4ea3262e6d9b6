package consensus

import (
	"context"
	"io"
	"log/slog"
	"net"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// A Peer is one member of the initial cluster.
type Peer struct {
	ID   uint64
	Name string
	// Addr is the member's peer (raft) address, host:port.
	Addr string
}

// A StateMachine is what the raft log is applied to. Its methods are called from
// one goroutine, in log order.
type StateMachine interface {
	// AppliedIndex returns the last raft index whose effects are durable in the
	// state machine (it may trail the entries applied: those are replayed
	// from the WAL after a crash). Entries at or below it are never passed
	// to Apply again.
	AppliedIndex() uint64
	// ApplyBatch applies a batch of committed entries (normal entries only, in
	// order, all above the entries applied before) and records the new
	// applied index with them; they become durable together, possibly later
	// and with later batches (see AppliedIndex). It calls deliver once with
	// one result per entry, in the same order, before it returns; a result
	// whose ID is non-zero wakes the proposer waiting on that ID.
	ApplyBatch(ents []raftpb.Entry, deliver func([]Result))
	// ApplyConfChange records an applied membership change at index; cc.Context
	// holds the member's Peer as JSON for additions. cs is the configuration
	// after the change.
	ApplyConfChange(index uint64, cc raftpb.ConfChange, cs raftpb.ConfState) error
	// Members returns the members the state machine has recorded; on restart
	// the node connects to them.
	Members() ([]Peer, error)
	// RemovedMembers returns the ids of members removed from the cluster;
	// their messages are refused so that they learn of it and stop.
	RemovedMembers() ([]uint64, error)
	// OpenSnapshot opens a consistent copy of the state machine's database
	// for sending to a lagging follower, with the applied index and the
	// configuration that copy holds.
	OpenSnapshot() (SnapshotData, error)
	// RestoreDB replaces the state machine's database with the file at path (a
	// database received with a raft snapshot).
	RestoreDB(path string) error
}

// SnapshotData is a consistent copy of the state machine's database.
type SnapshotData struct {
	io.ReadCloser
	Size int64
	// Index is the last raft index applied to the copy; ConfState the
	// configuration after it (empty if the state machine recorded none).
	Index     uint64
	ConfState raftpb.ConfState
}

// A Result is the outcome of applying one entry.
type Result struct {
	ID    uint64
	Value any
	Err   error
}

// A Transport carries raft messages between members. Send never blocks on a
// slow or dead peer.
type Transport interface {
	// Send queues messages for their recipients; it never blocks.
	Send(msgs []raftpb.Message)
	AddPeer(id uint64, addr string)
	RemovePeer(id uint64)
	// ActivePeers reports, per peer id, whether the stream to it is up.
	ActivePeers() map[uint64]bool
	Stop()
}

// A Handler is the side of the raft node that a Transport delivers to.
type Handler interface {
	// Process steps a message received from a peer into the raft node.
	Process(ctx context.Context, m raftpb.Message) error
	// ReportUnreachable tells raft that a peer could not be reached.
	ReportUnreachable(id uint64)
	// ReportSnapshot tells raft how sending a snapshot to id ended.
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
	// OpenSnapshotDB opens the database to stream with the MsgSnap m. It
	// returns the message to send, whose snapshot metadata it may replace to
	// describe the database (its index, term and configuration).
	OpenSnapshotDB(m raftpb.Message) (msg raftpb.Message, rc io.ReadCloser, size int64, err error)
	// ReceiveSnapshotDB stores a streamed database for the MsgSnap m; the
	// node restores it when raft applies that snapshot.
	ReceiveSnapshotDB(m raftpb.Message, r io.Reader) error
}

// A DropFunc, used by tests, reports whether a message from one member to
// another should be dropped by the transport.
type DropFunc func(from, to uint64) bool

// Config configures a Node.
type Config struct {
	ID        uint64
	ClusterID uint64
	// Peers is the initial cluster; used only when the data dir holds no WAL.
	// With Join, they are the members of the running cluster this node was
	// added to, and the node starts with no configuration of its own: it
	// learns it from the leader.
	Peers   []Peer
	Join    bool
	DataDir string

	TickInterval   time.Duration // default 100ms
	ElectionTicks  int           // default 10
	HeartbeatTicks int           // default 1
	// SnapshotCount is how many applied entries trigger a snapshot and log compaction.
	SnapshotCount uint64 // default 10000
	// CatchUpEntries is how many entries stay in the log after compaction, so a
	// slightly lagging follower catches up without a snapshot.
	CatchUpEntries  uint64 // default 5000
	MaxSizePerMsg   uint64 // default 1 MiB
	MaxInflightMsgs int    // default 512
	// MaxProposalBatch caps the entries of one proposal step.
	MaxProposalBatch int // default 512
	// ProposalHold is how long the leader holds new proposals while a round
	// of appends is in flight, to send them together when it commits; 0
	// sends every batch at once.
	ProposalHold time.Duration

	StateMachine StateMachine
	// PeerListener is the listener the peer gRPC server serves on; the node
	// owns it from Start on.
	PeerListener net.Listener
	Logger       *slog.Logger
	Metrics      Metrics
	// Drop, if set, is consulted for every outgoing peer message (tests only).
	Drop DropFunc
}

// An Observer records one measurement (a prometheus.Histogram satisfies it).
type Observer interface{ Observe(float64) }

// A Counter counts (a prometheus.Counter satisfies it).
type Counter interface{ Add(float64) }

// A Gauge holds a value (a prometheus.Gauge satisfies it).
type Gauge interface{ Set(float64) }

// Metrics are the measurements a Node reports. Nil fields are not reported.
type Metrics struct {
	WALFsyncSeconds    Observer
	ReadIndexSeconds   Observer
	ProposalsCommitted Counter
	ProposalsFailed    Counter
	ProposalsPending   Gauge
	LeaderChanges      Counter
	IsLeader           Gauge
	HasLeader          Gauge
	Term               Gauge
	CommitIndex        Gauge
	AppliedIndex       Gauge
	SnapshotsSaved     Counter
}
