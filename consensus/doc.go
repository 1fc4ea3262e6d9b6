// Package consensus runs one raft group: a go.etcd.io/raft/v3 node, its WAL and
// snapshots (etcd's wal and snap packages), the peer transport (a TCP stream
// per peer for messages, gRPC for snapshots, on one port), proposals
// that wake their caller through a wait registry, and linearizable reads.
//
// # The Ready loop
//
// Node.run handles each raft.Ready in this order, which is what makes a
// crash at any point safe:
//
//  1. Soft state: record the leader and term (readers and proposers consult them).
//  2. Read states: hand the newest to the read loop; never block on it.
//  3. Committed entries (and an incoming snapshot) go to the apply loop. The
//     apply loop runs concurrently with the disk writes below; committed entries
//     are durable on a quorum already.
//  4. A leader sends its messages now (contiguous appends to one follower
//     merged into one), before its own fsync (raft thesis
//     10.2.1): its disk write overlaps the followers'. Safe because a leader
//     counts its own vote only after persisting (raft self-acks after Advance).
//  5. Persist: an incoming snapshot to the snap dir, then hard state and
//     entries to the WAL in one write with one fsync (when raft.MustSync), then
//     the snapshot's record in the WAL and raft's MemoryStorage.
//  6. Append the entries to MemoryStorage.
//  7. A follower sends its messages only now, after its fsync: an append
//     response promises the entries are durable. If the Ready committed a
//     membership change, a follower first waits for it to be applied.
//  8. Signal the apply loop that the Ready is durable, then Advance.
//
// # Applying
//
// The apply loop hands runs of normal entries to StateMachine.Apply, which
// applies them in one database transaction that also records the applied
// index; entries at or below that index are skipped, so after a crash the WAL
// replays and nothing is applied twice. Membership changes are always applied
// to raft (its configuration is rebuilt from the log on restart) and to the
// state machine once. Results wake the proposer waiting on the entry's request
// id. After the Ready is durable, the apply loop may take a snapshot and
// compact the log, keeping CatchUpEntries entries for slow followers. A
// raft snapshot carries no data: a follower that needs one receives the
// state machine's database file streamed beside it.
//
// # Proposals and reads
//
// Proposals queue on a channel; one goroutine drains it into a single MsgProp
// of many entries. On the leader it also takes the proposals followers
// forward while a round is in flight, and holds the next batch until that
// round commits (or Config.ProposalHold passes): one fsync and one append
// per follower then carry all the writes that arrived meanwhile. A proposal
// that finds nothing in flight is not held. Linearizable reads share ReadIndex rounds: every reader
// that arrives while a round is in flight joins the next one, which waits
// until the applied index reaches the read index.
//
// Package consensus imports the api (for peer messages), raft, etcd's wal and
// snap, and grpc. It must not import server or any domain package.
package consensus
