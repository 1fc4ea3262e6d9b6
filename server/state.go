package server

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/consensus"
	"github.com/catalogd/catalogd/lease"
	"github.com/catalogd/catalogd/locks"
	"github.com/catalogd/catalogd/registry"
	"github.com/catalogd/catalogd/server/metrics"
)

// Buckets the state machine owns; domain packages own theirs.
var (
	metaBucket    = []byte("meta")
	membersBucket = []byte("members")
	eventsBucket  = []byte("events")
	// removedBucket holds the ids of removed members (key: id, value: the
	// raft index of the removal): their messages are refused.
	removedBucket = []byte("removed_members")

	keyAppliedIndex   = []byte("applied_index")
	keyRevision       = []byte("revision")
	keyCompactRevison = []byte("compact_revision")
	keyConfState      = []byte("conf_state")
)

// initialMmapSize is the address space the database is mapped with.
const initialMmapSize = 10 << 30

// maxCompactPerApply bounds how many old revisions one apply batch deletes
// from the events history, so trimming never makes one commit slow.
const maxCompactPerApply = 2048

// errApplyPanic reports a command whose apply panicked: the command is refused
// on every member alike (apply is deterministic), and the server keeps running.
var errApplyPanic = errors.New("server: internal error applying command")

// A member is a raft member as the state machine records it.
type member struct {
	ID         uint64 `json:"id"`
	Name       string `json:"name"`
	PeerAddr   string `json:"peer_addr"`
	ClientAddr string `json:"client_addr,omitempty"`
	IsLearner  bool   `json:"is_learner,omitempty"`
}

// stateMachine is the replicated state: one bbolt database that the raft log
// is applied to. It implements consensus.StateMachine.
type stateMachine struct {
	lg           *slog.Logger
	m            *metrics.Metrics
	path         string
	eventHistory int64

	// mu guards db against its replacement by a snapshot restore.
	mu sync.RWMutex
	db *bbolt.DB

	// applied is the applied index the store has durably committed;
	// revision moves as entries are applied.
	applied    atomic.Uint64
	revision   atomic.Int64
	compactRev atomic.Int64

	// Applied batches go into one write transaction, wtx, that stays open
	// until something needs it committed: a read (view), a snapshot, a
	// membership change, commitInterval after its first write, or
	// maxPendingEntries entries. Like etcd's batched backend commits, this
	// takes the database's fsyncs off each write's path and shares them
	// between writes; the raft WAL, already fsynced, holds every entry
	// applied to wtx, and a crash replays those above the committed applied
	// index. txMu guards wtx and its bookkeeping.
	txMu           sync.Mutex
	wtx            *bbolt.Tx
	wtxApplied     uint64
	wtxEntries     int
	pending        atomic.Bool
	commitInterval time.Duration

	// observers learn of every commit and database replacement (the watch
	// hub, the lease manager, the health checker). Set before Start.
	observers []applyObserver
}

// An applyObserver keeps derived in-memory state in step with the store.
// Both calls come from the apply goroutine, one at a time: they must not
// block (hand work off) and must not write to the store.
type applyObserver interface {
	// Applied is called for each applied batch that produced events, with
	// the new revision and the event batches, in revision order, when the
	// batch's results are delivered (the store may commit the batch later;
	// a read commits it first).
	Applied(rev int64, batches []*catalogpb.EventBatch)
	// Restored is called after the database was replaced by a snapshot
	// (revisions may have jumped; no events were delivered for the gap): the
	// observer rebuilds from the store.
	Restored(rev int64)
}

func openStateMachine(dir string, eventHistory int64, lg *slog.Logger, m *metrics.Metrics) (*stateMachine, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	sm := &stateMachine{lg: lg, m: m, path: filepath.Join(dir, "db"), eventHistory: eventHistory, commitInterval: defaultCommitInterval}
	if err := sm.open(); err != nil {
		return nil, err
	}
	return sm, nil
}

