package sdk

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// Opening the lock stream against a server that accepts connections but
// never answers waits for a connection: each call waits only as long as its
// own context allows, the one opening the stream included.
func TestLockStreamOpeningEndsWithTheCallersContext(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn) // silent: no HTTP/2 handshake
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	// A long connect timeout: the handshake would be waited for 30s.
	c := newTestClient(t, Config{Endpoints: []string{lis.Addr().String()}, DialTimeout: 30 * time.Second})
	lc := c.lockClient()

	type result struct {
		err     error
		elapsed time.Duration
	}
	call := func(timeout time.Duration) <-chan result {
		out := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			start := time.Now()
			_, err := lc.Lock(ctx, &catalogpb.LockRequest{Name: "a", Lease: 1})
			out <- result{err, time.Since(start)}
		}()
		return out
	}
	// The first call opens the stream; the second waits for that opening.
	first := call(300 * time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	second := call(100 * time.Millisecond)
	for name, ch := range map[string]<-chan result{"opening call": first, "waiting call": second} {
		select {
		case r := <-ch:
			if status.Code(r.err) != codes.DeadlineExceeded {
				t.Errorf("%s ended with %v, want DeadlineExceeded", name, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not end with its context", name)
		}
	}
}
