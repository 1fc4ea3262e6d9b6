package consensus

import (
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Driving the raft node.
//
// The node is a raft.RawNode guarded by Node.rmu. Work for it (messages from
// peers, proposals, ticks, calls such as ReportUnreachable) is queued in an
// inbox, and whoever queues it tries to take rmu: if it can, it steps
// everything queued and handles the Readies that result itself (the peer
// stream's reader persists and answers the append it just read; the client
// handler sends its own proposal); if it cannot, the goroutine holding rmu
// finds the work when it looks at the inbox again, which it does after it
// unlocked too. A caller that has driven a few rounds hands what is left to
// the drive loop, so that no client handler or stream reader works for
// others for long. Compared with raft.Node, whose goroutine passes every
// message, proposal and Ready through channels to and from the Ready loop,
// this saves the hand-offs between goroutines (and the thread wake-ups they
// cost) on every step of a write's path.
//
// The goroutine holding rmu never waits for the apply loop: committed
// entries go to an unbounded queue, and while that queue is long the driver
// leaves Readies alone (raft keeps stepping messages) until the apply loop
// catches up and wakes the drive loop. So a caller of Status, or of anything
// else that takes rmu, waits only for the disk writes of the Readies in hand,
// never for the apply loop (which may itself wait for such a caller).

// inlineDriveRounds bounds the Readies a goroutine that queued work handles
// before it hands the rest to the drive loop.
const inlineDriveRounds = 4

// maxInboxMsgs bounds the peer messages queued for the node: a peer stream
// that finds more queued waits until they are stepped.
const maxInboxMsgs = 4096

// maxApplyBacklog is the number of Readies the apply loop may lag behind
// before the driver stops handling Readies until it catches up.
const maxApplyBacklog = 64

// An inbox is the work queued for the raft node.
type inbox struct {
	mu    sync.Mutex
	msgs  []raftpb.Message
	props []proposal
	fns   []func(*raft.RawNode)
	ticks int
}

func (b *inbox) addMsg(m raftpb.Message) int {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	n := len(b.msgs)
	b.mu.Unlock()
	return n
}

func (b *inbox) addProp(p proposal) {
	b.mu.Lock()
	b.props = append(b.props, p)
	b.mu.Unlock()
}

func (b *inbox) addFn(f func(*raft.RawNode)) {
	b.mu.Lock()
	b.fns = append(b.fns, f)
	b.mu.Unlock()
}

func (b *inbox) addTick() {
	b.mu.Lock()
	b.ticks++
	b.mu.Unlock()
}

func (b *inbox) empty() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs) == 0 && len(b.props) == 0 && len(b.fns) == 0 && b.ticks == 0
}

// take empties the inbox into the given slices (reused by the driver) and
// returns them with the tick count.
func (b *inbox) take(msgs []raftpb.Message, props []proposal, fns []func(*raft.RawNode)) ([]raftpb.Message, []proposal, []func(*raft.RawNode), int) {
	b.mu.Lock()
	msgs = append(msgs[:0], b.msgs...)
	props = append(props[:0], b.props...)
	fns = append(fns[:0], b.fns...)
	ticks := b.ticks
	clear(b.msgs)
	b.msgs, b.props, b.ticks = b.msgs[:0], b.props[:0], 0
	clear(b.fns)
	b.fns = b.fns[:0]
	b.mu.Unlock()
	return msgs, props, fns, ticks
}

// kick handles queued work now if no one else is, for a few rounds, then
// leaves what remains to the drive loop.
func (n *Node) kick() {
	if !n.rmu.TryLock() {
		return
	}
	n.release(n.driveLocked(inlineDriveRounds))
}

// release unlocks rmu and wakes the drive loop if work is left: more, or
// what was queued while rmu was held.
func (n *Node) release(more bool) {
	n.rmu.Unlock()
	if more || !n.inbox.empty() {
		n.pokeDrive()
	}
}

// pokeDrive wakes the drive loop.
func (n *Node) pokeDrive() {
	select {
	case n.drivec <- struct{}{}:
	default:
	}
}

// withRaft runs f on the raft node, then handles what it made ready.
func (n *Node) withRaft(f func(rn *raft.RawNode)) error {
	n.rmu.Lock()
	if n.stopped {
		n.rmu.Unlock()
		return ErrStopped
	}
	f(n.rn)
	n.release(n.driveLocked(inlineDriveRounds))
	return nil
}

// driveLoop ticks the raft node and handles the work no caller handled.
func (n *Node) driveLoop() {
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			n.inbox.addTick()
		case <-n.drivec:
		case <-n.stopc:
			return
		}
		n.rmu.Lock()
		n.release(n.driveLocked(0))
	}
}

