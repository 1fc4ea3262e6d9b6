package sdk

import (
	"errors"
	"strings"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/protobuf/proto"
)

func TestOptionsBuildRequests(t *testing.T) {
	tests := []struct {
		name  string
		build func() (proto.Message, error)
		want  proto.Message
	}{
		{
			"put plain",
			func() (proto.Message, error) { return putRequest("k", "v", nil) },
			&catalogpb.PutRequest{Key: []byte("k"), Value: []byte("v")},
		},
		{
			"put with lease and prev kv",
			func() (proto.Message, error) { return putRequest("k", "v", []OpOption{WithLease(7), WithPrevKV()}) },
			&catalogpb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 7, PrevKv: true},
		},
		{
			"get defaults to linearizable",
			func() (proto.Message, error) { return getRequest("k", nil) },
			&catalogpb.GetRequest{Key: []byte("k"), Consistency: catalogpb.Consistency_LINEARIZABLE},
		},
		{
			"get with every option",
			func() (proto.Message, error) {
				return getRequest("k/", []OpOption{WithPrefix(), WithLimit(10), WithContinue([]byte("tok")),
					WithSerializable(), WithKeysOnly(), WithCountOnly()})
			},
			&catalogpb.GetRequest{Key: []byte("k/"), Prefix: true, Limit: 10, ContinueToken: []byte("tok"),
				Consistency: catalogpb.Consistency_SERIALIZABLE, KeysOnly: true, CountOnly: true},
		},
		{
			"delete with prefix and prev kv",
			func() (proto.Message, error) { return deleteRequest("k/", []OpOption{WithPrefix(), WithPrevKV()}) },
			&catalogpb.DeleteRequest{Key: []byte("k/"), Prefix: true, PrevKv: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.build()
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			if !proto.Equal(got, tt.want) {
				t.Errorf("built %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOptionsRefusedWhereTheyDoNotApply(t *testing.T) {
	tests := []struct {
		name    string
		build   func() error
		wantMsg string
	}{
		{"limit on put", func() error { _, err := putRequest("k", "v", []OpOption{WithLimit(1)}); return err },
			"Put does not take WithLimit (it takes WithPrevKV, WithLease)"},
		{"lease on get", func() error { _, err := getRequest("k", []OpOption{WithLease(1), WithPrevKV()}); return err },
			"Get does not take WithPrevKV, WithLease (it takes WithPrefix, WithLimit, WithContinue, WithSerializable, WithKeysOnly, WithCountOnly)"},
		{"serializable on delete", func() error { _, err := deleteRequest("k", []OpOption{WithSerializable()}); return err },
			"Delete does not take WithSerializable (it takes WithPrefix, WithPrevKV)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.build()
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error = %v, want ErrInvalidArgument saying %q", err, tt.wantMsg)
			}
		})
	}
}

func TestConvenienceCallsSendTheBuiltRequest(t *testing.T) {
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}})
	if _, err := c.Put(t.Context(), "k", "v", WithPrevKV()); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if _, err := c.Get(t.Context(), "k", WithPrefix(), WithSerializable()); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if _, err := c.Delete(t.Context(), "k", WithPrefix()); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	want := map[string]proto.Message{
		"Put":    &catalogpb.PutRequest{Key: []byte("k"), Value: []byte("v"), PrevKv: true},
		"Get":    &catalogpb.GetRequest{Key: []byte("k"), Prefix: true, Consistency: catalogpb.Consistency_SERIALIZABLE},
		"Delete": &catalogpb.DeleteRequest{Key: []byte("k"), Prefix: true},
	}
	for method, req := range want {
		if got := srv.lastRequest(method); !proto.Equal(got, req) {
			t.Errorf("server got %s %v, want %v", method, got, req)
		}
	}
	if _, err := c.Put(t.Context(), "k", "v", WithCountOnly()); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Put with WithCountOnly error = %v, want ErrInvalidArgument", err)
	}
	if got := srv.callCount("Put"); got != 1 {
		t.Errorf("a refused Put reached the server: %d calls, want 1", got)
	}
}

