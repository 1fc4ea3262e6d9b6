package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A WatchFilter says which events a watch streams. Build one with WatchKey,
// WatchPrefix, WatchServiceFilter, WatchShardMapFilter or WatchLeases.
type WatchFilter struct {
	Filter  catalogpb.WatchCreateRequest_Filter
	Key     []byte
	Prefix  bool
	Service string
}

// WatchKey watches one config key.
func WatchKey(key string) WatchFilter {
	return WatchFilter{Filter: catalogpb.WatchCreateRequest_KV, Key: []byte(key)}
}

// WatchPrefix watches every config key that starts with prefix ("" is every key).
func WatchPrefix(prefix string) WatchFilter {
	return WatchFilter{Filter: catalogpb.WatchCreateRequest_KV, Key: []byte(prefix), Prefix: true}
}

// WatchServiceFilter watches a service's record and its instances; "" watches
// every service.
func WatchServiceFilter(service string) WatchFilter {
	return WatchFilter{Filter: catalogpb.WatchCreateRequest_SERVICE, Service: service}
}

// WatchShardMapFilter watches a service's shard map; "" watches every map.
func WatchShardMapFilter(service string) WatchFilter {
	return WatchFilter{Filter: catalogpb.WatchCreateRequest_SHARD_MAP, Service: service}
}

// WatchLeases watches lease grants and revokes.
func WatchLeases() WatchFilter {
	return WatchFilter{Filter: catalogpb.WatchCreateRequest_LEASE}
}

type watchSettings struct {
	startRev       int64
	progressNotify bool
	prevKV         bool
}

// A WatchOption changes how Watch watches.
type WatchOption func(*watchSettings)

// WithStartRevision replays every matching event from rev on before
// streaming live ones (rev 0: from the next revision on).
func WithStartRevision(rev int64) WatchOption {
	return func(s *watchSettings) { s.startRev = rev }
}

// WithProgressNotify asks for a progress notification (a response with
// Progress set and no events) when the watch has been idle for the server's
// progress interval.
func WithProgressNotify() WatchOption {
	return func(s *watchSettings) { s.progressNotify = true }
}

// WithWatchPrevKV includes a config key's previous value in its events.
func WithWatchPrevKV() WatchOption {
	return func(s *watchSettings) { s.prevKV = true }
}

// A WatchResponse is one delivery of a watch.
type WatchResponse struct {
	// Header.Revision is the revision up to which the watch has seen every
	// change.
	Header *catalogpb.ResponseHeader
	Events []*catalogpb.Event // whole revisions, in order
	// Progress marks a bookmark: no events, the watch has seen everything
	// up to Header.Revision.
	Progress bool
	// CompactRevision is set with Err == ErrCompacted: the oldest revision
	// still held is CompactRevision + 1.
	CompactRevision int64
	// Err is non-nil on the last response before the channel closes.
	Err error
}

// A WatchChan delivers a watch's responses.
type WatchChan <-chan WatchResponse

// Limits of what one watch holds for a caller that reads slowly. Past them the
// client stops the watch on the server and resumes it from where it stopped
// once the caller has read half of it: a slow reader costs bounded memory and
// never holds up the client's other watches. Variables for tests.
var (
	watchPendingEvents    = 16384
	watchPendingResponses = 1024
)

// errWatchClientClosed ends the watches of a closed client.
var errWatchClientClosed = errors.New("sdk: watch ended: the client was closed")

// Watch streams changes matching f; watches of one Client share one gRPC
// stream; after a broken stream or a too-slow cancel the SDK resumes each watch
// from its last revision + 1 (no gaps, no duplicates). The channel closes when
// ctx ends or on an error it cannot resume from (ErrCompacted: the caller
// lists again and watches from the list's revision).
//
// A watch without WithStartRevision starts at the revision the server holds
// when it first creates the watch; from then on nothing is missed.
func (c *Client) Watch(ctx context.Context, f WatchFilter, opts ...WatchOption) WatchChan {
	var set watchSettings
	for _, o := range opts {
		o(&set)
	}
	if set.startRev < 0 {
		return finalChan(fmt.Errorf("%w: start revision must be >= 0 (0: from the next revision on), got %d", ErrInvalidArgument, set.startRev))
	}
	if c.isClosed() {
		return finalChan(errWatchClientClosed)
	}
	out := make(chan WatchResponse)
	w := &clientWatch{
		ctx: ctx,
		template: &catalogpb.WatchCreateRequest{
			Filter:         f.Filter,
			Key:            append([]byte(nil), f.Key...),
			Prefix:         f.Prefix,
			Service:        f.Service,
			ProgressNotify: set.progressNotify,
			PrevKv:         set.prevKV,
		},
		nextRev: set.startRev,
		out:     out,
		notify:  make(chan struct{}, 1),
	}
	c.watches.add(w)
	go w.deliver()
	return out
}

