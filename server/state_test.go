package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/consensus"
	"github.com/catalogd/catalogd/registry"
	"github.com/catalogd/catalogd/server/metrics"
)

func newTestStateMachine(t *testing.T, history int64) (*stateMachine, string) {
	t.Helper()
	dir := t.TempDir()
	sm, err := openStateMachine(dir, history, slog.New(slog.DiscardHandler), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sm.close() })
	return sm, dir
}

func entry(t *testing.T, index uint64, id uint64, op any) raftpb.Entry {
	t.Helper()
	cmd := &catalogpb.Command{RequestId: id}
	switch op := op.(type) {
	case *catalogpb.PutRequest:
		cmd.Op = &catalogpb.Command_Put{Put: op}
	case *catalogpb.DeleteRequest:
		cmd.Op = &catalogpb.Command_Delete{Delete: op}
	case *catalogpb.TxnRequest:
		cmd.Op = &catalogpb.Command_Txn{Txn: op}
	case nil:
	default:
		t.Fatalf("unknown op %T", op)
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return raftpb.Entry{Index: index, Term: 1, Type: raftpb.EntryNormal, Data: data}
}

func put(k, v string) *catalogpb.PutRequest {
	return &catalogpb.PutRequest{Key: []byte(k), Value: []byte(v)}
}

// eventRevisions lists the revisions stored in the events bucket.
func eventRevisions(t *testing.T, sm *stateMachine) []int64 {
	t.Helper()
	var revs []int64
	err := sm.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(eventsBucket).ForEach(func(k, v []byte) error {
			var b catalogpb.EventBatch
			if err := proto.Unmarshal(v, &b); err != nil {
				return err
			}
			if b.Revision != int64(binary.BigEndian.Uint64(k)) {
				return fmt.Errorf("batch under key %x says revision %d", k, b.Revision)
			}
			revs = append(revs, b.Revision)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return revs
}

func TestApplyRevisionsAndEvents(t *testing.T) {
	sm, _ := newTestStateMachine(t, 1000)
	ents := []raftpb.Entry{
		entry(t, 1, 11, put("a", "1")),
		{Index: 2, Term: 1}, // a new leader's empty entry
		entry(t, 3, 13, put("b", "2")),
		entry(t, 4, 14, &catalogpb.DeleteRequest{Key: []byte("missing")}), // changes nothing
		entry(t, 5, 15, &catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{
			{Op: &catalogpb.TxnOp_Put{Put: put("c", "3")}},
			{Op: &catalogpb.TxnOp_Delete{Delete: &catalogpb.DeleteRequest{Key: []byte("a")}}},
		}}),
		entry(t, 6, 16, put("", "refused")), // empty key: refused, nothing changes
	}
	res := sm.Apply(ents)
	if len(res) != len(ents) {
		t.Fatalf("got %d results for %d entries", len(res), len(ents))
	}
	wantRev := []int64{1, 0, 2, 2, 3}
	for i, want := range wantRev {
		if ents[i].Data == nil {
			if res[i].ID != 0 {
				t.Errorf("empty entry has result id %d", res[i].ID)
			}
			continue
		}
		if res[i].Err != nil {
			t.Fatalf("entry %d: %v", i, res[i].Err)
		}
		var got int64
		switch v := res[i].Value.(type) {
		case *catalogpb.PutResponse:
			got = v.Header.Revision
		case *catalogpb.DeleteResponse:
			got = v.Header.Revision
		case *catalogpb.TxnResponse:
			got = v.Header.Revision
		}
		if got != want {
			t.Errorf("entry %d: header revision %d, want %d", i, got, want)
		}
	}
	if !errors.Is(res[5].Err, registry.ErrKeyEmpty) || res[5].ID != 16 {
		t.Errorf("empty key: result %+v, want ErrKeyEmpty for id 16", res[5])
	}
	if sm.Revision() != 3 || sm.AppliedIndex() != 6 {
		t.Errorf("revision %d applied %d, want 3 and 6", sm.Revision(), sm.AppliedIndex())
	}
	if got := eventRevisions(t, sm); fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("event revisions %v, want [1 2 3] (no holes, one batch per write)", got)
	}
	// The txn's two changes share revision 3, in one batch.
	err := sm.view(func(tx *bbolt.Tx) error {
		var b catalogpb.EventBatch
		if err := proto.Unmarshal(tx.Bucket(eventsBucket).Get(revKey(3)), &b); err != nil {
			return err
		}
		if len(b.Events) != 2 || b.Events[0].Type != catalogpb.Event_PUT || b.Events[1].Type != catalogpb.Event_DELETE {
			return fmt.Errorf("revision 3 events: %v", b.Events)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func TestReopenKeepsAppliedIndexAndRevision(t *testing.T) {
	sm, dir := newTestStateMachine(t, 1000)
	sm.Apply([]raftpb.Entry{entry(t, 1, 1, put("a", "1")), entry(t, 2, 2, put("b", "1"))})
	if err := sm.close(); err != nil {
		t.Fatal(err)
	}
	again, err := openStateMachine(dir, 1000, slog.New(slog.DiscardHandler), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer again.close()
	if again.AppliedIndex() != 2 || again.Revision() != 2 {
		t.Fatalf("after reopen: applied %d revision %d, want 2 and 2", again.AppliedIndex(), again.Revision())
	}
}

func TestHistoryIsTrimmedToItsBound(t *testing.T) {
	sm, _ := newTestStateMachine(t, 10)
	var ents []raftpb.Entry
	for i := 1; i <= 25; i++ {
		ents = append(ents, entry(t, uint64(i), uint64(i), put(fmt.Sprintf("k%d", i), "v")))
	}
	sm.Apply(ents)
	revs := eventRevisions(t, sm)
	if len(revs) != 10 || revs[0] != 16 || revs[9] != 25 {
		t.Fatalf("kept revisions %v, want 16..25", revs)
	}
	if sm.CompactRevision() != 15 {
		t.Errorf("compact revision %d, want 15", sm.CompactRevision())
	}
}

func TestUndecodableCommandIsRefused(t *testing.T) {
	sm, _ := newTestStateMachine(t, 10)
	res := sm.Apply([]raftpb.Entry{{Index: 1, Data: []byte{0xff, 0xff, 0xff}}, entry(t, 2, 2, nil)})
	for i, r := range res {
		if !errors.Is(r.Err, registry.ErrInvalidArgument) {
			t.Errorf("entry %d: err %v, want ErrInvalidArgument", i, r.Err)
		}
	}
	if sm.Revision() != 0 || sm.AppliedIndex() != 2 {
		t.Errorf("revision %d applied %d, want 0 and 2", sm.Revision(), sm.AppliedIndex())
	}
}

func TestSnapshotDBRestoresElsewhere(t *testing.T) {
	src, _ := newTestStateMachine(t, 100)
	src.Apply([]raftpb.Entry{entry(t, 1, 1, put("a", "1")), entry(t, 2, 2, put("b", "2"))})
	rc, size, err := src.SnapshotDB()
	if err != nil {
		t.Fatal(err)
	}
	dst, dir := newTestStateMachine(t, 100)
	path := dir + "/incoming.db"
	if err := writeAll(path, rc); err != nil {
		t.Fatal(err)
	}
	if size <= 0 {
		t.Errorf("snapshot size %d", size)
	}
	if err := dst.RestoreDB(path); err != nil {
		t.Fatal(err)
	}
	if dst.AppliedIndex() != 2 || dst.Revision() != 2 {
		t.Fatalf("restored applied %d revision %d, want 2 and 2", dst.AppliedIndex(), dst.Revision())
	}
	err = dst.view(func(tx *bbolt.Tx) error {
		resp, err := registry.Range(tx, &catalogpb.GetRequest{Key: []byte("b")})
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
			return fmt.Errorf("restored b = %v", resp.Kvs)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func writeAll(path string, rc io.ReadCloser) error {
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Applied batches share one write transaction: the durable applied index
// trails the answers until something commits, a read sees every write
// answered before it, and what was answered but not committed is gone
// after a crash (the WAL replays it) without harming what was committed.
func TestApplyBatchDefersCommit(t *testing.T) {
	sm, dir := newTestStateMachine(t, 100)
	sm.commitInterval = time.Hour // only reads, size and close commit here
	deliver := func(ents ...raftpb.Entry) []consensus.Result {
		var out []consensus.Result
		sm.ApplyBatch(ents, func(r []consensus.Result) { out = r })
		return out
	}
	if res := deliver(entry(t, 1, 1, put("a", "1"))); len(res) != 1 || res[0].Err != nil {
		t.Fatalf("apply: %+v", res)
	}
	deliver(entry(t, 2, 2, put("b", "1")))
	if got := sm.AppliedIndex(); got != 0 {
		t.Fatalf("durable applied index %d before any commit, want 0", got)
	}
	if got := sm.Revision(); got != 2 {
		t.Fatalf("revision %d after two answered puts, want 2", got)
	}
	// A read commits first and sees both writes.
	var keys int
	if err := sm.view(func(tx *bbolt.Tx) error {
		keys = tx.Bucket(registry.KVBucket).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if keys != 2 || sm.AppliedIndex() != 2 {
		t.Fatalf("after a read: %d keys, durable applied %d; want 2 and 2", keys, sm.AppliedIndex())
	}

	// A write answered but never committed: a crash loses it from the
	// store only (the raft WAL has it), and the committed state reopens.
	deliver(entry(t, 3, 3, put("c", "1")))
	sm.txMu.Lock()
	sm.wtx.Rollback() // what a crash does to an uncommitted transaction
	sm.wtx = nil
	sm.pending.Store(false)
	sm.txMu.Unlock()
	if err := sm.close(); err != nil {
		t.Fatal(err)
	}
	re, err := openStateMachine(dir, 100, slog.New(slog.DiscardHandler), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer re.close()
	if re.AppliedIndex() != 2 || re.Revision() != 2 {
		t.Fatalf("reopened at applied %d revision %d, want 2 and 2 (entry 3 is replayed from the WAL)", re.AppliedIndex(), re.Revision())
	}
	if res := re.Apply([]raftpb.Entry{entry(t, 3, 3, put("c", "1"))}); res[0].Err != nil || re.AppliedIndex() != 3 || re.Revision() != 3 {
		t.Fatalf("replayed entry 3: %+v, applied %d revision %d; want applied 3 revision 3", res, re.AppliedIndex(), re.Revision())
	}
}

// The background commit comes commitInterval after the first uncommitted
// write, with nothing else asking for it.
func TestApplyBatchCommitsAfterInterval(t *testing.T) {
	sm, _ := newTestStateMachine(t, 100)
	sm.commitInterval = 10 * time.Millisecond
	sm.ApplyBatch([]raftpb.Entry{entry(t, 1, 1, put("a", "1"))}, func([]consensus.Result) {})
	deadline := time.Now().Add(5 * time.Second)
	for sm.AppliedIndex() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the applied write was not committed within 5s of a 10ms commit interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
