package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/consensus"
	"github.com/catalogd/catalogd/locks"
)

// maxSubscriberRevisions bounds the revisions queued for one waiting call
// and not yet looked at; past it the call is told it missed some and
// re-reads the state from the store.
const maxSubscriberRevisions = 1024

// A lockNotifier wakes the blocking coordination calls of this member (Lock,
// Campaign, Observe, the barriers' Wait, Enter and Leave, Dequeue) when the
// name they wait on changes. It is an early applyObserver (it learns of a
// batch's events when their results are delivered, before the commit): the
// events reach it in revision order, and each carries the state after the
// change, so a call follows its name without polling and without reading
// the store. A call subscribes before it proposes, so that nothing after
// its proposal's apply is missed; a call that must read the store (after
// missed changes) reads through sm.view, which waits for the commit.
type lockNotifier struct {
	mu   sync.Mutex
	subs map[notifyKey]map[*lockSub]struct{}

	// grants counts the lock grants applied on this member; waiting counts
	// the calls waiting in it (metrics).
	grants  atomic.Int64
	waiting atomic.Int64
}

// A notifyKey names what a call waits on: an event kind (locks.LockKind,
// locks.BarrierKind or locks.QueueKind) and a lock, barrier or queue name.
type notifyKey struct {
	kind string
	name string
}

// A lockSub is one call's subscription to one name.
type lockSub struct {
	n   *lockNotifier
	key notifyKey
	// wakeC has a value when pending or missed changed.
	wakeC chan struct{}

	mu      sync.Mutex
	pending []revEvents
	// missed: revisions were dropped (the queue was full, or the store was
	// replaced by a snapshot); the call must re-read the state.
	missed bool
}

// revEvents are the events of one revision about one name.
type revEvents struct {
	rev    int64
	events []*catalogpb.Event
}

func newLockNotifier() *lockNotifier {
	return &lockNotifier{subs: make(map[notifyKey]map[*lockSub]struct{})}
}

// subscribe starts following the changes of name (of event kind kind).
// The caller must close the subscription.
func (n *lockNotifier) subscribe(kind, name string) *lockSub {
	sub := &lockSub{n: n, key: notifyKey{kind, name}, wakeC: make(chan struct{}, 1)}
	n.mu.Lock()
	defer n.mu.Unlock()
	set := n.subs[sub.key]
	if set == nil {
		set = make(map[*lockSub]struct{})
		n.subs[sub.key] = set
	}
	set[sub] = struct{}{}
	return sub
}

func (sub *lockSub) close() {
	n := sub.n
	n.mu.Lock()
	defer n.mu.Unlock()
	set := n.subs[sub.key]
	delete(set, sub)
	if len(set) == 0 {
		delete(n.subs, sub.key)
	}
}

// take returns and forgets what was queued: the revisions in order, and
// whether some were dropped before them.
func (sub *lockSub) take() ([]revEvents, bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	p, missed := sub.pending, sub.missed
	sub.pending, sub.missed = nil, false
	return p, missed
}

func (sub *lockSub) push(r revEvents) {
	sub.mu.Lock()
	if len(sub.pending) >= maxSubscriberRevisions {
		sub.pending, sub.missed = nil, true
	} else {
		sub.pending = append(sub.pending, r)
	}
	sub.mu.Unlock()
	sub.wake()
}

func (sub *lockSub) wake() {
	select {
	case sub.wakeC <- struct{}{}:
	default:
	}
}

// notifyKeyOf is the key of a coordination event, ok false for other kinds.
func notifyKeyOf(e *catalogpb.Event) (notifyKey, bool) {
	switch e.Kind {
	case locks.LockKind, locks.BarrierKind:
		return notifyKey{e.Kind, string(e.GetKv().GetKey())}, true
	case locks.QueueKind:
		return notifyKey{e.Kind, queueOfEvent(e)}, true
	}
	return notifyKey{}, false
}

// Applied implements applyObserver: each subscriber of a name changed gets
// that name's events, one revision at a time. It never waits.
func (n *lockNotifier) Applied(rev int64, batches []*catalogpb.EventBatch) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, b := range batches {
		var byKey map[notifyKey][]*catalogpb.Event
		for _, e := range b.Events {
			key, ok := notifyKeyOf(e)
			if !ok {
				continue
			}
			if e.Kind == locks.LockKind {
				for _, h := range e.GetLock().GetHolders() {
					if h.GetRevision() == b.Revision {
						n.grants.Add(1)
					}
				}
			}
			if len(n.subs[key]) == 0 {
				continue
			}
			if byKey == nil {
				byKey = make(map[notifyKey][]*catalogpb.Event)
			}
			byKey[key] = append(byKey[key], e)
		}
		for key, evs := range byKey {
			for sub := range n.subs[key] {
				sub.push(revEvents{rev: b.Revision, events: evs})
			}
		}
	}
}

// Restored implements applyObserver: revisions were skipped, so every
// waiting call re-reads its state.
func (n *lockNotifier) Restored(rev int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, set := range n.subs {
		for sub := range set {
			sub.mu.Lock()
			sub.pending, sub.missed = nil, true
			sub.mu.Unlock()
			sub.wake()
		}
	}
}

// errServerStopping ends the waiting calls of a member that is shutting
// down. Their waits stay in the replicated state: the client retries on
// another member with the same lease and waiter_id and keeps its place.
var errServerStopping = fmt.Errorf("%w: this member is shutting down; retry on another member with the same lease and waiter_id to keep your place", consensus.ErrStopped)

// A followFunc looks at the changes of a name, in revision order; done ends
// the wait.
type followFunc func(rev int64, evs []*catalogpb.Event) (done bool, err error)

// A rereadFunc looks at the state of a name as the store holds it now,
// after changes were missed, and returns the revision it read.
type rereadFunc func() (rev int64, done bool, err error)

// follow waits on sub until onChange or reread says done. onChange sees
// each revision after after; reread is called instead when revisions were
// missed, and re-reads the state from the store. It returns ctx's error
// when ctx ends, and errServerStopping when the member stops.
func (s *Server) follow(ctx context.Context, sub *lockSub, after int64, onChange followFunc, reread rereadFunc) error {
	s.coord.waiting.Add(1)
	defer s.coord.waiting.Add(-1)
	for {
		pending, missed := sub.take()
		if missed {
			rev, done, err := reread()
			if done || err != nil {
				return err
			}
			// Changes queued meanwhile are in what was read.
			after = max(after, rev)
		}
		for _, r := range pending {
			if r.rev <= after {
				continue
			}
			after = r.rev
			done, err := onChange(r.rev, r.events)
			if done || err != nil {
				return err
			}
		}
		select {
		case <-sub.wakeC:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopc:
			return errServerStopping
		}
	}
}

// stopping reports whether the member is shutting down.
func (s *Server) stopping() bool {
	select {
	case <-s.stopc:
		return true
	default:
		return false
	}
}