// driveLocked steps what the inbox holds and handles the Readies, for at
// most rounds Readies (0: until there is nothing left). It reports whether
// work is left that the caller should hand on. Called with rmu held.
func (n *Node) driveLocked(rounds int) (more bool) {
	for done := 0; ; {
		if n.stopped {
			return false
		}
		var ticks int
		n.dMsgs, n.dProps, n.dFns, ticks = n.inbox.take(n.dMsgs, n.dProps, n.dFns)
		for range ticks {
			n.rn.Tick()
		}
		for _, f := range n.dFns {
			f(n.rn)
		}
		leader := n.rn.BasicStatus().RaftState == raft.StateLeader
		for i := range n.dMsgs {
			m := &n.dMsgs[i]
			if m.Type == raftpb.MsgProp && leader {
				// Proposals forwarded by followers join this leader's own
				// (see stepHeld).
				n.held = append(n.held, m.Entries...)
				n.heldIDs = append(n.heldIDs, make([]uint64, len(m.Entries))...)
				continue
			}
			if err := n.rn.Step(*m); err != nil {
				n.lg.Debug("raft refused a message", "type", m.Type.String(), "from", fmtID(m.From), "err", err)
			}
		}
		clear(n.dMsgs)
		clear(n.dFns)
		for _, p := range n.dProps {
			n.held = append(n.held, raftpb.Entry{Data: p.data})
			n.heldIDs = append(n.heldIDs, p.id)
		}
		clear(n.dProps)
		n.stepHeld()
		if n.applyBacklog() >= maxApplyBacklog {
			// The apply loop wakes the drive loop when it catches up.
			n.applyThrottled.Store(true)
			return false
		}
		if !n.rn.HasReady() {
			if n.inbox.empty() {
				return false
			}
			continue
		}
		if rounds > 0 && done == rounds {
			return true
		}
		rd := n.rn.Ready()
		if !n.handleReady(rd) {
			return false
		}
		n.rn.Advance(rd)
		done++
	}
}

// stepHeld steps the held proposals into raft, unless this member leads and
// a round of appends is in flight: then they wait until that round commits
// (the Readies after the commit step them with the commit), until
// ProposalHold passes or until a batch is full. One WAL write and one append
// per follower then carry every proposal that arrived during the round,
// instead of one each. A proposal that finds nothing in flight is not held.
func (n *Node) stepHeld() {
	if len(n.held) == 0 {
		return
	}
	st := n.rn.BasicStatus()
	if n.cfg.ProposalHold > 0 && st.RaftState == raft.StateLeader && n.lastIndex.Load() > st.Commit &&
		!n.holdExpired.Load() && len(n.held) < n.cfg.MaxProposalBatch {
		if !n.holdArmed {
			n.holdArmed = true
			n.holdTimer.Reset(n.cfg.ProposalHold)
		}
		return
	}
	if n.holdArmed {
		n.holdTimer.Stop()
		n.holdArmed = false
	}
	n.holdExpired.Store(false)
	var err error
	if st.Lead == 0 {
		err = ErrNoLeader
	} else if st.Lead != n.cfg.ID && !n.transport.PeerActive(st.Lead) {
		// Raft would forward the entries into a queue that is being
		// discarded: refuse them now, so the caller tries elsewhere
		// instead of waiting out its deadline.
		err = fmt.Errorf("%w: leader %x is unreachable from this member", ErrNoLeader, st.Lead)
	}
	for lo := 0; lo < len(n.held); lo += n.cfg.MaxProposalBatch {
		hi := min(lo+n.cfg.MaxProposalBatch, len(n.held))
		serr := err
		if serr == nil {
			// A fresh slice: raft keeps the entries it appends.
			ents := append([]raftpb.Entry(nil), n.held[lo:hi]...)
			if e := n.rn.Step(raftpb.Message{Type: raftpb.MsgProp, From: n.cfg.ID, Entries: ents}); e != nil {
				serr = fmt.Errorf("%w: %v", ErrNoLeader, e)
			}
		}
		if serr != nil {
			for _, id := range n.heldIDs[lo:hi] {
				if id != 0 {
					n.waits.trigger(id, Result{ID: id, Err: serr})
				}
			}
		}
	}
	clear(n.held)
	n.held, n.heldIDs = n.held[:0], n.heldIDs[:0]
}

// holdOver is the hold timer's: the round in flight took longer than
// ProposalHold, so the held proposals go out without waiting further.
func (n *Node) holdOver() {
	n.holdExpired.Store(true)
	n.pokeDrive()
}

