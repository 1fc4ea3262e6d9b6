// Package registry owns what exists in a catalogd cluster: the config
// key-value store (bucket "kv"), services ("services"), their instances with
// lifecycle state and health ("instances", keyed by service and id) and their
// shard maps ("shard_maps"). Datasets join it in a later issue.
//
// The package is a domain package: it knows bbolt and the wire messages of
// api/catalogpb, nothing about raft or transport. Writes are Apply functions
// that run inside the state machine's bbolt write transaction; reads run over
// any transaction. The server composes them: it proposes a command, applies it
// on every member, bumps the store revision and records the returned events.
//
// Invariants:
//   - Apply is deterministic: the same store and the same command give the same
//     bytes, responses and events on every member. No clock, no randomness, no
//     map iteration.
//   - Apply never trusts its input. It validates the whole command (for a txn:
//     every compare and op of both branches) before it writes anything, so a
//     refused command leaves the transaction as it found it.
//   - A command that changes nothing returns no events, and only then: the
//     caller moves the revision iff it got events, so history has no holes and
//     no empty revisions.
//   - A stored key holds its marshalled catalogpb.KeyValue: create_revision is
//     kept across puts, version counts puts since the create (1 after it), and
//     mod_revision is the revision of the last write.
//
// A txn's FENCE compare asks about a lock, which is the locks package's: the
// server passes ApplyTxn a FenceChecker, so this package never imports locks.
//
// It must not import consensus, server, grpc or net/http; the server maps the
// sentinel errors (see Reason) to gRPC codes in one table.
package registry
