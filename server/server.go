package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/consensus"
	"github.com/catalogd/catalogd/registry"
	"github.com/catalogd/catalogd/server/httpapi"
	"github.com/catalogd/catalogd/server/metrics"
)

// withPprof serves Go's profiler under /debug/pprof/ beside h.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// grpcMaxRecvSize leaves room above registry.MaxRequestSize so that an
// oversized request reaches the handler and gets catalogd's own error.
const grpcMaxRecvSize = registry.MaxRequestSize + 1<<20

// clientWindow is the fixed gRPC flow-control window (per stream and per
// connection) of the client server: 4 MiB in flight per round trip, 80 MB/s
// to a client 50 ms away.
const clientWindow = 4 << 20

// A Server is one catalogd member: raft node, state machine, gRPC and HTTP.
type Server struct {
	cfg     Config
	lg      *slog.Logger
	metrics *metrics.Metrics

	id        uint64
	clusterID uint64
	sm        *stateMachine
	node      *consensus.Node

	// Derived, in-memory state kept in step with the store (applyObserver).
	leases  *leaseManager   // lease deadlines and keep-alives (leader only)
	relay   *keepAliveRelay // a follower's keep-alives to the leader
	watches *watchHub       // watch streams
	checks  *healthChecker  // health checks this server runs
	coord   *lockNotifier   // wakes the blocking coordination calls

	clientLn, peerLn, httpLn net.Listener
	grpcServer               *grpc.Server
	httpServer               *http.Server

	// memberMu makes this leader's membership changes one at a time.
	memberMu sync.Mutex
	// peerClients are connections to other members' client addresses, for
	// forwarding membership requests to the leader.
	peerClients clientConns

	stopOnce sync.Once
	stopc    chan struct{}
	donec    chan struct{}
	wg       sync.WaitGroup
}

// registerStateMetrics exports the leases, watches and health checks of
// this server, read when scraped.
func (s *Server) registerStateMetrics() {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	s.metrics.Registry.MustRegister(
		gauge("catalogd_lease_count", "Leases that exist, as this server has applied them.",
			func() float64 { return float64(s.leases.lessor.Len()) }),
		counter("catalogd_lease_renewals_total", "Keep-alives this server renewed as the leader.", &s.leases.renewals),
		counter("catalogd_lease_expired_revokes_total", "Expired leases this server revoked as the leader.", &s.leases.expired),
		gauge("catalogd_watch_synced_watchers", "Watches on this server receiving changes as they commit (not replaying history).",
			func() float64 { return float64(s.watches.syncedWatchers()) }),
		counter("catalogd_watch_slow_cancels_total", "Watches this server cancelled because their client did not keep up.", &s.watches.slowCancels),
		counter("catalogd_health_probes_total", "Health-check probes this server ran.", &s.checks.probes),
		counter("catalogd_health_transitions_proposed_total", "Health changes this server's checks proposed.", &s.checks.proposals),
		counter("catalogd_lock_grants_total", "Lock, semaphore and election grants applied on this server (every member counts every grant).", &s.coord.grants),
		gauge("catalogd_coordination_waiting_calls", "Calls waiting on this server for a lock, an election, a barrier or a queue item.",
			func() float64 { return float64(s.coord.waiting.Load()) }),
	)
}

// ErrAddrInUse means a listen address is taken by another process.
var ErrAddrInUse = errors.New("address already in use")

