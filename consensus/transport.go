package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// MaxMessageSize is the largest gRPC message the peer transport sends (one
// RaftBatch). The peer gRPC server must accept it; see ServerOptions.
const MaxMessageSize = 64 << 20

const (
	// peerQueueSize bounds the messages waiting for one peer. The bound is what
	// keeps Send non-blocking and memory flat while a peer is slow or dead:
	// raft retransmits whatever is lost (appends are re-sent after a probe,
	// heartbeats come every tick), so a message dropped because the queue is
	// full costs a retry, whereas an unbounded queue would grow without limit
	// for a dead peer and deliver stale messages in a burst when it returns.
	peerQueueSize = 4096
	// maxBatchBytes caps the marshalled messages of one RaftBatch, well below
	// MaxMessageSize, so a backlog of large appends is split into several
	// batches instead of being refused by gRPC.
	maxBatchBytes = 16 << 20
	// batchEnvelopeBytes is room left in MaxMessageSize for the batch's own
	// fields and per-message framing.
	batchEnvelopeBytes = 4 << 10

	// reconnectMinBackoff and reconnectMaxBackoff bound the wait between
	// attempts to (re)open the stream to a peer.
	reconnectMinBackoff = 50 * time.Millisecond
	reconnectMaxBackoff = time.Second
	// peerWriteTimeout bounds one Send on a peer stream. A peer that stops
	// reading (hung process, black-holed network) makes flow control block the
	// write; after this long the stream is torn down and the peer is reported
	// unreachable, instead of waiting for TCP to give up minutes later.
	peerWriteTimeout = 5 * time.Second
	// defaultDialTimeout is used when TransportConfig.DialTimeout is zero.
	defaultDialTimeout = 2 * time.Second

	// peerKeepaliveTime and peerKeepaliveTimeout make a connection to a
	// vanished peer fail within seconds even while nothing is sent on it, so
	// that ActivePeers reflects it. The server must permit pings this often
	// (ServerOptions) or it closes the connection with "too_many_pings".
	peerKeepaliveTime        = 10 * time.Second // gRPC's minimum
	peerKeepaliveTimeout     = 5 * time.Second
	peerKeepaliveMinInterval = 5 * time.Second

	// peerWindow is the fixed gRPC flow-control window of peer connections,
	// per stream and per connection. A fixed window turns gRPC's bandwidth
	// estimator off: its pings otherwise follow most batches on a busy
	// stream, a write and a read on each side per ping. 16 MiB in flight
	// per round trip is more than a data center's links carry.
	peerWindow = 16 << 20
)

// A TransportConfig configures a GRPCTransport.
type TransportConfig struct {
	// ID is this member's id: the From of every batch sent, and the To every
	// incoming batch must carry.
	ID uint64
	// ClusterID is checked on every incoming batch and snapshot so that
	// members of different clusters never exchange raft messages.
	ClusterID uint64
	// Handler receives incoming messages and reports about outgoing ones.
	Handler Handler
	// Logger, carrying the caller's attributes (member, component), defaults
	// to discarding.
	Logger *slog.Logger
	// Drop, if set, is asked for every outgoing message; a message it drops
	// vanishes as on a lossy network (tests only).
	Drop DropFunc
	// DialTimeout bounds opening a stream to a peer (connect and HTTP/2
	// handshake); default 2s.
	DialTimeout time.Duration
	// IsRemoved, if set, reports whether a member was removed from the
	// cluster; its batches and snapshots are refused with removedStatus.
	IsRemoved func(id uint64) bool
	// OnRemoved, if set, is called when a peer refuses this member as
	// removed (by is the refusing peer).
	OnRemoved func(by uint64)
	// OnPeerDown, if set, is called when a peer's host refuses the
	// connection: nothing listens on its peer address, so its process is
	// gone (a partition or a paused process times out instead).
	OnPeerDown func(id uint64)
}

