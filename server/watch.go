package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/consensus"
	"github.com/catalogd/catalogd/lease"
	"github.com/catalogd/catalogd/locks"
	"github.com/catalogd/catalogd/registry"
)

const (
	// defaultWatchBufferEvents and defaultWatchBufferBytes bound the events
	// queued for one watcher and not yet sent.
	defaultWatchBufferEvents = 8192
	defaultWatchBufferBytes  = 32 << 20
	// defaultReplayChunk bounds the revisions one replay read takes in one
	// bbolt read transaction; replayChunkBytes bounds their stored size.
	defaultReplayChunk = 512
	replayChunkBytes   = 4 << 20
	// maxWatchResponseBytes is the size up to which queued revisions of one
	// watch are coalesced into one response.
	maxWatchResponseBytes = 1 << 20
	// maxControlResponses bounds the queued responses that belong to no live
	// watch (refused creates, cancels of unknown ids): past it the stream
	// stops reading requests until its client reads responses.
	maxControlResponses = 256
)

// watchFilters are the filters a watch may ask for, in the order error
// messages list them.
var watchFilters = []catalogpb.WatchCreateRequest_Filter{
	catalogpb.WatchCreateRequest_KV,
	catalogpb.WatchCreateRequest_SERVICE,
	catalogpb.WatchCreateRequest_SHARD_MAP,
	catalogpb.WatchCreateRequest_LEASE,
	catalogpb.WatchCreateRequest_LOCK,
	catalogpb.WatchCreateRequest_BARRIER,
	catalogpb.WatchCreateRequest_QUEUE,
}

// filterOfKind maps an event kind to the one filter that can match it.
func filterOfKind(kind string) catalogpb.WatchCreateRequest_Filter {
	switch kind {
	case registry.EventKind:
		return catalogpb.WatchCreateRequest_KV
	case registry.ServiceKind, registry.InstanceKind:
		return catalogpb.WatchCreateRequest_SERVICE
	case registry.ShardMapKind:
		return catalogpb.WatchCreateRequest_SHARD_MAP
	case lease.EventKind:
		return catalogpb.WatchCreateRequest_LEASE
	case locks.LockKind:
		return catalogpb.WatchCreateRequest_LOCK
	case locks.BarrierKind:
		return catalogpb.WatchCreateRequest_BARRIER
	case locks.QueueKind:
		return catalogpb.WatchCreateRequest_QUEUE
	}
	return catalogpb.WatchCreateRequest_FILTER_UNSPECIFIED
}

// watchHub streams committed events to the watchers of this member.
//
// Every member applies every entry, so every member serves watches. The apply
// goroutine hands each commit's event batches to the hub (Applied), which
// appends the matching events to each live watcher's bounded queue and never
// waits: a watcher whose queue would overflow is cancelled with
// WATCH_TOO_SLOW instead. One goroutine per stream drains its watchers' queues
// into gRPC sends.
//
// A watcher is either synced (in the hub's synced set: Applied feeds it) or
// replaying (one goroutine reads its missing revisions from the events bucket
// in bounded chunks, pausing while its queue is half full). The replay joins
// the synced set under the hub's lock once it has queued every revision up to
// the hub's revision, so the next Applied continues exactly where it stopped:
// no revision is missed or queued twice. A watcher's nextRev is the first
// revision it has not queued.
//
// What a watch stream promises its client:
//   - A create request gets one response with created set; if canceled is set
//     too, the watch was refused (reason and cancel_reason say why) and no
//     other watch of the stream is affected.
//   - The header revision of every response of a watch is the revision up to
//     which the watch has seen everything: events from header.revision+1 on
//     follow. A client that resumes a watch from header.revision+1 of the last
//     response it read misses nothing and sees nothing twice.
//   - Events come in revision order, each revision whole in one response (a
//     response may hold several revisions; a revision is never split, however
//     large).
//   - A watch's id is free for reuse once its canceled response was sent.
type watchHub struct {
	s *Server

	// Limits; tests lower them.
	bufferEvents int
	bufferBytes  int
	replayChunk  int

	// mu guards rev and synced. Lock order: hub.mu, then a stream's mu.
	mu sync.Mutex
	// rev is the revision of the last commit handed to the hub.
	rev    int64
	synced map[catalogpb.WatchCreateRequest_Filter]map[*watcher]struct{}

	// restores counts the database replacements the hub caught up with.
	restores atomic.Int64
	// slowCancels counts watchers cancelled with WATCH_TOO_SLOW.
	slowCancels atomic.Int64
}