// finalChan returns a closed channel holding one response with err.
func finalChan(err error) WatchChan {
	ch := make(chan WatchResponse, 1)
	ch <- WatchResponse{Err: err}
	close(ch)
	return ch
}

// RequestProgress asks the server for a progress notification on every watch
// of the client now; each watch's channel gets a response with Progress set.
func (c *Client) RequestProgress(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m := c.watches
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.watches) == 0 {
		return nil // no watches
	}
	if m.conn != nil {
		m.conn.enqueue(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_ProgressRequest{ProgressRequest: &catalogpb.WatchProgressRequest{}}})
	} else {
		m.progressPending = true
	}
	return nil
}

// isClosed reports whether Close was called.
func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// add adds w to c's watches, starting the stream if it is not running. A
// watch added after Close ends at once with errWatchClientClosed.
func (m *watchManager) add(w *clientWatch) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.m = m
	if m.closed {
		w.finished = true
		w.final = &WatchResponse{Err: errWatchClientClosed}
		return
	}
	m.watches[w] = struct{}{}
	if m.conn != nil {
		m.createLocked(w)
	}
	if !m.running {
		m.running = true
		go m.run()
	}
}

// A watchManager runs a client's watches over one stream, opening a new one
// (to whichever endpoint the balancer picks) when it breaks. Each Client has
// one from New on; its stream runs only while the client has watches.
type watchManager struct {
	c *Client

	mu      sync.Mutex
	watches map[*clientWatch]struct{}
	// running is set from the start of a run goroutine until it decides to
	// return, so that one run at most keeps a stream; closed is set by
	// Client.Close.
	running bool
	closed  bool
	// byID are the watches created on the current stream, by their id there.
	// Ids are never reused, so a late response for a cancelled id is ignored.
	byID   map[int64]*clientWatch
	lastID int64
	// conn is the current stream, nil while there is none.
	conn            *watchConn
	progressPending bool
}

// A watchConn is one Watch stream and its send queue.
type watchConn struct {
	stream catalogpb.Watch_WatchClient
	cancel context.CancelFunc
	wakeC  chan struct{}
	// queue is guarded by the manager's mu.
	queue []*catalogpb.WatchRequest
	mu    *sync.Mutex
}

// enqueue queues req for the stream; the manager's mu is held.
func (wc *watchConn) enqueue(req *catalogpb.WatchRequest) {
	wc.queue = append(wc.queue, req)
	select {
	case wc.wakeC <- struct{}{}:
	default:
	}
}

// sendLoop sends queued requests until the stream fails or is cancelled.
func (wc *watchConn) sendLoop(ctx context.Context) {
	for {
		wc.mu.Lock()
		q := wc.queue
		wc.queue = nil
		wc.mu.Unlock()
		for _, req := range q {
			if err := wc.stream.Send(req); err != nil {
				return // Recv sees the failure
			}
		}
		select {
		case <-wc.wakeC:
		case <-ctx.Done():
			return
		}
	}
}

