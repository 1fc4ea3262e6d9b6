// Package lease owns the replicated side of leases: which leases exist, their
// TTLs, and what is attached to each (config keys, instances, and in later
// areas lock holds and election candidacies). Expiry is not replicated: the
// leader keeps each lease's deadline in memory (Lessor), renews it on
// keep-alives without touching the log, and proposes a revoke when it
// passes, paced (Pacer) so that a mass expiry cannot crowd the log. A new
// leader gives every lease a full TTL before it expires any.
//
// Like every domain package it knows bbolt and the wire messages, nothing
// about raft or transport. Apply functions run inside the state machine's
// write transaction and follow registry's contract: validate first, change
// nothing on a refused command, return events iff something changed. The
// Lessor and Pacer take the time from their caller, so they are tested with
// a fake clock.
package lease
