package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A locker is what Mutex, RWMutex and Semaphore share: one lock name held,
// at most once, by one session's lease.
type locker struct {
	s     *Session
	name  string
	kind  catalogpb.LockKind
	limit int64
	// what names the helper in errors ("mutex", "RW mutex", "semaphore").
	what string

	mu      sync.Mutex
	token   uint64
	mode    catalogpb.LockMode
	permits int64
	// cleanup closes when the removal of an abandoned wait is over.
	cleanup <-chan struct{}
}

// lock takes the lock (try: only if it can be granted now).
func (l *locker) lock(ctx context.Context, mode catalogpb.LockMode, permits int64, try bool) error {
	l.mu.Lock()
	cleanup := l.cleanup
	token := l.token
	l.mu.Unlock()
	if token != 0 {
		return fmt.Errorf("%w: %s %q is already held by this session with token %d; unlock it first",
			ErrInvalidArgument, l.what, l.name, token)
	}
	if err := awaitCleanup(ctx, cleanup); err != nil {
		return err
	}
	req := &catalogpb.LockRequest{
		Name:    l.name,
		Lease:   l.s.id,
		Kind:    l.kind,
		Mode:    mode,
		Permits: permits,
		Limit:   l.limit,
		Try:     try,
	}
	client := l.s.c.lockClient()
	// Each attempt has its own waiter id (see waitAttempts).
	attempts := &waitAttempts{}
	resp, out, err := waitCall(ctx, l.s.c, l.s, func(ctx context.Context) (*catalogpb.LockResponse, error) {
		req.WaiterId, req.RetryOf = attempts.next()
		return client.Lock(ctx, req)
	})
	if err != nil {
		if out.abandoned && l.s.Err() == nil {
			l.abandon(req, attempts)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("lock %s %q: %w", l.what, l.name, err)
	}
	if !resp.GetAcquired() {
		return fmt.Errorf("%w: %s %q is held (tokens %v) or others wait before this session",
			ErrLocked, l.what, l.name, holderTokens(resp.GetState()))
	}
	l.mu.Lock()
	l.token, l.mode, l.permits = resp.GetToken(), mode, max(permits, 1)
	l.mu.Unlock()
	return nil
}

// abandon starts removing the wait (or hold) the request's attempts may
// have left: each rejoin is a new attempt of the call, which takes over
// that wait (or hold) under its own waiter id.
func (l *locker) abandon(req *catalogpb.LockRequest, attempts *waitAttempts) {
	client := l.s.c.lockClient()
	done := l.s.cleanupWait(func(ctx context.Context) error {
		req.WaiterId, req.RetryOf = attempts.next()
		resp, err := client.Lock(ctx, req)
		if err != nil || !resp.GetAcquired() {
			return err
		}
		_, err = invokeSettle(ctx, l.s.c, settleNotHeld, func(ctx context.Context) (*catalogpb.UnlockResponse, error) {
			return client.Unlock(ctx, &catalogpb.UnlockRequest{Name: l.name, Lease: l.s.id, Token: resp.GetToken()})
		})
		return err
	})
	l.mu.Lock()
	l.cleanup = done
	l.mu.Unlock()
}

// unlock releases the hold taken in mode.
func (l *locker) unlock(ctx context.Context, mode catalogpb.LockMode) error {
	l.mu.Lock()
	token, held := l.token, l.mode
	l.mu.Unlock()
	if token == 0 {
		return fmt.Errorf("%w: %s %q is not held through this helper", ErrNotHeld, l.what, l.name)
	}
	if l.kind == catalogpb.LockKind_LOCK_KIND_RWLOCK && held != mode {
		return fmt.Errorf("%w: RW mutex %q is held in %s mode, not %s", ErrInvalidArgument, l.name, modeName(held), modeName(mode))
	}
	client := l.s.c.lockClient()
	req := &catalogpb.UnlockRequest{Name: l.name, Lease: l.s.id, Token: token}
	_, err := invokeSettle(ctx, l.s.c, settleNotHeld, func(ctx context.Context) (*catalogpb.UnlockResponse, error) {
		return client.Unlock(ctx, req)
	})
	if err == nil || errors.Is(err, ErrNotHeld) || errors.Is(err, ErrLeaseNotFound) {
		// Not held any more, by this call or because the lock moved on.
		l.mu.Lock()
		if l.token == token {
			l.token, l.permits = 0, 0
		}
		l.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("unlock %s %q (token %d): %w", l.what, l.name, token, err)
	}
	return nil
}

func (l *locker) currentToken() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.token
}

