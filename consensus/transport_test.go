package consensus

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// waitLimit bounds every wait in these tests. It is a hang detector, not a
// performance bound: on success the conditions hold in milliseconds.
const waitLimit = 10 * time.Second

type snapshotReport struct {
	id     uint64
	status raft.SnapshotStatus
}

// A recordingHandler is a Handler that records what the transport delivers
// and reports.
type recordingHandler struct {
	// Set before the transport starts.
	snapshotDB []byte // served by OpenSnapshotDB
	openErr    error  // returned by OpenSnapshotDB
	// processGate, if set, holds every Process call until it is closed or
	// the call's context ends: a peer that stops reading.
	processGate chan struct{}
	// receiveGate, if set, holds ReceiveSnapshotDB before it reads.
	receiveGate chan struct{}

	mu          sync.Mutex
	calls       int
	msgs        []raftpb.Message
	unreachable map[uint64]int
	snapReports []snapshotReport
	receivedDBs [][]byte
	receiveErrs []error
}

func (h *recordingHandler) Process(ctx context.Context, m raftpb.Message) error {
	if h.processGate != nil {
		select {
		case <-h.processGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	h.msgs = append(h.msgs, m)
	return nil
}

func (h *recordingHandler) ReportUnreachable(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.unreachable == nil {
		h.unreachable = make(map[uint64]int)
	}
	h.unreachable[id]++
}

func (h *recordingHandler) ReportSnapshot(id uint64, st raft.SnapshotStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	h.snapReports = append(h.snapReports, snapshotReport{id, st})
}

func (h *recordingHandler) OpenSnapshotDB(m raftpb.Message) (raftpb.Message, io.ReadCloser, int64, error) {
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	if h.openErr != nil {
		return m, nil, 0, h.openErr
	}
	return m, io.NopCloser(bytes.NewReader(h.snapshotDB)), int64(len(h.snapshotDB)), nil
}

func (h *recordingHandler) ReceiveSnapshotDB(_ raftpb.Message, r io.Reader) error {
	if h.receiveGate != nil {
		<-h.receiveGate
	}
	db, err := io.ReadAll(r)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if err != nil {
		h.receiveErrs = append(h.receiveErrs, err)
		return err
	}
	h.receivedDBs = append(h.receivedDBs, db)
	return nil
}

func (h *recordingHandler) messages() []raftpb.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]raftpb.Message(nil), h.msgs...)
}

func (h *recordingHandler) unreachableCount(id uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unreachable[id]
}

func (h *recordingHandler) snapshotReports() []snapshotReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]snapshotReport(nil), h.snapReports...)
}

func (h *recordingHandler) callCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// A transportMember is one member's transport with its peer gRPC server on
// loopback.
type transportMember struct {
	id   uint64
	addr string
	h    *recordingHandler
	tr   *GRPCTransport
	lis  net.Listener
	srv  *grpc.Server
}

// newTransportMember creates a member whose port listens but is not served
// yet: a peer's connection waits in the accept queue until serve.
func newTransportMember(t *testing.T, id, clusterID uint64, h *recordingHandler, drop DropFunc) *transportMember {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	m := &transportMember{id: id, addr: lis.Addr().String(), h: h, lis: lis}
	m.tr = NewGRPCTransport(TransportConfig{
		ID:          id,
		ClusterID:   clusterID,
		Handler:     h,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})).With("member", id),
		Drop:        drop,
		DialTimeout: 5 * time.Second, // generous: a slow test machine must not time out a connect
	})
	m.srv = m.newServer()
	t.Cleanup(func() {
		m.tr.Stop()
		m.srv.Stop()
		_ = lis.Close()
	})
	return m
}

func (m *transportMember) newServer() *grpc.Server {
	srv := grpc.NewServer(ServerOptions()...)
	m.tr.Register(srv)
	return srv
}

func (m *transportMember) serve() {
	go func() { _ = m.tr.Serve(m.lis, m.srv) }()
}

func startTransportMember(t *testing.T, id, clusterID uint64, h *recordingHandler) *transportMember {
	t.Helper()
	m := newTransportMember(t, id, clusterID, h, nil)
	m.serve()
	return m
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// waitFor fails the test if cond does not hold within waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// returnsWithin fails the test if f does not return within waitLimit.
func returnsWithin(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatalf("%s did not return within %v", what, waitLimit)
	}
}