func (sm *stateMachine) open() error {
	db, err := bbolt.Open(sm.path, 0o600, &bbolt.Options{
		Timeout:        2 * time.Second,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
		// A write that outgrows the memory map must wait for every open
		// read transaction to remap; a snapshot streamed to a slow follower
		// holds one for as long as the stream lasts. Mapping 10 GiB of
		// address space up front (etcd's default) makes remaps rare.
		InitialMmapSize: initialMmapSize,
	})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return fmt.Errorf("open %s: another catalogd holds this data dir (%w)", sm.path, err)
		}
		return fmt.Errorf("open %s: %w", sm.path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{metaBucket, membersBucket, eventsBucket, removedBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := registry.CreateBuckets(tx); err != nil {
			return err
		}
		if err := lease.CreateBuckets(tx); err != nil {
			return err
		}
		if err := locks.CreateBuckets(tx); err != nil {
			return err
		}
		meta := tx.Bucket(metaBucket)
		sm.applied.Store(getUint(meta, keyAppliedIndex))
		sm.revision.Store(int64(getUint(meta, keyRevision)))
		sm.compactRev.Store(int64(getUint(meta, keyCompactRevison)))
		return nil
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("initialise %s: %w", sm.path, err)
	}
	sm.db = db
	return nil
}

func (sm *stateMachine) close() error {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.txMu.Lock()
	sm.commitLocked()
	sm.txMu.Unlock()
	return sm.db.Close()
}

// AppliedIndex implements consensus.StateMachine.
func (sm *stateMachine) AppliedIndex() uint64 { return sm.applied.Load() }

// Revision returns the store's current revision.
func (sm *stateMachine) Revision() int64 { return sm.revision.Load() }

// CompactRevision returns the revision at and below which events were
// dropped from the history (0 while nothing was).
func (sm *stateMachine) CompactRevision() int64 { return sm.compactRev.Load() }

// Apply applies ents, commits, and returns their results (tests and tools;
// the node uses ApplyBatch).
func (sm *stateMachine) Apply(ents []raftpb.Entry) []consensus.Result {
	var out []consensus.Result
	sm.ApplyBatch(ents, func(r []consensus.Result) { out = r })
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	sm.commit()
	return out
}

// maxPendingEntries bounds the entries applied to the open write
// transaction before it is committed.
const maxPendingEntries = 10000

// defaultCommitInterval is how long applied writes may wait for a commit
// that nothing else asked for (etcd's backend batch interval).
const defaultCommitInterval = 100 * time.Millisecond

// ApplyBatch implements consensus.StateMachine: the batch goes into the
// open write transaction (see wtx), with the applied index and revision,
// and its results are delivered at once. The entries are committed in the
// raft log of a quorum, so an answer is final; a crash before the store's
// commit replays them from the WAL. A read begun after an answer commits
// first (view), so it sees the write.
func (sm *stateMachine) ApplyBatch(ents []raftpb.Entry, deliver func([]consensus.Result)) {
	start := time.Now()
	results := make([]consensus.Result, len(ents))
	var batches []*catalogpb.EventBatch
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	sm.txMu.Lock()
	tx := sm.wtx
	if tx == nil {
		var err error
		if tx, err = sm.db.Begin(true); err != nil {
			sm.fatal("begin apply transaction", err)
		}
		sm.wtx = tx
	}
	rev := sm.revision.Load()
	events := tx.Bucket(eventsBucket)
	var cmd catalogpb.Command
	// full: commit at the end of the batch.
	full := false
	for i := range ents {
		e := &ents[i]
		if len(e.Data) == 0 {
			continue // the empty entry a new leader appends
		}
		cmd.Reset()
		if err := proto.Unmarshal(e.Data, &cmd); err != nil {
			results[i] = consensus.Result{Err: fmt.Errorf("%w: undecodable command at index %d: %v", registry.ErrInvalidArgument, e.Index, err)}
			continue
		}
		if _, ok := cmd.Op.(*catalogpb.Command_MemberAttributes); ok {
			// Members are read without committing (viewCommitted).
			full = true
		}
		value, evs, err := sm.applyCommand(tx, rev+1, &cmd)
		if err == nil && len(evs) > 0 {
			rev++
			batch := &catalogpb.EventBatch{Revision: rev, Events: evs}
			if perr := events.Put(revKey(rev), mustMarshal(batch)); perr != nil {
				sm.fatal("store events", perr)
			}
			batches = append(batches, batch)
		}
		results[i] = consensus.Result{ID: cmd.RequestId, Value: value, Err: err}
	}
	sm.trimHistory(tx, rev)
	meta := tx.Bucket(metaBucket)
	applied := ents[len(ents)-1].Index
	putUint(meta, keyAppliedIndex, applied)
	putUint(meta, keyRevision, uint64(rev))
	sm.m.DBSize.Set(float64(tx.Size()))
	sm.wtxApplied = applied
	sm.wtxEntries += len(ents)
	full = full || sm.wtxEntries >= maxPendingEntries
	sm.revision.Store(rev)
	if !sm.pending.Swap(true) {
		time.AfterFunc(sm.commitInterval, sm.commitLater)
	}
	sm.txMu.Unlock()
	// Derived state (watchers, the leader's lease deadlines, waiting
	// coordination calls) moves before the answers, so that nothing a
	// caller was told is unknown to it: a progress request sent after a
	// write's answer gets a bookmark at or after that write.
	if len(batches) > 0 {
		for _, o := range sm.observers {
			o.Applied(rev, batches)
		}
	}
	deliver(results)
	if full {
		sm.commit()
	}
	sm.m.Revision.Set(float64(rev))
	sm.m.ProposalsApplied.Add(float64(len(ents)))
	sm.m.ApplyDuration.Observe(time.Since(start).Seconds())
}