// New validates cfg, opens the data dir and binds the listeners. Nothing is
// served until Start.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	lg = lg.With("member", cfg.Name)
	peers, _ := cfg.members()
	s := &Server{cfg: cfg, lg: lg, metrics: metrics.New(), stopc: make(chan struct{}), donec: make(chan struct{})}
	for _, p := range peers {
		if p.Name == cfg.Name {
			s.id = p.ID
		}
	}
	s.clusterID = clusterID(peers)
	joined, err := readJoinInfo(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if !consensus.HasWAL(cfg.DataDir) {
		if err := checkRestored(cfg); err != nil {
			return nil, err
		}
	}

	if s.clientLn, err = listen("--client-addr", cfg.ClientAddr); err != nil {
		return nil, err
	}
	if s.peerLn, err = listen("--peer-addr", cfg.PeerAddr); err != nil {
		s.closeListeners()
		return nil, err
	}
	if s.httpLn, err = listen("--http-addr", cfg.HTTPAddr); err != nil {
		s.closeListeners()
		return nil, err
	}

	if joined == nil && cfg.Join != "" && !consensus.HasWAL(cfg.DataDir) {
		// Listening already, so the leader reaches this server as soon as
		// it is added.
		if joined, err = joinCluster(context.Background(), cfg, lg); err == nil {
			err = writeJoinInfo(cfg.DataDir, joined)
		}
		if err != nil {
			s.closeListeners()
			return nil, err
		}
	}
	if joined != nil {
		s.id, s.clusterID, peers = joined.MemberID, joined.ClusterID, joined.Members
	}

	s.sm, err = openStateMachine(filepath.Join(cfg.DataDir, "member", "state"), cfg.EventHistory, lg, s.metrics)
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	s.leases = newLeaseManager(s)
	s.relay = newKeepAliveRelay(s)
	s.watches = newWatchHub(s)
	s.checks = newHealthChecker(s)
	s.coord = newLockNotifier()
	s.sm.observers = []applyObserver{s.leases, s.watches, s.checks, s.coord}
	s.registerStateMetrics()
	m := s.metrics
	s.node, err = consensus.NewNode(consensus.Config{
		ID:             s.id,
		ClusterID:      s.clusterID,
		Peers:          peers,
		Join:           joined != nil,
		DataDir:        cfg.DataDir,
		TickInterval:   cfg.TickInterval,
		ElectionTicks:  cfg.ElectionTicks,
		SnapshotCount:  cfg.SnapshotCount,
		CatchUpEntries: cfg.CatchUpEntries,
		ProposalHold:   cfg.ProposalHold,
		StateMachine:   s.sm,
		PeerListener:   s.peerLn,
		Logger:         lg,
		Drop:           cfg.Drop,
		Metrics: consensus.Metrics{
			WALFsyncSeconds:    m.WALFsyncDuration,
			ReadIndexSeconds:   m.ReadIndexDuration,
			ProposalsCommitted: m.ProposalsCommitted,
			ProposalsFailed:    m.ProposalsFailed,
			ProposalsPending:   m.ProposalsPending,
			LeaderChanges:      m.LeaderChanges,
			IsLeader:           m.IsLeader,
			HasLeader:          m.HasLeader,
			Term:               m.Term,
			CommitIndex:        m.CommitIndex,
			AppliedIndex:       m.AppliedIndex,
			SnapshotsSaved:     m.SnapshotsSaved,
		},
	})
	if err != nil {
		s.sm.close()
		s.closeListeners()
		return nil, err
	}

	s.grpcServer = grpc.NewServer(
		grpc.MaxRecvMsgSize(grpcMaxRecvSize),
		// Fixed flow-control windows turn off gRPC's bandwidth estimator,
		// whose pings otherwise follow most requests on a busy connection
		// (a write and a read on each side per ping).
		grpc.InitialWindowSize(clientWindow), grpc.InitialConnWindowSize(clientWindow),
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	catalogpb.RegisterKVServer(s.grpcServer, &kvService{s: s})
	catalogpb.RegisterClusterServer(s.grpcServer, &clusterService{s: s})
	catalogpb.RegisterLeaseServer(s.grpcServer, &leaseService{s: s})
	catalogpb.RegisterRegistryServer(s.grpcServer, &registryService{s: s})
	catalogpb.RegisterWatchServer(s.grpcServer, &watchService{s: s})
	catalogpb.RegisterLockServer(s.grpcServer, &lockService{s: s})
	catalogpb.RegisterElectionServer(s.grpcServer, &electionService{s: s})
	catalogpb.RegisterBarrierServer(s.grpcServer, &barrierService{s: s})
	catalogpb.RegisterQueueServer(s.grpcServer, &queueService{s: s})

	handler, err := httpapi.New(httpapi.Config{Backend: httpBackend{s}, Metrics: m, Logger: lg})
	if err != nil {
		s.node.Stop()
		s.sm.close()
		s.closeListeners()
		return nil, fmt.Errorf("build http handler: %w", err)
	}
	if cfg.EnablePprof {
		handler = withPprof(handler)
	}
	s.httpServer = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

func listen(flag, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%s %s: %w by another process: stop it or choose another address with %s", flag, addr, ErrAddrInUse, flag)
		}
		return nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return ln, nil
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.clientLn, s.peerLn, s.httpLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// Start serves raft, gRPC and HTTP, and publishes this member's client
// address once a leader is known.
func (s *Server) Start() {
	s.node.Start()
	go func() {
		// Not in wg: it may call Stop, which waits for wg.
		select {
		case <-s.node.Failed():
			s.lg.Error("stopping: raft stopped", "err", s.node.Err())
			s.Stop(context.Background())
		case <-s.stopc:
		}
	}()
	s.wg.Add(7)
	go func() { defer s.wg.Done(); s.leases.run(s.stopc) }()
	go func() { defer s.wg.Done(); s.watches.run(s.stopc) }()
	go func() {
		defer s.wg.Done()
		if !s.cfg.DisableHealthChecks {
			s.checks.run(s.stopc)
		}
	}()
	go func() {
		defer s.wg.Done()
		if s.cfg.AutoPromote {
			s.autoPromote()
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.grpcServer.Serve(s.clientLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.lg.Error("grpc server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.httpServer.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.lg.Error("http server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.publishAttributes()
	}()
	s.lg.Info("catalogd started", "id", fmt.Sprintf("%x", s.id), "cluster", fmt.Sprintf("%x", s.clusterID),
		"client", s.clientLn.Addr().String(), "peer", s.peerLn.Addr().String(), "http", s.httpLn.Addr().String())
}

// publishAttributes records this member's name and client address in the
// replicated member list, retrying until it is applied or the server stops.
func (s *Server) publishAttributes() {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.node.WaitLeader(ctx)
		if err == nil {
			_, err = s.propose(ctx, &catalogpb.Command{Op: &catalogpb.Command_MemberAttributes{MemberAttributes: &catalogpb.MemberAttributes{
				Id: s.id, Name: s.cfg.Name, ClientAddr: s.clientLn.Addr().String(),
			}}})
		}
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.stopc:
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Stop shuts the server down: a leader first hands leadership to a caught-up
// follower, then clients are drained, then raft stops.
func (s *Server) Stop(ctx context.Context) {
	s.stopOnce.Do(func() {
		close(s.stopc)
		// Raft abandons a transfer after an election timeout; waiting a little
		// longer covers the new leader's first heartbeat.
		handover := s.cfg.TickInterval * time.Duration(s.cfg.ElectionTicks) * 3 / 2
		tctx, cancel := context.WithTimeout(ctx, handover)
		if err := s.node.TransferLeadership(tctx); err != nil {
			s.lg.Warn("leadership not handed over before shutdown", "err", err)
		}
		cancel()
		stopped := make(chan struct{})
		go func() { s.grpcServer.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			s.grpcServer.Stop()
		}
		hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
		_ = s.httpServer.Shutdown(hctx)
		hcancel()
		s.relay.close()
		s.node.Stop()
		s.wg.Wait()
		s.peerClients.close()
		if err := s.sm.close(); err != nil {
			s.lg.Warn("close database", "err", err)
		}
		s.lg.Info("catalogd stopped")
		close(s.donec)
	})
}

// Done returns a channel closed once the server has stopped, whether asked
// to or on its own (removed from the cluster, log lost, disk failure).
func (s *Server) Done() <-chan struct{} { return s.donec }

// Err says why the server stopped on its own, nil if it did not.
func (s *Server) Err() error {
	err := s.node.Err()
	if errors.Is(err, consensus.ErrRemoved) {
		return fmt.Errorf("%w; to add this server back, empty --data-dir %s and start it with --join <client address of a member>", err, s.cfg.DataDir)
	}
	return err
}

// Run starts a server from cfg and serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	s.Start()
	select {
	case <-ctx.Done():
		s.Stop(context.Background())
	case <-s.donec:
	}
	<-s.donec
	return s.Err()
}

// ID returns this member's id.
func (s *Server) ID() uint64 { return s.id }

// ClientAddr returns the address gRPC clients connect to.
func (s *Server) ClientAddr() string { return s.clientLn.Addr().String() }

// HTTPAddr returns the HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// PeerAddr returns the raft peer address.
func (s *Server) PeerAddr() string { return s.peerLn.Addr().String() }

// Leader returns the id of the leader this member knows (0 if none).
func (s *Server) Leader() uint64 { return s.node.Leader() }

// Ready reports whether a leader is known and this member has applied up to
// the commit index it last heard; reason says why not.
func (s *Server) Ready() (bool, string) {
	if s.node.Leader() == 0 {
		return false, "no leader is known"
	}
	applied, commit := s.node.AppliedIndex(), s.node.CommitIndex()
	if applied < commit {
		return false, fmt.Sprintf("applied index %d is behind commit index %d", applied, commit)
	}
	return true, ""
}

func (s *Server) header(rev int64) *catalogpb.ResponseHeader {
	return &catalogpb.ResponseHeader{ClusterId: s.clusterID, MemberId: s.id, Revision: rev, RaftTerm: s.node.Term()}
}

// requestContext bounds a request by the server's timeout when its caller set
// no deadline, and tells the two apart afterwards.
func (s *Server) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, s.cfg.RequestTimeout, errRequestTimeout)
}

// propose replicates cmd and returns what applying it produced.
func (s *Server) propose(ctx context.Context, cmd *catalogpb.Command) (any, error) {
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	id := s.node.NewRequestID()
	cmd.RequestId = id
	cmd.NowUnixNano = time.Now().UnixNano()
	data := mustMarshal(cmd)
	r, err := s.node.Propose(ctx, id, data)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errRequestTimeout) {
			return nil, cause
		}
		return nil, err
	}
	if r.Err != nil {
		return nil, r.Err
	}
	return r.Value, nil
}

// linearize waits until reads on this member see every write acknowledged
// before the call.
func (s *Server) linearize(ctx context.Context) error {
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	if err := s.node.LinearizableRead(ctx); err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errRequestTimeout) {
			return cause
		}
		return err
	}
	return nil
}

// read runs fn in a read transaction: linearizable unless consistency is
// SERIALIZABLE. It returns the revision the read saw and, for a serializable
// read, how many committed entries this member has yet to apply.
func (s *Server) read(ctx context.Context, consistency catalogpb.Consistency, read func(tx *bbolt.Tx) error) (rev int64, staleBy uint64, err error) {
	if consistency != catalogpb.Consistency_SERIALIZABLE {
		if err := s.linearize(ctx); err != nil {
			return 0, 0, err
		}
	}
	err = s.sm.view(func(tx *bbolt.Tx) error {
		rev = readRevision(tx)
		return read(tx)
	})
	if err != nil {
		return 0, 0, err
	}
	if consistency == catalogpb.Consistency_SERIALIZABLE {
		if commit, applied := s.node.CommitIndex(), s.node.AppliedIndex(); commit > applied {
			staleBy = commit - applied
		}
	}
	return rev, staleBy, nil
}
