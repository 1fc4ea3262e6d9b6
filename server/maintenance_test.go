package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// applyPuts applies n puts of keys prefix0..prefix(n-1), one entry each, in
// batches of batch entries, starting at raft index from.
func applyPuts(t *testing.T, sm *stateMachine, prefix string, from uint64, n, batch int, value []byte) {
	t.Helper()
	var ents []raftpb.Entry
	for i := range n {
		idx := from + uint64(i)
		ents = append(ents, entry(t, idx, idx, &catalogpb.PutRequest{Key: fmt.Appendf(nil, "%s%d", prefix, i), Value: value}))
		if len(ents) == batch || i == n-1 {
			for _, r := range sm.Apply(ents) {
				if r.Err != nil {
					t.Fatalf("apply: %v", r.Err)
				}
			}
			ents = nil
		}
	}
}

// dbBytes returns the database as a read transaction writes it.
func dbBytes(t *testing.T, sm *stateMachine) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := sm.view(func(tx *bbolt.Tx) error { _, err := tx.WriteTo(&buf); return err }); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSnapshotStreamIsTheDatabase(t *testing.T) {
	sm, _ := newTestStateMachine(t, 1000)
	// Values large enough for several chunks.
	applyPuts(t, sm, "k", 1, 40, 10, bytes.Repeat([]byte("v"), 100<<10))
	want := dbBytes(t, sm)
	if len(want) <= 2*snapshotChunkSize {
		t.Fatalf("database is %d bytes; the test needs more than two chunks", len(want))
	}

	spool, err := sm.spoolSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer spool.close()
	hdr := &catalogpb.ResponseHeader{MemberId: 7, Revision: spool.revision}
	var msgs []*catalogpb.SnapshotResponse
	err = spool.stream(t.Context(), hdr, func(m *catalogpb.SnapshotResponse) error {
		msgs = append(msgs, proto.CloneOf(m)) // stream reuses its buffer
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var got []byte
	for i, m := range msgs {
		got = append(got, m.Blob...)
		if len(m.Blob) > snapshotChunkSize {
			t.Errorf("chunk %d has %d bytes, more than %d", i, len(m.Blob), snapshotChunkSize)
		}
		if first := i == 0; (m.Header != nil) != first || (m.TotalSize != 0) != first {
			t.Errorf("chunk %d: header %v total size %d; only the first carries them", i, m.Header, m.TotalSize)
		}
		if last := i == len(msgs)-1; (m.Sha256 != nil) != last {
			t.Errorf("chunk %d: sha256 %x; only the last carries it", i, m.Sha256)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("streamed %d bytes that differ from the %d-byte database", len(got), len(want))
	}
	sum := sha256.Sum256(want)
	last := msgs[len(msgs)-1]
	if !bytes.Equal(last.Sha256, sum[:]) {
		t.Errorf("sha256 %x, want %x", last.Sha256, sum)
	}
	if msgs[0].TotalSize != int64(len(want)) || msgs[0].Header.Revision != 40 {
		t.Errorf("first chunk: total size %d revision %d, want %d and 40", msgs[0].TotalSize, msgs[0].Header.Revision, len(want))
	}
}

func TestSnapshotStreamStopsWhenTheClientGoes(t *testing.T) {
	sm, _ := newTestStateMachine(t, 1000)
	applyPuts(t, sm, "k", 1, 30, 10, bytes.Repeat([]byte("v"), 100<<10))
	spool, err := sm.spoolSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer spool.close()
	ctx, cancel := context.WithCancel(t.Context())
	sends := 0
	err = spool.stream(ctx, &catalogpb.ResponseHeader{}, func(*catalogpb.SnapshotResponse) error {
		sends++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || sends != 1 {
		t.Errorf("stream after cancel: err %v after %d sends, want context.Canceled after 1", err, sends)
	}
	if st := status.Convert(toGRPCError(err)); st.Code() != codes.Canceled {
		t.Errorf("gRPC status %v, want Canceled", st)
	}
}

func TestSnapshotDoesNotHoldTheStateMachine(t *testing.T) {
	sm, _ := newTestStateMachine(t, 1000)
	applyPuts(t, sm, "k", 1, 5, 5, []byte("v"))
	spool, err := sm.spoolSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer spool.close()
	// A stream not yet read holds no transaction: writes, and growing the
	// database's memory map, go on.
	applyPuts(t, sm, "more", 6, 50, 10, bytes.Repeat([]byte("x"), 64<<10))
	if sm.Revision() != 55 {
		t.Fatalf("revision %d after more writes, want 55", sm.Revision())
	}
	var streamed bytes.Buffer
	err = spool.stream(t.Context(), &catalogpb.ResponseHeader{}, func(m *catalogpb.SnapshotResponse) error {
		streamed.Write(m.Blob)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if spool.revision != 5 || int64(streamed.Len()) != spool.size {
		t.Errorf("snapshot revision %d size %d (streamed %d), want the state at revision 5", spool.revision, spool.size, streamed.Len())
	}
}

// stateHash returns the state machine's HashResponse.
func stateHash(t *testing.T, sm *stateMachine) *catalogpb.HashResponse {
	t.Helper()
	h, err := sm.hashState()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHashEqualForEqualStates(t *testing.T) {
	a, _ := newTestStateMachine(t, 1000)
	b, _ := newTestStateMachine(t, 1000)
	// The same entries, batched differently.
	applyPuts(t, a, "k", 1, 30, 30, []byte("v"))
	applyPuts(t, b, "k", 1, 30, 7, []byte("v"))
	ha, hb := stateHash(t, a), stateHash(t, b)
	if !bytes.Equal(ha.Hash, hb.Hash) || ha.Keys != hb.Keys {
		t.Fatalf("equal states hash apart: %x (%d keys) and %x (%d keys)", ha.Hash, ha.Keys, hb.Hash, hb.Keys)
	}
	if ha.AppliedIndex != 30 || ha.Revision != 30 || ha.EventsFirst != 1 || ha.EventsLast != 30 || ha.EventsCount != 30 || ha.EventsProblem != "" {
		t.Errorf("hash response %v, want applied 30, revision 30, events 1..30 (30), no problem", ha)
	}
	// 30 kv entries and 30 event batches.
	if ha.Keys != 60 {
		t.Errorf("keys %d, want 60 (30 keys and 30 event batches)", ha.Keys)
	}

	// The applied index is bookkeeping: an empty entry moves it, not the hash.
	b.Apply([]raftpb.Entry{{Index: 31, Term: 2}})
	if hb2 := stateHash(t, b); !bytes.Equal(hb2.Hash, ha.Hash) || hb2.AppliedIndex != 31 {
		t.Errorf("after an empty entry: hash %x applied %d, want the same hash and applied 31", hb2.Hash, hb2.AppliedIndex)
	}

	// One more write on one side only.
	applyPuts(t, b, "other", 32, 1, 1, []byte("v"))
	if hb3 := stateHash(t, b); bytes.Equal(hb3.Hash, ha.Hash) {
		t.Error("states that differ by a write hash the same")
	}
	c, _ := newTestStateMachine(t, 1000)
	applyPuts(t, c, "k", 1, 30, 30, []byte("w"))
	if hc := stateHash(t, c); bytes.Equal(hc.Hash, ha.Hash) {
		t.Error("states that differ by a value hash the same")
	}
}

func TestHashIgnoresUntrimmedHistory(t *testing.T) {
	// One apply trims at most maxCompactPerApply revisions: a member that
	// applied everything in one batch still holds older events than one that
	// applied it in small batches, yet their states are the same.
	n := maxCompactPerApply + 500
	a, _ := newTestStateMachine(t, 10)
	b, _ := newTestStateMachine(t, 10)
	applyPuts(t, a, "k", 1, n, n, []byte("v"))
	applyPuts(t, b, "k", 1, n, 100, []byte("v"))
	if a.CompactRevision() == b.CompactRevision() {
		t.Fatalf("both compacted to %d; the test needs a trimming backlog on one side", a.CompactRevision())
	}
	ha, hb := stateHash(t, a), stateHash(t, b)
	if !bytes.Equal(ha.Hash, hb.Hash) {
		t.Errorf("hash differs with compact revisions %d and %d", a.CompactRevision(), b.CompactRevision())
	}
	if ha.EventsProblem != "" || hb.EventsProblem != "" {
		t.Errorf("events problems %q and %q, want none", ha.EventsProblem, hb.EventsProblem)
	}
	if ha.EventsFirst != a.CompactRevision()+1 || ha.EventsLast != int64(n) || hb.EventsFirst != int64(n-9) {
		t.Errorf("events %d..%d and %d..%d, want %d..%d and %d..%d", ha.EventsFirst, ha.EventsLast, hb.EventsFirst, hb.EventsLast,
			a.CompactRevision()+1, n, n-9, n)
	}
}

func TestHashEventsCheck(t *testing.T) {
	tests := []struct {
		name string
		// damage changes the database of a state machine at revision 10,
		// compact revision 5 (events 6..10).
		damage func(tx *bbolt.Tx) error
		want   string
	}{
		{"intact", func(*bbolt.Tx) error { return nil }, ""},
		{"gap", func(tx *bbolt.Tx) error {
			return tx.Bucket(eventsBucket).Delete(revKey(8))
		}, "revisions 8..8 are missing"},
		{"batch under the wrong revision", func(tx *bbolt.Tx) error {
			return tx.Bucket(eventsBucket).Put(revKey(7), mustMarshal(&catalogpb.EventBatch{Revision: 70}))
		}, "batch stored under revision 7 says revision 70"},
		{"history ends before the revision", func(tx *bbolt.Tx) error {
			return tx.Bucket(eventsBucket).Delete(revKey(10))
		}, "history ends at revision 9, want the store's revision 10"},
		{"history starts after compact+1", func(tx *bbolt.Tx) error {
			return tx.Bucket(eventsBucket).Delete(revKey(6))
		}, "history starts at revision 7, want 6 (compact revision + 1)"},
		{"history starts before compact+1", func(tx *bbolt.Tx) error {
			return tx.Bucket(eventsBucket).Put(revKey(5), mustMarshal(&catalogpb.EventBatch{Revision: 5}))
		}, "history starts at revision 5, want 6"},
		{"undecodable batch", func(tx *bbolt.Tx) error {
			return tx.Bucket(eventsBucket).Put(revKey(9), []byte{0xff, 0xff})
		}, "batch at revision 9 does not decode"},
		{"empty history", func(tx *bbolt.Tx) error {
			if err := tx.DeleteBucket(eventsBucket); err != nil {
				return err
			}
			_, err := tx.CreateBucket(eventsBucket)
			return err
		}, "history is empty, want revisions 6..10"},
		{"compact revision above revision", func(tx *bbolt.Tx) error {
			putUint(tx.Bucket(metaBucket), keyCompactRevison, 12)
			return nil
		}, "compact revision 12 is above the revision 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sm, _ := newTestStateMachine(t, 5)
			applyPuts(t, sm, "k", 1, 10, 1, []byte("v"))
			if sm.CompactRevision() != 5 {
				t.Fatalf("compact revision %d, want 5", sm.CompactRevision())
			}
			if err := sm.db.Update(tt.damage); err != nil {
				t.Fatal(err)
			}
			h := stateHash(t, sm)
			if tt.want == "" {
				if h.EventsProblem != "" {
					t.Errorf("events problem %q, want none", h.EventsProblem)
				}
				return
			}
			if !strings.Contains(h.EventsProblem, tt.want) {
				t.Errorf("events problem %q, want it to say %q", h.EventsProblem, tt.want)
			}
		})
	}
}

func TestHashOfNewStore(t *testing.T) {
	sm, _ := newTestStateMachine(t, 5)
	h := stateHash(t, sm)
	if h.EventsProblem != "" || h.EventsCount != 0 || h.Revision != 0 || h.Keys != 0 || len(h.Hash) != sha256.Size {
		t.Errorf("hash of an empty store: %v", h)
	}
}

// loopbackAddr returns a loopback address that was free a moment ago.
func loopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// singleNodeConfig returns the configuration of a single-node server named name
// with its data in dataDir, on free ports, with a fast tick.
func singleNodeConfig(t *testing.T, name, dataDir string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir = name, dataDir
	cfg.ClientAddr, cfg.PeerAddr, cfg.HTTPAddr = loopbackAddr(t), loopbackAddr(t), loopbackAddr(t)
	cfg.TickInterval = 20 * time.Millisecond
	return cfg
}

// startSingleNode starts a server from cfg and waits until it leads; it is
// stopped when the test ends unless stopped before.
func startSingleNode(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.node.WaitLeader(ctx); err != nil {
		t.Fatalf("server %s has no leader: %v", cfg.Name, err)
	}
	return s
}

// dialServer returns a connection to the server's client address.
func dialServer(t *testing.T, s *Server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+s.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// saveSnapshot writes a snapshot file (database, then its sha256) from the
// Snapshot RPC of conn's server and returns the snapshot's revision.
func saveSnapshot(t *testing.T, conn *grpc.ClientConn, path string) int64 {
	t.Helper()
	stream, err := catalogpb.NewClusterClient(conn).Snapshot(t.Context(), &catalogpb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		db, sum []byte
		rev     int64
		total   int64 = -1
	)
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("snapshot stream: %v", err)
		}
		if m.Header != nil {
			rev, total = m.Header.Revision, m.TotalSize
		}
		db = append(db, m.Blob...)
		if m.Sha256 != nil {
			sum = m.Sha256
		}
	}
	want := sha256.Sum256(db)
	if int64(len(db)) != total || !bytes.Equal(sum, want[:]) {
		t.Fatalf("snapshot stream: %d of %d bytes, checksum %x, want %x", len(db), total, sum, want)
	}
	if err := os.WriteFile(path, append(db, sum...), 0o600); err != nil {
		t.Fatal(err)
	}
	return rev
}

func TestSnapshotAndHashRPCs(t *testing.T) {
	s := startSingleNode(t, singleNodeConfig(t, "n1", filepath.Join(t.TempDir(), "n1")))
	conn := dialServer(t, s)
	kv := catalogpb.NewKVClient(conn)
	for i := range 5 {
		if _, err := kv.Put(t.Context(), &catalogpb.PutRequest{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	rev := saveSnapshot(t, conn, path)
	if rev != 5 {
		t.Errorf("snapshot revision %d, want 5", rev)
	}
	summary, err := InspectSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if summary.Revision != 5 || summary.Keys != 5 {
		t.Errorf("snapshot holds revision %d and %d keys, want 5 and 5", summary.Revision, summary.Keys)
	}

	h, err := catalogpb.NewClusterClient(conn).Hash(t.Context(), &catalogpb.HashRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Revision != 5 || h.Header.GetRevision() != 5 || h.Header.GetMemberId() != s.ID() || h.EventsProblem != "" || len(h.Hash) != sha256.Size {
		t.Errorf("Hash = %v, want revision 5 from member %x without events problem", h, s.ID())
	}
}