func TestTxnBuilder(t *testing.T) {
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}})
	resp, err := c.NewTxn(t.Context()).
		If(
			Compare(Value("a"), "=", "1"),
			Compare(ModRevision("b"), ">", 5),
			Compare(CreateRevision("c"), "<", int64(6)),
			Compare(Version("d"), "!=", 0),
			Compare(Exists("e"), "=", false),
		).
		Then(OpPut("a", "2", WithPrevKV()), OpDelete("b", WithPrefix())).
		Else(OpGet("a", WithSerializable())).
		Commit()
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if !resp.Succeeded {
		t.Errorf("Commit response = %v, want the fake's success", resp)
	}
	want := &catalogpb.TxnRequest{
		Compare: []*catalogpb.Compare{
			{Key: []byte("a"), Target: catalogpb.Compare_VALUE, Result: catalogpb.Compare_EQUAL, TargetUnion: &catalogpb.Compare_Value{Value: []byte("1")}},
			{Key: []byte("b"), Target: catalogpb.Compare_MOD, Result: catalogpb.Compare_GREATER, TargetUnion: &catalogpb.Compare_ModRevision{ModRevision: 5}},
			{Key: []byte("c"), Target: catalogpb.Compare_CREATE, Result: catalogpb.Compare_LESS, TargetUnion: &catalogpb.Compare_CreateRevision{CreateRevision: 6}},
			{Key: []byte("d"), Target: catalogpb.Compare_VERSION, Result: catalogpb.Compare_NOT_EQUAL, TargetUnion: &catalogpb.Compare_Version{Version: 0}},
			{Key: []byte("e"), Target: catalogpb.Compare_EXISTS, Result: catalogpb.Compare_EQUAL, TargetUnion: &catalogpb.Compare_Exists{Exists: false}},
		},
		Success: []*catalogpb.TxnOp{
			{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{Key: []byte("a"), Value: []byte("2"), PrevKv: true}}},
			{Op: &catalogpb.TxnOp_Delete{Delete: &catalogpb.DeleteRequest{Key: []byte("b"), Prefix: true}}},
		},
		Failure: []*catalogpb.TxnOp{
			{Op: &catalogpb.TxnOp_Get{Get: &catalogpb.GetRequest{Key: []byte("a"), Consistency: catalogpb.Consistency_SERIALIZABLE}}},
		},
	}
	if got := srv.lastRequest("Txn"); !proto.Equal(got, want) {
		t.Errorf("server got %v\nwant %v", got, want)
	}
}

func TestTxnBuilderMistakes(t *testing.T) {
	tests := []struct {
		name    string
		txn     func(*Txn) *Txn
		wantMsg string
	}{
		{"unknown operator", func(x *Txn) *Txn { return x.If(Compare(Value("a"), ">=", "1")) },
			`compare operator must be =, !=, > or <, got ">="`},
		{"value compared with int", func(x *Txn) *Txn { return x.If(Compare(Value("a"), "=", 1)) },
			`compare of VALUE on key "a" takes a string or []byte, got int`},
		{"version compared with string", func(x *Txn) *Txn { return x.If(Compare(Version("a"), "=", "1")) },
			`takes an int or int64, got string`},
		{"exists with greater", func(x *Txn) *Txn { return x.If(Compare(Exists("a"), ">", true)) },
			`compare of EXISTS on key "a" takes = or !=`},
		{"zero Cmp", func(x *Txn) *Txn { return x.If(Cmp{}) }, "If takes conditions made by Compare"},
		{"compare without target", func(x *Txn) *Txn { return x.If(Compare(Cmp{}, "=", 1)) }, "Compare needs a target"},
		{"zero Op", func(x *Txn) *Txn { return x.Then(Op{}) }, "Then and Else take operations"},
		{"bad option on op", func(x *Txn) *Txn { return x.Else(OpGet("a", WithLease(1))) }, "Get does not take WithLease"},
	}
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.txn(c.NewTxn(t.Context())).Commit()
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Commit error = %v, want ErrInvalidArgument saying %q", err, tt.wantMsg)
			}
		})
	}
	if got := srv.callCount("Txn"); got != 0 {
		t.Errorf("transactions with mistakes reached the server %d times, want 0", got)
	}
}
