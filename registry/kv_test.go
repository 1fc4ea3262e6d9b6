package registry

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/lease"
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func openDB(tb testing.TB) *bbolt.DB {
	tb.Helper()
	db, err := bbolt.Open(filepath.Join(tb.TempDir(), "registry.db"), 0o600, &bbolt.Options{NoSync: true, NoFreelistSync: true})
	if err != nil {
		tb.Fatalf("open bbolt: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("close bbolt: %v", err)
		}
	})
	if err := db.Update(CreateBuckets); err != nil {
		tb.Fatalf("create buckets: %v", err)
	}
	if err := db.Update(lease.CreateBuckets); err != nil {
		tb.Fatalf("create lease buckets: %v", err)
	}
	return db
}

// A store drives the package as the server does: one bbolt transaction per
// command, and the revision moves iff the command returned events.
type store struct {
	t   *testing.T
	db  *bbolt.DB
	rev int64
}

func newStore(t *testing.T) *store {
	t.Helper()
	return &store{t: t, db: openDB(t)}
}

func (s *store) write(fn func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error)) ([]*catalogpb.Event, error) {
	var events []*catalogpb.Event
	err := s.db.Update(func(tx *bbolt.Tx) error {
		var err error
		events, err = fn(tx, s.rev+1)
		return err
	})
	if err == nil && len(events) > 0 {
		s.rev++
	}
	return events, err
}

func (s *store) put(req *catalogpb.PutRequest) (*catalogpb.PutResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.PutResponse
	events, err := s.write(func(tx *bbolt.Tx, rev int64) (ev []*catalogpb.Event, err error) {
		resp, ev, err = ApplyPut(tx, rev, req)
		return ev, err
	})
	return resp, events, err
}

func (s *store) del(req *catalogpb.DeleteRequest) (*catalogpb.DeleteResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.DeleteResponse
	events, err := s.write(func(tx *bbolt.Tx, rev int64) (ev []*catalogpb.Event, err error) {
		resp, ev, err = ApplyDelete(tx, rev, req)
		return ev, err
	})
	return resp, events, err
}

func (s *store) txn(req *catalogpb.TxnRequest) (*catalogpb.TxnResponse, []*catalogpb.Event, error) {
	var resp *catalogpb.TxnResponse
	events, err := s.write(func(tx *bbolt.Tx, rev int64) (ev []*catalogpb.Event, err error) {
		resp, ev, err = ApplyTxn(tx, rev, req, nil)
		return ev, err
	})
	return resp, events, err
}

func (s *store) mustPut(key, value string) {
	s.t.Helper()
	if _, _, err := s.put(&catalogpb.PutRequest{Key: []byte(key), Value: []byte(value)}); err != nil {
		s.t.Fatalf("put %q: %v", key, err)
	}
}

func (s *store) get(req *catalogpb.GetRequest) (*catalogpb.GetResponse, error) {
	var resp *catalogpb.GetResponse
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		resp, err = Range(tx, req)
		return err
	})
	return resp, err
}

func (s *store) mustGet(req *catalogpb.GetRequest) *catalogpb.GetResponse {
	s.t.Helper()
	resp, err := s.get(req)
	if err != nil {
		s.t.Fatalf("get %q: %v", req.Key, err)
	}
	return resp
}

func (s *store) count() int {
	s.t.Helper()
	var n int
	if err := s.db.View(func(tx *bbolt.Tx) error { n = Count(tx); return nil }); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// dump returns every stored key and value, in key order, byte for byte.
func (s *store) dump() []string {
	s.t.Helper()
	var out []string
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out = append(out, fmt.Sprintf("%s/%q=%x", name, k, v))
				return nil
			})
		})
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func kv(key, value string, createRev, modRev, version int64) *catalogpb.KeyValue {
	return &catalogpb.KeyValue{Key: []byte(key), Value: []byte(value), CreateRevision: createRev, ModRevision: modRev, Version: version}
}

func putEvent(cur, prev *catalogpb.KeyValue) *catalogpb.Event {
	return &catalogpb.Event{Type: catalogpb.Event_PUT, Kind: EventKind, Kv: cur, PrevKv: prev}
}

func deleteEvent(key string, rev int64, prev *catalogpb.KeyValue) *catalogpb.Event {
	return &catalogpb.Event{Type: catalogpb.Event_DELETE, Kind: EventKind, Kv: &catalogpb.KeyValue{Key: []byte(key), ModRevision: rev}, PrevKv: prev}
}

func assertProto(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s:\ngot  %s\nwant %s", what, prototext.Format(got), prototext.Format(want))
	}
}

func assertEvents(t *testing.T, got []*catalogpb.Event, want ...*catalogpb.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d events, want %d: %v", len(got), len(want), got)
	}
	assertProto(t, "events", &catalogpb.EventBatch{Events: got}, &catalogpb.EventBatch{Events: want})
}

func assertKVs(t *testing.T, got []*catalogpb.KeyValue, want ...*catalogpb.KeyValue) {
	t.Helper()
	assertProto(t, "kvs", &catalogpb.GetResponse{Kvs: got}, &catalogpb.GetResponse{Kvs: want})
}

// assertErr checks that err wraps sentinel, maps to its reason, and says
// what was wrong (every substring in msg).
func assertErr(t *testing.T, err, sentinel error, msg ...string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error = %v, want one wrapping %v", err, sentinel)
	}
	if Reason(err) == catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED {
		t.Errorf("Reason(%v) is unspecified", err)
	}
	for _, m := range msg {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not say %q", err, m)
		}
	}
}

