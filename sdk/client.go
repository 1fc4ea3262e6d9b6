package sdk

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// DefaultMaxRetries is the number of retries when Config.MaxRetries is 0:
// with waits of at most 100 ms between them, enough to ride out an election
// after a partition (one to two seconds).
const DefaultMaxRetries = 20

// A Config says which servers a Client talks to and how patiently.
type Config struct {
	// Endpoints are the servers' client addresses, host:port each. At least one.
	Endpoints []string
	// DialTimeout bounds each attempt to connect to an endpoint; 0 leaves
	// gRPC's default (20s). Connecting is lazy: New never blocks.
	DialTimeout time.Duration
	// RequestTimeout bounds each attempt of a call; 0 means only the caller's
	// context bounds it. A read whose attempt timed out is retried.
	RequestTimeout time.Duration
	// MaxRetries is how many times a retryable call is sent again after its
	// first attempt: 0 means DefaultMaxRetries, a negative value means never.
	MaxRetries int
	// ClusterID, if not 0, pins the client to one cluster: an answer whose
	// header names another cluster fails with ErrWrongCluster. It guards
	// against a server of another cluster that took over an endpoint's
	// address (a test's freed port, a reused host).
	ClusterID uint64
	// DialOptions are added after the client's own (insecure credentials,
	// round-robin balancing), so they may override them.
	DialOptions []grpc.DialOption
}

// Validate reports what is wrong with the config, if anything.
func (cfg Config) Validate() error {
	if len(cfg.Endpoints) == 0 {
		return fmt.Errorf("%w: at least one endpoint (host:port) is required", ErrInvalidArgument)
	}
	for _, ep := range cfg.Endpoints {
		if err := validateEndpoint(ep); err != nil {
			return err
		}
	}
	if cfg.DialTimeout < 0 || cfg.RequestTimeout < 0 {
		return fmt.Errorf("%w: timeouts must be >= 0, got dial %v and request %v",
			ErrInvalidArgument, cfg.DialTimeout, cfg.RequestTimeout)
	}
	return nil
}

func validateEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("%w: endpoint %q must be host:port (for example 127.0.0.1:7400)", ErrInvalidArgument, ep)
	}
	if host == "" || strings.Contains(host, "/") {
		return fmt.Errorf("%w: endpoint %q must be host:port with a host name or IP, without a scheme", ErrInvalidArgument, ep)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%w: endpoint %q: port must be a number in 1..65535, got %q", ErrInvalidArgument, ep, port)
	}
	return nil
}

// A Client talks to a catalogd cluster. It is safe for concurrent use.
type Client struct {
	cfg        Config
	conn       *grpc.ClientConn
	kv         catalogpb.KVClient
	cluster    catalogpb.ClusterClient
	maxRetries int
	// backoffBase and backoffMax shape the wait between retries; tests
	// shorten them. The cap is short on purpose: most retries wait out an
	// election, which takes about a tenth of a second when a leader's process
	// dies, and a client that sleeps a second past it only adds to the outage
	// (etcd's client retries every 25 ms).
	backoffBase time.Duration
	backoffMax  time.Duration
	// sleep waits between retries; tests intercept it.
	sleep func(ctx context.Context, d time.Duration) error
	// watches runs the client's watches over one shared stream.
	watches *watchManager
	// locks carries the helpers' Lock and Unlock calls over one stream.
	locks *lockStream
	// ka renews the client's leases over one stream while it has any;
	// kaMu guards the field.
	kaMu sync.Mutex
	ka   *keepAliver

	mu sync.Mutex
	// endpointConns hold one connection per endpoint asked by StatusOf, which
	// must reach that server and no other.
	endpointConns map[string]*grpc.ClientConn
	closed        bool
}

// New returns a client over cfg.Endpoints. It validates cfg but does not
// connect: the first call does, and a dead endpoint only fails calls when
// every endpoint is dead.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The resolver is given to this connection only (WithResolvers), so
	// clients with different endpoints never share global resolver state.
	r := manual.NewBuilderWithScheme("catalogd")
	endpoints := make([]resolver.Endpoint, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		endpoints[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: ep}}}
	}
	r.InitialState(resolver.State{Endpoints: endpoints})

	opts := append(cfg.baseDialOptions(),
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	)
	opts = append(opts, cfg.DialOptions...)
	conn, err := grpc.NewClient(r.Scheme()+":///"+strings.Join(cfg.Endpoints, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("create connection to %v: %w", cfg.Endpoints, err)
	}

	maxRetries := cfg.MaxRetries
	switch {
	case maxRetries == 0:
		maxRetries = DefaultMaxRetries
	case maxRetries < 0:
		maxRetries = 0
	}
	c := &Client{
		cfg:           cfg,
		conn:          conn,
		kv:            catalogpb.NewKVClient(conn),
		cluster:       catalogpb.NewClusterClient(conn),
		maxRetries:    maxRetries,
		backoffBase:   25 * time.Millisecond,
		backoffMax:    100 * time.Millisecond,
		sleep:         sleepCtx,
		endpointConns: make(map[string]*grpc.ClientConn),
	}
	c.watches = newWatchManager(c)
	c.locks = &lockStream{conn: c.conn, leader: c.leaderConn}
	return c, nil
}

// leaderLookupTimeout bounds the Status call that finds the leader.
const leaderLookupTimeout = time.Second