func modeName(m catalogpb.LockMode) string {
	if m == catalogpb.LockMode_LOCK_MODE_SHARED {
		return "read (shared)"
	}
	return "write (exclusive)"
}

// holderTokens lists the tokens holding a lock.
func holderTokens(st *catalogpb.LockState) []uint64 {
	tokens := make([]uint64, 0, len(st.GetHolders()))
	for _, h := range st.GetHolders() {
		tokens = append(tokens, h.GetToken())
	}
	return tokens
}

// A Mutex is a lock name held by at most one session at a time, granted in
// arrival order, with a fencing token that increases with every grant: a
// write made under the lock can be guarded by Fence(Name(), Token()) and is
// refused once the lock moved on. Lock blocks on the server (no polling);
// cancelling its context removes the wait. The lock is released by Unlock
// or when the session's lease ends (then Done is closed).
//
// A Mutex is one session's hold on one name: use one Mutex per session and
// name, one Lock at a time. Its methods are safe for concurrent use.
type Mutex struct{ l locker }

// NewMutex returns a mutex on name held through s's lease.
func NewMutex(s *Session, name string) *Mutex {
	return &Mutex{l: locker{s: s, name: name, kind: catalogpb.LockKind_LOCK_KIND_MUTEX, what: "mutex"}}
}

// Lock waits until the mutex is granted to the session, ctx ends (it
// returns ctx.Err() and the wait is removed) or the session ends (its Err).
// A connection lost while waiting (a member that died, a leader change) is
// ridden out: the call is sent again by the same lease, which keeps the
// session's place in line (each attempt with its own waiter id, so that the
// cleanup of an earlier attempt cannot undo what a later one was granted).
func (m *Mutex) Lock(ctx context.Context) error {
	return m.l.lock(ctx, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE, 1, false)
}

// TryLock takes the mutex if it is free and no one waits for it; otherwise
// it fails with ErrLocked and changes nothing.
func (m *Mutex) TryLock(ctx context.Context) error {
	return m.l.lock(ctx, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE, 1, true)
}

// Unlock releases the mutex; the next waiter is granted in the same step,
// with a higher token. A token that no longer holds it (the lease was lost)
// fails with ErrNotHeld.
func (m *Mutex) Unlock(ctx context.Context) error {
	return m.l.unlock(ctx, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE)
}

// Token returns the fencing token of the current hold, 0 when not held.
func (m *Mutex) Token() uint64 { return m.l.currentToken() }

// Name returns the mutex's name.
func (m *Mutex) Name() string { return m.l.name }

// Done is closed when the session's lease is lost (or the session closed):
// a hold, if any, is then gone.
func (m *Mutex) Done() <-chan struct{} { return m.l.s.Done() }

// An RWMutex is a lock name held by many readers or one writer. Waiters
// are granted strictly in arrival order, so a waiting writer holds back the
// readers that come after it and writers are not starved. A session holds
// it once, in one mode. See Mutex for waiting, tokens and Done.
type RWMutex struct{ l locker }

// NewRWMutex returns a read-write mutex on name held through s's lease.
func NewRWMutex(s *Session, name string) *RWMutex {
	return &RWMutex{l: locker{s: s, name: name, kind: catalogpb.LockKind_LOCK_KIND_RWLOCK, what: "RW mutex"}}
}

