package sdk

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" for a valid config
	}{
		{"one endpoint", Config{Endpoints: []string{"127.0.0.1:7400"}}, ""},
		{"several endpoints", Config{Endpoints: []string{"a:1", "b.example:65535", "[::1]:7400"}}, ""},
		{"no endpoints", Config{}, "at least one endpoint"},
		{"missing port", Config{Endpoints: []string{"127.0.0.1"}}, `endpoint "127.0.0.1" must be host:port`},
		{"missing host", Config{Endpoints: []string{":7400"}}, `endpoint ":7400" must be host:port with a host`},
		{"scheme", Config{Endpoints: []string{"http://a:7400"}}, "must be host:port"},
		{"port not a number", Config{Endpoints: []string{"a:b"}}, `port must be a number in 1..65535, got "b"`},
		{"port too large", Config{Endpoints: []string{"a:1", "a:70000"}}, `got "70000"`},
		{"negative timeout", Config{Endpoints: []string{"a:1"}, DialTimeout: -1}, "timeouts must be >= 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("Validate() = %v, want errors.Is ErrInvalidArgument", err)
			}
			if _, err := New(tt.cfg); err == nil {
				t.Errorf("New accepted a config Validate refused")
			}
		})
	}
}

func TestRetry(t *testing.T) {
	unavailable := func(*testing.T) error { return status.Error(codes.Unavailable, "connection refused") }
	noLeader := reasonCase(codes.Unavailable, catalogpb.ErrorReason_NO_LEADER, "no leader")
	stopped := reasonCase(codes.Unavailable, catalogpb.ErrorReason_STOPPED, "stopping")
	timeout := reasonCase(codes.DeadlineExceeded, catalogpb.ErrorReason_TIMEOUT, "timed out")
	keyEmpty := reasonCase(codes.InvalidArgument, catalogpb.ErrorReason_KEY_EMPTY, "key is empty")
	calls := map[string]func(context.Context, *Client) error{
		"Get":    func(ctx context.Context, c *Client) error { _, err := c.Get(ctx, "k"); return err },
		"Status": func(ctx context.Context, c *Client) error { _, err := c.Status(ctx); return err },
		"Put":    func(ctx context.Context, c *Client) error { _, err := c.Put(ctx, "k", "v"); return err },
		"Delete": func(ctx context.Context, c *Client) error { _, err := c.Delete(ctx, "k"); return err },
		"Txn": func(ctx context.Context, c *Client) error {
			_, err := c.Txn(ctx, &catalogpb.TxnRequest{})
			return err
		},
	}
	repeat := func(n int, f func(*testing.T) error) []func(*testing.T) error {
		out := make([]func(*testing.T) error, n)
		for i := range out {
			out[i] = f
		}
		return out
	}
	tests := []struct {
		name       string
		method     string
		maxRetries int
		failures   []func(*testing.T) error
		wantCalls  int
		wantErr    error // nil for success
	}{
		{"get retries unavailable", "Get", 0, repeat(3, unavailable), 4, nil},
		{"get retries no leader", "Get", 0, repeat(2, noLeader), 3, nil},
		{"get retries stopped", "Get", 0, repeat(1, stopped), 2, nil},
		{"get gives up after max retries", "Get", 2, repeat(5, unavailable), 3, ErrUnavailable},
		{"get default max retries is 20", "Get", 0, repeat(24, unavailable), DefaultMaxRetries + 1, ErrUnavailable},
		{"negative max retries means no retry", "Get", -1, repeat(1, unavailable), 1, ErrUnavailable},
		{"get does not retry invalid argument", "Get", 0, repeat(1, keyEmpty), 1, ErrKeyEmpty},
		{"status retries unavailable", "Status", 0, repeat(2, unavailable), 3, nil},
		{"put does not retry plain unavailable", "Put", 0, repeat(1, unavailable), 1, ErrUnavailable},
		{"put retries no leader", "Put", 0, repeat(2, noLeader), 3, nil},
		{"put does not retry stopped", "Put", 0, repeat(1, stopped), 1, ErrStopped},
		{"put does not retry timeout", "Put", 0, repeat(1, timeout), 1, ErrTimeout},
		{"put gives up on no leader after max retries", "Put", 1, repeat(3, noLeader), 2, ErrNoLeader},
		{"delete retries no leader", "Delete", 0, repeat(1, noLeader), 2, nil},
		{"delete does not retry plain unavailable", "Delete", 0, repeat(1, unavailable), 1, ErrUnavailable},
		{"txn retries no leader", "Txn", 0, repeat(1, noLeader), 2, nil},
		{"txn does not retry plain unavailable", "Txn", 0, repeat(1, unavailable), 1, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, "a")
			c := newTestClient(t, Config{Endpoints: []string{srv.addr}, MaxRetries: tt.maxRetries})
			for _, f := range tt.failures {
				srv.failNext(f(t))
			}
			err := calls[tt.method](t.Context(), c)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("%s error = %v, want success", tt.method, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("%s error = %v, want errors.Is %v", tt.method, err, tt.wantErr)
			}
			if got := srv.callCount(tt.method); got != tt.wantCalls {
				t.Errorf("%s reached the server %d times, want %d", tt.method, got, tt.wantCalls)
			}
		})
	}
}

