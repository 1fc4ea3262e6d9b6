package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultSessionTTL is the TTL of the lease NewSession grants when no
// WithSessionTTL is given (etcd's concurrency sessions use the same).
const DefaultSessionTTL = 60 * time.Second

// ErrSessionClosed is a Session's Err after Close or Orphan, or after its
// Client was closed.
var ErrSessionClosed = errors.New("sdk: session closed")

// A SessionOption changes how NewSession makes a session.
type SessionOption func(*sessionSettings)

type sessionSettings struct {
	ttl    time.Duration
	ttlSet bool
	lease  int64
}

// WithSessionTTL sets the TTL of the lease NewSession grants (default
// DefaultSessionTTL): how long the locks, elections, barriers and queue
// items of a session outlive its process. It is rounded up to whole seconds
// and the servers bound it (ErrTTLOutOfRange names the bounds).
func WithSessionTTL(ttl time.Duration) SessionOption {
	return func(s *sessionSettings) { s.ttl, s.ttlSet = ttl, true }
}

// WithSessionLease makes the session use lease id, which must exist, instead
// of granting one: a process restarted with the lease of its previous run
// finds the places that lease holds or waits for. The session keeps the
// lease alive and Close revokes it, as for a lease it granted.
func WithSessionLease(id int64) SessionOption {
	return func(s *sessionSettings) { s.lease = id }
}

// A Session is a lease kept alive for coordination: the Mutex, RWMutex,
// Semaphore, Election, DoubleBarrier and Queue helpers made with it hold,
// wait and consume on its lease, and all of that ends with the lease. Done
// is closed when the lease is lost (it expired or was revoked, or no renewal
// was answered for a whole TTL, after which the servers may have expired it)
// or on Close or Orphan; from then on the helpers' fencing tokens must be
// taken as stale. It is safe for concurrent use.
type Session struct {
	c   *Client
	id  int64
	ttl time.Duration
	ka  *KeepAlive

	// ctx ends with the session; its cause is the session's Err.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// loopc closes when the goroutine watching the keep-alive returns.
	loopc chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// NewSession grants a lease (WithSessionTTL) or takes an existing one
// (WithSessionLease) and keeps it alive until Close, Orphan, or its loss.
// ctx bounds the setup only.
func NewSession(ctx context.Context, c *Client, opts ...SessionOption) (*Session, error) {
	set := sessionSettings{ttl: DefaultSessionTTL}
	for _, opt := range opts {
		if opt != nil {
			opt(&set)
		}
	}
	switch {
	case set.ttl <= 0:
		return nil, fmt.Errorf("%w: WithSessionTTL: the TTL must be positive, got %v", ErrInvalidArgument, set.ttl)
	case set.lease < 0:
		return nil, fmt.Errorf("%w: WithSessionLease: lease id must be positive, got %d", ErrInvalidArgument, set.lease)
	case set.ttlSet && set.lease != 0:
		return nil, fmt.Errorf("%w: WithSessionTTL and WithSessionLease exclude each other: an existing lease has its own TTL", ErrInvalidArgument)
	}

	start := time.Now()
	id, granted := set.lease, false
	var ttlSeconds int64
	if id == 0 {
		resp, err := c.Grant(ctx, set.ttl)
		if err != nil {
			return nil, fmt.Errorf("grant a session lease: %w", err)
		}
		id, ttlSeconds, granted = resp.GetId(), resp.GetTtlSeconds(), true
	} else {
		resp, err := c.KeepAliveOnce(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("renew session lease %d: %w", id, err)
		}
		ttlSeconds = resp.GetTtlSeconds()
	}
	ka, err := c.KeepAlive(context.Background(), id)
	if err != nil {
		if granted {
			revokeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _ = c.Revoke(revokeCtx, id)
			cancel()
		}
		return nil, fmt.Errorf("keep session lease %d alive: %w", id, err)
	}
	s := &Session{c: c, id: id, ttl: time.Duration(ttlSeconds) * time.Second, ka: ka, loopc: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	go s.watchLease(start.Add(s.ttl))
	return s, nil
}

// watchLease ends the session when the keep-alive ends or when no renewal
// was answered before deadline, the lease's expiry as the client knows it.
func (s *Session) watchLease(deadline time.Time) {
	defer close(s.loopc)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case resp := <-s.ka.C():
			ttl := time.Duration(resp.GetTtlSeconds()) * time.Second
			timer.Reset(ttl)
		case <-s.ka.Done():
			err := s.ka.Err()
			if errors.Is(err, ErrKeepAliveStopped) {
				err = fmt.Errorf("%w: %w", ErrSessionClosed, err)
			}
			s.cancel(fmt.Errorf("session lease %d: %w", s.id, err))
			return
		case <-timer.C:
			s.cancel(fmt.Errorf("%w: session lease %d presumed expired: no renewal was answered for its TTL of %v",
				ErrLeaseNotFound, s.id, s.ttl))
			s.ka.Stop()
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// Client returns the client the session was made with.
func (s *Session) Client() *Client { return s.c }

// Lease returns the session's lease id.
func (s *Session) Lease() int64 { return s.id }

// TTL returns the lease's TTL as the servers granted it.
func (s *Session) TTL() time.Duration { return s.ttl }

// Done is closed when the session ends: its lease was lost, or Close or
// Orphan was called.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Err says why the session ended, once Done is closed: an error matching
// ErrLeaseNotFound when the lease was lost, ErrSessionClosed after Close,
// Orphan or the client's Close. Nil while the session lives.
func (s *Session) Err() error {
	if s.ctx.Err() == nil {
		return nil
	}
	return context.Cause(s.ctx)
}

// Close ends the session and revokes its lease, which releases everything
// the session holds and removes its waits at once (rather than after the
// TTL). Blocking calls of its helpers in progress return the session's Err.
// Calling it again returns the same answer.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.cancel(fmt.Errorf("%w: Close revoked lease %d", ErrSessionClosed, s.id))
		s.ka.Stop()
		<-s.loopc
		ctx, cancel := context.WithTimeout(context.Background(), max(s.ttl, 5*time.Second))
		defer cancel()
		if _, err := s.c.Revoke(ctx, s.id); err != nil && !errors.Is(err, ErrLeaseNotFound) {
			s.closeErr = fmt.Errorf("revoke session lease %d: %w", s.id, err)
		}
	})
	return s.closeErr
}

// Orphan ends the session without revoking its lease: the lease expires
// after its TTL unless another process renews it (see WithSessionLease).
func (s *Session) Orphan() {
	s.cancel(fmt.Errorf("%w: lease %d orphaned (left to expire)", ErrSessionClosed, s.id))
	s.ka.Stop()
	<-s.loopc
}

// bind returns a context that ends when ctx or the session ends.
func (s *Session) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	bound, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.ctx, func() { cancel(context.Cause(s.ctx)) })
	return bound, func() {
		stop()
		cancel(nil)
	}
}