// isConnRefused reports whether err is a refused connection (the peer's
// host answers, its process does not). gRPC keeps only the dial error's text.
func isConnRefused(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection refused")
}

// removedMessage marks the refusal of a removed member's messages, so that
// the sender recognises it (codes.PermissionDenied with this text).
const removedMessage = "was removed from the cluster"

// isRemovedRefusal reports whether err is a peer's refusal of this member
// as removed.
func isRemovedRefusal(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.PermissionDenied && strings.Contains(st.Message(), removedMessage)
}

// A GRPCTransport is a Transport that carries raft messages on a long-lived
// TCP stream per peer, batched (rawstream.go), and each snapshot on its own
// gRPC stream (the Raft service's Snapshot). Serve serves both on the peer
// port, delivering what other members send to its Handler. (The Raft
// service's Stream method is no longer served: the TCP stream replaced it.)
//
// The Handler's ReportUnreachable may be called from Send (when a peer's queue
// is full), so it must not wait for the goroutine that calls Send; raft's
// Node.ReportUnreachable does not. After Stop returns, no Handler method is
// called by the transport.
type GRPCTransport struct {
	cfg    TransportConfig
	logger *slog.Logger
	// writeTimeout is peerWriteTimeout; tests raise it to hold a writer
	// blocked on a stuck peer for as long as they need.
	writeTimeout time.Duration

	// ctx is cancelled by Stop; every peer's context and the context of every
	// incoming message derive from it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.RWMutex
	peers   map[uint64]*peer
	stopped bool
	// handlerWG counts incoming calls into the Handler, so that Stop can wait
	// for them. Add happens under mu while !stopped.
	handlerWG sync.WaitGroup
	// batchesReceived counts the raft batches received (tests).
	batchesReceived atomic.Int64
}

var _ Transport = (*GRPCTransport)(nil)

// NewGRPCTransport returns a transport with no peers; add them with AddPeer
// and serve incoming messages with Register. cfg.Handler is required.
func NewGRPCTransport(cfg TransportConfig) *GRPCTransport {
	if cfg.Handler == nil {
		panic("consensus: TransportConfig.Handler is required")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &GRPCTransport{
		cfg:          cfg,
		logger:       logger,
		writeTimeout: peerWriteTimeout,
		ctx:          ctx,
		cancel:       cancel,
		peers:        make(map[uint64]*peer),
	}
}

// ServerOptions returns the options the peer gRPC server must be created
// with: it then accepts every batch this transport sends, and the keepalive
// pings the transport uses to notice vanished peers.
func ServerOptions() []grpc.ServerOption {
	return append([]grpc.ServerOption{
		// Fixed windows turn off gRPC's bandwidth-estimator pings (see
		// peerWindow).
		grpc.InitialWindowSize(peerWindow), grpc.InitialConnWindowSize(peerWindow)},
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             peerKeepaliveMinInterval,
			PermitWithoutStream: true,
		}),
	)
}

// Register registers the transport's Raft service on s, the peer gRPC server
// the caller created with ServerOptions and serves.
func (t *GRPCTransport) Register(s *grpc.Server) {
	catalogpb.RegisterRaftServer(s, &raftServer{t: t})
}