// appMsg returns a MsgApp carrying one entry of payload bytes at index.
func appMsg(from, to, index uint64, payload int) raftpb.Message {
	data := bytes.Repeat([]byte{byte(index)}, payload)
	return raftpb.Message{
		Type: raftpb.MsgApp, From: from, To: to, Term: 1, Index: index - 1, LogTerm: 1,
		Entries: []raftpb.Entry{{Term: 1, Index: index, Type: raftpb.EntryNormal, Data: data}},
	}
}

// appMsgs returns MsgApps with indexes first..last.
func appMsgs(from, to, first, last uint64, payload int) []raftpb.Message {
	var msgs []raftpb.Message
	for i := first; i <= last; i++ {
		msgs = append(msgs, appMsg(from, to, i, payload))
	}
	return msgs
}

// checkIndexes fails unless msgs are MsgApps from..to carrying exactly the
// entry indexes want, in order.
func checkIndexes(t *testing.T, msgs []raftpb.Message, from, to uint64, want []uint64) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if m.Type != raftpb.MsgApp || m.From != from || m.To != to || len(m.Entries) != 1 {
			t.Fatalf("message %d = %s from %x to %x with %d entries, want a MsgApp from %x to %x with 1 entry",
				i, m.Type, m.From, m.To, len(m.Entries), from, to)
		}
		if got := m.Entries[0].Index; got != want[i] {
			t.Fatalf("message %d carries entry %d, want %d (out of order or lost)", i, got, want[i])
		}
		if d := m.Entries[0].Data; len(d) > 0 && d[0] != byte(want[i]) {
			t.Fatalf("message %d entry data corrupted", i)
		}
	}
}

func indexRange(first, last uint64) []uint64 {
	var idx []uint64
	for i := first; i <= last; i++ {
		idx = append(idx, i)
	}
	return idx
}

func TestTransportDeliversInOrderAndBatched(t *testing.T) {
	tests := []struct {
		name    string
		count   uint64
		payload int
		// minBatches and maxBatches bound how many batches the messages,
		// sent in one call, take: few, unless maxBatchBytes splits them.
		minBatches, maxBatches int64
	}{
		{name: "small messages share batches", count: 1000, payload: 100, minBatches: 1, maxBatches: 10},
		{name: "large messages split at maxBatchBytes", count: 3, payload: 6 << 20, minBatches: 2, maxBatches: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := startTransportMember(t, 1, 7, &recordingHandler{})
			b := newTransportMember(t, 2, 7, &recordingHandler{}, nil)
			a.tr.AddPeer(2, b.addr)
			// b's port accepts the stream into its queue before b
			// serves; the messages wait there.
			a.tr.Send(appMsgs(1, 2, 1, tc.count, tc.payload))
			b.serve()

			waitFor(t, "all messages to arrive", func() bool { return uint64(len(b.h.messages())) >= tc.count })
			checkIndexes(t, b.h.messages(), 1, 2, indexRange(1, tc.count))
			if got := b.tr.batchesReceived.Load(); got < tc.minBatches || got > tc.maxBatches {
				t.Errorf("%d messages arrived in %d batches, want %d to %d", tc.count, got, tc.minBatches, tc.maxBatches)
			}
			if got := a.tr.ActivePeers(); !got[2] {
				t.Errorf("ActivePeers() = %v, want peer 2 active", got)
			}

			// Once the stream is up, later sends keep their order too.
			a.tr.Send(appMsgs(1, 2, tc.count+1, tc.count+50, 10))
			waitFor(t, "second round", func() bool { return uint64(len(b.h.messages())) >= tc.count+50 })
			checkIndexes(t, b.h.messages(), 1, 2, indexRange(1, tc.count+50))
			if n := a.h.unreachableCount(2); n != 0 {
				t.Errorf("peer 2 reported unreachable %d times, want 0", n)
			}
		})
	}
}