// syncedWatchers returns how many watchers receive commits as they happen
// (watchers still replaying history are not counted).
func (h *watchHub) syncedWatchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ws := range h.synced {
		n += len(ws)
	}
	return n
}

func newWatchHub(s *Server) *watchHub {
	h := &watchHub{
		s:            s,
		bufferEvents: defaultWatchBufferEvents,
		bufferBytes:  defaultWatchBufferBytes,
		replayChunk:  defaultReplayChunk,
		rev:          s.sm.Revision(),
		synced:       make(map[catalogpb.WatchCreateRequest_Filter]map[*watcher]struct{}),
	}
	for _, f := range watchFilters {
		h.synced[f] = make(map[*watcher]struct{})
	}
	return h
}

// Applied queues the batches' matching events for every synced watcher. It
// runs on the apply goroutine and never waits for a watcher.
func (h *watchHub) Applied(rev int64, batches []*catalogpb.EventBatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rev = rev
	var touched [catalogpb.WatchCreateRequest_QUEUE + 1]bool
	for _, b := range batches {
		for _, e := range b.Events {
			touched[filterOfKind(e.Kind)] = true
		}
	}
	sizes := eventSizes{batches: batches}
	for _, f := range watchFilters {
		if !touched[f] {
			continue
		}
		for w := range h.synced[f] {
			h.deliver(w, rev, &sizes)
		}
	}
}

// deliver queues for w the events of sizes.batches it matches; h.mu is held.
func (h *watchHub) deliver(w *watcher, rev int64, sizes *eventSizes) {
	st := w.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var items []watchItem
	for i, b := range sizes.batches {
		if b.Revision < w.nextRev {
			continue
		}
		evs, size := w.match(b.Events, sizes.of(i))
		if len(evs) > 0 {
			items = append(items, watchItem{kind: itemEvents, through: b.Revision, events: evs, size: size})
		}
	}
	w.nextRev = max(w.nextRev, rev+1)
	if len(items) == 0 {
		return
	}
	items[len(items)-1].through = rev
	n, size := 0, 0
	for _, it := range items {
		n += len(it.events)
		size += it.size
	}
	// An empty queue takes any one commit, however large: a watcher must
	// be able to receive every revision.
	if len(w.queue) > 0 && (w.queuedEvents+n > h.bufferEvents || w.queuedBytes+size > h.bufferBytes) {
		delete(h.synced[w.filter], w)
		w.synced = false
		h.slowCancels.Add(1)
		st.end(w, watchItem{kind: itemCanceled, through: -1, reason: catalogpb.ErrorReason_WATCH_TOO_SLOW,
			msg: fmt.Sprintf("%v: more than %d events or %d bytes were waiting to be sent; resume from the header's revision + 1",
				errWatchTooSlow, h.bufferEvents, h.bufferBytes)})
		return
	}
	st.push(w, items...)
}

// eventSizes computes the encoded size of each event of a commit once, for
// however many watchers match it.
type eventSizes struct {
	batches []*catalogpb.EventBatch
	sizes   [][]int
}

func (s *eventSizes) of(i int) []int {
	if s.sizes == nil {
		s.sizes = make([][]int, len(s.batches))
	}
	if s.sizes[i] == nil {
		evs := s.batches[i].Events
		s.sizes[i] = make([]int, len(evs))
		for j, e := range evs {
			s.sizes[i][j] = proto.Size(e)
		}
	}
	return s.sizes[i]
}

// Restored brings every synced watcher up to date after the database was
// replaced by a snapshot: the revisions between the hub's and the snapshot's
// were never applied here, so each watcher replays them from the new events
// bucket (or is cancelled with COMPACTED if the snapshot no longer holds them).
func (h *watchHub) Restored(rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.restores.Add(1)
	old := h.rev
	h.rev = rev
	for _, f := range watchFilters {
		for w := range h.synced[f] {
			delete(h.synced[f], w)
			w.st.mu.Lock()
			w.synced = false
			// A synced watcher has seen every revision up to the hub's.
			w.nextRev = max(w.nextRev, old+1)
			w.st.mu.Unlock()
			go h.replay(w)
		}
	}
}

