package sdk

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
)

// A retryPolicy says which failures a call may be sent again after.
type retryPolicy int

const (
	// retryReads is for calls that change nothing: any Unavailable failure,
	// and an attempt cut by Config.RequestTimeout, is retried.
	retryReads retryPolicy = iota
	// retryWrites is for calls that change state: only NO_LEADER is retried,
	// because only it guarantees the write was not proposed.
	retryWrites
)

// invoke runs call until it succeeds, fails in a way policy does not retry,
// runs out of retries, or ctx ends. Errors come back mapped by toError.
func invoke[T any](ctx context.Context, c *Client, policy retryPolicy, call func(context.Context) (T, error)) (T, error) {
	for try := 0; ; try++ {
		resp, attemptTimedOut, err := attempt(ctx, c.cfg.RequestTimeout, call)
		if err == nil {
			return resp, nil
		}
		err = toError(err)
		if try >= c.maxRetries || ctx.Err() != nil || !retryable(policy, err, attemptTimedOut) {
			return resp, err
		}
		wait := c.backoff(try)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return resp, err
		}
		if ctxErr := c.sleep(ctx, wait); ctxErr != nil {
			return resp, fmt.Errorf("%w while waiting to retry after: %w", ctxErr, err)
		}
	}
}

// sleepCtx waits for d, or returns ctx's error if ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// attempt runs call once under Config.RequestTimeout and reports whether that
// timeout (not the caller's context) cut it short.
func attempt[T any](ctx context.Context, requestTimeout time.Duration, call func(context.Context) (T, error)) (T, bool, error) {
	if requestTimeout <= 0 {
		resp, err := call(ctx)
		return resp, false, err
	}
	attemptCtx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := call(attemptCtx)
	// The server may end the call on the deadline gRPC sent it a moment
	// before attemptCtx itself expires, so a plain DeadlineExceeded status
	// (no catalogd reason) under a live ctx counts as the attempt's timeout.
	timedOut := err != nil && ctx.Err() == nil &&
		(attemptCtx.Err() != nil || errors.Is(toError(err), context.DeadlineExceeded))
	return resp, timedOut, err
}

func retryable(policy retryPolicy, err error, attemptTimedOut bool) bool {
	if errors.Is(err, ErrNoLeader) {
		return true
	}
	if policy != retryReads {
		return false
	}
	var e *Error
	if errors.As(err, &e) && e.Code == codes.Unavailable {
		return true
	}
	return attemptTimedOut
}

// backoff returns the wait before retry number attempt+1: exponential from
// backoffBase, capped at backoffMax, with jitter in its upper half so that
// clients failing together do not retry together.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.backoffMax
	if attempt < 30 {
		d = min(c.backoffBase<<attempt, c.backoffMax)
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}