// run keeps a stream open while the client has watches.
func (m *watchManager) run() {
	client := catalogpb.NewWatchClient(m.c.conn)
	for try := 0; ; try++ {
		if m.retire() {
			return
		}
		if m.c.isClosed() {
			m.failAll(errWatchClientClosed)
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := client.Watch(ctx)
		if err == nil {
			wc := &watchConn{stream: stream, cancel: cancel, wakeC: make(chan struct{}, 1), mu: &m.mu}
			m.mu.Lock()
			m.conn = wc
			for w := range m.watches {
				m.createLocked(w)
			}
			if m.progressPending {
				m.progressPending = false
				wc.enqueue(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_ProgressRequest{ProgressRequest: &catalogpb.WatchProgressRequest{}}})
			}
			idle := len(m.watches) == 0
			m.mu.Unlock()
			if idle {
				cancel()
			}
			go wc.sendLoop(ctx)
			var received bool
			received, err = m.recvLoop(wc)
			if received {
				try = 0
			}
			m.mu.Lock()
			m.conn = nil
			for id, w := range m.byID {
				w.serverID = 0
				delete(m.byID, id)
			}
			m.mu.Unlock()
		}
		cancel()
		if fatalStreamError(err) && !m.c.isClosed() {
			m.failAll(fmt.Errorf("watch stream: %w", toError(err)))
			return
		}
		if m.retire() {
			return
		}
		time.Sleep(m.c.backoff(try))
	}
}

// fatalStreamError reports a stream failure that no retry will mend.
func fatalStreamError(err error) bool {
	switch status.Code(err) {
	case codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// newWatchManager returns the watch manager of c, with no watches.
func newWatchManager(c *Client) *watchManager {
	return &watchManager{c: c, watches: map[*clientWatch]struct{}{}, byID: map[int64]*clientWatch{}}
}

// retire stops run when the client has no watches left; the next Watch
// starts it again.
func (m *watchManager) retire() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.watches) > 0 {
		return false
	}
	m.running = false
	return true
}

// failAll ends every watch with err and stops run: a later Watch starts it
// again with a new stream.
func (m *watchManager) failAll(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failAllLocked(err)
	m.running = false
}

// failAllLocked ends every watch with err, after what each has pending, and
// forgets them; m.mu is held.
func (m *watchManager) failAllLocked(err error) {
	for w := range m.watches {
		m.finishLocked(w, WatchResponse{Err: err})
		delete(m.watches, w)
	}
}

// close ends every watch with errWatchClientClosed and the stream with
// them; later watches end at once. Client.Close calls it.
func (m *watchManager) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	m.failAllLocked(errWatchClientClosed)
	if m.conn != nil {
		m.conn.cancel()
	}
}

// recvLoop dispatches the stream's responses until it fails; received says
// whether any came.
func (m *watchManager) recvLoop(wc *watchConn) (received bool, err error) {
	for {
		resp, err := wc.stream.Recv()
		if err != nil {
			return received, err
		}
		received = true
		m.handle(resp)
	}
}

// handle applies one response to its watch.
func (m *watchManager) handle(resp *catalogpb.WatchResponse) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.byID[resp.WatchId]
	if w == nil {
		return // a watch cancelled here, or paused
	}
	rev := resp.GetHeader().GetRevision()
	switch {
	case resp.Canceled:
		delete(m.byID, resp.WatchId)
		w.serverID = 0
		switch resp.Reason {
		case catalogpb.ErrorReason_WATCH_TOO_SLOW:
			// Everything up to the header's revision was sent: go on
			// from the next one.
			w.nextRev = max(w.nextRev, rev+1)
			if m.conn != nil {
				m.createLocked(w)
			}
		case catalogpb.ErrorReason_COMPACTED:
			m.finishLocked(w, WatchResponse{Header: resp.Header, CompactRevision: resp.CompactRevision, Err: cancelError(resp)})
		default:
			m.finishLocked(w, WatchResponse{Header: resp.Header, Err: cancelError(resp)})
		}
	case resp.Created:
		if w.nextRev == 0 {
			w.nextRev = rev + 1
		}
	case resp.ProgressNotify:
		w.nextRev = max(w.nextRev, rev+1)
		m.queueLocked(w, WatchResponse{Header: resp.Header, Progress: true})
	default:
		if rev < w.nextRev {
			return // already delivered before a resume
		}
		w.nextRev = rev + 1
		m.queueLocked(w, WatchResponse{Header: resp.Header, Events: resp.Events})
	}
}