// commit commits the open write transaction, if any; sm.mu is held (read).
func (sm *stateMachine) commit() {
	if !sm.pending.Load() {
		return
	}
	sm.txMu.Lock()
	defer sm.txMu.Unlock()
	sm.commitLocked()
}

// commitLocked commits wtx; sm.txMu is held.
func (sm *stateMachine) commitLocked() {
	if sm.wtx == nil {
		return
	}
	commitStart := time.Now()
	if err := sm.wtx.Commit(); err != nil {
		sm.fatal("commit apply transaction", err)
	}
	sm.m.BackendCommitDuration.Observe(time.Since(commitStart).Seconds())
	sm.wtx, sm.wtxEntries = nil, 0
	sm.applied.Store(sm.wtxApplied)
	sm.pending.Store(false)
}

// commitLater is the commit nothing else asked for, commitInterval after
// the first write of a transaction.
func (sm *stateMachine) commitLater() {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	sm.commit()
}

// applyCommand applies one command at revision rev (the revision it gets if
// it changes anything). A panic is turned into an error: client input never
// crashes the server.
func (sm *stateMachine) applyCommand(tx *bbolt.Tx, rev int64, cmd *catalogpb.Command) (value proto.Message, evs []*catalogpb.Event, err error) {
	defer func() {
		if r := recover(); r != nil {
			sm.lg.Error("apply panicked", "request_id", cmd.RequestId, "panic", r)
			value, evs, err = nil, nil, errApplyPanic
		}
	}()
	switch op := cmd.Op.(type) {
	case *catalogpb.Command_Put:
		resp, evs, err := registry.ApplyPut(tx, rev, op.Put)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	case *catalogpb.Command_Delete:
		resp, evs, err := registry.ApplyDelete(tx, rev, op.Delete)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	case *catalogpb.Command_Txn:
		resp, evs, err := registry.ApplyTxn(tx, rev, op.Txn, fenceHolds)
		if resp != nil {
			resp.Header = header(rev, evs)
		}
		return resp, evs, err
	case *catalogpb.Command_MemberAttributes:
		return nil, nil, sm.applyMemberAttributes(tx, op.MemberAttributes)
	case *catalogpb.Command_LeaseGrant, *catalogpb.Command_LeaseRevoke:
		return applyLeaseCommand(tx, rev, cmd)
	case *catalogpb.Command_PutService, *catalogpb.Command_DeleteService, *catalogpb.Command_Register,
		*catalogpb.Command_Deregister, *catalogpb.Command_SetState, *catalogpb.Command_SetHealth,
		*catalogpb.Command_SetShardMap:
		return applyRegistryCommand(tx, rev, cmd)
	case *catalogpb.Command_Locks:
		resp, evs, err := locks.Apply(tx, rev, cmd.NowUnixNano, op.Locks)
		if err != nil {
			return nil, nil, err
		}
		setLocksHeader(resp, header(rev, evs))
		return resp, evs, nil
	default:
		return nil, nil, fmt.Errorf("%w: command has no operation", registry.ErrInvalidArgument)
	}
}

// fenceHolds is the FENCE compare of KV transactions: whether token holds
// the lock named name now.
func fenceHolds(tx *bbolt.Tx, name string, token uint64) (bool, error) {
	valid, _, err := locks.Fence(tx, name, token)
	return valid, err
}

// header starts a response header with the revision the write produced; the
// handler fills in who answered. A write that changed nothing reports rev-1,
// the revision it was applied at.
func header(rev int64, evs []*catalogpb.Event) *catalogpb.ResponseHeader {
	if len(evs) == 0 {
		rev--
	}
	return &catalogpb.ResponseHeader{Revision: rev}
}