func TestTransportSlowOrDeadPeerDoesNotBlock(t *testing.T) {
	a := startTransportMember(t, 1, 7, &recordingHandler{})
	// The writer to the stuck peer stays blocked for the whole test rather
	// than giving up after peerWriteTimeout: Send must not wait for it.
	a.tr.writeTimeout = time.Hour
	live := startTransportMember(t, 2, 7, &recordingHandler{})
	stuckGate := make(chan struct{})
	stuck := startTransportMember(t, 3, 7, &recordingHandler{processGate: stuckGate})
	t.Cleanup(func() { close(stuckGate) })
	const deadID = 4
	a.tr.AddPeer(live.id, live.addr)
	a.tr.AddPeer(stuck.id, stuck.addr)
	a.tr.AddPeer(deadID, deadAddr(t))

	// Far more data than the stuck peer's flow-control window and queue
	// hold: without bounded queues Send would block or memory would grow.
	const rounds = 200
	returnsWithin(t, "Send to slow and dead peers", func() {
		for r := range uint64(rounds) {
			var msgs []raftpb.Message
			msgs = append(msgs, appMsg(1, live.id, r+1, 10))
			for i := range uint64(100) {
				msgs = append(msgs, appMsg(1, stuck.id, r*100+i+1, 2<<10), appMsg(1, deadID, r*100+i+1, 10))
			}
			a.tr.Send(msgs)
		}
	})

	waitFor(t, "the live peer to receive everything", func() bool { return len(live.h.messages()) >= rounds })
	checkIndexes(t, live.h.messages(), 1, live.id, indexRange(1, rounds))
	waitFor(t, "the stuck peer to be reported unreachable", func() bool { return a.h.unreachableCount(stuck.id) > 0 })
	waitFor(t, "the dead peer to be reported unreachable", func() bool { return a.h.unreachableCount(deadID) > 0 })
	if n := a.h.unreachableCount(live.id); n != 0 {
		t.Errorf("live peer reported unreachable %d times, want 0", n)
	}
	active := a.tr.ActivePeers()
	if !active[live.id] || active[deadID] {
		t.Errorf("ActivePeers() = %v, want live peer %d active and dead peer %d not", active, live.id, deadID)
	}
}

func TestTransportReconnectsToRestartedPeer(t *testing.T) {
	a := startTransportMember(t, 1, 7, &recordingHandler{})
	b := startTransportMember(t, 2, 7, &recordingHandler{})
	a.tr.AddPeer(2, b.addr)
	a.tr.Send(appMsgs(1, 2, 1, 5, 10))
	waitFor(t, "first messages", func() bool { return len(b.h.messages()) == 5 })

	b.srv.Stop()
	waitFor(t, "peer 2 to become inactive", func() bool { return !a.tr.ActivePeers()[2] })
	waitFor(t, "peer 2 to be reported unreachable", func() bool { return a.h.unreachableCount(2) > 0 })

	lis, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", b.addr, err)
	}
	b.lis, b.srv = lis, b.newServer()
	b.serve()
	waitFor(t, "peer 2 to become active again", func() bool { return a.tr.ActivePeers()[2] })
	a.tr.Send(appMsgs(1, 2, 6, 10, 10))
	waitFor(t, "messages after the restart", func() bool { return len(b.h.messages()) == 10 })
	checkIndexes(t, b.h.messages(), 1, 2, indexRange(1, 10))
}

func TestTransportDropHook(t *testing.T) {
	var dropping atomic.Bool
	dropping.Store(true)
	var badArgs atomic.Int64
	drop := func(from, to uint64) bool {
		if from != 1 || to != 2 {
			badArgs.Add(1)
		}
		return dropping.Load()
	}
	a := newTransportMember(t, 1, 7, &recordingHandler{snapshotDB: []byte("db")}, drop)
	a.serve()
	b := startTransportMember(t, 2, 7, &recordingHandler{})
	a.tr.AddPeer(2, b.addr)

	a.tr.Send(appMsgs(1, 2, 1, 10, 10))
	a.tr.Send([]raftpb.Message{snapMsg(1, 2, 5)})
	dropping.Store(false)
	// The stream keeps order, so once 11 is there, 1..10 would have been too.
	a.tr.Send(appMsgs(1, 2, 11, 11, 10))
	waitFor(t, "the message sent after dropping stopped", func() bool { return len(b.h.messages()) > 0 })
	checkIndexes(t, b.h.messages(), 1, 2, []uint64{11})

	if got, want := a.h.snapshotReports(), []snapshotReport{{2, raft.SnapshotFailure}}; !equalReports(got, want) {
		t.Errorf("snapshot reports = %v, want %v (a dropped snapshot fails)", got, want)
	}
	if n := a.h.unreachableCount(2); n != 0 {
		t.Errorf("dropped messages reported peer unreachable %d times, want 0: a drop is silent", n)
	}
	if n := badArgs.Load(); n != 0 {
		t.Errorf("Drop called %d times with arguments other than (1, 2)", n)
	}
}

