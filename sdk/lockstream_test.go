package sdk

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// Opening the lock stream against a server that accepts connections but
// never answers waits for a connection: each call waits only as long as its
// own context allows, the one opening the stream included.
func TestLockStreamOpeningEndsWithTheCallersContext(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn) // silent: no HTTP/2 handshake
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	// A long connect timeout: the handshake would be waited for 30s.
	c := newTestClient(t, Config{Endpoints: []string{lis.Addr().String()}, DialTimeout: 30 * time.Second})
	lc := c.lockClient()

	type result struct {
		err     error
		elapsed time.Duration
	}
	call := func(timeout time.Duration) <-chan result {
		out := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			start := time.Now()
			_, err := lc.Lock(ctx, &catalogpb.LockRequest{Name: "a", Lease: 1})
			out <- result{err, time.Since(start)}
		}()
		return out
	}
	// The first call opens the stream; the second waits for that opening.
	first := call(300 * time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	second := call(100 * time.Millisecond)
	for name, ch := range map[string]<-chan result{"opening call": first, "waiting call": second} {
		select {
		case r := <-ch:
			if status.Code(r.err) != codes.DeadlineExceeded {
				t.Errorf("%s ended with %v, want DeadlineExceeded", name, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not end with its context", name)
		}
	}
}

// statusNaming answers Cluster.Status with leader (id 2 at leaderAddr, term)
// and a follower (id 1 at followerAddr).
func statusNaming(followerAddr, leaderAddr string, term uint64) func() *catalogpb.StatusResponse {
	return func() *catalogpb.StatusResponse {
		return &catalogpb.StatusResponse{Header: coordHeader(), Leader: 2, Term: term, Members: []*catalogpb.Member{
			{Id: 1, Name: "n1", ClientAddr: followerAddr},
			{Id: 2, Name: "n2", ClientAddr: leaderAddr, IsLeader: true},
		}}
	}
}

func streamCounts(f *coordFake) (opens, ends int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streamOpens, f.streamEnds
}

// A client pinned to a follower opens its lock stream on the leader, found
// through Status, when the servers advertise the addresses the client uses.
func TestLockStreamGoesToTheLeader(t *testing.T) {
	follower, leader := startCoordFake(t), startCoordFake(t)
	for _, f := range []*coordFake{follower, leader} {
		f.set(func(f *coordFake) {
			f.lockStream = true
			f.status = statusNaming(follower.addr, leader.addr, 7)
		})
	}
	_, s := newFakeSession(t, follower, Config{})
	m := NewMutex(s, "a")
	if err := m.Lock(t.Context()); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if err := m.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if n := len(lockRequests(leader)); n != 1 {
		t.Errorf("the leader got %d Lock calls, want 1", n)
	}
	if n := len(lockRequests(follower)) + len(follower.got("Unlock")); n != 0 {
		t.Errorf("the follower got %d Lock and Unlock calls, want 0", n)
	}
	if opens, _ := streamCounts(follower); opens != 0 {
		t.Errorf("%d lock streams opened on the follower, want 0", opens)
	}
}

// Servers that advertise addresses the client does not use (NAT, a proxy)
// are not reached at them: the stream stays on the client's endpoint. So it
// does when Status fails or names no leader.
func TestLockStreamStaysWhenTheLeaderCannotBeUsed(t *testing.T) {
	for name, status := range map[string]func(f *coordFake) func() *catalogpb.StatusResponse{
		"advertised elsewhere": func(*coordFake) func() *catalogpb.StatusResponse {
			return statusNaming("10.1.1.1:7400", "10.1.1.2:7400", 7)
		},
		"no leader": func(f *coordFake) func() *catalogpb.StatusResponse {
			st := statusNaming(f.addr, "127.0.0.1:1", 7)
			return func() *catalogpb.StatusResponse { r := st(); r.Leader = 0; return r }
		},
		"no Status": func(*coordFake) func() *catalogpb.StatusResponse { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			f := startCoordFake(t)
			f.set(func(f *coordFake) { f.lockStream = true; f.status = status(f) })
			_, s := newFakeSession(t, f, Config{})
			m := NewMutex(s, "a")
			if err := m.Lock(t.Context()); err != nil {
				t.Fatalf("Lock: %v", err)
			}
			if opens, _ := streamCounts(f); opens != 1 {
				t.Errorf("%d lock streams opened on the endpoint, want 1", opens)
			}
			if n := len(f.got("Status")); n != 1 {
				t.Errorf("%d Status calls, want 1 (the lookup at the opening)", n)
			}
		})
	}
}

// An answer from a newer raft term than the leader's at the opening retires
// the stream: the next call opens a new one on the leader of the day, and
// the old one ends once its calls have.
func TestLockStreamMovesAfterAChangeOfLeader(t *testing.T) {
	a, b := startCoordFake(t), startCoordFake(t)
	for _, f := range []*coordFake{a, b} {
		f.set(func(f *coordFake) {
			f.lockStream = true
			f.status = statusNaming(a.addr, b.addr, 7) // b leads in term 7
		})
	}
	// b answers from term 8: it has lost and regained nothing yet, but the
	// term moved on, and a is now the leader.
	release := make(chan struct{})
	b.set(func(f *coordFake) {
		f.lock = func(ctx context.Context, req *catalogpb.LockRequest) (*catalogpb.LockResponse, error) {
			if req.GetName() == "waits" {
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return &catalogpb.LockResponse{Header: &catalogpb.ResponseHeader{ClusterId: 1, MemberId: 2, RaftTerm: 8}, Acquired: true, Token: 3}, nil
		}
	})
	_, s := newFakeSession(t, a, Config{})
	waiting := NewMutex(s, "waits")
	waited := make(chan error, 1)
	go func() { waited <- waiting.Lock(t.Context()) }()
	waitUntil(t, "the waiting Lock to reach b", func() bool { return len(lockRequests(b)) == 1 })

	for _, f := range []*coordFake{a, b} {
		f.set(func(f *coordFake) { f.status = statusNaming(b.addr, a.addr, 8) })
	}
	m := NewMutex(s, "x")
	if err := m.Lock(t.Context()); err != nil { // on b's stream, answered in term 8
		t.Fatalf("Lock: %v", err)
	}
	if err := m.Unlock(t.Context()); err != nil { // on a new stream, to a
		t.Fatalf("Unlock: %v", err)
	}
	if n := len(a.got("Unlock")); n != 1 {
		t.Errorf("the new leader got %d Unlock calls, want 1", n)
	}
	if opens, ends := streamCounts(b); opens != 1 || ends != 0 {
		t.Errorf("b: %d streams opened and %d ended, want 1 and 0 (a call still waits on it)", opens, ends)
	}
	close(release)
	if err := <-waited; err != nil {
		t.Fatalf("the waiting Lock on the retired stream: %v", err)
	}
	waitUntil(t, "the retired stream to end", func() bool { _, ends := streamCounts(b); return ends == 1 })
}

// waitUntil waits until cond holds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