// run sends progress notifications to idle watchers that asked for them.
func (h *watchHub) run(stop <-chan struct{}) {
	interval := h.s.cfg.WatchProgressInterval
	t := time.NewTicker(max(interval/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			h.progressTick(now, interval)
		}
	}
}

// progressTick queues a bookmark for every synced watcher that asked for
// progress notifications and was sent nothing for interval.
func (h *watchHub) progressTick(now time.Time, interval time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	idleSince := now.Add(-interval).UnixNano()
	for _, f := range watchFilters {
		for w := range h.synced[f] {
			if !w.progressNotify || w.lastSent.Load() > idleSince {
				continue
			}
			w.st.mu.Lock()
			if len(w.queue) == 0 {
				w.st.push(w, watchItem{kind: itemBookmark, through: w.seen(h)})
				// Not again before the next interval, even if the
				// sender is slow to send this one.
				w.lastSent.Store(now.UnixNano())
			}
			w.st.mu.Unlock()
		}
	}
}

// addSynced makes w one of the watchers Applied feeds; h.mu and w.st.mu are held.
func (h *watchHub) addSynced(w *watcher) {
	h.synced[w.filter][w] = struct{}{}
	w.synced = true
}

// replay queues w's missing revisions from the events bucket, chunk by
// chunk, then hands w to Applied. It is the only writer of w.nextRev until
// then.
func (h *watchHub) replay(w *watcher) {
	st := w.st
	for {
		if !w.waitRoom(h) {
			return
		}
		h.mu.Lock()
		st.mu.Lock()
		if w.ended {
			st.mu.Unlock()
			h.mu.Unlock()
			return
		}
		from, upto := w.nextRev, h.rev
		if from > upto {
			h.addSynced(w)
			st.mu.Unlock()
			h.mu.Unlock()
			return
		}
		st.mu.Unlock()
		h.mu.Unlock()

		items, through, compacted, err := h.readEvents(w, from, upto)
		if err != nil || compacted >= 0 {
			item := watchItem{kind: itemCanceled, through: -1, reason: catalogpb.ErrorReason_COMPACTED, compactRev: compacted,
				msg: compactedMessage(from, compacted)}
			if err != nil {
				h.s.lg.Error("watch replay failed", "watch_id", w.id, "from", from, "err", err)
				item.reason, item.compactRev = catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED, 0
				item.msg = fmt.Sprintf("server: reading the event history failed: %v", err)
			}
			st.mu.Lock()
			if !w.ended {
				st.end(w, item)
			}
			st.mu.Unlock()
			return
		}
		st.mu.Lock()
		if w.ended {
			st.mu.Unlock()
			return
		}
		st.push(w, items...)
		w.nextRev = through + 1
		st.mu.Unlock()
	}
}

// readEvents reads revisions from..upto (at most one chunk) in one short read
// transaction and returns w's matching events, the last revision read, and
// the compact revision if from is no longer held (-1 if it is).
func (h *watchHub) readEvents(w *watcher, from, upto int64) (items []watchItem, through, compacted int64, err error) {
	through, compacted = from-1, -1
	err = h.s.sm.view(func(tx *bbolt.Tx) error {
		if c := int64(getUint(tx.Bucket(metaBucket), keyCompactRevison)); from <= c {
			compacted = c
			return nil
		}
		cur := tx.Bucket(eventsBucket).Cursor()
		read, size := 0, 0
		for k, v := cur.Seek(revKey(from)); k != nil; k, v = cur.Next() {
			rev := int64(binary.BigEndian.Uint64(k))
			// At least one revision per read, however large.
			if rev > upto || read >= h.replayChunk || read > 0 && size+len(v) > replayChunkBytes {
				break
			}
			if rev != through+1 {
				// Every revision has its batch: a missing one was dropped.
				compacted = rev - 1
				return nil
			}
			var b catalogpb.EventBatch
			if err := proto.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("decode events of revision %d: %w", rev, err)
			}
			sizes := make([]int, len(b.Events))
			for i, e := range b.Events {
				sizes[i] = proto.Size(e)
			}
			if evs, n := w.match(b.Events, sizes); len(evs) > 0 {
				items = append(items, watchItem{kind: itemEvents, through: rev, events: evs, size: n})
			}
			through = rev
			read++
			size += len(v)
		}
		if read == 0 {
			return fmt.Errorf("revision %d is missing from the event history (the store is at revision %d)", from, readRevision(tx))
		}
		return nil
	})
	if len(items) > 0 {
		items[len(items)-1].through = through
	}
	return items, through, compacted, err
}