func keys(kvs []*catalogpb.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

func TestCreateBucketsIsIdempotent(t *testing.T) {
	s := newStore(t)
	s.mustPut("a", "1")
	for range 2 {
		if err := s.db.Update(CreateBuckets); err != nil {
			t.Fatalf("CreateBuckets again: %v", err)
		}
	}
	if n := s.count(); n != 1 {
		t.Errorf("Count after CreateBuckets = %d, want the 1 key kept", n)
	}
}

func TestMissingBucketIsReported(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "empty.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		_, _, err := ApplyPut(tx, 1, &catalogpb.PutRequest{Key: []byte("a")})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "CreateBuckets") {
		t.Errorf("put without bucket: error = %v, want one naming CreateBuckets", err)
	}
	if err := db.View(func(tx *bbolt.Tx) error {
		if n := Count(tx); n != 0 {
			t.Errorf("Count without bucket = %d, want 0", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestPutAndGet(t *testing.T) {
	s := newStore(t)

	resp, events, err := s.put(&catalogpb.PutRequest{Key: []byte("a"), Value: []byte("1"), PrevKv: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.PrevKv != nil || resp.Header != nil {
		t.Errorf("first put response = %v, want no prev_kv and no header", resp)
	}
	assertEvents(t, events, putEvent(kv("a", "1", 1, 1, 1), nil))

	resp, events, err = s.put(&catalogpb.PutRequest{Key: []byte("a"), Value: []byte("2"), PrevKv: true})
	if err != nil {
		t.Fatal(err)
	}
	assertProto(t, "prev_kv", resp.PrevKv, kv("a", "1", 1, 1, 1))
	assertEvents(t, events, putEvent(kv("a", "2", 1, 2, 2), kv("a", "1", 1, 1, 1)))

	s.mustPut("b", "")
	// The same value again is still a write, as in etcd.
	resp, events, err = s.put(&catalogpb.PutRequest{Key: []byte("a"), Value: []byte("2")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.PrevKv != nil {
		t.Errorf("prev_kv = %v without asking", resp.PrevKv)
	}
	assertEvents(t, events, putEvent(kv("a", "2", 1, 4, 3), kv("a", "2", 1, 2, 2)))
	if s.rev != 4 {
		t.Fatalf("revision = %d after 4 puts", s.rev)
	}

	tests := []struct {
		name string
		req  *catalogpb.GetRequest
		want *catalogpb.GetResponse
	}{
		{"key", &catalogpb.GetRequest{Key: []byte("a")},
			&catalogpb.GetResponse{Kvs: []*catalogpb.KeyValue{kv("a", "2", 1, 4, 3)}, Count: 1}},
		{"empty value", &catalogpb.GetRequest{Key: []byte("b")},
			&catalogpb.GetResponse{Kvs: []*catalogpb.KeyValue{kv("b", "", 3, 3, 1)}, Count: 1}},
		{"missing key", &catalogpb.GetRequest{Key: []byte("c")}, &catalogpb.GetResponse{}},
		{"keys only", &catalogpb.GetRequest{Key: []byte("a"), KeysOnly: true},
			&catalogpb.GetResponse{Kvs: []*catalogpb.KeyValue{kv("a", "", 1, 4, 3)}, Count: 1}},
		{"count only", &catalogpb.GetRequest{Key: []byte("a"), CountOnly: true}, &catalogpb.GetResponse{Count: 1}},
		{"consistency ignored", &catalogpb.GetRequest{Key: []byte("a"), Consistency: catalogpb.Consistency_SERIALIZABLE},
			&catalogpb.GetResponse{Kvs: []*catalogpb.KeyValue{kv("a", "2", 1, 4, 3)}, Count: 1}},
		{"single key with its own token", &catalogpb.GetRequest{Key: []byte("a"), ContinueToken: encodeContinueToken([]byte("a"), false, []byte("a"))},
			&catalogpb.GetResponse{Kvs: []*catalogpb.KeyValue{kv("a", "2", 1, 4, 3)}, Count: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertProto(t, "response", s.mustGet(tt.req), tt.want)
		})
	}
}

func TestResultsOutliveTransaction(t *testing.T) {
	s := newStore(t)
	s.mustPut("a", "one")
	got := s.mustGet(&catalogpb.GetRequest{Key: []byte("a")})
	// Rewriting the page under the old read must not change what it returned.
	for i := range 50 {
		s.mustPut("a", strings.Repeat("x", i))
	}
	assertKVs(t, got.Kvs, kv("a", "one", 1, 1, 1))
}

func TestPutDoesNotAliasRequest(t *testing.T) {
	s := newStore(t)
	req := &catalogpb.PutRequest{Key: []byte("a"), Value: []byte("1")}
	_, events, err := s.put(req)
	if err != nil {
		t.Fatal(err)
	}
	req.Key[0], req.Value[0] = 'z', '9'
	assertEvents(t, events, putEvent(kv("a", "1", 1, 1, 1), nil))
	assertKVs(t, s.mustGet(&catalogpb.GetRequest{Key: []byte("a")}).Kvs, kv("a", "1", 1, 1, 1))
}

// seedPages stores "p/" and p/00..p/24 plus neighbours outside prefix "p/".
func seedPages(s *store) []string {
	var want []string
	s.mustPut("o/x", "o")
	s.mustPut("p", "p")
	s.mustPut("p/", "root")
	want = append(want, "p/")
	for i := range 25 {
		k := fmt.Sprintf("p/%02d", i)
		s.mustPut(k, "v"+k)
		want = append(want, k)
	}
	s.mustPut("p0", "p0")
	s.mustPut("q/x", "q")
	return want
}

func TestRangePrefixPagination(t *testing.T) {
	s := newStore(t)
	want := seedPages(s)

	for _, keysOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("keys_only=%v", keysOnly), func(t *testing.T) {
			req := &catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, Limit: 10, KeysOnly: keysOnly}
			var got []string
			var pages []int
			for {
				resp := s.mustGet(req)
				if resp.Count != int64(len(want)) {
					t.Errorf("page %d: count = %d, want %d (the whole range)", len(pages), resp.Count, len(want))
				}
				for _, kv := range resp.Kvs {
					wantValue := "v" + string(kv.Key)
					if string(kv.Key) == "p/" {
						wantValue = "root"
					}
					if keysOnly {
						wantValue = ""
					}
					if string(kv.Value) != wantValue || kv.Version != 1 || kv.CreateRevision == 0 {
						t.Errorf("kv %v: want value %q, version 1 and a create revision", kv, wantValue)
					}
				}
				got = append(got, keys(resp.Kvs)...)
				pages = append(pages, len(resp.Kvs))
				if resp.More != (len(resp.NextToken) > 0) {
					t.Fatalf("more = %v with next_token %x", resp.More, resp.NextToken)
				}
				if !resp.More {
					break
				}
				req.ContinueToken = resp.NextToken
			}
			if fmt.Sprint(pages) != "[10 10 6]" {
				t.Errorf("page sizes = %v, want [10 10 6]", pages)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("keys = %v\nwant   %v", got, want)
			}
		})
	}

	t.Run("every key with empty prefix", func(t *testing.T) {
		resp := s.mustGet(&catalogpb.GetRequest{Prefix: true})
		if resp.Count != 30 || len(resp.Kvs) != 30 || resp.More {
			t.Errorf("count = %d, kvs = %d, more = %v; want all 30 keys in one page", resp.Count, len(resp.Kvs), resp.More)
		}
		if first, last := string(resp.Kvs[0].Key), string(resp.Kvs[29].Key); first != "o/x" || last != "q/x" {
			t.Errorf("first, last = %q, %q; want key order", first, last)
		}
	})

	t.Run("count only", func(t *testing.T) {
		assertProto(t, "response", s.mustGet(&catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, Limit: 1, CountOnly: true}),
			&catalogpb.GetResponse{Count: 26})
	})

	t.Run("count only with a token counts the whole range", func(t *testing.T) {
		first := s.mustGet(&catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, Limit: 3})
		resp := s.mustGet(&catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, CountOnly: true, ContinueToken: first.NextToken})
		assertProto(t, "response", resp, &catalogpb.GetResponse{Count: 26})
	})

	t.Run("missing prefix", func(t *testing.T) {
		assertProto(t, "response", s.mustGet(&catalogpb.GetRequest{Key: []byte("zz"), Prefix: true}), &catalogpb.GetResponse{})
	})

	t.Run("page boundary exactly at the end", func(t *testing.T) {
		resp := s.mustGet(&catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, Limit: 26})
		if len(resp.Kvs) != 26 || resp.More || resp.NextToken != nil {
			t.Errorf("kvs = %d, more = %v, next_token = %x; want 26 keys and no more", len(resp.Kvs), resp.More, resp.NextToken)
		}
	})
}

func TestRangeTokenSurvivesWritesBetweenPages(t *testing.T) {
	s := newStore(t)
	seedPages(s)
	page1 := s.mustGet(&catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, Limit: 5})
	if got := keys(page1.Kvs); strings.Join(got, ",") != "p/,p/00,p/01,p/02,p/03" {
		t.Fatalf("page 1 = %v", got)
	}
	// The token names p/04, the next key. Delete it, and add a key before the cursor.
	if _, _, err := s.del(&catalogpb.DeleteRequest{Key: []byte("p/04")}); err != nil {
		t.Fatal(err)
	}
	s.mustPut("p/000", "new")
	page2 := s.mustGet(&catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, Limit: 5, ContinueToken: page1.NextToken})
	if got := keys(page2.Kvs); strings.Join(got, ",") != "p/05,p/06,p/07,p/08,p/09" {
		t.Errorf("page 2 = %v, want it to resume after the deleted token key", got)
	}
	if page2.Count != 26 {
		t.Errorf("count = %d, want 26 (one deleted, one added)", page2.Count)
	}
}

