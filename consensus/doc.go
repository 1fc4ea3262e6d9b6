// Package consensus runs one raft group: a go.etcd.io/raft/v3 node, its WAL and
// snapshots (etcd's wal and snap packages), the peer transport (a TCP stream
// per peer for messages, gRPC for snapshots, on one port), proposals
// that wake their caller through a wait registry, and linearizable reads.
//
// # Driving raft
//
// The raft node is a raft.RawNode under a mutex. Messages from peers,
// proposals, ticks and calls queue in an inbox; whoever queues work takes the
// mutex if it is free and handles the work itself (the peer stream's reader
// steps the append it read, persists it and answers; a client's handler
// sends its proposal), else the holder finds the work before it lets go. A
// goroutine that has handled a few Readies hands the rest to the drive loop,
// which also ticks. drive.go has the details.
//
// Each raft.Ready is handled in this order, which is what makes a crash at
// any point safe:
//
//  1. Soft state: record the leader and term (readers and proposers consult them).
//  2. Read states: hand the newest to the read loop; never block on it.
//  3. Committed entries (and an incoming snapshot) are queued for the apply
//     loop, which runs concurrently with the disk writes below; committed
//     entries are durable on a quorum already. The driver never waits for the
//     apply loop: while it lags too far, Readies wait (raft still steps).
//  4. A leader sends its messages now (contiguous appends to one follower
//     merged into one), before its own fsync (raft thesis
//     10.2.1): its disk write overlaps the followers'. Safe because a leader
//     counts its own vote only after persisting (raft self-acks at Advance).
//  5. Persist: an incoming snapshot to the snap dir, then hard state and
//     entries to the WAL in one write with one fsync (when raft.MustSync), then
//     the snapshot's record in the WAL and raft's MemoryStorage.
//  6. Append the entries to MemoryStorage.
//  7. Committed membership changes take effect in raft (ApplyConfChange),
//     before any message of this Ready goes out; a Ready holding one is queued
//     for the apply loop only now, with the configurations raft adopted.
//  8. A follower sends its messages only now, after its fsync: an append
//     response promises the entries are durable.
//  9. Signal the apply loop that the Ready is durable, then Advance.
//
// # Applying
//
// The apply loop hands runs of normal entries to StateMachine.Apply, which
// applies them in one database transaction that also records the applied
// index; entries at or below that index are skipped, so after a crash the WAL
// replays and nothing is applied twice. Membership changes are always applied
// to raft (step 7; its configuration is rebuilt from the log on restart) and
// to the state machine once. Results wake the proposer waiting on the entry's request
// id. After the Ready is durable, the apply loop may take a snapshot and
// compact the log, keeping CatchUpEntries entries for slow followers. A
// raft snapshot carries no data: a follower that needs one receives the
// state machine's database file streamed beside it.
//
// # Proposals and reads
//
// Proposals queue in the inbox; the driver steps all that are queued as one
// MsgProp of many entries. On the leader, while a round of appends is in
// flight, they are held with the proposals followers forward until that
// round commits (or Config.ProposalHold passes): the Ready that carries the
// commit then carries them too, and one fsync and one append per follower
// carry all the writes that arrived meanwhile. A proposal that finds nothing
// in flight is not held. Linearizable reads share ReadIndex rounds: every reader
// that arrives while a round is in flight joins the next one, which waits
// until the applied index reaches the read index.
//
// Package consensus imports the api (for peer messages), raft, etcd's wal and
// snap, and grpc. It must not import server or any domain package.
package consensus