func compactedMessage(from, compact int64) string {
	return fmt.Sprintf("%v: revision %d is no longer held; the oldest revision held is %d: list, then watch from the list's revision",
		errCompacted, from, compact+1)
}

// watchService implements catalogpb.WatchServer.
type watchService struct {
	catalogpb.UnimplementedWatchServer
	s *Server
}

// Watch serves one stream of many watches until the client goes, the stream
// fails or the member stops.
func (ws *watchService) Watch(srv catalogpb.Watch_WatchServer) error {
	h := ws.s.watches
	ctx, cancel := context.WithCancel(srv.Context())
	st := &watchStream{
		h:           h,
		srv:         srv,
		ctx:         ctx,
		watchers:    make(map[int64]*watcher),
		wakeC:       make(chan struct{}, 1),
		controlRoom: make(chan struct{}, 1),
	}
	defer func() {
		cancel()
		st.close()
	}()
	recvErr := make(chan error, 1)
	go func() { recvErr <- st.recvLoop() }()
	return st.sendLoop(recvErr)
}

// A watchStream is one client's Watch stream.
type watchStream struct {
	h   *watchHub
	srv catalogpb.Watch_WatchServer
	ctx context.Context

	// wakeC tells the sender that something was queued; controlRoom tells
	// the receiver that control responses were sent.
	wakeC       chan struct{}
	controlRoom chan struct{}

	mu sync.Mutex
	// watchers are the stream's watches by id, until their canceled
	// response is sent.
	watchers map[int64]*watcher
	lastID   int64
	// ready lists the watchers with queued items, each once, in the order
	// the sender serves them.
	ready []*watcher
	// control holds responses that belong to no live watch.
	control []*catalogpb.WatchResponse
	closed  bool
}

// A watcher is one watch of a stream.
type watcher struct {
	id             int64
	st             *watchStream
	filter         catalogpb.WatchCreateRequest_Filter
	key            []byte
	prefix         bool
	service        string
	prevKV         bool
	progressNotify bool
	// roomC tells the replay that the sender took items from the queue.
	roomC chan struct{}

	// Guarded by st.mu.
	nextRev      int64
	synced       bool
	queue        []watchItem
	queuedEvents int
	queuedBytes  int
	inReady      bool
	// ended: the final (canceled) item is queued; nothing follows it.
	ended bool

	// Owned by the sender: the header revision of the last response sent.
	sentThrough int64
	// lastSent is when a response was last sent (unix nanoseconds).
	lastSent atomic.Int64
}

type itemKind int

const (
	itemEvents itemKind = iota
	itemCreated
	itemBookmark
	itemCanceled
)

// A watchItem is one queued piece of a watch's output: the events of one
// revision, or a created, bookmark or canceled response.
type watchItem struct {
	kind itemKind
	// through is the revision the watch has seen everything up to once this
	// item is sent; -1 on a canceled item means the last one sent.
	through int64
	events  []*catalogpb.Event
	size    int
	// canceled items
	reason     catalogpb.ErrorReason
	msg        string
	compactRev int64
}

// push queues items for w and wakes the sender; st.mu is held.
func (st *watchStream) push(w *watcher, items ...watchItem) {
	if len(items) == 0 || w.ended {
		return
	}
	for _, it := range items {
		w.queuedEvents += len(it.events)
		w.queuedBytes += it.size
	}
	w.queue = append(w.queue, items...)
	if !w.inReady {
		w.inReady = true
		st.ready = append(st.ready, w)
	}
	st.wake()
}