func TestContinueTokenRefused(t *testing.T) {
	s := newStore(t)
	seedPages(s)
	tok := s.mustGet(&catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, Limit: 10}).NextToken
	narrow := s.mustGet(&catalogpb.GetRequest{Key: []byte("p/1"), Prefix: true, Limit: 2}).NextToken
	if len(tok) == 0 || len(narrow) == 0 {
		t.Fatal("expected tokens from both ranges")
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0xff
		return c
	}

	tests := []struct {
		name   string
		req    *catalogpb.GetRequest
		reason string
	}{
		{"checksum flipped", &catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, ContinueToken: flip(tok, 2)}, "another range"},
		{"key changed", &catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, ContinueToken: flip(tok, len(tok)-1)}, "another range"},
		{"token of another prefix", &catalogpb.GetRequest{Key: []byte("q/"), Prefix: true, ContinueToken: tok}, "another range"},
		{"token of a narrower prefix whose key lies inside", &catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, ContinueToken: narrow}, "another range"},
		{"prefix token on a single key", &catalogpb.GetRequest{Key: []byte("p/"), ContinueToken: tok}, "another range"},
		{"version unknown", &catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, ContinueToken: flip(tok, 0)}, "malformed"},
		{"header only", &catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, ContinueToken: tok[:tokenHeaderLen]}, "malformed"},
		{"too long", &catalogpb.GetRequest{Key: []byte("p/"), Prefix: true, ContinueToken: append(bytes.Clone(tok), make([]byte, MaxKeySize)...)}, "malformed"},
		{"key outside the range", &catalogpb.GetRequest{Key: []byte("p/"), Prefix: true,
			ContinueToken: encodeContinueToken([]byte("p/"), true, []byte("q/x"))}, "outside the requested range"},
		{"single key token naming another key", &catalogpb.GetRequest{Key: []byte("p/01"),
			ContinueToken: encodeContinueToken([]byte("p/01"), false, []byte("p/02"))}, "outside the requested range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertErr(t, ValidateGet(tt.req), ErrInvalidContinueToken, tt.reason)
			resp, err := s.get(tt.req)
			assertErr(t, err, ErrInvalidContinueToken, tt.reason)
			if resp != nil {
				t.Errorf("response %v with an error", resp)
			}
		})
	}
}