// Send queues msgs for their recipients and returns at once. A message to an
// unknown peer is dropped; a message that finds its peer's queue full is
// dropped and the peer reported unreachable. MsgSnap messages are sent on
// their own stream, together with the database from Handler.OpenSnapshotDB.
// The Handler's reports about messages Send drops are made on the caller's
// goroutine before Send returns.
func (t *GRPCTransport) Send(msgs []raftpb.Message) {
	var unreachable, snapFailed []uint64
	t.mu.RLock()
	if t.stopped {
		t.mu.RUnlock()
		return
	}
	for _, m := range msgs {
		if m.To == t.cfg.ID {
			continue
		}
		if t.cfg.Drop != nil && t.cfg.Drop(t.cfg.ID, m.To) {
			if m.Type == raftpb.MsgSnap {
				// A lossy network breaks the snapshot stream and the
				// sender hears about it; raft would otherwise wait for
				// this snapshot forever.
				snapFailed = append(snapFailed, m.To)
			}
			continue
		}
		p, ok := t.peers[m.To]
		if !ok {
			t.logger.Debug("dropped message to unknown peer", "to", fmtID(m.To), "type", m.Type.String())
			if m.Type == raftpb.MsgSnap {
				snapFailed = append(snapFailed, m.To)
			}
			continue
		}
		if m.Type == raftpb.MsgSnap {
			p.wg.Add(1)
			go p.sendSnapshot(m)
			continue
		}
		select {
		case p.queueC <- m:
		default:
			unreachable = append(unreachable, m.To)
		}
	}
	t.mu.RUnlock()

	// The Handler is called without t.mu held, so that it may call back
	// into the transport.
	for _, id := range snapFailed {
		t.cfg.Handler.ReportSnapshot(id, raft.SnapshotFailure)
	}
	for _, id := range unreachable {
		t.cfg.Handler.ReportUnreachable(id)
	}
}

// AddPeer starts sending to the member id at addr (host:port). Adding a known
// peer with a new address replaces its stream; with the same address it does
// nothing.
func (t *GRPCTransport) AddPeer(id uint64, addr string) {
	if id == t.cfg.ID {
		return
	}
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	old := t.peers[id]
	if old != nil && old.addr == addr {
		t.mu.Unlock()
		return
	}
	p := t.newPeer(id, addr)
	t.peers[id] = p
	p.wg.Add(1)
	go p.run()
	t.mu.Unlock()

	if old != nil {
		t.logger.Info("peer address changed", "peer", fmtID(id), "old", old.addr, "new", addr)
		old.stop()
	}
}

// RemovePeer stops sending to the member id and waits until its goroutines
// have ended; messages still queued for it are dropped. Those goroutines may
// be reporting to the Handler, which therefore must not wait for the caller
// of RemovePeer (nor of AddPeer, which replaces a peer whose address changed).
func (t *GRPCTransport) RemovePeer(id uint64) {
	t.mu.Lock()
	p := t.peers[id]
	delete(t.peers, id)
	t.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// ActivePeers reports, per peer, whether its stream is established: the
// connection is up and the peer has not ended or refused the stream.
func (t *GRPCTransport) ActivePeers() map[uint64]bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	active := make(map[uint64]bool, len(t.peers))
	for id, p := range t.peers {
		active[id] = p.active.Load()
	}
	return active
}

// ResetPeer makes the writer to peer id open a new stream. The node asks
// for it when raft hears nothing back from a peer whose stream looks up: a
// stream can outlive what it carries (a peer stopped and resumed, say), and
// a new one costs a round trip.
func (t *GRPCTransport) ResetPeer(id uint64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if p, ok := t.peers[id]; ok && p.active.Load() {
		select {
		case p.resetC <- struct{}{}:
		default:
		}
	}
}

// peerIDs returns the ids of the peers the transport sends to.
func (t *GRPCTransport) peerIDs() []uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	ids := make([]uint64, 0, len(t.peers))
	for id := range t.peers {
		ids = append(ids, id)
	}
	return ids
}

// PeerActive reports whether the stream to peer id is up.
func (t *GRPCTransport) PeerActive(id uint64) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	p, ok := t.peers[id]
	return ok && p.active.Load()
}

// Stop closes every stream, refuses further incoming messages and waits for
// the transport's goroutines and its calls into the Handler to end. It does
// not stop the gRPC server given to Register.
func (t *GRPCTransport) Stop() {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	t.stopped = true
	peers := t.peers
	t.peers = make(map[uint64]*peer)
	t.mu.Unlock()

	t.cancel()
	for _, p := range peers {
		p.stop()
	}
	t.handlerWG.Wait()
}