// end replaces whatever w still has queued with its final item; st.mu is
// held, and w is no longer in the hub's synced set.
func (st *watchStream) end(w *watcher, final watchItem) {
	w.queue, w.queuedEvents, w.queuedBytes = nil, 0, 0
	st.push(w, final)
	w.ended = true
	select {
	case w.roomC <- struct{}{}:
	default:
	}
}

func (st *watchStream) wake() {
	select {
	case st.wakeC <- struct{}{}:
	default:
	}
}

// close ends every watch of the stream; the stream's context is done.
func (st *watchStream) close() {
	h := st.h
	h.mu.Lock()
	defer h.mu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	for _, w := range st.watchers {
		if w.synced {
			delete(h.synced[w.filter], w)
			w.synced = false
		}
		w.ended = true
		w.queue = nil
	}
	st.ready = nil
}

// recvLoop handles the client's requests until the stream ends.
func (st *watchStream) recvLoop() error {
	for {
		req, err := st.srv.Recv()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if !st.waitControlRoom() {
			return nil
		}
		switch r := req.Request.(type) {
		case *catalogpb.WatchRequest_CreateRequest:
			st.create(r.CreateRequest)
		case *catalogpb.WatchRequest_CancelRequest:
			st.cancel(r.CancelRequest.GetWatchId())
		case *catalogpb.WatchRequest_ProgressRequest:
			st.progress()
		}
	}
}

// waitControlRoom waits until the client has read enough control responses.
func (st *watchStream) waitControlRoom() bool {
	for {
		st.mu.Lock()
		n := len(st.control)
		st.mu.Unlock()
		if n < maxControlResponses {
			return true
		}
		select {
		case <-st.controlRoom:
		case <-st.ctx.Done():
			return false
		}
	}
}

// sendLoop sends queued responses until the stream ends.
func (st *watchStream) sendLoop(recvErr <-chan error) error {
	for {
		for {
			resp, w, kind := st.next()
			if resp == nil {
				break
			}
			if err := st.srv.Send(resp); err != nil {
				return err
			}
			if w == nil {
				continue
			}
			w.sentThrough = resp.GetHeader().GetRevision()
			w.lastSent.Store(time.Now().UnixNano())
			if kind == itemCanceled {
				st.mu.Lock()
				if st.watchers[w.id] == w {
					delete(st.watchers, w.id)
				}
				st.mu.Unlock()
			}
		}
		select {
		case <-st.wakeC:
		case err := <-recvErr:
			return err
		case <-st.h.s.stopc:
			return toGRPCError(fmt.Errorf("%w: this member is shutting down; watch again on another member from the last revision seen + 1", consensus.ErrStopped))
		case <-st.ctx.Done():
			return st.ctx.Err()
		}
	}
}

// next takes the next response to send: control responses first, then one
// response of the first ready watcher, which goes to the back of the line
// if it has more.
func (st *watchStream) next() (*catalogpb.WatchResponse, *watcher, itemKind) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.control) > 0 {
		resp := st.control[0]
		st.control[0] = nil
		st.control = st.control[1:]
		select {
		case st.controlRoom <- struct{}{}:
		default:
		}
		return resp, nil, itemCanceled
	}
	for len(st.ready) > 0 {
		w := st.ready[0]
		st.ready[0] = nil
		st.ready = st.ready[1:]
		if len(w.queue) == 0 {
			w.inReady = false
			continue
		}
		n := 1
		if w.queue[0].kind == itemEvents {
			size := w.queue[0].size
			for n < len(w.queue) && w.queue[n].kind == itemEvents && size+w.queue[n].size <= maxWatchResponseBytes {
				size += w.queue[n].size
				n++
			}
		}
		items := w.queue[:n]
		w.queue = w.queue[n:]
		for _, it := range items {
			w.queuedEvents -= len(it.events)
			w.queuedBytes -= it.size
		}
		if len(w.queue) > 0 {
			st.ready = append(st.ready, w)
		} else {
			w.inReady = false
			w.queue = nil
		}
		select {
		case w.roomC <- struct{}{}:
		default:
		}
		return st.response(w, items), w, items[0].kind
	}
	return nil, nil, 0
}

