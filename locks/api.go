package locks

// The package's kinds, errors and limits; the functions live in the other
// files.

import "errors"

// Event kinds (catalogpb.Event.Kind) and lease item kinds.
const (
	// LockKind: events of a lock name (key: the name; typed fields lock,
	// prev_lock) and the lease item of a hold or wait (key: the name).
	LockKind = "lock"
	// BarrierKind: events of a barrier (key: the name; barrier,
	// prev_barrier) and the lease item of a simple barrier's setter or a
	// double barrier's participant (key: the name).
	BarrierKind = "barrier"
	// QueueKind: events of a queue item (key: "queue/id"; queue_item,
	// prev_queue_item) and of a queue's waiting consumers (key: the queue
	// name; queue_consumers). As a lease item: a consumer waiting in
	// Dequeue (key: the queue name).
	QueueKind = "queue"
	// QueueItemKind is the lease item of an item handed to a consumer
	// (key: "queue/id", split at the last '/').
	QueueItemKind = "queue_item"
)

// LeaseKinds are the lease item kinds DeleteLeased handles.
var LeaseKinds = []string{LockKind, BarrierKind, QueueKind, QueueItemKind}

// Errors. Messages built on them say what was wrong and what is allowed.
var (
	ErrInvalidArgument = errors.New("locks: invalid argument")
	// ErrLeaseNotFound: the lease named by a request does not exist.
	ErrLeaseNotFound = errors.New("locks: lease not found")
	// ErrNotHeld: Unlock, Resign or Proclaim with a token (or lease) that is
	// not a current holder's.
	ErrNotHeld = errors.New("locks: lock not held")
	// ErrKindMismatch: the name is in use as another kind.
	ErrKindMismatch = errors.New("locks: name in use as another kind")
	// ErrPermitsExceeded: more permits than the semaphore's limit, or a
	// different limit while it is held.
	ErrPermitsExceeded = errors.New("locks: permits exceeded")
	// ErrNotEntered: Leave by a lease that did not Enter.
	ErrNotEntered = errors.New("locks: not entered")
	// ErrBarrierMismatch: Enter with another count, or into an open barrier.
	ErrBarrierMismatch = errors.New("locks: barrier mismatch")
	// ErrItemNotFound: Ack of an item that does not exist or is not handed
	// to the caller's lease.
	ErrItemNotFound = errors.New("locks: queue item not found")
	// ErrSuperseded: another call with the same lease took over the wait.
	ErrSuperseded = errors.New("locks: wait superseded")
)

// Limits.
const (
	MaxNameBytes     = 512
	MaxValueBytes    = 64 << 10 // election values
	MaxPayloadBytes  = 1 << 20  // queue payloads
	MaxPermits       = 1 << 30  // semaphore limit
	DefaultListLimit = 1000
	// MaxRetryOf is the most waiter ids of earlier attempts one Dequeue,
	// Lock or Campaign names (retry_of), and so the most a lock owner
	// keeps in retired_waiter_ids.
	MaxRetryOf = 16
)