// enterHandler registers an incoming call into the Handler; it reports false
// once the transport is stopped. Every true must be paired with exitHandler.
func (t *GRPCTransport) enterHandler() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.stopped {
		return false
	}
	t.handlerWG.Add(1)
	return true
}

func (t *GRPCTransport) exitHandler() { t.handlerWG.Done() }

// checkEnvelope refuses a batch or snapshot chunk that belongs to another
// cluster or was meant for another member (a stale address, say).
func (t *GRPCTransport) checkEnvelope(clusterID, from, to uint64) error {
	if clusterID != t.cfg.ClusterID {
		return status.Errorf(codes.FailedPrecondition,
			"cluster id mismatch: member %s of cluster %s sent to member %s of cluster %s",
			fmtID(from), fmtID(clusterID), fmtID(t.cfg.ID), fmtID(t.cfg.ClusterID))
	}
	if to != t.cfg.ID {
		return status.Errorf(codes.FailedPrecondition,
			"member id mismatch: member %s sent to member %s, but this is member %s",
			fmtID(from), fmtID(to), fmtID(t.cfg.ID))
	}
	if t.cfg.IsRemoved != nil && t.cfg.IsRemoved(from) {
		return status.Errorf(codes.PermissionDenied, "member %s %s %s", fmtID(from), removedMessage, fmtID(clusterID))
	}
	return nil
}

// A peer is the sending side of the transport for one remote member.
type peer struct {
	t    *GRPCTransport
	id   uint64
	addr string
	// conn is nil when addr is not a valid target; the peer then drops
	// everything sent to it.
	conn    *grpc.ClientConn
	connErr error
	client  catalogpb.RaftClient
	logger  *slog.Logger

	queueC chan raftpb.Message
	// ctx is cancelled by stop; streams to the peer derive from it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the writer and the snapshot senders.
	wg     sync.WaitGroup
	active atomic.Bool
	// resetC asks the writer to drop its stream and open a new one.
	resetC chan struct{}
}

// newPeer creates a peer. grpc.NewClient does no I/O: the connection is made
// by the first stream the writer opens.
func (t *GRPCTransport) newPeer(id uint64, addr string) *peer {
	ctx, cancel := context.WithCancel(t.ctx)
	p := &peer{
		t:      t,
		id:     id,
		addr:   addr,
		logger: t.logger.With("peer", fmtID(id), "addr", addr),
		queueC: make(chan raftpb.Message, peerQueueSize),
		resetC: make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithInitialWindowSize(peerWindow), grpc.WithInitialConnWindowSize(peerWindow),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  reconnectMinBackoff,
				Multiplier: 2,
				Jitter:     0.2,
				MaxDelay:   reconnectMaxBackoff,
			},
			MinConnectTimeout: t.cfg.DialTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                peerKeepaliveTime,
			Timeout:             peerKeepaliveTimeout,
			PermitWithoutStream: true,
		}),
	)
	if err != nil {
		p.connErr = fmt.Errorf("peer %s address %q: %w", fmtID(id), addr, err)
		p.logger.Error("cannot send to peer: bad address", "err", err)
		return p
	}
	p.conn = conn
	p.client = catalogpb.NewRaftClient(conn)
	return p
}

// stop ends the peer's streams and waits for its goroutines.
func (p *peer) stop() {
	p.cancel()
	p.wg.Wait()
	p.active.Store(false)
	if p.conn != nil {
		_ = p.conn.Close()
	}
}