// response builds the response of w's items.
func (st *watchStream) response(w *watcher, items []watchItem) *catalogpb.WatchResponse {
	last := items[len(items)-1]
	through := last.through
	if through < 0 {
		through = w.sentThrough
	}
	resp := &catalogpb.WatchResponse{Header: st.h.s.header(through), WatchId: w.id}
	switch items[0].kind {
	case itemCreated:
		resp.Created = true
	case itemBookmark:
		resp.ProgressNotify = true
	case itemCanceled:
		resp.Canceled = true
		resp.Reason = last.reason
		resp.CancelReason = last.msg
		resp.CompactRevision = last.compactRev
	case itemEvents:
		n := 0
		for _, it := range items {
			n += len(it.events)
		}
		resp.Events = make([]*catalogpb.Event, 0, n)
		for _, it := range items {
			for _, e := range it.events {
				if !w.prevKV && e.PrevKv != nil {
					e = withoutPrevKV(e)
				}
				resp.Events = append(resp.Events, e)
			}
		}
	}
	return resp
}

// withoutPrevKV returns a copy of e without its prev_kv; the copy shares
// e's fields, which nobody changes once applied.
func withoutPrevKV(e *catalogpb.Event) *catalogpb.Event {
	return &catalogpb.Event{
		Type:           e.Type,
		Kind:           e.Kind,
		Kv:             e.Kv,
		Lease:          e.Lease,
		Service:        e.Service,
		PrevService:    e.PrevService,
		Instance:       e.Instance,
		PrevInstance:   e.PrevInstance,
		ShardMap:       e.ShardMap,
		PrevShardMap:   e.PrevShardMap,
		Lock:           e.Lock,
		PrevLock:       e.PrevLock,
		Barrier:        e.Barrier,
		PrevBarrier:    e.PrevBarrier,
		QueueItem:      e.QueueItem,
		PrevQueueItem:  e.PrevQueueItem,
		QueueConsumers: e.QueueConsumers,
	}
}

// create starts a watch, or answers why it cannot.
func (st *watchStream) create(req *catalogpb.WatchCreateRequest) {
	h := st.h
	if err := validateWatchCreate(req); err != nil {
		st.refuse(req.WatchId, err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return
	}
	id := req.WatchId
	if id == 0 {
		for {
			st.lastID++
			if _, used := st.watchers[st.lastID]; !used {
				break
			}
		}
		id = st.lastID
	} else if _, used := st.watchers[id]; used {
		st.refuseLocked(id, fmt.Errorf("%w: watch_id %d is taken on this stream; choose another or send 0 to let the server choose", errWatchIDExists, id))
		return
	}
	start := req.StartRevision
	if start == 0 {
		start = h.rev + 1
	}
	if compact := h.s.sm.CompactRevision(); start <= compact {
		st.control = append(st.control, &catalogpb.WatchResponse{
			Header:          h.s.header(h.rev),
			WatchId:         id,
			Created:         true,
			Canceled:        true,
			Reason:          catalogpb.ErrorReason_COMPACTED,
			CompactRevision: compact,
			CancelReason:    compactedMessage(start, compact),
		})
		st.wake()
		return
	}
	w := &watcher{
		id:             id,
		st:             st,
		filter:         req.Filter,
		key:            bytes.Clone(req.Key),
		prefix:         req.Prefix,
		service:        req.Service,
		prevKV:         req.PrevKv,
		progressNotify: req.ProgressNotify,
		roomC:          make(chan struct{}, 1),
	}
	w.lastSent.Store(time.Now().UnixNano())
	st.watchers[id] = w
	w.nextRev = start
	w.sentThrough = start - 1
	st.push(w, watchItem{kind: itemCreated, through: start - 1})
	if start > h.rev {
		h.addSynced(w)
		return
	}
	go h.replay(w)
}

// refuse answers a create that cannot be served.
func (st *watchStream) refuse(id int64, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.refuseLocked(id, err)
}

func (st *watchStream) refuseLocked(id int64, err error) {
	if st.closed {
		return
	}
	st.control = append(st.control, &catalogpb.WatchResponse{
		Header:       st.h.s.header(st.h.s.sm.Revision()),
		WatchId:      id,
		Created:      true,
		Canceled:     true,
		CancelReason: err.Error(),
		Reason:       errorReason(err),
	})
	st.wake()
}

// cancel ends a watch at the client's request.
func (st *watchStream) cancel(id int64) {
	h := st.h
	h.mu.Lock()
	defer h.mu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return
	}
	w, ok := st.watchers[id]
	if !ok {
		st.control = append(st.control, &catalogpb.WatchResponse{
			Header:       st.h.s.header(h.rev),
			WatchId:      id,
			Canceled:     true,
			CancelReason: fmt.Sprintf("%v: watch %d does not exist on this stream (or has ended)", errWatchNotFound, id),
			Reason:       catalogpb.ErrorReason_WATCH_NOT_FOUND,
		})
		st.wake()
		return
	}
	if w.ended {
		return // its canceled response is on its way
	}
	if w.synced {
		delete(h.synced[w.filter], w)
		w.synced = false
	}
	st.end(w, watchItem{kind: itemCanceled, through: -1, msg: "watch canceled at the client's request"})
}