func TestRangeLimit(t *testing.T) {
	s := newStore(t)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for i := range MaxRangeLimit + 1 {
			if _, _, err := ApplyPut(tx, int64(i+1), &catalogpb.PutRequest{Key: fmt.Appendf(nil, "k/%05d", i)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		limit    int64
		wantKVs  int
		wantMore bool
		wantErr  bool
	}{
		{limit: -1, wantErr: true},
		{limit: MaxRangeLimit + 1, wantErr: true},
		{limit: 0, wantKVs: MaxRangeLimit, wantMore: true},
		{limit: MaxRangeLimit, wantKVs: MaxRangeLimit, wantMore: true},
		{limit: 1, wantKVs: 1, wantMore: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("limit=", tt.limit), func(t *testing.T) {
			req := &catalogpb.GetRequest{Key: []byte("k/"), Prefix: true, Limit: tt.limit, KeysOnly: true}
			resp, err := s.get(req)
			if tt.wantErr {
				assertErr(t, err, ErrInvalidLimit, fmt.Sprintf("limit must be 0..%d", MaxRangeLimit), fmt.Sprintf("got %d", tt.limit))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != tt.wantKVs || resp.More != tt.wantMore || resp.Count != MaxRangeLimit+1 {
				t.Errorf("kvs = %d, more = %v, count = %d; want %d, %v, %d", len(resp.Kvs), resp.More, resp.Count, tt.wantKVs, tt.wantMore, MaxRangeLimit+1)
			}
		})
	}
}

func TestDelete(t *testing.T) {
	seed := func(t *testing.T) *store {
		s := newStore(t)
		s.mustPut("a", "A")   // rev 1
		s.mustPut("a/1", "1") // rev 2
		s.mustPut("a/2", "2") // rev 3
		s.mustPut("b", "B")   // rev 4
		return s
	}
	a, a1, a2, b := kv("a", "A", 1, 1, 1), kv("a/1", "1", 2, 2, 1), kv("a/2", "2", 3, 3, 1), kv("b", "B", 4, 4, 1)

	tests := []struct {
		name       string
		req        *catalogpb.DeleteRequest
		want       *catalogpb.DeleteResponse
		wantEvents []*catalogpb.Event
		wantLeft   []string
	}{
		{"single with prev_kv", &catalogpb.DeleteRequest{Key: []byte("a"), PrevKv: true},
			&catalogpb.DeleteResponse{Deleted: 1, PrevKvs: []*catalogpb.KeyValue{a}},
			[]*catalogpb.Event{deleteEvent("a", 5, a)}, []string{"a/1", "a/2", "b"}},
		{"single without prev_kv", &catalogpb.DeleteRequest{Key: []byte("b")},
			&catalogpb.DeleteResponse{Deleted: 1},
			[]*catalogpb.Event{deleteEvent("b", 5, b)}, []string{"a", "a/1", "a/2"}},
		{"missing key", &catalogpb.DeleteRequest{Key: []byte("c"), PrevKv: true},
			&catalogpb.DeleteResponse{}, nil, []string{"a", "a/1", "a/2", "b"}},
		{"prefix", &catalogpb.DeleteRequest{Key: []byte("a/"), Prefix: true, PrevKv: true},
			&catalogpb.DeleteResponse{Deleted: 2, PrevKvs: []*catalogpb.KeyValue{a1, a2}},
			[]*catalogpb.Event{deleteEvent("a/1", 5, a1), deleteEvent("a/2", 5, a2)}, []string{"a", "b"}},
		{"prefix including the key itself", &catalogpb.DeleteRequest{Key: []byte("a"), Prefix: true},
			&catalogpb.DeleteResponse{Deleted: 3},
			[]*catalogpb.Event{deleteEvent("a", 5, a), deleteEvent("a/1", 5, a1), deleteEvent("a/2", 5, a2)}, []string{"b"}},
		{"empty prefix is every key", &catalogpb.DeleteRequest{Prefix: true},
			&catalogpb.DeleteResponse{Deleted: 4},
			[]*catalogpb.Event{deleteEvent("a", 5, a), deleteEvent("a/1", 5, a1), deleteEvent("a/2", 5, a2), deleteEvent("b", 5, b)}, nil},
		{"missing prefix", &catalogpb.DeleteRequest{Key: []byte("z/"), Prefix: true},
			&catalogpb.DeleteResponse{}, nil, []string{"a", "a/1", "a/2", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := seed(t)
			resp, events, err := s.del(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			assertProto(t, "response", resp, tt.want)
			assertEvents(t, events, tt.wantEvents...)
			wantRev := int64(4)
			if len(tt.wantEvents) > 0 {
				wantRev = 5
			}
			if s.rev != wantRev {
				t.Errorf("revision = %d, want %d", s.rev, wantRev)
			}
			left := s.mustGet(&catalogpb.GetRequest{Prefix: true, KeysOnly: true})
			if got := keys(left.Kvs); strings.Join(got, ",") != strings.Join(tt.wantLeft, ",") {
				t.Errorf("keys left = %v, want %v", got, tt.wantLeft)
			}
			if n := s.count(); n != len(tt.wantLeft) {
				t.Errorf("Count = %d, want %d", n, len(tt.wantLeft))
			}
		})
	}

	t.Run("recreated key starts over", func(t *testing.T) {
		s := seed(t)
		if _, _, err := s.del(&catalogpb.DeleteRequest{Key: []byte("a")}); err != nil {
			t.Fatal(err)
		}
		s.mustPut("a", "again")
		assertKVs(t, s.mustGet(&catalogpb.GetRequest{Key: []byte("a")}).Kvs, kv("a", "again", 6, 6, 1))
	})
}

func cmp(target catalogpb.Compare_Target, result catalogpb.Compare_Result, key string, union any) *catalogpb.Compare {
	c := &catalogpb.Compare{Target: target, Result: result, Key: []byte(key)}
	switch u := union.(type) {
	case string:
		c.TargetUnion = &catalogpb.Compare_Value{Value: []byte(u)}
	case bool:
		c.TargetUnion = &catalogpb.Compare_Exists{Exists: u}
	case int:
		switch target {
		case catalogpb.Compare_MOD:
			c.TargetUnion = &catalogpb.Compare_ModRevision{ModRevision: int64(u)}
		case catalogpb.Compare_CREATE:
			c.TargetUnion = &catalogpb.Compare_CreateRevision{CreateRevision: int64(u)}
		case catalogpb.Compare_VERSION:
			c.TargetUnion = &catalogpb.Compare_Version{Version: int64(u)}
		}
	case nil:
	default:
		panic(fmt.Sprintf("cmp: union %T", union))
	}
	return c
}

func opPut(key, value string) *catalogpb.TxnOp {
	return &catalogpb.TxnOp{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func opDel(key string, prefix bool) *catalogpb.TxnOp {
	return &catalogpb.TxnOp{Op: &catalogpb.TxnOp_Delete{Delete: &catalogpb.DeleteRequest{Key: []byte(key), Prefix: prefix}}}
}

func opGet(key string, prefix bool) *catalogpb.TxnOp {
	return &catalogpb.TxnOp{Op: &catalogpb.TxnOp_Get{Get: &catalogpb.GetRequest{Key: []byte(key), Prefix: prefix}}}
}

func TestTxnCompare(t *testing.T) {
	s := newStore(t)
	s.mustPut("k", "v1")   // rev 1
	s.mustPut("k", "v2")   // rev 2: k has create 1, mod 2, version 2
	s.mustPut("other", "") // rev 3

	const (
		eq = catalogpb.Compare_EQUAL
		gt = catalogpb.Compare_GREATER
		lt = catalogpb.Compare_LESS
		ne = catalogpb.Compare_NOT_EQUAL

		value   = catalogpb.Compare_VALUE
		mod     = catalogpb.Compare_MOD
		create  = catalogpb.Compare_CREATE
		version = catalogpb.Compare_VERSION
		exists  = catalogpb.Compare_EXISTS
	)
	tests := []struct {
		name     string
		compares []*catalogpb.Compare
		want     bool
	}{
		{"value equal", []*catalogpb.Compare{cmp(value, eq, "k", "v2")}, true},
		{"value equal, other value", []*catalogpb.Compare{cmp(value, eq, "k", "v1")}, false},
		{"value greater", []*catalogpb.Compare{cmp(value, gt, "k", "v1")}, true},
		{"value greater, not", []*catalogpb.Compare{cmp(value, gt, "k", "v3")}, false},
		{"value less", []*catalogpb.Compare{cmp(value, lt, "k", "v3")}, true},
		{"value less, not", []*catalogpb.Compare{cmp(value, lt, "k", "v2")}, false},
		{"value not equal", []*catalogpb.Compare{cmp(value, ne, "k", "v1")}, true},
		{"value not equal, same", []*catalogpb.Compare{cmp(value, ne, "k", "v2")}, false},
		{"value unset union is empty", []*catalogpb.Compare{cmp(value, gt, "k", nil)}, true},
		{"value of missing key never equal", []*catalogpb.Compare{cmp(value, eq, "missing", "")}, false},
		{"value of missing key never not equal", []*catalogpb.Compare{cmp(value, ne, "missing", "x")}, false},
		{"value of missing key never less", []*catalogpb.Compare{cmp(value, lt, "missing", "x")}, false},
		{"mod equal", []*catalogpb.Compare{cmp(mod, eq, "k", 2)}, true},
		{"mod equal, not", []*catalogpb.Compare{cmp(mod, eq, "k", 3)}, false},
		{"mod greater", []*catalogpb.Compare{cmp(mod, gt, "k", 1)}, true},
		{"mod greater, not", []*catalogpb.Compare{cmp(mod, gt, "k", 2)}, false},
		{"mod less", []*catalogpb.Compare{cmp(mod, lt, "k", 3)}, true},
		{"mod not equal", []*catalogpb.Compare{cmp(mod, ne, "k", 2)}, false},
		{"mod of missing key is 0", []*catalogpb.Compare{cmp(mod, eq, "missing", 0)}, true},
		{"mod of missing key less", []*catalogpb.Compare{cmp(mod, lt, "missing", 1)}, true},
		{"create equal", []*catalogpb.Compare{cmp(create, eq, "k", 1)}, true},
		{"create greater", []*catalogpb.Compare{cmp(create, gt, "k", 0)}, true},
		{"create less, not", []*catalogpb.Compare{cmp(create, lt, "k", 1)}, false},
		{"create not equal", []*catalogpb.Compare{cmp(create, ne, "k", 2)}, true},
		{"create of missing key is 0", []*catalogpb.Compare{cmp(create, eq, "missing", 0)}, true},
		{"version equal", []*catalogpb.Compare{cmp(version, eq, "k", 2)}, true},
		{"version greater", []*catalogpb.Compare{cmp(version, gt, "k", 1)}, true},
		{"version less, not", []*catalogpb.Compare{cmp(version, lt, "k", 2)}, false},
		{"version not equal", []*catalogpb.Compare{cmp(version, ne, "k", 0)}, true},
		{"version of missing key is 0", []*catalogpb.Compare{cmp(version, eq, "missing", 0)}, true},
		{"version of missing key not greater", []*catalogpb.Compare{cmp(version, gt, "missing", 0)}, false},
		{"version unset union is 0", []*catalogpb.Compare{cmp(version, eq, "missing", nil)}, true},
		{"exists equal true", []*catalogpb.Compare{cmp(exists, eq, "k", true)}, true},
		{"exists equal false", []*catalogpb.Compare{cmp(exists, eq, "k", false)}, false},
		{"exists not equal true", []*catalogpb.Compare{cmp(exists, ne, "k", true)}, false},
		{"exists not equal false", []*catalogpb.Compare{cmp(exists, ne, "k", false)}, true},
		{"missing exists equal false", []*catalogpb.Compare{cmp(exists, eq, "missing", false)}, true},
		{"missing exists equal true", []*catalogpb.Compare{cmp(exists, eq, "missing", true)}, false},
		{"missing exists not equal true", []*catalogpb.Compare{cmp(exists, ne, "missing", true)}, true},
		{"no compares", nil, true},
		{"all hold", []*catalogpb.Compare{cmp(exists, eq, "k", true), cmp(version, eq, "k", 2), cmp(mod, lt, "other", 4)}, true},
		{"one fails", []*catalogpb.Compare{cmp(exists, eq, "k", true), cmp(version, eq, "k", 1), cmp(mod, lt, "other", 4)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, events, err := s.txn(&catalogpb.TxnRequest{
				Compare: tt.compares,
				Success: []*catalogpb.TxnOp{opGet("k", false)},
				Failure: []*catalogpb.TxnOp{opGet("other", false), opGet("k", false)},
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Succeeded != tt.want {
				t.Errorf("succeeded = %v, want %v", resp.Succeeded, tt.want)
			}
			wantOps := 1
			if !tt.want {
				wantOps = 2
			}
			if len(resp.Responses) != wantOps {
				t.Errorf("%d op responses, want %d (the taken branch)", len(resp.Responses), wantOps)
			}
			if len(events) != 0 {
				t.Errorf("reads only, yet events %v", events)
			}
		})
	}
	if s.rev != 3 {
		t.Errorf("revision = %d after read-only txns, want 3", s.rev)
	}
}

func fenceCmp(result catalogpb.Compare_Result, name string, token uint64) *catalogpb.Compare {
	return &catalogpb.Compare{Target: catalogpb.Compare_FENCE, Result: result, Key: []byte(name),
		TargetUnion: &catalogpb.Compare_FenceToken{FenceToken: token}}
}

func TestTxnFenceCompare(t *testing.T) {
	s := newStore(t)
	s.mustPut("k", "v") // rev 1
	// The lock "l" is held with token 7 only.
	var asked []string
	fence := func(tx *bbolt.Tx, name string, token uint64) (bool, error) {
		asked = append(asked, fmt.Sprintf("%s@%d", name, token))
		return name == "l" && token == 7, nil
	}
	const eq, ne = catalogpb.Compare_EQUAL, catalogpb.Compare_NOT_EQUAL
	tests := []struct {
		name    string
		compare *catalogpb.Compare
		want    bool
	}{
		{"current token equal", fenceCmp(eq, "l", 7), true},
		{"stale token equal", fenceCmp(eq, "l", 6), false},
		{"current token not equal", fenceCmp(ne, "l", 7), false},
		{"stale token not equal", fenceCmp(ne, "l", 6), true},
		{"other lock", fenceCmp(eq, "m", 7), false},
		{"unset token", &catalogpb.Compare{Target: catalogpb.Compare_FENCE, Result: eq, Key: []byte("l")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resp *catalogpb.TxnResponse
			_, err := s.write(func(tx *bbolt.Tx, rev int64) (ev []*catalogpb.Event, err error) {
				resp, ev, err = ApplyTxn(tx, rev, &catalogpb.TxnRequest{
					Compare: []*catalogpb.Compare{tt.compare},
					Success: []*catalogpb.TxnOp{opPut("k", "guarded")},
				}, fence)
				return ev, err
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Succeeded != tt.want {
				t.Errorf("succeeded = %v, want %v (fence asked %v)", resp.Succeeded, tt.want, asked)
			}
		})
	}
	t.Run("refused without a checker", func(t *testing.T) {
		before := s.rev
		_, err := s.write(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
			_, ev, err := ApplyTxn(tx, rev, &catalogpb.TxnRequest{
				Compare: []*catalogpb.Compare{fenceCmp(eq, "l", 7)},
				Success: []*catalogpb.TxnOp{opPut("k", "guarded")},
			}, nil)
			return ev, err
		})
		assertErr(t, err, ErrInvalidArgument, "FENCE compares are not served")
		if s.rev != before {
			t.Errorf("revision moved from %d to %d", before, s.rev)
		}
	})
}

func TestTxnInvalidCompare(t *testing.T) {
	tests := []struct {
		name     string
		compare  *catalogpb.Compare
		sentinel error
		msg      string
	}{
		{"exists greater", cmp(catalogpb.Compare_EXISTS, catalogpb.Compare_GREATER, "k", true), ErrInvalidArgument, "EQUAL or NOT_EQUAL"},
		{"exists less", cmp(catalogpb.Compare_EXISTS, catalogpb.Compare_LESS, "k", true), ErrInvalidArgument, "EQUAL or NOT_EQUAL"},
		{"unknown target", &catalogpb.Compare{Target: 9, Key: []byte("k")}, ErrInvalidArgument, "target 9 is unknown"},
		{"unknown result", &catalogpb.Compare{Result: 7, Key: []byte("k")}, ErrInvalidArgument, "result 7 is unknown"},
		{"union of another target", &catalogpb.Compare{Target: catalogpb.Compare_MOD, Key: []byte("k"),
			TargetUnion: &catalogpb.Compare_Value{Value: []byte("x")}}, ErrInvalidArgument, "MOD does not match the field set (value)"},
		{"empty key", cmp(catalogpb.Compare_VERSION, catalogpb.Compare_EQUAL, "", 1), ErrKeyEmpty, "got 0"},
		{"key too large", cmp(catalogpb.Compare_VERSION, catalogpb.Compare_EQUAL, strings.Repeat("k", MaxKeySize+1), 1), ErrKeyTooLarge, "got 4097"},
		{"value too large", cmp(catalogpb.Compare_VALUE, catalogpb.Compare_EQUAL, "k", strings.Repeat("v", MaxValueSize+1)), ErrValueTooLarge, "got 1048577"},
		{"missing", nil, ErrInvalidArgument, "compare is missing"},
		{"fence greater", fenceCmp(catalogpb.Compare_GREATER, "l", 3), ErrInvalidArgument, "FENCE takes result EQUAL"},
		{"fence less", fenceCmp(catalogpb.Compare_LESS, "l", 3), ErrInvalidArgument, "FENCE takes result EQUAL"},
		{"fence with a value", &catalogpb.Compare{Target: catalogpb.Compare_FENCE, Key: []byte("l"),
			TargetUnion: &catalogpb.Compare_Value{Value: []byte("x")}}, ErrInvalidArgument, "FENCE does not match the field set (value)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &catalogpb.TxnRequest{Compare: []*catalogpb.Compare{cmp(catalogpb.Compare_VERSION, catalogpb.Compare_EQUAL, "k", 0), tt.compare}}
			assertErr(t, ValidateTxn(req), tt.sentinel, tt.msg, "txn compare 1")
		})
	}
}

func TestTxnDuplicateKey(t *testing.T) {
	tests := []struct {
		name    string
		success []*catalogpb.TxnOp
		failure []*catalogpb.TxnOp
		refused string // the detail of the refusal, "" if allowed
	}{
		{"put twice", []*catalogpb.TxnOp{opPut("a", "1"), opPut("a", "2")}, nil, `success ops 0 (put) and 1 (put) both write key "a"`},
		{"put then delete", []*catalogpb.TxnOp{opPut("a", "1"), opDel("a", false)}, nil, "ops 0 (put) and 1 (delete)"},
		{"delete then put", []*catalogpb.TxnOp{opDel("a", false), opPut("a", "1")}, nil, "ops 0 (delete) and 1 (put)"},
		{"put under a later prefix delete", []*catalogpb.TxnOp{opPut("a/b", "1"), opDel("a/", true)}, nil, `(prefix delete) both write key "a/b"`},
		{"put under an earlier prefix delete", []*catalogpb.TxnOp{opDel("a/", true), opGet("a/", true), opPut("a/b", "1")}, nil, "ops 0 (prefix delete) and 2 (put)"},
		{"put under an every-key delete", []*catalogpb.TxnOp{opDel("", true), opPut("x", "1")}, nil, "ops 0 (prefix delete) and 1 (put)"},
		{"single delete twice", []*catalogpb.TxnOp{opDel("a", false), opDel("a", false)}, nil, "ops 0 (delete) and 1 (delete)"},
		{"in the failure branch", nil, []*catalogpb.TxnOp{opPut("b", "1"), opPut("a", "1"), opPut("a", "2")}, "failure ops 1 (put) and 2 (put)"},
		{"distinct keys", []*catalogpb.TxnOp{opPut("a", "1"), opPut("b", "1"), opDel("c", false)}, nil, ""},
		{"put beside a prefix delete", []*catalogpb.TxnOp{opDel("a/", true), opPut("a", "1"), opPut("b/a/", "1")}, nil, ""},
		{"overlapping prefix deletes", []*catalogpb.TxnOp{opDel("a", true), opDel("a/", true), opDel("a/b", false)}, nil, ""},
		{"same key in both branches", []*catalogpb.TxnOp{opPut("a", "1")}, []*catalogpb.TxnOp{opPut("a", "2")}, ""},
		{"reads of a written key", []*catalogpb.TxnOp{opGet("a", false), opPut("a", "1"), opGet("a", false)}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			s.mustPut("a/b", "old")
			before := s.dump()
			_, _, err := s.txn(&catalogpb.TxnRequest{Success: tt.success, Failure: tt.failure})
			if tt.refused == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			assertErr(t, err, ErrDuplicateKey, tt.refused)
			if after := s.dump(); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("refused txn changed the store")
			}
		})
	}
}

func TestTxnOpsSeeEarlierOps(t *testing.T) {
	s := newStore(t)
	s.mustPut("x", "1") // rev 1
	s.mustPut("z", "z") // rev 2

	resp, events, err := s.txn(&catalogpb.TxnRequest{
		Compare: []*catalogpb.Compare{cmp(catalogpb.Compare_VALUE, catalogpb.Compare_EQUAL, "x", "1")},
		Success: []*catalogpb.TxnOp{
			opGet("x", false),
			{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{Key: []byte("x"), Value: []byte("2"), PrevKv: true}}},
			opGet("x", false),
			opPut("y", "new"),
			opGet("", true),
			{Op: &catalogpb.TxnOp_Delete{Delete: &catalogpb.DeleteRequest{Key: []byte("z"), PrevKv: true}}},
			opGet("z", false),
			opDel("missing", false),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	x1, x2, y, z := kv("x", "1", 1, 1, 1), kv("x", "2", 1, 3, 2), kv("y", "new", 3, 3, 1), kv("z", "z", 2, 2, 1)
	want := &catalogpb.TxnResponse{Succeeded: true, Responses: []*catalogpb.TxnOpResponse{
		{Response: &catalogpb.TxnOpResponse_Get{Get: &catalogpb.GetResponse{Kvs: []*catalogpb.KeyValue{x1}, Count: 1}}},
		{Response: &catalogpb.TxnOpResponse_Put{Put: &catalogpb.PutResponse{PrevKv: x1}}},
		{Response: &catalogpb.TxnOpResponse_Get{Get: &catalogpb.GetResponse{Kvs: []*catalogpb.KeyValue{x2}, Count: 1}}},
		{Response: &catalogpb.TxnOpResponse_Put{Put: &catalogpb.PutResponse{}}},
		{Response: &catalogpb.TxnOpResponse_Get{Get: &catalogpb.GetResponse{Kvs: []*catalogpb.KeyValue{x2, y, z}, Count: 3}}},
		{Response: &catalogpb.TxnOpResponse_Delete{Delete: &catalogpb.DeleteResponse{Deleted: 1, PrevKvs: []*catalogpb.KeyValue{z}}}},
		{Response: &catalogpb.TxnOpResponse_Get{Get: &catalogpb.GetResponse{}}},
		{Response: &catalogpb.TxnOpResponse_Delete{Delete: &catalogpb.DeleteResponse{}}},
	}}
	assertProto(t, "txn response", resp, want)
	// One revision for the whole txn, every event carries it, in op order.
	assertEvents(t, events, putEvent(x2, x1), putEvent(y, nil), deleteEvent("z", 3, z))
	if s.rev != 3 {
		t.Errorf("revision = %d, want 3: a txn is one revision", s.rev)
	}
}

func TestTxnWithoutEffectiveWrites(t *testing.T) {
	s := newStore(t)
	s.mustPut("a", "1")
	tests := []struct {
		name string
		req  *catalogpb.TxnRequest
	}{
		{"empty", &catalogpb.TxnRequest{}},
		{"delete of a missing key", &catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{opDel("missing", false), opDel("nothing/", true)}}},
		{"reads only", &catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{opGet("a", false)}}},
		{"failure branch taken and empty", &catalogpb.TxnRequest{
			Compare: []*catalogpb.Compare{cmp(catalogpb.Compare_EXISTS, catalogpb.Compare_EQUAL, "a", false)},
			Success: []*catalogpb.TxnOp{opPut("b", "1")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.dump()
			_, events, err := s.txn(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != 0 {
				t.Errorf("events %v from a txn that writes nothing", events)
			}
			if after := s.dump(); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("store changed")
			}
		})
	}
	if s.rev != 1 {
		t.Errorf("revision = %d, want 1", s.rev)
	}
}

func nPuts(prefix string, n int) []*catalogpb.TxnOp {
	ops := make([]*catalogpb.TxnOp, n)
	for i := range ops {
		ops[i] = opPut(fmt.Sprintf("%s%d", prefix, i), "v")
	}
	return ops
}

func nCompares(n int) []*catalogpb.Compare {
	cs := make([]*catalogpb.Compare, n)
	for i := range cs {
		cs[i] = cmp(catalogpb.Compare_VERSION, catalogpb.Compare_EQUAL, fmt.Sprint("c", i), 0)
	}
	return cs
}

func TestLimits(t *testing.T) {
	key := func(n int) []byte { return bytes.Repeat([]byte("k"), n) }
	value := func(n int) []byte { return bytes.Repeat([]byte("v"), n) }
	const almostMiB = MaxValueSize - 1024

	type write func(s *store) error
	putReq := func(req *catalogpb.PutRequest) write {
		return func(s *store) error { _, _, err := s.put(req); return err }
	}
	delReq := func(req *catalogpb.DeleteRequest) write {
		return func(s *store) error { _, _, err := s.del(req); return err }
	}
	txnReq := func(req *catalogpb.TxnRequest) write {
		return func(s *store) error { _, _, err := s.txn(req); return err }
	}
	getReq := func(req *catalogpb.GetRequest) write {
		return func(s *store) error { _, err := s.get(req); return err }
	}

	tests := []struct {
		name     string
		do       write
		sentinel error // nil: accepted
		msg      []string
	}{
		{"put key at max", putReq(&catalogpb.PutRequest{Key: key(MaxKeySize)}), nil, nil},
		{"put key over max", putReq(&catalogpb.PutRequest{Key: key(MaxKeySize + 1)}), ErrKeyTooLarge, []string{"key must be 1..4096 bytes, got 4097"}},
		{"put key empty", putReq(&catalogpb.PutRequest{Value: value(1)}), ErrKeyEmpty, []string{"key must be 1..4096 bytes, got 0"}},
		{"put value at max", putReq(&catalogpb.PutRequest{Key: key(1), Value: value(MaxValueSize)}), nil, nil},
		{"put value over max", putReq(&catalogpb.PutRequest{Key: key(1), Value: value(MaxValueSize + 1)}), ErrValueTooLarge, []string{"at most 1048576 bytes, got 1048577"}},
		{"put max key and max value", putReq(&catalogpb.PutRequest{Key: key(MaxKeySize), Value: value(MaxValueSize)}), nil, nil},
		{"get key over max", getReq(&catalogpb.GetRequest{Key: key(MaxKeySize + 1)}), ErrKeyTooLarge, []string{"got 4097"}},
		{"get prefix over max", getReq(&catalogpb.GetRequest{Key: key(MaxKeySize + 1), Prefix: true}), ErrKeyTooLarge, []string{"got 4097"}},
		{"get key empty", getReq(&catalogpb.GetRequest{}), ErrKeyEmpty, []string{"got 0"}},
		{"delete key at max", delReq(&catalogpb.DeleteRequest{Key: key(MaxKeySize)}), nil, nil},
		{"delete key over max", delReq(&catalogpb.DeleteRequest{Key: key(MaxKeySize + 1)}), ErrKeyTooLarge, []string{"got 4097"}},
		{"delete key empty", delReq(&catalogpb.DeleteRequest{}), ErrKeyEmpty, []string{"got 0"}},
		{"txn ops at max", txnReq(&catalogpb.TxnRequest{Compare: nCompares(8), Success: nPuts("s", 100), Failure: nPuts("f", 20)}), nil, nil},
		{"txn ops over max", txnReq(&catalogpb.TxnRequest{Compare: nCompares(8), Success: nPuts("s", 100), Failure: nPuts("f", 21)}),
			ErrTooManyOps, []string{"at most 128", "got 129 (8 compares, 100 success ops, 21 failure ops)"}},
		{"txn puts of all but a MiB each", txnReq(&catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{
			{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{Key: key(1), Value: value(almostMiB)}}},
			{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{Key: key(2), Value: value(almostMiB)}}},
		}}), nil, nil},
		{"txn request over max", txnReq(&catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{
			{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{Key: key(1), Value: value(MaxValueSize)}}},
			{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{Key: key(2), Value: value(MaxValueSize)}}},
		}}), ErrRequestTooLarge, []string{"at most 2097152 bytes"}},
		{"txn put key over max", txnReq(&catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{opPut("a", ""), opPut(string(key(MaxKeySize+1)), "")}}),
			ErrKeyTooLarge, []string{"txn success op 1", "got 4097"}},
		{"txn get limit over max", txnReq(&catalogpb.TxnRequest{Failure: []*catalogpb.TxnOp{
			{Op: &catalogpb.TxnOp_Get{Get: &catalogpb.GetRequest{Key: key(1), Limit: MaxRangeLimit + 1}}}}}),
			ErrInvalidLimit, []string{"txn failure op 0", "got 10001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			err := tt.do(s)
			if tt.sentinel == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			assertErr(t, err, tt.sentinel, tt.msg...)
			if n := s.count(); n != 0 {
				t.Errorf("refused request stored %d keys", n)
			}
		})
	}

	t.Run("stored at max", func(t *testing.T) {
		s := newStore(t)
		if _, _, err := s.put(&catalogpb.PutRequest{Key: key(MaxKeySize), Value: value(MaxValueSize)}); err != nil {
			t.Fatal(err)
		}
		got := s.mustGet(&catalogpb.GetRequest{Key: key(MaxKeySize)}).Kvs
		if len(got) != 1 || !bytes.Equal(got[0].Key, key(MaxKeySize)) || !bytes.Equal(got[0].Value, value(MaxValueSize)) {
			t.Errorf("max key and value did not round trip")
		}
	})
}