func equalReports(a, b []snapshotReport) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTransportRefusesForeignBatches(t *testing.T) {
	b := startTransportMember(t, 0xb0b, 0xc1a55, &recordingHandler{})
	valid, err := (&raftpb.Message{Type: raftpb.MsgHeartbeat, From: 0xa, To: 0xb0b}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		batch    *catalogpb.RaftBatch
		wantCode codes.Code
		wantMsg  []string
	}{
		{
			name:     "other cluster",
			batch:    &catalogpb.RaftBatch{ClusterId: 0xdead, From: 0xa, To: 0xb0b, Msgs: [][]byte{valid}},
			wantCode: codes.FailedPrecondition,
			wantMsg:  []string{"cluster id mismatch", "dead", "c1a55"},
		},
		{
			name:     "other member",
			batch:    &catalogpb.RaftBatch{ClusterId: 0xc1a55, From: 0xa, To: 0xf00, Msgs: [][]byte{valid}},
			wantCode: codes.FailedPrecondition,
			wantMsg:  []string{"member id mismatch", "f00", "b0b"},
		},
		{
			name:     "not a raft message",
			batch:    &catalogpb.RaftBatch{ClusterId: 0xc1a55, From: 0xa, To: 0xb0b, Msgs: [][]byte{{0xff, 0xff, 0xff}}},
			wantCode: codes.InvalidArgument,
			wantMsg:  []string{"not a raft message"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := &catalogpb.RaftBatch{ClusterId: tc.batch.ClusterId, From: tc.batch.From, To: tc.batch.To}
			err := sendRawStream(t, b.addr, env, &catalogpb.RaftBatch{Msgs: tc.batch.Msgs})
			checkStatus(t, err, tc.wantCode, tc.wantMsg...)
			if n := len(b.h.messages()); n != 0 {
				t.Errorf("handler got %d messages from a refused batch", n)
			}
		})
	}

	t.Run("frame larger than the transport carries", func(t *testing.T) {
		c, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		bw := bufio.NewWriter(c)
		env, _ := proto.Marshal(&catalogpb.RaftBatch{ClusterId: 0xc1a55, From: 0xa, To: 0xb0b})
		_, _ = bw.WriteString(streamMagic)
		_ = writeFrame(bw, env)
		_, _ = bw.Write([]byte{0xff, 0xff, 0xff, 0xff}) // 4 GiB announced
		if err := bw.Flush(); err != nil {
			t.Fatal(err)
		}
		checkStatus(t, readAnswers(c), codes.ResourceExhausted, "larger than the transport carries")
	})

	t.Run("transport of another cluster", func(t *testing.T) {
		a := startTransportMember(t, 0xa, 0xdead, &recordingHandler{snapshotDB: []byte("db")})
		a.tr.AddPeer(0xb0b, b.addr)
		a.tr.Send([]raftpb.Message{{Type: raftpb.MsgHeartbeat, From: 0xa, To: 0xb0b}, snapMsg(0xa, 0xb0b, 3)})
		waitFor(t, "the refused peer to be reported unreachable", func() bool { return a.h.unreachableCount(0xb0b) > 0 })
		waitFor(t, "the snapshot to fail", func() bool { return len(a.h.snapshotReports()) > 0 })
		if got, want := a.h.snapshotReports(), []snapshotReport{{0xb0b, raft.SnapshotFailure}}; !equalReports(got, want) {
			t.Errorf("snapshot reports = %v, want %v", got, want)
		}
		if n := len(b.h.messages()); n != 0 {
			t.Errorf("member of another cluster delivered %d messages", n)
		}
	})
}