// progress queues a bookmark for every watch of the stream.
func (st *watchStream) progress() {
	h := st.h
	h.mu.Lock()
	defer h.mu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, w := range st.watchers {
		if w.ended {
			continue
		}
		st.push(w, watchItem{kind: itemBookmark, through: w.seen(h)})
	}
}

// seen is the revision up to which w has queued everything; h.mu and w.st.mu
// are held.
func (w *watcher) seen(h *watchHub) int64 {
	if w.synced {
		// Applied skips the watchers of filters a commit does not touch,
		// so nextRev lags; a watch from a future revision is ahead.
		return max(h.rev, w.nextRev-1)
	}
	return w.nextRev - 1
}

// waitRoom waits until w's queue is at most half full; false if w ended.
func (w *watcher) waitRoom(h *watchHub) bool {
	for {
		w.st.mu.Lock()
		ended := w.ended
		room := w.queuedEvents <= h.bufferEvents/2 && w.queuedBytes <= h.bufferBytes/2
		w.st.mu.Unlock()
		if ended {
			return false
		}
		if room {
			return true
		}
		select {
		case <-w.roomC:
		case <-w.st.ctx.Done():
			return false
		}
	}
}

// match returns the events of evs that w wants, and their size.
func (w *watcher) match(evs []*catalogpb.Event, sizes []int) ([]*catalogpb.Event, int) {
	var out []*catalogpb.Event
	size := 0
	all := true
	for i, e := range evs {
		if w.wants(e) {
			out = append(out, e)
			size += sizes[i]
		} else {
			all = false
		}
	}
	if all {
		return evs, size
	}
	return out, size
}

func (w *watcher) wants(e *catalogpb.Event) bool {
	key := e.GetKv().GetKey()
	switch w.filter {
	case catalogpb.WatchCreateRequest_KV:
		if e.Kind != registry.EventKind {
			return false
		}
		if w.prefix {
			return bytes.HasPrefix(key, w.key)
		}
		return bytes.Equal(key, w.key)
	case catalogpb.WatchCreateRequest_SERVICE:
		switch e.Kind {
		case registry.ServiceKind:
			return w.service == "" || string(key) == w.service
		case registry.InstanceKind:
			return w.service == "" || len(key) > len(w.service) && key[len(w.service)] == '/' && string(key[:len(w.service)]) == w.service
		}
		return false
	case catalogpb.WatchCreateRequest_SHARD_MAP:
		return e.Kind == registry.ShardMapKind && (w.service == "" || string(key) == w.service)
	case catalogpb.WatchCreateRequest_LEASE:
		return e.Kind == lease.EventKind
	case catalogpb.WatchCreateRequest_LOCK:
		return e.Kind == locks.LockKind && w.matchesName(string(key))
	case catalogpb.WatchCreateRequest_BARRIER:
		return e.Kind == locks.BarrierKind && w.matchesName(string(key))
	case catalogpb.WatchCreateRequest_QUEUE:
		return e.Kind == locks.QueueKind && w.matchesName(queueOfEvent(e))
	}
	return false
}

// matchesName matches a coordination name against the watch's key: the
// name itself, or a prefix of it with prefix set.
func (w *watcher) matchesName(name string) bool {
	if w.prefix {
		return strings.HasPrefix(name, string(w.key))
	}
	return name == string(w.key)
}