func TestLeaseRefused(t *testing.T) {
	leased := &catalogpb.PutRequest{Key: []byte("a"), Value: []byte("1"), Lease: 42}
	tests := []struct {
		name string
		do   func(s *store) error
	}{
		{"put", func(s *store) error { _, _, err := s.put(leased); return err }},
		{"txn success put", func(s *store) error {
			_, _, err := s.txn(&catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{{Op: &catalogpb.TxnOp_Put{Put: leased}}}})
			return err
		}},
		{"txn put after a put that would succeed", func(s *store) error {
			_, _, err := s.txn(&catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{opPut("b", "1"), {Op: &catalogpb.TxnOp_Put{Put: leased}}}})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			err := tt.do(s)
			assertErr(t, err, ErrLeaseNotFound, "lease 42", "does not exist")
			if got := Reason(err); got != catalogpb.ErrorReason_LEASE_NOT_FOUND {
				t.Errorf("Reason = %v", got)
			}
			if n := s.count(); n != 0 {
				t.Errorf("%d keys stored", n)
			}
		})
	}
}

// TestRefusedWriteLeavesStoreUntouched commits the transaction after a refused
// command, as the server does when it applies a batch, and checks that the
// command wrote nothing: validation must come before the first write.
func TestRefusedWriteLeavesStoreUntouched(t *testing.T) {
	tests := []struct {
		name  string
		apply func(tx *bbolt.Tx, rev int64) error
	}{
		{"put key too large", func(tx *bbolt.Tx, rev int64) error {
			_, _, err := ApplyPut(tx, rev, &catalogpb.PutRequest{Key: make([]byte, MaxKeySize+1)})
			return err
		}},
		{"put with revision 0", func(tx *bbolt.Tx, _ int64) error {
			_, _, err := ApplyPut(tx, 0, &catalogpb.PutRequest{Key: []byte("a"), Value: []byte("new")})
			return err
		}},
		{"nil delete", func(tx *bbolt.Tx, rev int64) error {
			_, _, err := ApplyDelete(tx, rev, nil)
			return err
		}},
		{"txn whose last op is invalid", func(tx *bbolt.Tx, rev int64) error {
			_, _, err := ApplyTxn(tx, rev, &catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{
				opPut("a", "new"), opDel("b", false), opPut("", "x"),
			}}, nil)
			return err
		}},
		{"txn with a bad op in the branch not taken", func(tx *bbolt.Tx, rev int64) error {
			_, _, err := ApplyTxn(tx, rev, &catalogpb.TxnRequest{
				Success: []*catalogpb.TxnOp{opPut("a", "new"), opDel("b", false)},
				Failure: []*catalogpb.TxnOp{{}},
			}, nil)
			return err
		}},
		{"txn writing a key twice", func(tx *bbolt.Tx, rev int64) error {
			_, _, err := ApplyTxn(tx, rev, &catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{
				opPut("c", "1"), opDel("b", false), opPut("c", "2"),
			}}, nil)
			return err
		}},
		{"txn with a bad last compare", func(tx *bbolt.Tx, rev int64) error {
			_, _, err := ApplyTxn(tx, rev, &catalogpb.TxnRequest{
				Compare: []*catalogpb.Compare{cmp(catalogpb.Compare_EXISTS, catalogpb.Compare_LESS, "a", true)},
				Success: []*catalogpb.TxnOp{opPut("a", "new")},
				Failure: []*catalogpb.TxnOp{opDel("a", false)},
			}, nil)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			s.mustPut("a", "old")
			s.mustPut("b", "old")
			before := s.dump()
			var applyErr error
			if err := s.db.Update(func(tx *bbolt.Tx) error {
				applyErr = tt.apply(tx, s.rev+1)
				return nil // commit whatever the command left behind
			}); err != nil {
				t.Fatal(err)
			}
			if applyErr == nil {
				t.Fatal("command accepted, want it refused")
			}
			if after := s.dump(); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("refused command (%v) changed the store:\nbefore %v\nafter  %v", applyErr, before, after)
			}
		})
	}
}