// RLock waits until the session holds the mutex for reading.
func (m *RWMutex) RLock(ctx context.Context) error {
	return m.l.lock(ctx, catalogpb.LockMode_LOCK_MODE_SHARED, 1, false)
}

// TryRLock takes the mutex for reading if that can be granted now,
// otherwise fails with ErrLocked.
func (m *RWMutex) TryRLock(ctx context.Context) error {
	return m.l.lock(ctx, catalogpb.LockMode_LOCK_MODE_SHARED, 1, true)
}

// RUnlock releases a read hold.
func (m *RWMutex) RUnlock(ctx context.Context) error {
	return m.l.unlock(ctx, catalogpb.LockMode_LOCK_MODE_SHARED)
}

// Lock waits until the session holds the mutex for writing.
func (m *RWMutex) Lock(ctx context.Context) error {
	return m.l.lock(ctx, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE, 1, false)
}

// TryLock takes the mutex for writing if that can be granted now,
// otherwise fails with ErrLocked.
func (m *RWMutex) TryLock(ctx context.Context) error {
	return m.l.lock(ctx, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE, 1, true)
}

// Unlock releases a write hold.
func (m *RWMutex) Unlock(ctx context.Context) error {
	return m.l.unlock(ctx, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE)
}

// Token returns the fencing token of the current hold (read or write), 0
// when not held.
func (m *RWMutex) Token() uint64 { return m.l.currentToken() }

// Name returns the mutex's name.
func (m *RWMutex) Name() string { return m.l.name }

// Done is closed when the session's lease is lost (or the session closed).
func (m *RWMutex) Done() <-chan struct{} { return m.l.s.Done() }

// A Semaphore is a lock name with a fixed number of permits: holders take
// some of them, and waiters are granted in arrival order when enough are
// free. The limit is fixed by the first user while the semaphore exists;
// asking for another one, or for more permits than the limit, fails with
// ErrPermitsExceeded. See Mutex for waiting, tokens and Done.
type Semaphore struct{ l locker }

// NewSemaphore returns a semaphore of limit permits on name, taken through
// s's lease.
func NewSemaphore(s *Session, name string, limit int64) *Semaphore {
	return &Semaphore{l: locker{s: s, name: name, kind: catalogpb.LockKind_LOCK_KIND_SEMAPHORE, limit: limit, what: "semaphore"}}
}

// Acquire waits until the session holds n permits (n ≥ 1).
func (m *Semaphore) Acquire(ctx context.Context, n int64) error {
	if n < 1 {
		return fmt.Errorf("%w: acquire of semaphore %q: permits must be 1..%d, got %d", ErrInvalidArgument, m.l.name, m.l.limit, n)
	}
	return m.l.lock(ctx, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE, n, false)
}

// TryAcquire takes n permits if they can be granted now, otherwise fails
// with ErrLocked.
func (m *Semaphore) TryAcquire(ctx context.Context, n int64) error {
	if n < 1 {
		return fmt.Errorf("%w: acquire of semaphore %q: permits must be 1..%d, got %d", ErrInvalidArgument, m.l.name, m.l.limit, n)
	}
	return m.l.lock(ctx, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE, n, true)
}

// Release gives back the permits held.
func (m *Semaphore) Release(ctx context.Context) error {
	return m.l.unlock(ctx, catalogpb.LockMode_LOCK_MODE_EXCLUSIVE)
}

// Token returns the fencing token of the current hold, 0 when not held.
func (m *Semaphore) Token() uint64 { return m.l.currentToken() }

// Permits returns the number of permits held, 0 when not held.
func (m *Semaphore) Permits() int64 {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	return m.l.permits
}

// Limit returns the semaphore's number of permits as given to NewSemaphore.
func (m *Semaphore) Limit() int64 { return m.l.limit }

// Name returns the semaphore's name.
func (m *Semaphore) Name() string { return m.l.name }

// Done is closed when the session's lease is lost (or the session closed).
func (m *Semaphore) Done() <-chan struct{} { return m.l.s.Done() }
