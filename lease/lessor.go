package lease

import (
	"container/heap"
	"errors"
	"sync"
	"time"
)

// ErrNotPrimary means the Lessor holds no deadlines: this member is not the
// leader, or has not finished taking over as one.
var ErrNotPrimary = errors.New("lease: this member does not hold lease deadlines (it is not the leader)")

// A Lessor keeps the leases' deadlines in memory. Every member keeps the set
// of leases (id and TTL) in step with the store through Grant and Revoke;
// only the primary (the leader) holds deadlines, renews them and finds the
// expired. Nothing here is replicated: a new leader starts every lease's
// clock afresh with Promote, so a failover never expires a lease early.
//
// The clock is the caller's: every method that needs the time takes now.
// A Lessor is safe for concurrent use.
type Lessor struct {
	mu      sync.Mutex
	leases  map[int64]*held
	queue   deadlineQueue // the primary's leases not being revoked, soonest deadline first
	primary bool
}

// held is one lease as the Lessor knows it.
type held struct {
	id       int64
	ttl      int64 // seconds
	deadline time.Time
	// index is the position in the queue, -1 when not queued (not primary,
	// or the lease expired and its revoke is under way).
	index int
	// expired is set once Expired returned the lease: it stays expired (a
	// failed revoke is retried) until a new leader promotes.
	expired bool
}

// A Lease is what the Lessor needs of a stored lease.
type Lease struct {
	ID         int64
	TTLSeconds int64
}

// NewLessor returns an empty Lessor that is not primary.
func NewLessor() *Lessor {
	return &Lessor{leases: make(map[int64]*held)}
}

func (h *held) ttlDuration() time.Duration { return time.Duration(h.ttl) * time.Second }

// Reset replaces the set of leases with leases (after the store was replaced
// by a snapshot, or at start). A primary keeps the deadlines of the leases it
// already held and gives the others now+TTL.
func (l *Lessor) Reset(now time.Time, leases []Lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.leases
	l.leases = make(map[int64]*held, len(leases))
	l.queue = l.queue[:0]
	for _, le := range leases {
		h := &held{id: le.ID, ttl: le.TTLSeconds, index: -1}
		if prev, ok := old[le.ID]; ok && l.primary {
			h.deadline, h.expired = prev.deadline, prev.expired
			if prev.index < 0 {
				// Its revoke is under way; it stays out of the queue.
				l.leases[le.ID] = h
				continue
			}
		} else {
			h.deadline = now.Add(h.ttlDuration())
		}
		l.leases[le.ID] = h
		if l.primary {
			h.index = len(l.queue)
			l.queue = append(l.queue, h)
		}
	}
	heap.Init(&l.queue)
}

// Grant adds a lease granted through the log. On the primary its deadline
// is now+TTL. Granting a lease already held restarts its clock.
func (l *Lessor) Grant(id, ttlSeconds int64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h, ok := l.leases[id]; ok {
		h.ttl = ttlSeconds
		h.expired = false
		if l.primary {
			h.deadline = now.Add(h.ttlDuration())
			l.enqueue(h)
		}
		return
	}
	h := &held{id: id, ttl: ttlSeconds, index: -1}
	l.leases[id] = h
	if l.primary {
		h.deadline = now.Add(h.ttlDuration())
		heap.Push(&l.queue, h)
	}
}

// enqueue puts h into the queue, or moves it to its new deadline.
func (l *Lessor) enqueue(h *held) {
	if h.index >= 0 {
		heap.Fix(&l.queue, h.index)
		return
	}
	heap.Push(&l.queue, h)
}

// Revoke forgets a lease revoked through the log; an unknown id is ignored.
func (l *Lessor) Revoke(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.leases[id]
	if !ok {
		return
	}
	delete(l.leases, id)
	if h.index >= 0 {
		heap.Remove(&l.queue, h.index)
	}
}

// Promote makes the Lessor primary and sets every lease's deadline to
// now+TTL: a new leader extends every lease by its TTL before it expires
// any. Promoting a primary again restarts every clock again.
func (l *Lessor) Promote(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.primary = true
	l.queue = l.queue[:0]
	for _, h := range l.leases {
		h.deadline = now.Add(h.ttlDuration())
		h.expired = false
		h.index = len(l.queue)
		l.queue = append(l.queue, h)
	}
	heap.Init(&l.queue)
}