// rawRaftClient is a gRPC client of a member's peer port (snapshots).
func rawRaftClient(t *testing.T, addr string) catalogpb.RaftClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return catalogpb.NewRaftClient(conn)
}

// sendRawStream opens a raft stream to addr by hand, sends env and batches,
// ends its side and returns the receiver's answer (its first refusal).
func sendRawStream(t *testing.T, addr string, env *catalogpb.RaftBatch, batches ...*catalogpb.RaftBatch) error {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bw := bufio.NewWriter(c)
	if _, err := bw.WriteString(streamMagic); err != nil {
		t.Fatal(err)
	}
	for _, b := range append([]*catalogpb.RaftBatch{env}, batches...) {
		raw, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFrame(bw, raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	return readAnswers(c)
}

func checkStatus(t *testing.T, err error, code codes.Code, msgParts ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if err == nil || !ok {
		t.Fatalf("got error %v, want a gRPC status with code %s", err, code)
	}
	if st.Code() != code {
		t.Fatalf("got code %s (%q), want %s", st.Code(), st.Message(), code)
	}
	for _, part := range msgParts {
		if !strings.Contains(st.Message(), part) {
			t.Errorf("error %q does not mention %q", st.Message(), part)
		}
	}
}

// snapMsg returns a MsgSnap for a snapshot at index.
func snapMsg(from, to, index uint64) raftpb.Message {
	return raftpb.Message{
		Type: raftpb.MsgSnap, From: from, To: to, Term: 2,
		Snapshot: &raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{
			Index: index, Term: 2, ConfState: raftpb.ConfState{Voters: []uint64{from, to}},
		}},
	}
}

func randomDB(t *testing.T, size int) []byte {
	t.Helper()
	db := make([]byte, size)
	if _, err := rand.Read(db); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestTransportSendsSnapshot(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{name: "several chunks", size: 3<<20 + 12345},
		{name: "empty database", size: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := randomDB(t, tc.size)
			a := startTransportMember(t, 1, 7, &recordingHandler{snapshotDB: db})
			b := startTransportMember(t, 2, 7, &recordingHandler{})
			a.tr.AddPeer(2, b.addr)
			a.tr.Send([]raftpb.Message{snapMsg(1, 2, 42)})

			waitFor(t, "the snapshot report", func() bool { return len(a.h.snapshotReports()) > 0 })
			if got, want := a.h.snapshotReports(), []snapshotReport{{2, raft.SnapshotFinish}}; !equalReports(got, want) {
				t.Fatalf("snapshot reports = %v, want %v", got, want)
			}
			b.h.mu.Lock()
			received, errs := b.h.receivedDBs, b.h.receiveErrs
			b.h.mu.Unlock()
			if len(received) != 1 || len(errs) != 0 {
				t.Fatalf("receiver stored %d databases with read errors %v, want 1 and none", len(received), errs)
			}
			if !bytes.Equal(received[0], db) {
				t.Errorf("received database of %d bytes differs from the %d bytes sent", len(received[0]), len(db))
			}
			msgs := b.h.messages()
			if len(msgs) != 1 || msgs[0].Type != raftpb.MsgSnap || msgs[0].Snapshot == nil ||
				msgs[0].Snapshot.Metadata.Index != 42 || msgs[0].From != 1 {
				t.Fatalf("processed %v, want one MsgSnap at index 42 from 1", msgs)
			}
		})
	}
}

func TestTransportSnapshotSendFailures(t *testing.T) {
	tests := []struct {
		name string
		h    *recordingHandler
		// addr returns the peer's address.
		addr func(t *testing.T) string
	}{
		{
			name: "database cannot be opened",
			h:    &recordingHandler{openErr: errors.New("disk on fire")},
			addr: func(t *testing.T) string { return startTransportMember(t, 2, 7, &recordingHandler{}).addr },
		},
		{
			name: "peer unreachable",
			h:    &recordingHandler{snapshotDB: []byte("db")},
			addr: deadAddr,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := startTransportMember(t, 1, 7, tc.h)
			a.tr.AddPeer(2, tc.addr(t))
			a.tr.Send([]raftpb.Message{snapMsg(1, 2, 9)})
			waitFor(t, "the snapshot report", func() bool { return len(a.h.snapshotReports()) > 0 })
			if got, want := a.h.snapshotReports(), []snapshotReport{{2, raft.SnapshotFailure}}; !equalReports(got, want) {
				t.Errorf("snapshot reports = %v, want %v", got, want)
			}
		})
	}
}

