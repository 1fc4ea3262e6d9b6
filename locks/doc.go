// Package locks is catalogd's coordination state: mutexes, read-write locks,
// semaphores and elections (one model: a lock name with holders and a FIFO
// of waiters), simple and double barriers, and work queues. Holders,
// waiters, barrier participants, waiting consumers and handed-out queue
// items are replicated state attached to leases: a lease revoked releases
// what it held and grants the next waiters in the same apply.
//
// Every grant takes a fencing token from one counter that strictly
// increases across all names, so a token never repeats, even after a name
// was deleted and used again.
//
// Like the other domain packages it never imports consensus, server, grpc
// or net/http: Apply runs inside the state machine's bbolt write
// transaction, the read functions inside a read transaction.
package locks