// trimHistory drops the oldest event batches beyond the configured history.
func (sm *stateMachine) trimHistory(tx *bbolt.Tx, rev int64) {
	oldest := sm.compactRev.Load()
	keepFrom := rev - sm.eventHistory + 1
	if keepFrom <= oldest+1 || keepFrom <= 1 {
		return
	}
	b := tx.Bucket(eventsBucket)
	c := b.Cursor()
	n := 0
	for k, _ := c.First(); k != nil && n < maxCompactPerApply; k, _ = c.First() {
		r := int64(binary.BigEndian.Uint64(k))
		if r >= keepFrom {
			break
		}
		if err := c.Delete(); err != nil {
			sm.fatal("trim events", err)
		}
		oldest = r
		n++
	}
	if n > 0 {
		putUint(tx.Bucket(metaBucket), keyCompactRevison, uint64(oldest))
		sm.compactRev.Store(oldest)
	}
}

func (sm *stateMachine) applyMemberAttributes(tx *bbolt.Tx, a *catalogpb.MemberAttributes) error {
	b := tx.Bucket(membersBucket)
	raw := b.Get(idKey(a.Id))
	if raw == nil {
		return fmt.Errorf("%w: member %x is not in the cluster", registry.ErrInvalidArgument, a.Id)
	}
	var m member
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("decode member %x: %w", a.Id, err)
	}
	m.ClientAddr = a.ClientAddr
	if a.Name != "" {
		m.Name = a.Name
	}
	return putJSON(b, idKey(a.Id), m)
}

// ApplyConfChange implements consensus.StateMachine.
func (sm *stateMachine) ApplyConfChange(index uint64, cc raftpb.ConfChange, cs raftpb.ConfState) error {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	// One writer at a time: the open apply transaction commits first.
	sm.txMu.Lock()
	defer sm.txMu.Unlock()
	sm.commitLocked()
	err := sm.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(membersBucket)
		switch cc.Type {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			var p consensus.Peer
			if len(cc.Context) > 0 {
				if err := json.Unmarshal(cc.Context, &p); err != nil {
					return fmt.Errorf("decode member of conf change: %w", err)
				}
			}
			m := member{ID: cc.NodeID, Name: p.Name, PeerAddr: p.Addr, IsLearner: cc.Type == raftpb.ConfChangeAddLearnerNode}
			if raw := b.Get(idKey(cc.NodeID)); raw != nil {
				var old member
				if json.Unmarshal(raw, &old) == nil {
					m.ClientAddr = old.ClientAddr
					if m.Name == "" {
						m.Name = old.Name
					}
					if m.PeerAddr == "" {
						m.PeerAddr = old.PeerAddr
					}
				}
			}
			if err := putJSON(b, idKey(cc.NodeID), m); err != nil {
				return err
			}
		case raftpb.ConfChangeRemoveNode:
			if err := b.Delete(idKey(cc.NodeID)); err != nil {
				return err
			}
			putUint(tx.Bucket(removedBucket), idKey(cc.NodeID), index)
		}
		meta := tx.Bucket(metaBucket)
		csb, err := cs.Marshal()
		if err != nil {
			return err
		}
		if err := meta.Put(keyConfState, csb); err != nil {
			return err
		}
		putUint(meta, keyAppliedIndex, index)
		return nil
	})
	if err != nil {
		return err
	}
	sm.applied.Store(index)
	return nil
}

// Members implements consensus.StateMachine.
func (sm *stateMachine) Members() ([]consensus.Peer, error) {
	ms, err := sm.members()
	if err != nil {
		return nil, err
	}
	out := make([]consensus.Peer, 0, len(ms))
	for _, m := range ms {
		out = append(out, consensus.Peer{ID: m.ID, Name: m.Name, Addr: m.PeerAddr})
	}
	return out, nil
}

// RemovedMembers implements consensus.StateMachine.
func (sm *stateMachine) RemovedMembers() ([]uint64, error) {
	var ids []uint64
	err := sm.viewCommitted(func(tx *bbolt.Tx) error {
		return tx.Bucket(removedBucket).ForEach(func(k, _ []byte) error {
			if len(k) == 8 {
				ids = append(ids, binary.BigEndian.Uint64(k))
			}
			return nil
		})
	})
	return ids, err
}