func TestRetryNeverWaitsPastContext(t *testing.T) {
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}})
	c.backoffBase = time.Hour
	c.backoffMax = time.Hour

	t.Run("deadline shorter than backoff returns the last error", func(t *testing.T) {
		srv.failNext(status.Error(codes.Unavailable, "down"), status.Error(codes.Unavailable, "down"))
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		before := srv.callCount("Get")
		_, err := c.Get(ctx, "k")
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get error = %v, want ErrUnavailable", err)
		}
		if got := srv.callCount("Get") - before; got != 1 {
			t.Errorf("Get reached the server %d times, want 1", got)
		}
	})
	t.Run("cancel during backoff", func(t *testing.T) {
		srv.failNext(status.Error(codes.Unavailable, "down"), status.Error(codes.Unavailable, "down"))
		ctx, cancel := context.WithCancel(t.Context())
		c.sleep = func(ctx context.Context, d time.Duration) error {
			cancel()
			return sleepCtx(ctx, d)
		}
		_, err := c.Get(ctx, "k")
		if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get error = %v, want both context.Canceled and ErrUnavailable", err)
		}
		if !strings.Contains(err.Error(), "down") {
			t.Errorf("Get error = %q, want the last server message in it", err)
		}
	})
}

func TestRequestTimeoutPerAttempt(t *testing.T) {
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}, RequestTimeout: 50 * time.Millisecond})

	t.Run("read is retried", func(t *testing.T) {
		srv.failNext(errHang)
		if _, err := c.Get(t.Context(), "k"); err != nil {
			t.Fatalf("Get error = %v, want success on the second attempt", err)
		}
		if got := srv.callCount("Get"); got != 2 {
			t.Errorf("Get reached the server %d times, want 2", got)
		}
	})
	t.Run("write is not retried", func(t *testing.T) {
		srv.failNext(errHang)
		_, err := c.Put(t.Context(), "k", "v")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Put error = %v, want context.DeadlineExceeded", err)
		}
		if got := srv.callCount("Put"); got != 1 {
			t.Errorf("Put reached the server %d times, want 1", got)
		}
	})
}