// leaderConn returns a connection to the raft leader and its term, as a
// server reports them, or nil. The leader is reached at its advertised
// client address, and only when the client reaches the servers at their
// advertised addresses (one of its endpoints is one): behind NAT or a proxy
// the advertised addresses may not be reachable from here.
func (c *Client) leaderConn(ctx context.Context) (*grpc.ClientConn, uint64) {
	ctx, cancel := context.WithTimeout(ctx, leaderLookupTimeout)
	defer cancel()
	st, err := c.cluster.Status(ctx, &catalogpb.StatusRequest{})
	if err != nil || st.GetLeader() == 0 {
		return nil, 0
	}
	var addr string
	advertised := false
	for _, m := range st.GetMembers() {
		if m.GetId() == st.GetLeader() {
			addr = m.GetClientAddr()
		}
		if slices.Contains(c.cfg.Endpoints, m.GetClientAddr()) {
			advertised = true
		}
	}
	if addr == "" || !advertised || validateEndpoint(addr) != nil {
		return nil, 0
	}
	conn, err := c.endpointConn(addr)
	if err != nil {
		return nil, 0
	}
	return conn, st.GetTerm()
}

// baseDialOptions are the options every connection of the client starts with.
func (cfg Config) baseDialOptions() []grpc.DialOption {
	// gRPC's default reconnect backoff grows to two minutes; a restarted
	// server should be used again within seconds.
	connect := grpc.ConnectParams{
		Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
	}
	if cfg.DialTimeout > 0 {
		connect.MinConnectTimeout = cfg.DialTimeout
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(connect),
		// A large range may exceed gRPC's 4 MiB default; the server bounds it.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
		// Fixed flow-control windows turn off gRPC's bandwidth estimator,
		// whose pings otherwise follow most answers on a busy connection.
		// 4 MiB per round trip: 80 MB/s from a server 50 ms away.
		grpc.WithInitialWindowSize(4 << 20), grpc.WithInitialConnWindowSize(4 << 20),
	}
	if cfg.ClusterID != 0 {
		opts = append(opts, grpc.WithChainUnaryInterceptor(checkClusterID(cfg.ClusterID)))
	}
	return opts
}

// checkClusterID refuses answers from a cluster other than want.
func checkClusterID(want uint64) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
		h, ok := reply.(interface {
			GetHeader() *catalogpb.ResponseHeader
		})
		if !ok || h.GetHeader() == nil {
			return nil
		}
		if got := h.GetHeader().GetClusterId(); got != want {
			return fmt.Errorf("%w: %s at %s answered for cluster %x, want %x", ErrWrongCluster, method, cc.Target(), got, want)
		}
		return nil
	}
}

// Endpoints returns the endpoints the client was created with.
func (c *Client) Endpoints() []string { return append([]string(nil), c.cfg.Endpoints...) }

// KV returns the raw generated KV client (no retries, no error mapping).
func (c *Client) KV() catalogpb.KVClient { return c.kv }

// Cluster returns the raw generated Cluster client (no retries, no error mapping).
func (c *Client) Cluster() catalogpb.ClusterClient { return c.cluster }

// Conn returns the client's balanced connection, for generated clients of
// any catalogd service (no retries, no error mapping).
func (c *Client) Conn() grpc.ClientConnInterface { return c.conn }

// Close closes every connection of the client. Calls in flight fail; watches
// end with an error saying the client was closed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	endpointConns := c.endpointConns
	c.endpointConns = nil
	c.mu.Unlock()

	// Before the connection closes, so that watches end with the reason
	// rather than a stream error.
	c.watches.close()
	c.locks.close()
	errs := []error{c.conn.Close()}
	for _, conn := range endpointConns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// Status returns the status of whichever endpoint the balancer picks.
func (c *Client) Status(ctx context.Context) (*catalogpb.StatusResponse, error) {
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.StatusResponse, error) {
		return c.cluster.Status(ctx, &catalogpb.StatusRequest{})
	})
}

// StatusOf returns the status of the server at endpoint (host:port), which
// need not be one of the client's endpoints. It is how a caller sees every
// server of a cluster, not only the one the balancer picks.
func (c *Client) StatusOf(ctx context.Context, endpoint string) (*catalogpb.StatusResponse, error) {
	return callEndpoint(ctx, c, endpoint, func(ctx context.Context, cluster catalogpb.ClusterClient) (*catalogpb.StatusResponse, error) {
		return cluster.Status(ctx, &catalogpb.StatusRequest{})
	})
}

// callEndpoint runs a read-only Cluster call on the server at endpoint,
// retried as reads are.
func callEndpoint[T any](ctx context.Context, c *Client, endpoint string, call func(context.Context, catalogpb.ClusterClient) (T, error)) (T, error) {
	var zero T
	if err := validateEndpoint(endpoint); err != nil {
		return zero, err
	}
	conn, err := c.endpointConn(endpoint)
	if err != nil {
		return zero, err
	}
	cluster := catalogpb.NewClusterClient(conn)
	return invoke(ctx, c, retryReads, func(ctx context.Context) (T, error) { return call(ctx, cluster) })
}

func (c *Client) endpointConn(endpoint string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("status of %s: client is closed", endpoint)
	}
	if conn, ok := c.endpointConns[endpoint]; ok {
		return conn, nil
	}
	opts := append(c.cfg.baseDialOptions(), c.cfg.DialOptions...)
	conn, err := grpc.NewClient("passthrough:///"+endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("create connection to %s: %w", endpoint, err)
	}
	c.endpointConns[endpoint] = conn
	return conn, nil
}