// Demote drops every deadline: this member is no longer the leader.
func (l *Lessor) Demote() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.primary = false
	for _, h := range l.queue {
		h.index = -1
	}
	for _, h := range l.leases {
		h.index = -1
		h.deadline = time.Time{}
		h.expired = false
	}
	clear(l.queue)
	l.queue = l.queue[:0]
}

// Primary reports whether the Lessor holds deadlines.
func (l *Lessor) Primary() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.primary
}

// Renew extends lease id to now+TTL and returns its TTL in seconds. It fails
// with ErrNotPrimary off the leader, and with ErrNotFound for a lease that
// does not exist or whose deadline passed (its revoke is coming: an expired
// lease is never brought back).
func (l *Lessor) Renew(id int64, now time.Time) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.primary {
		return 0, ErrNotPrimary
	}
	h, ok := l.leases[id]
	if !ok || h.expired || !now.Before(h.deadline) {
		return 0, ErrNotFound
	}
	h.deadline = now.Add(h.ttlDuration())
	heap.Fix(&l.queue, h.index)
	return h.ttl, nil
}

// Remaining returns the time lease id has left (0 once its deadline passed)
// and its granted TTL in seconds. It fails with ErrNotPrimary off the
// leader and ErrNotFound for an unknown lease.
func (l *Lessor) Remaining(id int64, now time.Time) (time.Duration, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.primary {
		return 0, 0, ErrNotPrimary
	}
	h, ok := l.leases[id]
	if !ok {
		return 0, 0, ErrNotFound
	}
	if h.expired {
		return 0, h.ttl, nil
	}
	return max(h.deadline.Sub(now), 0), h.ttl, nil
}

// Expired returns at most max leases whose deadline is at or before now,
// soonest deadline first, and marks them as being revoked: they are not
// returned again (and cannot be renewed) unless RetryLater puts them back.
// It returns nothing off the leader.
func (l *Lessor) Expired(now time.Time, max int) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []int64
	for len(ids) < max && len(l.queue) > 0 && !l.queue[0].deadline.After(now) {
		h := heap.Pop(&l.queue).(*held)
		h.expired = true
		ids = append(ids, h.id)
	}
	return ids
}

// RetryLater puts back an expired lease whose revoke failed: Expired
// returns it again at at. It stays expired meanwhile (not renewable, no
// time left). It does nothing if the lease is gone, not being revoked, or
// the Lessor is no longer primary (a new leader starts its clock afresh).
func (l *Lessor) RetryLater(id int64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.leases[id]
	if !ok || !l.primary || h.index >= 0 {
		return
	}
	h.deadline = at
	heap.Push(&l.queue, h)
}

// NextDeadline returns the soonest deadline of a lease not being revoked;
// ok is false when there is none (or the Lessor is not primary).
func (l *Lessor) NextDeadline() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		return time.Time{}, false
	}
	return l.queue[0].deadline, true
}

// TTL returns the granted TTL of lease id in seconds, on any member.
func (l *Lessor) TTL(id int64) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.leases[id]
	if !ok {
		return 0, false
	}
	return h.ttl, true
}

// Len returns the number of leases known.
func (l *Lessor) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.leases)
}

// deadlineQueue is a min-heap of leases by deadline, then id (so that equal
// deadlines come out in a stable order).
type deadlineQueue []*held

func (q deadlineQueue) Len() int { return len(q) }

func (q deadlineQueue) Less(i, j int) bool {
	if c := q[i].deadline.Compare(q[j].deadline); c != 0 {
		return c < 0
	}
	return q[i].id < q[j].id
}

func (q deadlineQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}

func (q *deadlineQueue) Push(x any) {
	h := x.(*held)
	h.index = len(*q)
	*q = append(*q, h)
}

func (q *deadlineQueue) Pop() any {
	old := *q
	n := len(old)
	h := old[n-1]
	old[n-1] = nil
	h.index = -1
	*q = old[:n-1]
	return h
}