func TestTransportSnapshotDoesNotHoldUpMessages(t *testing.T) {
	gate := make(chan struct{})
	a := startTransportMember(t, 1, 7, &recordingHandler{snapshotDB: randomDB(t, 2<<20)})
	b := startTransportMember(t, 2, 7, &recordingHandler{receiveGate: gate})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	a.tr.AddPeer(2, b.addr)

	a.tr.Send([]raftpb.Message{snapMsg(1, 2, 42)})
	a.tr.Send([]raftpb.Message{{Type: raftpb.MsgHeartbeat, From: 1, To: 2, Term: 2}})
	waitFor(t, "the heartbeat while the snapshot is held", func() bool { return len(b.h.messages()) == 1 })
	if got := b.h.messages()[0].Type; got != raftpb.MsgHeartbeat {
		t.Fatalf("first message processed is %s, want MsgHeartbeat", got)
	}
	if n := len(a.h.snapshotReports()); n != 0 {
		t.Fatalf("snapshot reported before the receiver stored it")
	}

	release()
	waitFor(t, "the snapshot to finish", func() bool { return len(a.h.snapshotReports()) == 1 })
	if got := a.h.snapshotReports()[0]; got != (snapshotReport{2, raft.SnapshotFinish}) {
		t.Errorf("snapshot report = %v, want finish for 2", got)
	}
}

func TestTransportRefusesBadSnapshotStreams(t *testing.T) {
	db := randomDB(t, 3<<20)
	sum := sha256.Sum256(db)
	msg, err := (&raftpb.Message{
		Type: raftpb.MsgSnap, From: 1, To: 2,
		Snapshot: &raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: 7, Term: 1}},
	}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	heartbeat, err := (&raftpb.Message{Type: raftpb.MsgHeartbeat, From: 1, To: 2}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	corrupted := bytes.Clone(db)
	corrupted[len(corrupted)/2] ^= 0x01

	// chunks cuts data into 1 MiB chunks after a first chunk carrying
	// message and size, ending with a last chunk carrying checksum.
	chunks := func(message []byte, size int64, data []byte, checksum []byte, last bool) []*catalogpb.SnapshotChunk {
		cs := []*catalogpb.SnapshotChunk{{Message: message, TotalSize: size}}
		for len(data) > 0 {
			n := min(len(data), 1<<20)
			cs = append(cs, &catalogpb.SnapshotChunk{Data: data[:n]})
			data = data[n:]
		}
		if last {
			cs = append(cs, &catalogpb.SnapshotChunk{Last: true, Sha256: checksum})
		}
		return cs
	}

	tests := []struct {
		name     string
		chunks   []*catalogpb.SnapshotChunk
		wantCode codes.Code
		wantMsg  string
		// wantReadErr is whether ReceiveSnapshotDB ran and saw its reader fail.
		wantReadErr bool
	}{
		{
			name:        "corrupted data",
			chunks:      chunks(msg, int64(len(db)), corrupted, sum[:], true),
			wantCode:    codes.DataLoss,
			wantMsg:     "checksum mismatch",
			wantReadErr: true,
		},
		{
			name:        "wrong checksum",
			chunks:      chunks(msg, int64(len(db)), db, make([]byte, 32), true),
			wantCode:    codes.DataLoss,
			wantMsg:     "checksum mismatch",
			wantReadErr: true,
		},
		{
			name:        "truncated without last chunk",
			chunks:      chunks(msg, int64(len(db)), db[:2<<20], nil, false),
			wantCode:    codes.DataLoss,
			wantMsg:     "without a last chunk",
			wantReadErr: true,
		},
		{
			name:        "less data than total_size",
			chunks:      chunks(msg, int64(len(db)), db[:2<<20], sum[:], true),
			wantCode:    codes.DataLoss,
			wantMsg:     "ended after 2097152 of 3145728 bytes",
			wantReadErr: true,
		},
		{
			name:        "more data than total_size",
			chunks:      chunks(msg, 1<<20, db, sum[:], true),
			wantCode:    codes.DataLoss,
			wantMsg:     "exceeds its total_size",
			wantReadErr: true,
		},
		{
			name:     "first chunk not a MsgSnap",
			chunks:   chunks(heartbeat, int64(len(db)), db, sum[:], true),
			wantCode: codes.InvalidArgument,
			wantMsg:  "must carry a MsgSnap",
		},
		{
			name:     "negative total_size",
			chunks:   chunks(msg, -1, nil, nil, true),
			wantCode: codes.InvalidArgument,
			wantMsg:  "total_size must be >= 0, got -1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startTransportMember(t, 2, 7, &recordingHandler{})
			stream, err := rawRaftClient(t, b.addr).Snapshot(t.Context())
			if err != nil {
				t.Fatalf("open snapshot stream: %v", err)
			}
			for _, c := range tc.chunks {
				c.ClusterId, c.From, c.To = 7, 1, 2
				if err := stream.Send(c); err != nil {
					break // the server refused early; CloseAndRecv says why
				}
			}
			_, err = stream.CloseAndRecv()
			checkStatus(t, err, tc.wantCode, tc.wantMsg)

			// The handler goroutine has returned once the stream is over,
			// so the handler's records are final here.
			b.h.mu.Lock()
			stored, readErrs := len(b.h.receivedDBs), len(b.h.receiveErrs)
			b.h.mu.Unlock()
			if stored != 0 {
				t.Errorf("receiver stored %d databases from a bad stream, want 0", stored)
			}
			if got := readErrs > 0; got != tc.wantReadErr {
				t.Errorf("receiver saw a read error: %v, want %v", got, tc.wantReadErr)
			}
			if msgs := b.h.messages(); len(msgs) != 0 {
				t.Errorf("processed %d messages from a bad snapshot stream, want 0", len(msgs))
			}
		})
	}
}