func TestValidateMissingParts(t *testing.T) {
	tests := []struct {
		name string
		err  error
		msg  string
	}{
		{"nil put", ValidatePut(nil), "put request is missing"},
		{"nil get", ValidateGet(nil), "get request is missing"},
		{"nil delete", ValidateDelete(nil), "delete request is missing"},
		{"nil txn", ValidateTxn(nil), "txn request is missing"},
		{"txn op without op", ValidateTxn(&catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{opPut("a", ""), {}}}), "txn success op 1: registry: invalid argument: op holds no put, delete or get"},
		{"txn op with nil put", ValidateTxn(&catalogpb.TxnRequest{Failure: []*catalogpb.TxnOp{{Op: &catalogpb.TxnOp_Put{}}}}), "txn failure op 0: registry: invalid argument: put request is missing"},
		{"txn nil op", ValidateTxn(&catalogpb.TxnRequest{Success: []*catalogpb.TxnOp{nil}}), "op holds no put"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertErr(t, tt.err, ErrInvalidArgument, tt.msg)
		})
	}
}

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want catalogpb.ErrorReason
	}{
		{ErrKeyEmpty, catalogpb.ErrorReason_KEY_EMPTY},
		{ErrKeyTooLarge, catalogpb.ErrorReason_KEY_TOO_LARGE},
		{ErrValueTooLarge, catalogpb.ErrorReason_VALUE_TOO_LARGE},
		{ErrRequestTooLarge, catalogpb.ErrorReason_REQUEST_TOO_LARGE},
		{ErrTooManyOps, catalogpb.ErrorReason_TOO_MANY_OPS},
		{ErrDuplicateKey, catalogpb.ErrorReason_DUPLICATE_KEY},
		{ErrLeaseNotFound, catalogpb.ErrorReason_LEASE_NOT_FOUND},
		{ErrInvalidContinueToken, catalogpb.ErrorReason_INVALID_CONTINUE_TOKEN},
		{ErrInvalidLimit, catalogpb.ErrorReason_INVALID_LIMIT},
		{ErrInvalidArgument, catalogpb.ErrorReason_INVALID_ARGUMENT},
		{errors.New("registry: something else"), catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED},
		{nil, catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED},
	}
	for _, tt := range tests {
		t.Run(tt.want.String()+"/"+fmt.Sprint(tt.err), func(t *testing.T) {
			if got := Reason(tt.err); got != tt.want {
				t.Errorf("Reason(%v) = %v, want %v", tt.err, got, tt.want)
			}
			if tt.err == nil {
				return
			}
			wrapped := fmt.Errorf("txn success op 3: %w", fmt.Errorf("%w: detail", tt.err))
			if got := Reason(wrapped); got != tt.want {
				t.Errorf("Reason(%v) = %v, want %v", wrapped, got, tt.want)
			}
		})
	}
}

