package framework

import (
	"context"
	"testing"
	"time"
)

// pollInterval is the pause between two checks of Eventually.
const pollInterval = 25 * time.Millisecond

// Eventually calls cond until it returns nil, and fails t if that does not
// happen within timeout, with what and cond's last error. The ctx given to
// cond ends at the deadline (or when the test ends).
func Eventually(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := cond(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %v; last check: %v", what, timeout, err)
			return
		case <-tick.C:
		}
	}
}