// handleReady persists and sends one Ready, in the order doc.go describes,
// and reports false if the node had to stop. Called with rmu held.
func (n *Node) handleReady(rd raft.Ready) bool {
	if rd.SoftState != nil {
		n.isLeader = rd.SoftState.RaftState == raft.StateLeader
		n.termStart.Store(0)
		n.setLeader(rd.SoftState.Lead, n.isLeader)
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		n.term.Store(rd.HardState.Term)
		n.committed.Store(rd.HardState.Commit)
		setGauge(n.m.Term, float64(rd.HardState.Term))
		setGauge(n.m.CommitIndex, float64(rd.HardState.Commit))
	}
	if n.isLeader && n.termStart.Load() == 0 {
		for _, e := range rd.Entries {
			if e.Term == n.term.Load() {
				n.termStart.Store(e.Index)
				break
			}
		}
	}
	for _, rs := range rd.ReadStates {
		n.offerReadState(rs)
	}
	var ap *toApply
	if len(rd.CommittedEntries) > 0 || !raft.IsEmptySnap(rd.Snapshot) {
		addCounter(n.m.ProposalsCommitted, float64(len(rd.CommittedEntries)))
		// Signalled once the Ready is durable, and once more before that
		// for a snapshot, whose database may then be restored.
		ap = &toApply{entries: rd.CommittedEntries, snapshot: rd.Snapshot, notifyc: make(chan struct{}, 2)}
	}
	cc := hasConfChange(rd.CommittedEntries)
	if ap != nil && !cc {
		n.pushApply(*ap)
	}
	// The leader sends before it writes to its disk (raft thesis
	// 10.2.1): its own fsync then overlaps the followers'.
	if n.isLeader {
		n.transport.Send(coalesceAppends(rd.Messages))
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.snapshotter.SaveSnap(rd.Snapshot); err != nil {
			n.fatal("save snapshot", err)
			return false
		}
	}
	start := time.Now()
	if err := n.wal.Save(rd.HardState, rd.Entries); err != nil {
		n.fatal("save wal", err)
		return false
	}
	if len(rd.Entries) > 0 || (!raft.IsEmptyHardState(rd.HardState) && raft.MustSync(rd.HardState, n.synced, 0)) {
		observe(n.m.WALFsyncSeconds, time.Since(start).Seconds())
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		n.synced = rd.HardState
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		md := rd.Snapshot.Metadata
		if err := n.wal.SaveSnapshot(walpb.Snapshot{Index: md.Index, Term: md.Term, ConfState: &md.ConfState}); err != nil {
			n.fatal("save snapshot in wal", err)
			return false
		}
		if err := n.storage.ApplySnapshot(rd.Snapshot); err != nil {
			n.fatal("apply snapshot to raft storage", err)
			return false
		}
		// The apply loop may now restore the snapshot's database.
		ap.notifyc <- struct{}{}
	}
	if err := n.storage.Append(rd.Entries); err != nil {
		n.fatal("append to raft storage", err)
		return false
	}
	if len(rd.Entries) > 0 {
		n.lastIndex.Store(rd.Entries[len(rd.Entries)-1].Index)
	}
	if cc {
		// Membership changes take effect in raft here, before this Ready's
		// messages go out and before raft steps anything else: a member
		// never counts votes or acknowledgements under a configuration it
		// has committed but not adopted. The apply loop applies them to
		// the state machine and the transport.
		ap.confStates = n.applyConfChangesToRaft(rd.CommittedEntries)
		n.pushApply(*ap)
	}
	// A follower sends only now, after its fsync: an append response
	// promises the entries are durable.
	if !n.isLeader {
		n.transport.Send(coalesceAppends(rd.Messages))
	}
	if ap != nil {
		ap.notifyc <- struct{}{}
	}
	return true
}

// applyConfChangesToRaft applies the membership changes among ents to raft
// and returns the configuration after each, by entry index.
func (n *Node) applyConfChangesToRaft(ents []raftpb.Entry) map[uint64]raftpb.ConfState {
	out := make(map[uint64]raftpb.ConfState)
	for i := range ents {
		e := &ents[i]
		var cci raftpb.ConfChangeI
		switch e.Type {
		case raftpb.EntryConfChange:
			var cc raftpb.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				n.lg.Error("undecodable conf change", "index", e.Index, "err", err)
				continue
			}
			cci = cc
		case raftpb.EntryConfChangeV2:
			var cc raftpb.ConfChangeV2
			if err := cc.Unmarshal(e.Data); err != nil {
				n.lg.Error("undecodable conf change", "index", e.Index, "err", err)
				continue
			}
			cci = cc
		default:
			continue
		}
		out[e.Index] = *n.rn.ApplyConfChange(cci)
	}
	return out
}

// pushApply queues committed entries for the apply loop.
func (n *Node) pushApply(ap toApply) {
	n.applyMu.Lock()
	n.applyQ = append(n.applyQ, ap)
	n.applyMu.Unlock()
	select {
	case n.applyc <- struct{}{}:
	default:
	}
}

func (n *Node) applyBacklog() int {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	return len(n.applyQ)
}

// takeApply empties the apply queue into aps.
func (n *Node) takeApply(aps []toApply) []toApply {
	n.applyMu.Lock()
	aps = append(aps[:0], n.applyQ...)
	clear(n.applyQ)
	n.applyQ = n.applyQ[:0]
	n.applyMu.Unlock()
	if n.applyThrottled.CompareAndSwap(true, false) {
		n.pokeDrive()
	}
	return aps
}
