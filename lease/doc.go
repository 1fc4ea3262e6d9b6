// Package lease owns the replicated side of leases: which leases exist, their
// TTLs, and what is attached to each (config keys, instances, and in later
// areas lock holds and election candidacies). Expiry is not replicated: the
// leader keeps each lease's deadline in memory (Lessor) and proposes a revoke
// when it passes.
//
// Like every domain package it knows bbolt and the wire messages, nothing
// about raft or transport. Apply functions run inside the state machine's
// write transaction and follow registry's contract: validate first, change
// nothing on a refused command, return events iff something changed.
package lease