func TestTransportPeerMembership(t *testing.T) {
	a := startTransportMember(t, 1, 7, &recordingHandler{})
	b := startTransportMember(t, 2, 7, &recordingHandler{})
	b2 := startTransportMember(t, 2, 7, &recordingHandler{}) // member 2 at a new address

	a.tr.AddPeer(1, "self:1") // itself: ignored
	a.tr.AddPeer(2, b.addr)
	a.tr.AddPeer(2, b.addr) // same address again: keeps the stream
	a.tr.Send(appMsgs(1, 2, 1, 3, 10))
	waitFor(t, "messages at the first address", func() bool { return len(b.h.messages()) == 3 })
	if got := a.tr.ActivePeers(); len(got) != 1 || !got[2] {
		t.Errorf("ActivePeers() = %v, want only peer 2, active", got)
	}

	a.tr.AddPeer(2, b2.addr)
	a.tr.Send(appMsgs(1, 2, 4, 6, 10))
	waitFor(t, "messages at the new address", func() bool { return len(b2.h.messages()) == 3 })
	checkIndexes(t, b2.h.messages(), 1, 2, indexRange(4, 6))

	a.tr.RemovePeer(2)
	if got := a.tr.ActivePeers(); len(got) != 0 {
		t.Errorf("ActivePeers() after RemovePeer = %v, want empty", got)
	}
	calls := a.h.callCount()
	a.tr.Send(appMsgs(1, 2, 7, 7, 10))
	a.tr.Send([]raftpb.Message{snapMsg(1, 2, 8)})
	if got := a.h.snapshotReports(); !equalReports(got, []snapshotReport{{2, raft.SnapshotFailure}}) {
		t.Errorf("snapshot to a removed peer reported %v, want one failure", got)
	}
	if got := a.h.callCount() - calls; got != 1 {
		t.Errorf("sending to a removed peer made %d Handler calls, want 1 (the snapshot failure)", got)
	}
}