func TestFailover(t *testing.T) {
	t.Run("dead endpoint is skipped", func(t *testing.T) {
		live := startFake(t, "live")
		c := newTestClient(t, Config{Endpoints: []string{deadEndpoint(t), live.addr}, DialTimeout: time.Second})
		for i := range 10 {
			resp, err := c.Get(t.Context(), "k")
			if err != nil {
				t.Fatalf("Get %d: %v", i, err)
			}
			if got := string(resp.Kvs[0].Value); got != "from live" {
				t.Fatalf("Get %d answered %q, want from live", i, got)
			}
		}
	})
	t.Run("load spreads and a stopped server is left", func(t *testing.T) {
		a, b := startFake(t, "a"), startFake(t, "b")
		c := newTestClient(t, Config{Endpoints: []string{a.addr, b.addr}})
		seen := map[string]bool{}
		// Until both connections are ready, the balancer may use one only.
		for deadline := time.Now().Add(5 * time.Second); len(seen) < 2 && time.Now().Before(deadline); {
			resp, err := c.Status(t.Context())
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			seen[resp.Name] = true
		}
		if !seen["a"] || !seen["b"] {
			t.Fatalf("Status answered by %v, want both a and b", seen)
		}
		a.server.Stop()
		for i := range 10 {
			resp, err := c.Get(t.Context(), "k")
			if err != nil {
				t.Fatalf("Get %d after stopping a: %v", i, err)
			}
			if got := string(resp.Kvs[0].Value); got != "from b" {
				t.Fatalf("Get %d after stopping a answered %q, want from b", i, got)
			}
		}
	})
	t.Run("every endpoint dead", func(t *testing.T) {
		c := newTestClient(t, Config{Endpoints: []string{deadEndpoint(t)}, MaxRetries: 1})
		_, err := c.Get(t.Context(), "k")
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get error = %v, want ErrUnavailable", err)
		}
	})
}

func TestStatusOf(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	c := newTestClient(t, Config{Endpoints: []string{a.addr}, MaxRetries: 1})
	for _, tt := range []struct{ endpoint, want string }{{a.addr, "a"}, {b.addr, "b"}, {a.addr, "a"}} {
		resp, err := c.StatusOf(t.Context(), tt.endpoint)
		if err != nil {
			t.Fatalf("StatusOf(%s): %v", tt.endpoint, err)
		}
		if resp.Name != tt.want {
			t.Errorf("StatusOf(%s) answered by %q, want %q", tt.endpoint, resp.Name, tt.want)
		}
	}
	if _, err := c.StatusOf(t.Context(), deadEndpoint(t)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("StatusOf(dead) error = %v, want ErrUnavailable", err)
	}
	if _, err := c.StatusOf(t.Context(), "no-port"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("StatusOf(no-port) error = %v, want ErrInvalidArgument", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := c.StatusOf(t.Context(), b.addr); err == nil {
		t.Errorf("StatusOf after Close succeeded, want an error")
	}
}

func TestRawClients(t *testing.T) {
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}})
	if _, err := c.KV().Put(t.Context(), &catalogpb.PutRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("KV().Put: %v", err)
	}
	resp, err := c.Cluster().Status(t.Context(), &catalogpb.StatusRequest{})
	if err != nil || resp.Name != "a" {
		t.Fatalf("Cluster().Status = %v, %v; want a's status", resp, err)
	}
	// The raw clients neither retry nor map errors.
	srv.failNext(status.Error(codes.Unavailable, "down"))
	_, err = c.KV().Get(t.Context(), &catalogpb.GetRequest{Key: []byte("k")})
	var e *Error
	if errors.As(err, &e) || status.Code(err) != codes.Unavailable {
		t.Errorf("KV().Get error = %#v, want the raw Unavailable status", err)
	}
}

func TestClusterIDPinsTheClient(t *testing.T) {
	f := startFake(t, "a") // answers with cluster id 1
	for _, tc := range []struct {
		name    string
		cluster uint64
		wantErr error
	}{
		{"unpinned", 0, nil},
		{"same cluster", 1, nil},
		{"other cluster", 2, ErrWrongCluster},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{Endpoints: []string{f.addr}, ClusterID: tc.cluster, MaxRetries: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Put(t.Context(), "k", "v")
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Put = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
