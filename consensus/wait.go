package consensus

import (
	"sync"
)

// waitShards spreads waiters over several locks: thousands of proposals per
// second register and trigger concurrently from client handlers and apply.
const waitShards = 64

// A waitRegistry hands the result of an applied proposal to the caller that
// proposed it, keyed by request id (etcd's pkg/wait).
type waitRegistry struct {
	shards [waitShards]struct {
		mu sync.Mutex
		m  map[uint64]chan Result
	}
}

func newWaitRegistry() *waitRegistry {
	w := &waitRegistry{}
	for i := range w.shards {
		w.shards[i].m = make(map[uint64]chan Result)
	}
	return w
}

// register returns the channel on which the result for id arrives. An id
// registered twice is a programming error: ids are unique per member.
func (w *waitRegistry) register(id uint64) <-chan Result {
	s := &w.shards[id%waitShards]
	ch := make(chan Result, 1)
	s.mu.Lock()
	if _, dup := s.m[id]; dup {
		s.mu.Unlock()
		panic("consensus: duplicate request id registered")
	}
	s.m[id] = ch
	s.mu.Unlock()
	return ch
}

// trigger delivers r to the waiter of r.ID, if this member has one.
func (w *waitRegistry) trigger(id uint64, r Result) bool {
	s := &w.shards[id%waitShards]
	s.mu.Lock()
	ch, ok := s.m[id]
	delete(s.m, id)
	s.mu.Unlock()
	if ok {
		ch <- r
	}
	return ok
}

// cancel forgets the waiter of id (its caller gave up).
func (w *waitRegistry) cancel(id uint64) {
	s := &w.shards[id%waitShards]
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// failAll wakes every waiter with err (used at shutdown).
func (w *waitRegistry) failAll(err error) {
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		for id, ch := range s.m {
			ch <- Result{ID: id, Err: err}
			delete(s.m, id)
		}
		s.mu.Unlock()
	}
}

// An indexWait lets readers wait until the applied index reaches a value.
type indexWait struct {
	mu      sync.Mutex
	reached uint64
	waiters map[uint64]chan struct{}
}

func newIndexWait(reached uint64) *indexWait {
	return &indexWait{reached: reached, waiters: make(map[uint64]chan struct{})}
}

var closedC = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// wait returns a channel closed once the index reaches idx.
func (iw *indexWait) wait(idx uint64) <-chan struct{} {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	if idx <= iw.reached {
		return closedC
	}
	ch, ok := iw.waiters[idx]
	if !ok {
		ch = make(chan struct{})
		iw.waiters[idx] = ch
	}
	return ch
}

// advance records that the index reached idx and wakes the waiters it satisfies.
func (iw *indexWait) advance(idx uint64) {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	if idx <= iw.reached {
		return
	}
	iw.reached = idx
	for i, ch := range iw.waiters {
		if i <= idx {
			close(ch)
			delete(iw.waiters, i)
		}
	}
}
