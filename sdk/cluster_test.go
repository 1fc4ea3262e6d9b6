package sdk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func (f *fakeServer) testMembers() []*catalogpb.Member {
	return []*catalogpb.Member{{Id: 0xa1, Name: "n1", PeerAddr: "10.0.0.1:7401", IsLeader: true}, {Id: 0xb2, Name: "n2", PeerAddr: "10.0.0.2:7401"}}
}

func (f *fakeServer) MemberList(ctx context.Context, req *catalogpb.MemberListRequest) (*catalogpb.MemberListResponse, error) {
	if err := f.handle(ctx, "MemberList", req); err != nil {
		return nil, err
	}
	return &catalogpb.MemberListResponse{Header: f.header(), Members: f.testMembers()}, nil
}

func (f *fakeServer) MemberAdd(ctx context.Context, req *catalogpb.MemberAddRequest) (*catalogpb.MemberAddResponse, error) {
	if err := f.handle(ctx, "MemberAdd", req); err != nil {
		return nil, err
	}
	added := &catalogpb.Member{Id: 0xc3, Name: req.Name, PeerAddr: req.PeerAddr, IsLearner: req.IsLearner}
	return &catalogpb.MemberAddResponse{Header: f.header(), Member: added, Members: append(f.testMembers(), added)}, nil
}

func (f *fakeServer) MemberRemove(ctx context.Context, req *catalogpb.MemberRemoveRequest) (*catalogpb.MemberRemoveResponse, error) {
	if err := f.handle(ctx, "MemberRemove", req); err != nil {
		return nil, err
	}
	return &catalogpb.MemberRemoveResponse{Header: f.header(), Members: f.testMembers()[:1]}, nil
}

func (f *fakeServer) MemberPromote(ctx context.Context, req *catalogpb.MemberPromoteRequest) (*catalogpb.MemberPromoteResponse, error) {
	if err := f.handle(ctx, "MemberPromote", req); err != nil {
		return nil, err
	}
	return &catalogpb.MemberPromoteResponse{Header: f.header(), Members: f.testMembers()}, nil
}

func (f *fakeServer) MoveLeader(ctx context.Context, req *catalogpb.MoveLeaderRequest) (*catalogpb.MoveLeaderResponse, error) {
	if err := f.handle(ctx, "MoveLeader", req); err != nil {
		return nil, err
	}
	return &catalogpb.MoveLeaderResponse{Header: f.header()}, nil
}

func (f *fakeServer) Hash(ctx context.Context, req *catalogpb.HashRequest) (*catalogpb.HashResponse, error) {
	if err := f.handle(ctx, "Hash", req); err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(f.name))
	return &catalogpb.HashResponse{Header: f.header(), AppliedIndex: 10, Revision: 3, Hash: sum[:], Keys: 2}, nil
}

func TestMembershipCalls(t *testing.T) {
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}})
	ctx := t.Context()

	list, err := c.MemberList(ctx)
	if err != nil || len(list.Members) != 2 {
		t.Fatalf("MemberList = %v, %v", list, err)
	}
	add, err := c.MemberAdd(ctx, "n3", "10.0.0.3:7401", true)
	if err != nil || add.Member.Id != 0xc3 || !add.Member.IsLearner || len(add.Members) != 3 {
		t.Fatalf("MemberAdd = %v, %v", add, err)
	}
	if got, want := srv.lastRequest("MemberAdd"), (&catalogpb.MemberAddRequest{Name: "n3", PeerAddr: "10.0.0.3:7401", IsLearner: true}); !proto.Equal(got, want) {
		t.Errorf("MemberAdd sent %v, want %v", got, want)
	}
	if _, err := c.MemberRemove(ctx, 0xb2); err != nil {
		t.Fatal(err)
	}
	if got := srv.lastRequest("MemberRemove").(*catalogpb.MemberRemoveRequest); got.Id != 0xb2 {
		t.Errorf("MemberRemove sent id %x, want b2", got.Id)
	}
	if _, err := c.MemberPromote(ctx, 0xc3); err != nil {
		t.Fatal(err)
	}
	if got := srv.lastRequest("MemberPromote").(*catalogpb.MemberPromoteRequest); got.Id != 0xc3 {
		t.Errorf("MemberPromote sent id %x, want c3", got.Id)
	}
	if _, err := c.MoveLeader(ctx, 0xb2); err != nil {
		t.Fatal(err)
	}
	if got := srv.lastRequest("MoveLeader").(*catalogpb.MoveLeaderRequest); got.TargetId != 0xb2 {
		t.Errorf("MoveLeader sent target %x, want b2", got.TargetId)
	}
}