func TestStoredEncoding(t *testing.T) {
	kvs := []*catalogpb.KeyValue{
		kv("a", "", 1, 1, 1),
		kv("a", "value", 7, 9, 3),
		{Key: []byte("leased"), Value: []byte("x"), CreateRevision: 1 << 40, ModRevision: 1<<40 + 1, Version: 2, Lease: 77},
		{Key: bytes.Repeat([]byte{0xff}, MaxKeySize), Value: bytes.Repeat([]byte{0}, 300), CreateRevision: 1, ModRevision: 1, Version: 1},
	}
	for _, want := range kvs {
		t.Run(string(want.Key[:min(len(want.Key), 8)]), func(t *testing.T) {
			got, enc := encodeKV(want.Key, want.Value, want.CreateRevision, want.ModRevision, want.Version, want.Lease)
			assertProto(t, "encoded kv", got, want)
			std, err := proto.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, std) {
				t.Errorf("encoding %x differs from proto.Marshal %x", enc, std)
			}
			// A newer binary may add fields; this one must read past them.
			withUnknown := protowire.AppendTag(bytes.Clone(std), 99, protowire.BytesType)
			withUnknown = protowire.AppendBytes(withUnknown, []byte("future"))
			withUnknown = protowire.AppendTag(withUnknown, 100, protowire.VarintType)
			withUnknown = protowire.AppendVarint(withUnknown, 5)
			s, err := parseKV(withUnknown)
			if err != nil {
				t.Fatal(err)
			}
			assertProto(t, "parsed kv", s.clone(true), want)
		})
	}
}