// run is the peer's writer: it keeps a stream open and sends whatever is
// queued as one batch per write. While the peer is unreachable it discards the
// queue, so that no stale backlog is delivered when the peer returns.
func (p *peer) run() {
	defer p.wg.Done()
	delay := reconnectMinBackoff
	var lastErr string // a failure repeating the previous one is logged quietly
	for {
		opened := time.Now()
		established, err := p.stream()
		if p.ctx.Err() != nil {
			return
		}
		if established && time.Since(opened) >= reconnectMaxBackoff {
			// The stream lived a while: this is a new outage rather than
			// the same one again, so reconnect quickly.
			delay = reconnectMinBackoff
		}
		level := slog.LevelWarn
		if err.Error() == lastErr {
			level = slog.LevelDebug
		}
		lastErr = err.Error()
		if !established && isConnRefused(err) && p.t.cfg.OnPeerDown != nil {
			p.t.cfg.OnPeerDown(p.id)
		}
		if isRemovedRefusal(err) && p.t.cfg.OnRemoved != nil {
			p.logger.Error("peer refuses this member: it was removed from the cluster", "err", err)
			p.t.cfg.OnRemoved(p.id)
		}
		p.logger.Log(p.ctx, level, "raft stream to peer failed", "err", err, "retry_in", delay)
		p.t.cfg.Handler.ReportUnreachable(p.id)
		if !p.discardFor(delay) {
			return
		}
		delay = min(2*delay, reconnectMaxBackoff)
	}
}

// stream opens one raft stream to the peer (see rawstream.go) and sends
// batches on it until it fails or the peer is stopped. It reports whether
// the stream was opened, and why it ended.
func (p *peer) stream() (established bool, err error) {
	if p.conn == nil {
		return false, p.connErr
	}
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	c, bw, err := p.openStream(ctx)
	if err != nil {
		return false, fmt.Errorf("open raft stream: %w", err)
	}
	defer c.Close()
	// Closing the connection is what ends a blocked write or read.
	stopClosing := context.AfterFunc(ctx, func() { c.Close() })
	defer stopClosing()
	p.active.Store(true)
	defer p.active.Store(false)
	p.logger.Debug("raft stream to peer established")

	// The peer answers only to refuse the envelope or to end the stream
	// (shutdown, a message it cannot take). Reading alongside the writes
	// notices that at once, even while there is nothing to send.
	endedC := make(chan error, 1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		endedC <- readAnswers(c)
		cancel()
	}()
	// failed returns why a write failed: the peer's own reason, if it gave
	// one, says more than a broken pipe.
	failed := func(what string, err error) error {
		cancel()
		if ended := <-endedC; status.Code(ended) != codes.Unknown {
			err = ended
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	batch := &catalogpb.RaftBatch{}
	var buf []byte
	var carry []byte // a message that did not fit in the previous batch
	for {
		if carry == nil {
			select {
			case <-p.ctx.Done():
				return true, p.ctx.Err()
			case err := <-endedC:
				return true, err
			case <-p.resetC:
				return true, errors.New("stream reset: the peer has not answered raft over it")
			case m := <-p.queueC:
				carry = p.marshal(m)
				if carry == nil {
					continue
				}
			}
		}
		batch.Msgs, carry = p.fillBatch(batch.Msgs[:0], carry)
		if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf[:0], batch); err != nil {
			return true, fmt.Errorf("marshal raft batch: %w", err)
		}
		_ = c.SetWriteDeadline(time.Now().Add(p.t.writeTimeout))
		if err = writeFrame(bw, buf); err == nil {
			err = bw.Flush()
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = fmt.Errorf("write did not finish within %v: %w", p.t.writeTimeout, err)
			}
			return true, failed(fmt.Sprintf("send raft batch of %d messages", len(batch.Msgs)), err)
		}
	}
}

// fillBatch appends first and then everything queued, up to maxBatchBytes.
// It returns the batch and the message left over for the next one, if any.
func (p *peer) fillBatch(msgs [][]byte, first []byte) (batch [][]byte, carry []byte) {
	msgs = append(msgs, first)
	size := len(first)
	for {
		select {
		case m := <-p.queueC:
			b := p.marshal(m)
			if b == nil {
				continue
			}
			if size+len(b) > maxBatchBytes {
				return msgs, b
			}
			msgs = append(msgs, b)
			size += len(b)
		default:
			return msgs, nil
		}
	}
}