func TestMembershipArgumentsCheckedBeforeSending(t *testing.T) {
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}})
	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"empty name", func() error { _, err := c.MemberAdd(ctx, "", "10.0.0.3:7401", false); return err }, "member name must not be empty"},
		{"peer address without port", func() error { _, err := c.MemberAdd(ctx, "n3", "10.0.0.3", false); return err }, `peer address "10.0.0.3" must be host:port`},
		{"peer address with a bad port", func() error { _, err := c.MemberAdd(ctx, "n3", "10.0.0.3:99999", false); return err }, `port must be a number in 1..65535, got "99999"`},
		{"remove id 0", func() error { _, err := c.MemberRemove(ctx, 0); return err }, "member id must not be 0"},
		{"promote id 0", func() error { _, err := c.MemberPromote(ctx, 0); return err }, "member id must not be 0"},
		{"move leader to 0", func() error { _, err := c.MoveLeader(ctx, 0); return err }, "member id must not be 0"},
		{"hash of a bad endpoint", func() error { _, err := c.HashOf(ctx, "no-port"); return err }, `endpoint "no-port" must be host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want ErrInvalidArgument saying %q", err, tt.want)
			}
		})
	}
	for _, m := range []string{"MemberAdd", "MemberRemove", "MemberPromote", "MoveLeader", "Hash"} {
		if n := srv.callCount(m); n != 0 {
			t.Errorf("%s was sent %d times for invalid arguments", m, n)
		}
	}
}

func TestMembershipErrors(t *testing.T) {
	tests := []struct {
		reason catalogpb.ErrorReason
		code   codes.Code
		want   error
	}{
		{catalogpb.ErrorReason_MEMBER_NOT_FOUND, codes.NotFound, ErrMemberNotFound},
		{catalogpb.ErrorReason_MEMBER_EXISTS, codes.AlreadyExists, ErrMemberExists},
		{catalogpb.ErrorReason_MEMBER_NOT_LEARNER, codes.FailedPrecondition, ErrMemberNotLearner},
		{catalogpb.ErrorReason_LEARNER_NOT_READY, codes.FailedPrecondition, ErrLearnerNotReady},
		{catalogpb.ErrorReason_UNHEALTHY_CLUSTER, codes.FailedPrecondition, ErrUnhealthyCluster},
		{catalogpb.ErrorReason_MEMBERSHIP_CHANGE_IN_PROGRESS, codes.Aborted, ErrMembershipChangeInProgress},
		{catalogpb.ErrorReason_TOO_MANY_LEARNERS, codes.FailedPrecondition, ErrTooManyLearners},
	}
	srv := startFake(t, "a")
	c := newTestClient(t, Config{Endpoints: []string{srv.addr}})
	for _, tt := range tests {
		t.Run(tt.reason.String(), func(t *testing.T) {
			before := srv.callCount("MemberPromote")
			srv.failNext(reasonErr(t, tt.code, tt.reason, "refused: "+tt.reason.String()))
			_, err := c.MemberPromote(t.Context(), 0xb2)
			if !errors.Is(err, tt.want) || err.Error() != "refused: "+tt.reason.String() {
				t.Errorf("error %v, want errors.Is %v with the server's message", err, tt.want)
			}
			if n := srv.callCount("MemberPromote") - before; n != 1 {
				t.Errorf("sent %d times, want 1: a refused membership change is not retried", n)
			}
		})
	}
}

func TestMembershipRetries(t *testing.T) {
	noLeader := func(t *testing.T) error {
		return reasonErr(t, codes.Unavailable, catalogpb.ErrorReason_NO_LEADER, "no leader")
	}
	unavailable := status.Error(codes.Unavailable, "connection reset")
	tests := []struct {
		name      string
		method    string
		call      func(ctx context.Context, c *Client) error
		failures  func(t *testing.T) []error
		wantCalls int
		wantErr   error
	}{
		{"add after no leader", "MemberAdd", func(ctx context.Context, c *Client) error {
			_, err := c.MemberAdd(ctx, "n3", "10.0.0.3:7401", false)
			return err
		}, func(t *testing.T) []error { return []error{noLeader(t), noLeader(t)} }, 3, nil},
		{"add not retried when unavailable", "MemberAdd", func(ctx context.Context, c *Client) error {
			_, err := c.MemberAdd(ctx, "n3", "10.0.0.3:7401", false)
			return err
		}, func(*testing.T) []error { return []error{unavailable} }, 1, ErrUnavailable},
		{"remove not retried when unavailable", "MemberRemove", func(ctx context.Context, c *Client) error {
			_, err := c.MemberRemove(ctx, 0xb2)
			return err
		}, func(*testing.T) []error { return []error{unavailable} }, 1, ErrUnavailable},
		{"move leader after no leader", "MoveLeader", func(ctx context.Context, c *Client) error {
			_, err := c.MoveLeader(ctx, 0xb2)
			return err
		}, func(t *testing.T) []error { return []error{noLeader(t)} }, 2, nil},
		{"list retried when unavailable", "MemberList", func(ctx context.Context, c *Client) error {
			_, err := c.MemberList(ctx)
			return err
		}, func(*testing.T) []error { return []error{unavailable, unavailable} }, 3, nil},
		{"hash retried when unavailable", "Hash", func(ctx context.Context, c *Client) error {
			_, err := c.HashOf(ctx, "")
			return err
		}, func(*testing.T) []error { return []error{unavailable} }, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, "a")
			c := newTestClient(t, Config{Endpoints: []string{srv.addr}})
			srv.failNext(tt.failures(t)...)
			call := tt.call
			if tt.method == "Hash" {
				call = func(ctx context.Context, c *Client) error { _, err := c.HashOf(ctx, srv.addr); return err }
			}
			err := call(t.Context(), c)
			if (tt.wantErr == nil && err != nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if n := srv.callCount(tt.method); n != tt.wantCalls {
				t.Errorf("%s sent %d times, want %d", tt.method, n, tt.wantCalls)
			}
		})
	}
}

func TestHashOfAsksThatEndpoint(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	c := newTestClient(t, Config{Endpoints: []string{a.addr}})
	h, err := c.HashOf(t.Context(), b.addr)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("b"))
	if !bytes.Equal(h.Hash, want[:]) || a.callCount("Hash") != 0 || b.callCount("Hash") != 1 {
		t.Errorf("HashOf(b) = %x from a %d times and b %d times; want b's hash from b alone", h.Hash, a.callCount("Hash"), b.callCount("Hash"))
	}
}

// A snapshotFake serves Snapshot streams of a fixed database, damaged as a test asks.
type snapshotFake struct {
	catalogpb.UnimplementedClusterServer
	addr string
	db   []byte

	mu sync.Mutex
	// failFirst is how many streams fail with Unavailable before any message.
	failFirst int
	// damage, if set, changes the messages before they are sent.
	damage func(msgs []*catalogpb.SnapshotResponse) []*catalogpb.SnapshotResponse
	// endWith, if set, ends the stream after the messages.
	endWith error
	streams int
}

func startSnapshotFake(t *testing.T, size int) *snapshotFake {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	db := make([]byte, size)
	for i := range db {
		db[i] = byte(i * 7)
	}
	f := &snapshotFake{addr: lis.Addr().String(), db: db}
	srv := grpc.NewServer()
	catalogpb.RegisterClusterServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

const fakeChunk = 1000

func (f *snapshotFake) Snapshot(_ *catalogpb.SnapshotRequest, stream grpc.ServerStreamingServer[catalogpb.SnapshotResponse]) error {
	f.mu.Lock()
	f.streams++
	fail := f.streams <= f.failFirst
	damage, endWith := f.damage, f.endWith
	f.mu.Unlock()
	if fail {
		return status.Error(codes.Unavailable, "fake: not yet")
	}
	sum := sha256.Sum256(f.db)
	var msgs []*catalogpb.SnapshotResponse
	for off := 0; off < len(f.db); off += fakeChunk {
		msgs = append(msgs, &catalogpb.SnapshotResponse{Blob: f.db[off:min(off+fakeChunk, len(f.db))]})
	}
	msgs[0].Header = &catalogpb.ResponseHeader{MemberId: 5, Revision: 77}
	msgs[0].TotalSize = int64(len(f.db))
	msgs[len(msgs)-1].Sha256 = sum[:]
	if damage != nil {
		msgs = damage(msgs)
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return endWith
}

func (f *snapshotFake) streamCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams
}

func TestSnapshot(t *testing.T) {
	f := startSnapshotFake(t, 4500)
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	var buf bytes.Buffer
	var calls [][2]int64
	info, err := c.Snapshot(t.Context(), &buf, func(done, total int64) { calls = append(calls, [2]int64{done, total}) })
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(f.db)
	if !bytes.Equal(buf.Bytes(), append(append([]byte(nil), f.db...), sum[:]...)) {
		t.Errorf("wrote %d bytes, want the %d-byte database followed by its sha256", buf.Len(), len(f.db))
	}
	want := SnapshotInfo{Revision: 77, Size: 4500, SHA256: hex.EncodeToString(sum[:]), Endpoint: f.addr}
	if info != want {
		t.Errorf("info %+v, want %+v", info, want)
	}
	wantCalls := [][2]int64{{1000, 4500}, {2000, 4500}, {3000, 4500}, {4000, 4500}, {4500, 4500}}
	if len(calls) != len(wantCalls) {
		t.Fatalf("progress calls %v, want %v", calls, wantCalls)
	}
	for i := range calls {
		if calls[i] != wantCalls[i] {
			t.Errorf("progress call %d = %v, want %v", i, calls[i], wantCalls[i])
		}
	}
}

func TestSnapshotRetriesUntilTheStreamStarts(t *testing.T) {
	f := startSnapshotFake(t, 2500)
	f.failFirst = 2
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	var buf bytes.Buffer
	if _, err := c.Snapshot(t.Context(), &buf, nil); err != nil {
		t.Fatal(err)
	}
	if f.streamCount() != 3 || buf.Len() != 2500+sha256.Size {
		t.Errorf("%d streams, %d bytes written; want 3 streams and the snapshot", f.streamCount(), buf.Len())
	}
}

func TestSnapshotRefusesDamagedStreams(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(msgs []*catalogpb.SnapshotResponse) []*catalogpb.SnapshotResponse
		endWith error
		wantErr error
		want    string
	}{
		{"flipped byte", func(msgs []*catalogpb.SnapshotResponse) []*catalogpb.SnapshotResponse {
			blob := append([]byte(nil), msgs[1].Blob...)
			blob[10] ^= 1
			msgs[1].Blob = blob
			return msgs
		}, nil, ErrSnapshotCorrupted, "the 3500 bytes received have sha256"},
		{"ends without checksum", func(msgs []*catalogpb.SnapshotResponse) []*catalogpb.SnapshotResponse {
			return msgs[:2]
		}, nil, ErrSnapshotCorrupted, "ended after 2000 of 3500 bytes without its checksum"},
		{"checksum before the end", func(msgs []*catalogpb.SnapshotResponse) []*catalogpb.SnapshotResponse {
			msgs[1].Sha256 = msgs[3].Sha256
			return msgs[:2]
		}, nil, ErrSnapshotCorrupted, "received 2000 of the 3500 bytes"},
		{"more than announced", func(msgs []*catalogpb.SnapshotResponse) []*catalogpb.SnapshotResponse {
			msgs[0].TotalSize = 1500
			return msgs
		}, nil, ErrSnapshotCorrupted, "sent more than the 1500 bytes it announced"},
		{"no header", func(msgs []*catalogpb.SnapshotResponse) []*catalogpb.SnapshotResponse {
			msgs[0].Header = nil
			return msgs
		}, nil, ErrSnapshotCorrupted, "has no header or size"},
		{"server fails midway", func(msgs []*catalogpb.SnapshotResponse) []*catalogpb.SnapshotResponse {
			return msgs[:2]
		}, status.Error(codes.Internal, "disk on fire"), nil, "failed after 2000 of 3500 bytes: disk on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startSnapshotFake(t, 3500)
			f.damage, f.endWith = tt.damage, tt.endWith
			c := newTestClient(t, Config{Endpoints: []string{f.addr}})
			var buf bytes.Buffer
			_, err := c.Snapshot(t.Context(), &buf, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("Snapshot: %v, want an error saying %q", err, tt.want)
			}
			if buf.Len() > 3500 {
				t.Errorf("wrote %d bytes: a checksum trailer after a failed transfer", buf.Len())
			}
			if f.streamCount() != 1 {
				t.Errorf("%d streams, want 1: a transfer that started is not retried", f.streamCount())
			}
		})
	}
}

func TestSnapshotCanceled(t *testing.T) {
	f := startSnapshotFake(t, 5000)
	c := newTestClient(t, Config{Endpoints: []string{f.addr}})
	ctx, cancel := context.WithCancel(t.Context())
	_, err := c.Snapshot(ctx, &bytes.Buffer{}, func(done, _ int64) {
		if done >= 2000 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Snapshot after cancel: %v, want context.Canceled", err)
	}
}