func TestCorruptValueIsReported(t *testing.T) {
	s := newStore(t)
	s.mustPut("a", "ok")
	if err := s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(KVBucket).Put([]byte("b"), []byte{0x0a, 0x7f}) // key field claims 127 bytes
	}); err != nil {
		t.Fatal(err)
	}
	checks := map[string]func() error{
		"get": func() error { _, err := s.get(&catalogpb.GetRequest{Key: []byte("b")}); return err },
		"prefix get": func() error {
			_, err := s.get(&catalogpb.GetRequest{Prefix: true})
			return err
		},
		"put": func() error { _, _, err := s.put(&catalogpb.PutRequest{Key: []byte("b")}); return err },
		"txn compare": func() error {
			_, _, err := s.txn(&catalogpb.TxnRequest{Compare: []*catalogpb.Compare{cmp(catalogpb.Compare_VERSION, catalogpb.Compare_EQUAL, "b", 1)}})
			return err
		},
	}
	for _, name := range []string{"get", "prefix get", "put", "txn compare"} {
		t.Run(name, func(t *testing.T) {
			err := checks[name]()
			if err == nil || !strings.Contains(err.Error(), `key "b"`) || !strings.Contains(err.Error(), "corrupt") {
				t.Errorf("error = %v, want one naming the corrupt key", err)
			}
			if r := Reason(err); r != catalogpb.ErrorReason_ERROR_REASON_UNSPECIFIED {
				t.Errorf("Reason = %v: corruption is not the client's fault", r)
			}
		})
	}
}

// TestApplyIsDeterministic replays one command log on two databases and
// expects the same bytes, responses and events.
func TestApplyIsDeterministic(t *testing.T) {
	log := []proto.Message{
		&catalogpb.PutRequest{Key: []byte("a"), Value: []byte("1")},
		&catalogpb.PutRequest{Key: []byte("b/1"), Value: []byte("2")},
		&catalogpb.PutRequest{Key: []byte("b/2"), Value: []byte("3")},
		&catalogpb.TxnRequest{
			Compare: []*catalogpb.Compare{cmp(catalogpb.Compare_VERSION, catalogpb.Compare_EQUAL, "a", 1)},
			Success: []*catalogpb.TxnOp{opPut("a", "2"), opDel("b/", true), opPut("c", "4"), opGet("", true)},
		},
		&catalogpb.DeleteRequest{Key: []byte("c"), PrevKv: true},
	}
	run := func() (*store, []proto.Message) {
		s := newStore(t)
		var out []proto.Message
		for _, cmd := range log {
			var resp proto.Message
			var events []*catalogpb.Event
			var err error
			switch req := cmd.(type) {
			case *catalogpb.PutRequest:
				resp, events, err = s.put(req)
			case *catalogpb.DeleteRequest:
				resp, events, err = s.del(req)
			case *catalogpb.TxnRequest:
				resp, events, err = s.txn(req)
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, resp, &catalogpb.EventBatch{Revision: s.rev, Events: events})
		}
		return s, out
	}
	s1, out1 := run()
	s2, out2 := run()
	if strings.Join(s1.dump(), "\n") != strings.Join(s2.dump(), "\n") {
		t.Errorf("stores differ:\n%v\n%v", s1.dump(), s2.dump())
	}
	for i := range out1 {
		b1, err1 := proto.MarshalOptions{Deterministic: true}.Marshal(out1[i])
		b2, err2 := proto.MarshalOptions{Deterministic: true}.Marshal(out2[i])
		if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
			t.Errorf("output %d differs: %v vs %v", i, out1[i], out2[i])
		}
	}
	if s1.rev != 5 {
		t.Errorf("revision = %d, want 5", s1.rev)
	}
}

func BenchmarkApplyPut(b *testing.B) {
	value := bytes.Repeat([]byte("v"), 256)
	const keySpace = 1 << 14
	keyOf := make([][]byte, keySpace)
	for i := range keyOf {
		keyOf[i] = fmt.Appendf(nil, "/config/service-%05d/setting", i)
	}
	for _, mode := range []string{"create", "overwrite"} {
		b.Run(mode, func(b *testing.B) {
			db := openDB(b)
			if mode == "overwrite" {
				if err := db.Update(func(tx *bbolt.Tx) error {
					for i, k := range keyOf {
						if _, _, err := ApplyPut(tx, int64(i+1), &catalogpb.PutRequest{Key: k, Value: value}); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			// The server applies committed entries in batches, one bbolt
			// transaction each; a batch of 1000 puts stands for that.
			const batch = 1000
			tx, err := db.Begin(true)
			if err != nil {
				b.Fatal(err)
			}
			rev := int64(keySpace)
			i := 0
			b.ReportAllocs()
			b.SetBytes(int64(len(value)))
			for b.Loop() {
				rev++
				key := keyOf[i%keySpace]
				if mode == "create" {
					key = fmt.Appendf(key[:len(key):len(key)], "/%d", i)
				}
				if _, _, err := ApplyPut(tx, rev, &catalogpb.PutRequest{Key: key, Value: value}); err != nil {
					b.Fatal(err)
				}
				i++
				if i%batch == 0 {
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
					if tx, err = db.Begin(true); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

func BenchmarkRangePrefixPage(b *testing.B) {
	db := openDB(b)
	if err := db.Update(func(tx *bbolt.Tx) error {
		for i := range 5000 {
			if _, _, err := ApplyPut(tx, int64(i+1), &catalogpb.PutRequest{Key: fmt.Appendf(nil, "/svc/%05d", i), Value: []byte("value")}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	req := &catalogpb.GetRequest{Key: []byte("/svc/"), Prefix: true, Limit: 100}
	b.ReportAllocs()
	for b.Loop() {
		if err := db.View(func(tx *bbolt.Tx) error {
			_, err := Range(tx, req)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}