func TestTransportStopEndsEverything(t *testing.T) {
	a := startTransportMember(t, 1, 7, &recordingHandler{snapshotDB: randomDB(t, 4<<20)})
	a.tr.writeTimeout = time.Hour // Stop itself must end blocked writes
	receiveGate := make(chan struct{})
	live := startTransportMember(t, 2, 7, &recordingHandler{receiveGate: receiveGate})
	stuckGate := make(chan struct{})
	stuck := startTransportMember(t, 3, 7, &recordingHandler{processGate: stuckGate})
	// Registered after the members, so it runs before their cleanups.
	t.Cleanup(func() {
		close(stuckGate)
		close(receiveGate)
	})
	a.tr.AddPeer(live.id, live.addr)
	a.tr.AddPeer(stuck.id, stuck.addr)
	a.tr.AddPeer(4, deadAddr(t))

	// At Stop: a snapshot held by its receiver, a writer blocked on a peer
	// that stopped reading (more data than its flow-control window and
	// queue hold), a dead peer, and an incoming stream into a's Handler.
	a.tr.Send([]raftpb.Message{snapMsg(1, live.id, 5)})
	for i := range uint64(200) {
		a.tr.Send(appMsgs(1, stuck.id, i*100+1, i*100+100, 2<<10))
		a.tr.Send(appMsgs(1, 4, i+1, i+1, 10))
	}
	live.tr.AddPeer(1, a.addr)
	live.tr.Send(appMsgs(live.id, 1, 1, 1, 10))
	waitFor(t, "the incoming stream", func() bool { return len(a.h.messages()) == 1 })
	waitFor(t, "the stuck peer to be reported unreachable", func() bool { return a.h.unreachableCount(stuck.id) > 0 })

	returnsWithin(t, "Stop", a.tr.Stop)
	returnsWithin(t, "a second Stop", a.tr.Stop)

	calls := a.h.callCount()
	a.tr.Send(appMsgs(1, live.id, 1, 5000, 1))
	a.tr.Send([]raftpb.Message{snapMsg(1, live.id, 6)})
	a.tr.AddPeer(5, deadAddr(t))
	if got := a.tr.ActivePeers(); len(got) != 0 {
		t.Errorf("ActivePeers() after Stop = %v, want empty", got)
	}
	if got := a.h.callCount() - calls; got != 0 {
		t.Errorf("%d Handler calls after Stop returned, want 0", got)
	}

	// Messages reaching a's server after Stop are refused, not processed.
	live.tr.Send(appMsgs(live.id, 1, 2, 2, 10))
	waitFor(t, "live's stream to a to be refused", func() bool { return live.h.unreachableCount(1) > 0 })
	if n := len(a.h.messages()); n != 1 {
		t.Errorf("a processed %d messages, want only the 1 before Stop", n)
	}
}

func TestTransportResetPeerOpensANewStream(t *testing.T) {
	a := startTransportMember(t, 1, 7, &recordingHandler{})
	b := startTransportMember(t, 2, 7, &recordingHandler{})
	a.tr.AddPeer(2, b.addr)
	a.tr.Send(appMsgs(1, 2, 1, 5, 10))
	waitFor(t, "first messages", func() bool { return len(b.h.messages()) == 5 })

	a.tr.ResetPeer(2)
	// The writer reports the ended stream as unreachable, then reconnects.
	waitFor(t, "the reset stream to be reported", func() bool { return a.h.unreachableCount(2) > 0 })
	waitFor(t, "peer 2 to become active again", func() bool { return a.tr.PeerActive(2) })
	a.tr.Send(appMsgs(1, 2, 6, 10, 10))
	waitFor(t, "messages after the reset", func() bool { return len(b.h.messages()) == 10 })
	checkIndexes(t, b.h.messages(), 1, 2, indexRange(1, 10))
}

func TestTransportReportsAPeerWhoseHostRefuses(t *testing.T) {
	var down atomic.Uint64
	h := &recordingHandler{}
	m := newTransportMember(t, 1, 7, h, nil)
	m.tr.cfg.OnPeerDown = func(id uint64) { down.Store(id) }
	m.serve()
	m.tr.AddPeer(2, deadAddr(t))
	m.tr.Send(appMsgs(1, 2, 1, 1, 10))
	waitFor(t, "peer 2 reported down", func() bool { return down.Load() == 2 })
}