// queueOfEvent is the queue a "queue" event belongs to. An item's event has
// key "queue/id"; a consumers' event has the queue's name as key. Queue
// names may hold '/', so the name comes from the item when there is one.
func queueOfEvent(e *catalogpb.Event) string {
	if it := e.GetQueueItem(); it != nil {
		return it.GetQueue()
	}
	if it := e.GetPrevQueueItem(); it != nil {
		return it.GetQueue()
	}
	return string(e.GetKv().GetKey())
}

// validateWatchCreate checks a create request and says what to fix.
func validateWatchCreate(req *catalogpb.WatchCreateRequest) error {
	if req.WatchId < 0 {
		return fmt.Errorf("%w: watch_id must be >= 0 (0: the server chooses one), got %d", registry.ErrInvalidArgument, req.WatchId)
	}
	if req.StartRevision < 0 {
		return fmt.Errorf("%w: start_revision must be >= 0 (0: from the next revision on), got %d", registry.ErrInvalidArgument, req.StartRevision)
	}
	f := req.Filter
	switch f {
	case catalogpb.WatchCreateRequest_KV:
		if len(req.Key) == 0 && !req.Prefix {
			return fmt.Errorf("%w: a KV watch needs a key, or prefix set (an empty prefix watches every key)", registry.ErrInvalidArgument)
		}
		if len(req.Key) > registry.MaxKeySize {
			return fmt.Errorf("%w: key must be at most %d bytes, got %d", registry.ErrInvalidArgument, registry.MaxKeySize, len(req.Key))
		}
		if req.Service != "" {
			return fmt.Errorf("%w: service is not used by a KV watch (got %q); use the SERVICE filter to watch a service", registry.ErrInvalidArgument, req.Service)
		}
	case catalogpb.WatchCreateRequest_LOCK, catalogpb.WatchCreateRequest_BARRIER, catalogpb.WatchCreateRequest_QUEUE:
		what := map[catalogpb.WatchCreateRequest_Filter]string{
			catalogpb.WatchCreateRequest_LOCK:    "lock",
			catalogpb.WatchCreateRequest_BARRIER: "barrier",
			catalogpb.WatchCreateRequest_QUEUE:   "queue",
		}[f]
		if len(req.Key) == 0 && !req.Prefix {
			return fmt.Errorf("%w: a %v watch needs key (a %s name), or prefix set (an empty prefix watches every %s)", registry.ErrInvalidArgument, f, what, what)
		}
		if len(req.Key) > locks.MaxNameBytes {
			return fmt.Errorf("%w: key (a %s name) must be at most %d bytes, got %d", registry.ErrInvalidArgument, what, locks.MaxNameBytes, len(req.Key))
		}
		if req.Service != "" {
			return fmt.Errorf("%w: service is not used by a %v watch (got %q)", registry.ErrInvalidArgument, f, req.Service)
		}
	case catalogpb.WatchCreateRequest_SERVICE, catalogpb.WatchCreateRequest_SHARD_MAP, catalogpb.WatchCreateRequest_LEASE:
		if len(req.Key) > 0 || req.Prefix {
			return fmt.Errorf("%w: key and prefix are only used by KV, LOCK, BARRIER and QUEUE watches, not by a %v watch", registry.ErrInvalidArgument, f)
		}
		if f == catalogpb.WatchCreateRequest_LEASE {
			if req.Service != "" {
				return fmt.Errorf("%w: service is not used by a LEASE watch (got %q)", registry.ErrInvalidArgument, req.Service)
			}
		} else if req.Service != "" {
			if err := registry.ValidateServiceName("service", req.Service); err != nil {
				return fmt.Errorf("%w (or empty: every service)", err)
			}
		}
	default:
		names := make([]string, len(watchFilters))
		for i, f := range watchFilters {
			names[i] = f.String()
		}
		return fmt.Errorf("%w: filter must be one of %s, got %v (%d)", registry.ErrInvalidArgument, strings.Join(names, ", "), f, int32(f))
	}
	return nil
}

// errorReason is the reason errorTable gives err.
func errorReason(err error) catalogpb.ErrorReason {
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e.reason
		}
	}
	return catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED
}