// marshal returns m's wire form, or nil when m cannot be sent at all.
func (p *peer) marshal(m raftpb.Message) []byte {
	b, err := m.Marshal()
	if err != nil {
		p.logger.Error("dropped unmarshallable raft message", "type", m.Type.String(), "err", err)
		return nil
	}
	if len(b) > MaxMessageSize-batchEnvelopeBytes {
		p.logger.Error("dropped raft message larger than the transport carries",
			"type", m.Type.String(), "bytes", len(b), "max", MaxMessageSize-batchEnvelopeBytes)
		p.t.cfg.Handler.ReportUnreachable(p.id)
		return nil
	}
	return b
}

// discardFor waits d, dropping whatever is queued meanwhile (the peer is
// unreachable, and raft retransmits). It reports false if the peer was
// stopped.
func (p *peer) discardFor(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	reported := false
	for {
		select {
		case <-p.ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-p.queueC:
			if !reported && p.ctx.Err() == nil {
				p.t.cfg.Handler.ReportUnreachable(p.id)
				reported = true
			}
		}
	}
}

// openWithin opens a stream with open(ctx), giving up (by cancelling ctx)
// after timeout. The stream itself outlives the timeout: ctx must be the
// stream's long-lived context and cancel its cancel function.
func openWithin[S any](ctx context.Context, cancel context.CancelFunc, timeout time.Duration,
	open func(context.Context, ...grpc.CallOption) (S, error)) (S, error) {
	timer := time.AfterFunc(timeout, cancel)
	s, err := open(ctx)
	if !timer.Stop() {
		// The timer fired, so ctx is cancelled and a stream, if any, is dead.
		var zero S
		if err == nil {
			err = context.DeadlineExceeded
		}
		return zero, fmt.Errorf("no connection within %v: %w", timeout, err)
	}
	return s, err
}

// A watchdog cancels a stream when one write takes longer than allowed. It is
// used by one goroutine at a time.
type watchdog struct {
	timer *time.Timer
	fired bool
}

func newWatchdog(cancel context.CancelFunc) *watchdog {
	w := &watchdog{timer: time.AfterFunc(time.Hour, cancel)}
	w.timer.Stop()
	return w
}

// run calls write, cancelling the stream if write has not returned within d.
func (w *watchdog) run(d time.Duration, write func() error) error {
	w.timer.Reset(d)
	err := write()
	if !w.timer.Stop() {
		w.fired = true
		return fmt.Errorf("write did not finish within %v: %w", d, err)
	}
	return err
}

func (w *watchdog) stop() { w.timer.Stop() }

// fmtID formats a member or cluster id as raft and etcd print them.
func fmtID(id uint64) string { return fmt.Sprintf("%x", id) }

// raftServer is the receiving side: the Raft service other members stream to.
type raftServer struct {
	catalogpb.UnimplementedRaftServer
	t *GRPCTransport
}

// incomingContext returns a context for handling an incoming stream that is
// also cancelled when the transport stops.
func (t *GRPCTransport) incomingContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	stopWatching := context.AfterFunc(t.ctx, cancel)
	return ctx, func() {
		stopWatching()
		cancel()
	}
}

// process steps m into the Handler unless the transport is stopped.
func (t *GRPCTransport) process(ctx context.Context, m raftpb.Message) error {
	if !t.enterHandler() {
		return status.Errorf(codes.Unavailable, "member %s is stopping", fmtID(t.cfg.ID))
	}
	defer t.exitHandler()
	if err := t.cfg.Handler.Process(ctx, m); err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Unavailable, "member %s cannot process %s from %s: %v",
			fmtID(t.cfg.ID), m.Type, fmtID(m.From), err)
	}
	return nil
}