// createLocked creates w on the current stream from its next revision,
// unless it is paused or finished; m.mu is held and m.conn is set.
func (m *watchManager) createLocked(w *clientWatch) {
	if w.paused || w.finished || w.serverID != 0 {
		return
	}
	m.lastID++
	w.serverID = m.lastID
	m.byID[w.serverID] = w
	req := proto.Clone(w.template).(*catalogpb.WatchCreateRequest)
	req.WatchId = w.serverID
	req.StartRevision = w.nextRev
	m.conn.enqueue(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_CreateRequest{CreateRequest: req}})
}

// cancelLocked cancels w on the server; m.mu is held.
func (m *watchManager) cancelLocked(w *clientWatch) {
	if w.serverID == 0 {
		return
	}
	delete(m.byID, w.serverID)
	if m.conn != nil {
		m.conn.enqueue(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_CancelRequest{CancelRequest: &catalogpb.WatchCancelRequest{WatchId: w.serverID}}})
	}
	w.serverID = 0
}

// queueLocked hands r to w's caller, pausing w on the server if the caller
// has too much unread; m.mu is held.
func (m *watchManager) queueLocked(w *clientWatch, r WatchResponse) {
	w.pending = append(w.pending, r)
	w.pendingEvents += len(r.Events)
	if !w.paused && (w.pendingEvents > watchPendingEvents || len(w.pending) > watchPendingResponses) {
		w.paused = true
		m.cancelLocked(w)
	}
	w.wake()
}

// finishLocked ends w with final after what it has pending; m.mu is held.
func (m *watchManager) finishLocked(w *clientWatch, final WatchResponse) {
	if w.finished {
		return
	}
	m.cancelLocked(w)
	w.finished = true
	w.final = &final
	w.wake()
}

// remove forgets w, cancelling it on the server; the stream closes with
// the client's last watch.
func (m *watchManager) remove(w *clientWatch) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cancelLocked(w)
	w.finished = true
	delete(m.watches, w)
	if len(m.watches) == 0 && m.conn != nil {
		m.conn.cancel()
	}
}

// A clientWatch is one Watch call.
type clientWatch struct {
	m        *watchManager
	ctx      context.Context
	template *catalogpb.WatchCreateRequest
	out      chan WatchResponse
	notify   chan struct{}

	// Guarded by m.mu.
	// nextRev is the first revision not yet handed to the caller's queue (0:
	// not known until the server creates the watch).
	nextRev       int64
	serverID      int64
	pending       []WatchResponse
	pendingEvents int
	// paused: cancelled on the server until the caller reads.
	paused   bool
	finished bool
	final    *WatchResponse
}

func (w *clientWatch) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// deliver hands w's responses to its caller, in order, until ctx ends or
// the final response was read.
func (w *clientWatch) deliver() {
	m := w.m
	defer close(w.out)
	defer m.remove(w)
	for {
		m.mu.Lock()
		if len(w.pending) == 0 {
			final := w.final
			m.mu.Unlock()
			if final != nil {
				select {
				case w.out <- *final:
				case <-w.ctx.Done():
				}
				return
			}
			select {
			case <-w.notify:
				continue
			case <-w.ctx.Done():
				return
			}
		}
		r := w.pending[0]
		w.pending[0] = WatchResponse{}
		w.pending = w.pending[1:]
		w.pendingEvents -= len(r.Events)
		if len(w.pending) == 0 {
			w.pending = nil
		}
		if w.paused && !w.finished && w.pendingEvents <= watchPendingEvents/2 && len(w.pending) <= watchPendingResponses/2 {
			w.paused = false
			if m.conn != nil {
				m.createLocked(w)
			}
		}
		m.mu.Unlock()
		select {
		case w.out <- r:
		case <-w.ctx.Done():
			return
		}
	}
}

// cancelError is the error of a watch the server cancelled.
func cancelError(resp *catalogpb.WatchResponse) error {
	code := codes.Unknown
	reason := ""
	if resp.Reason != catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED {
		reason = resp.Reason.String()
		for _, row := range errorTable {
			if row.reason == resp.Reason {
				code = row.code
				break
			}
		}
	}
	msg := resp.CancelReason
	if msg == "" {
		msg = "watch canceled by the server"
	}
	return &Error{Code: code, Reason: reason, Message: msg, sentinel: sentinelFor(reason, code), status: status.New(code, msg)}
}
