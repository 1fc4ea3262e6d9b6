// Package sdk is the Go client of catalogd.
//
// It owns the client side of the wire contract in api/catalogpb: one gRPC
// connection spread over every configured endpoint (round robin, so load is
// shared and a dead endpoint is skipped), retries where they are safe, and the
// mapping of gRPC errors back to exported sentinels such as ErrKeyTooLarge, so
// callers match failures with errors.Is and never by message text.
//
// The invariant it keeps: a request is sent again only when sending it again
// cannot apply it twice. Reads (Get, Status, GetService, TimeToLive...) are
// retried on codes.Unavailable; writes (Put, Delete, Txn, Grant, Revoke,
// RegisterInstance...) only when the server answered NO_LEADER, which
// guarantees the write was not proposed. Retries back off exponentially with
// jitter and never wait past the caller's context deadline.
//
// A Config with one endpoint gives a client pinned to that endpoint, which is
// how a benchmark spreads its connections over a cluster.
//
// The convenience API takes string keys and values, as etcd's clientv3 does;
// responses are the catalogpb messages, whose keys and values are []byte.
// KV, Cluster and Conn give the raw generated clients for anything else.
//
// # Leases
//
// Grant returns a lease of a TTL (whole seconds, within the servers' bounds:
// ErrTTLOutOfRange names them). Keys (Put with WithLease) and instances
// attached to it are deleted when it expires or is revoked. KeepAlive renews
// a lease every TTL/3 until Stop or its context ends; the renewals of all of
// a client's leases share one stream, reopened on another endpoint when it
// breaks. A KeepAlive ends with ErrLeaseNotFound once the lease is gone:
// renewing cannot bring it back, the caller grants a new one.
//
// # Registration
//
// Register registers an Instance and keeps it registered until
// Registration.Close: it grants a lease (WithTTL, default 10s) the instance
// lives by and keeps it alive, so the instance disappears a TTL after its
// process dies. When the lease is lost anyway (a partition that outlasted the
// TTL, a revoke), it registers the instance again on a new lease, with
// backoff, keeping the health and state set last (Reregistered signals it).
// WithHealthCheckFunc reports a local check's result; WithDrain makes Close
// set the instance DRAINING and wait before it deregisters. Close deregisters
// the instance and revokes the lease it granted. PutService, RegisterInstance and the
// other raw Registry calls are there for callers that manage leases
// themselves.
//
// # Discovery
//
// Discover lists a service's instances that pass Filters (Healthy, HasTag,
// InZone, WithMeta, InState, WithHealth; linearizable unless Serializable).
// For lookups on a hot path, NewResolver keeps a service's instances in
// memory: it lists them, then follows a watch from the listing's revision
// (listing again if the watch fell behind the servers' history), so
// Resolver.Instances answers without a network call. GRPCResolver plugs that
// cache into gRPC: a connection to "catalog:///SERVICE" (with optional
// ?tag=, zone= and meta=KEY=VALUE filters) balances over the service's
// healthy, serving instances and follows them as they change.
//
// # Watch
//
// Watch streams the events of config keys, services and their instances,
// shard maps or leases, each revision whole and in order. With
// WithStartRevision it first replays the history from that revision. The
// watches of a client share one stream; when it breaks, or when the server
// cancels a watch that read too slowly, each watch resumes from its last
// delivered revision + 1 on whichever server answers: no gap and no
// duplicate. A watch ends only when its context does, when the client is
// closed, or on an error it cannot resume from, such as ErrCompacted (the
// caller then lists again and watches from the listing's revision).
//
// # Coordination
//
// NewSession grants a lease (WithSessionTTL, default 60s) and keeps it
// alive; the helpers made with a session hold, wait and consume on its
// lease: Mutex, RWMutex (readers or one writer, strictly FIFO so writers are
// not starved), Semaphore (a fixed number of permits), Election (Campaign,
// Proclaim, Resign, Leader, and Observe, a channel of leadership changes that
// reconnects and resumes after a broken stream), DoubleBarrier (Enter waits
// for count participants, Leave for all of them to leave) and Queue (Dequeue
// hands an item to the session until Ack; an item whose session ends first
// goes back to the head of the queue). Barrier, a simple barrier, needs no
// session. Holders and waiters are replicated state kept by the servers, so
// no helper polls. Session.Done, and each helper's Done, is closed when the
// lease is lost (or no renewal was answered for a whole TTL): what the
// session held is then gone. The Lock and Unlock calls of Mutex, RWMutex
// and Semaphore share one Lock.Stream per client (a message each way per
// call instead of an HTTP/2 stream each), reopened when it breaks; a server
// without it gets unary calls. The stream is opened on the raft leader (a
// Status call names it) when one of the client's endpoints is a server's
// advertised client address: each of these calls is a raft write, which a
// follower would forward to the leader and answer only once the commit came
// back. An answer from a newer raft term moves later calls to a new stream.
//
// Every grant carries a fencing token from one counter that only grows. A
// write made under a lock can be guarded by it: a transaction conditioned on
// Compare(Fence(name, token), "=", true) is refused once the lock moved on,
// even if its writer does not know yet (a pause, a partition). Mutex,
// RWMutex, Semaphore and Election have Token; so have DoubleBarrier (the
// session's participation, valid until it leaves) and Barrier (the
// barrier's setting, valid until it is released). A queue item carries the
// token of its delivery (item.Token), and FenceItem(item) guards the writes
// its processing makes: they are refused once the item was acked or went
// back to the queue.
//
// Blocking calls (Lock, RLock, Acquire, Campaign, Dequeue, Enter, Leave,
// Barrier.Wait) wait on the server as long as their context allows:
// Config.RequestTimeout does not cut them. After a failure that says
// nothing about the wait (no server reachable, no leader, a server-side
// timeout) a call is sent again by the same lease, which continues the wait
// the servers keep for that lease (a Dequeue gets back the item handed to
// an attempt whose answer was lost), so a leader failover neither loses the
// caller's place nor queues it twice. Each attempt carries its own random
// waiter id: the cancel a server proposes for an attempt whose client
// connection broke names that attempt's id, and cannot release a hold (or
// take back an item) a later attempt was answered. A context that ends
// returns ctx.Err() and the server removes the wait; a wait whose call was
// abandoned while no server could be reached is removed in the background
// once one can. Releases (Unlock, Resign, Ack) are retried too: Unlock and
// Resign told after a lost answer that the hold is gone succeed (it is not
// held either way); Ack told the item is not handed to the session fails
// with an ErrItemNotFound that says the lost attempt may or may not have
// been applied.
//
// This package must not import any server-side package of this module (only
// api/catalogpb, grpc, protobuf and genproto's errdetails): a test enforces it.
package sdk