func (sm *stateMachine) members() ([]member, error) {
	var out []member
	err := sm.viewCommitted(func(tx *bbolt.Tx) error {
		return tx.Bucket(membersBucket).ForEach(func(k, v []byte) error {
			var m member
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode member %x: %w", k, err)
			}
			out = append(out, m)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// SnapshotDB is a read transaction's consistent view of the whole
// database, streamed.
func (sm *stateMachine) SnapshotDB() (io.ReadCloser, int64, error) {
	snap, err := sm.OpenSnapshot()
	if err != nil {
		return nil, 0, err
	}
	return snap, snap.Size, nil
}

// OpenSnapshot implements consensus.StateMachine.
func (sm *stateMachine) OpenSnapshot() (consensus.SnapshotData, error) {
	tx, err := sm.beginSnapshot()
	if err != nil {
		return consensus.SnapshotData{}, err
	}
	meta := tx.Bucket(metaBucket)
	snap := consensus.SnapshotData{Size: tx.Size(), Index: getUint(meta, keyAppliedIndex)}
	if raw := meta.Get(keyConfState); raw != nil {
		if err := snap.ConfState.Unmarshal(raw); err != nil {
			tx.Rollback()
			return consensus.SnapshotData{}, fmt.Errorf("decode stored configuration: %w", err)
		}
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := tx.WriteTo(pw)
		tx.Rollback()
		pw.CloseWithError(err)
	}()
	snap.ReadCloser = pr
	return snap, nil
}

// RestoreDB implements consensus.StateMachine: the database received with a
// snapshot replaces the current one.
func (sm *stateMachine) RestoreDB(path string) error {
	if err := sm.replaceDB(path); err != nil {
		return err
	}
	// Outside sm.mu: observers read the new store.
	for _, o := range sm.observers {
		o.Restored(sm.revision.Load())
	}
	return nil
}

func (sm *stateMachine) replaceDB(path string) error {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.txMu.Lock()
	sm.commitLocked()
	sm.txMu.Unlock()
	if err := sm.db.Close(); err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	if err := os.Rename(path, sm.path); err != nil {
		return fmt.Errorf("move snapshot database into place: %w", err)
	}
	return sm.open()
}

// beginSnapshot begins a read transaction holding sm.mu only to begin it: a
// database replacement waits for the transaction to end, nothing else does.
func (sm *stateMachine) beginSnapshot() (*bbolt.Tx, error) {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	sm.commit()
	tx, err := sm.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("begin snapshot transaction: %w", err)
	}
	return tx, nil
}

// view runs fn in a read transaction. Applied writes not yet committed are
// committed first: a read sees every write answered before it began.
func (sm *stateMachine) view(fn func(tx *bbolt.Tx) error) error {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	sm.commit()
	return sm.db.View(fn)
}

// viewCommitted runs fn in a read transaction of what the store has
// committed, without committing the open write transaction first: for the
// members and removed members, which are committed as they are applied
// (ApplyConfChange commits; a batch with member attributes commits at its
// end). The health checker and the lease relay read them often, and a
// commit costs two fsyncs and stalls apply meanwhile.
func (sm *stateMachine) viewCommitted(fn func(tx *bbolt.Tx) error) error {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return sm.db.View(fn)
}

// dbSize returns the database file's size in bytes.
func (sm *stateMachine) dbSize() int64 {
	var size int64
	_ = sm.view(func(tx *bbolt.Tx) error { size = tx.Size(); return nil })
	return size
}

// readRevision returns the revision stored in tx (the revision a read in tx sees).
func readRevision(tx *bbolt.Tx) int64 {
	return int64(getUint(tx.Bucket(metaBucket), keyRevision))
}

func (sm *stateMachine) fatal(what string, err error) {
	// A failed bbolt write leaves the state machine unable to record what it
	// applied; continuing would diverge from the log.
	sm.lg.Error("state machine cannot continue", "what", what, "err", err)
	panic(fmt.Sprintf("server: %s: %v", what, err))
}

func revKey(rev int64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(rev))
	return k
}

func idKey(id uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, id)
	return k
}

func getUint(b *bbolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bbolt.Bucket, k []byte, v uint64) {
	buf := make([]byte, 8)
	binary.BigEndian.PutUint64(buf, v)
	if err := b.Put(k, buf); err != nil {
		panic(fmt.Sprintf("server: store %s: %v", k, err))
	}
}

func putJSON(b *bbolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("server: marshal %T: %v", m, err))
	}
	return b
}
