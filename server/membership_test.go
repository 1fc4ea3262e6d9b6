package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/consensus"
)

// testCluster is a minimal harness for membership tests: servers in this
// process on loopback ports.
type testCluster struct {
	t       *testing.T
	servers map[string]*Server
	cfgs    map[string]Config
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

func testConfig(t *testing.T, name string, addrs []string) Config {
	cfg := DefaultConfig()
	cfg.Name = name
	cfg.DataDir = filepath.Join(t.TempDir(), name)
	cfg.ClientAddr, cfg.PeerAddr, cfg.HTTPAddr = addrs[0], addrs[1], addrs[2]
	cfg.TickInterval = 50 * time.Millisecond
	cfg.ElectionTicks = 10
	cfg.SnapshotCount = 200
	cfg.CatchUpEntries = 50
	cfg.RequestTimeout = 3 * time.Second
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return cfg
}

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return newTestClusterWith(t, n, nil)
}

// newTestClusterWith starts n members whose configs mutate (if not nil)
// adjusts, and waits until each knows every member's client address.
func newTestClusterWith(t *testing.T, n int, mutate func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, servers: map[string]*Server{}, cfgs: map[string]Config{}}
	var initial []string
	for i := range n {
		name := fmt.Sprintf("m%d", i+1)
		cfg := testConfig(t, name, freePorts(t, 3))
		if mutate != nil {
			mutate(&cfg)
		}
		c.cfgs[name] = cfg
		initial = append(initial, name+"="+cfg.PeerAddr)
	}
	for name, cfg := range c.cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		c.cfgs[name] = cfg
		c.start(name)
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			s.Stop(context.Background())
		}
	})
	c.leader()
	waitFor(t, 10*time.Second, "every member knows every client address", func() error {
		for _, s := range c.servers {
			ms, err := s.sm.members()
			if err != nil {
				return err
			}
			for _, m := range ms {
				if m.ClientAddr == "" {
					return fmt.Errorf("%s does not know %s's", s.cfg.Name, m.Name)
				}
			}
		}
		return nil
	})
	return c
}

func (c *testCluster) start(name string) *Server {
	c.t.Helper()
	s, err := New(c.cfgs[name])
	if err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	s.Start()
	c.servers[name] = s
	return s
}

func (c *testCluster) stop(name string) {
	c.servers[name].Stop(context.Background())
	delete(c.servers, name)
}

// leader waits for one leader that every running server agrees on.
func (c *testCluster) leader() *Server {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var lead uint64
		agreed := true
		for _, s := range c.servers {
			l := s.Leader()
			if l == 0 || (lead != 0 && l != lead) {
				agreed = false
			}
			lead = l
		}
		if agreed {
			for _, s := range c.servers {
				if s.ID() == lead {
					return s
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no agreed leader within 10s")
	return nil
}

func (c *testCluster) follower() *Server {
	lead := c.leader()
	for _, s := range c.servers {
		if s != lead {
			return s
		}
	}
	c.t.Fatal("no follower")
	return nil
}

func clusterClient(t *testing.T, addr string) catalogpb.ClusterClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return catalogpb.NewClusterClient(conn)
}

func kvClient(t *testing.T, addr string) catalogpb.KVClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return catalogpb.NewKVClient(conn)
}

func reasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, timeout, err)
}

func memberNamed(ms []*catalogpb.Member, name string) *catalogpb.Member {
	for _, m := range ms {
		if m.GetName() == name {
			return m
		}
	}
	return nil
}

func TestJoinAsLearnerIsPromotedAndRemoveStopsTheMember(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := t.Context()
	kv := kvClient(t, c.follower().ClientAddr())
	for i := range 600 { // beyond SnapshotCount: the joiner needs a snapshot
		if _, err := kv.Put(ctx, &catalogpb.PutRequest{Key: []byte(fmt.Sprintf("k%03d", i)), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}

	// The new server joins through a follower (the request is forwarded).
	cfg := testConfig(t, "m4", freePorts(t, 3))
	cfg.Join = c.follower().ClientAddr()
	c.cfgs["m4"] = cfg
	joiner := c.start("m4")

	cl := clusterClient(t, c.leader().ClientAddr())
	waitFor(t, 20*time.Second, "m4 promoted to voter", func() error {
		resp, err := cl.MemberList(ctx, &catalogpb.MemberListRequest{})
		if err != nil {
			return err
		}
		m := memberNamed(resp.GetMembers(), "m4")
		if m == nil || m.GetIsLearner() || m.GetClientAddr() == "" {
			return fmt.Errorf("m4 is %v", m)
		}
		return nil
	})
	// Its data came with the snapshot: a serializable read on it sees it.
	waitFor(t, 10*time.Second, "m4 holds the data", func() error {
		resp, err := kvClient(t, joiner.ClientAddr()).Get(ctx, &catalogpb.GetRequest{Key: []byte("k599"), Consistency: catalogpb.Consistency_SERIALIZABLE})
		if err != nil || len(resp.GetKvs()) != 1 {
			return fmt.Errorf("get k599 on m4: %v %v", resp, err)
		}
		return nil
	})

	// A restart of the joined member keeps its identity (from join.json).
	id := joiner.ID()
	c.stop("m4")
	joiner = c.start("m4")
	if joiner.ID() != id {
		t.Fatalf("m4 restarted as %x, was %x", joiner.ID(), id)
	}

	// Removing it makes it stop itself with the reason.
	if _, err := cl.MemberRemove(ctx, &catalogpb.MemberRemoveRequest{Id: id}); err != nil {
		t.Fatalf("remove m4: %v", err)
	}
	select {
	case <-joiner.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("removed member did not stop")
	}
	if err := joiner.Err(); !errors.Is(err, consensus.ErrRemoved) || !strings.Contains(err.Error(), "--join") {
		t.Fatalf("removed member's error = %v, want ErrRemoved saying how to rejoin", err)
	}
	delete(c.servers, "m4")
	resp, err := cl.MemberList(ctx, &catalogpb.MemberListRequest{})
	if err != nil || len(resp.GetMembers()) != 3 {
		t.Fatalf("member list after removal: %v %v", resp, err)
	}
	// Writes go on.
	if _, err := kv.Put(ctx, &catalogpb.PutRequest{Key: []byte("after"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
}

func TestRemovedMemberThatWasDownStopsWhenItReturns(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := t.Context()
	f := c.follower()
	name, id := f.cfg.Name, f.ID()
	c.stop(name)
	cl := clusterClient(t, c.leader().ClientAddr())
	if _, err := cl.MemberRemove(ctx, &catalogpb.MemberRemoveRequest{Id: id}); err != nil {
		t.Fatalf("remove stopped member: %v", err)
	}
	s := c.start(name)
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the removed member came back and kept running")
	}
	if !errors.Is(s.Err(), consensus.ErrRemoved) {
		t.Fatalf("err = %v, want ErrRemoved", s.Err())
	}
	delete(c.servers, name)
}

func TestMembershipChangesThatWouldLoseQuorumAreRefused(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := t.Context()
	lead := c.leader()
	var down, up *Server
	for _, s := range c.servers {
		if s == lead {
			continue
		}
		if down == nil {
			down = s
		} else {
			up = s
		}
	}
	c.stop(down.cfg.Name)
	cl := clusterClient(t, lead.ClientAddr())
	// Wait until the leader sees the stopped member as unhealthy.
	waitFor(t, 5*time.Second, "leader notices the stopped member", func() error {
		if h := lead.health(); h.healthy != 2 {
			return fmt.Errorf("healthy = %d", h.healthy)
		}
		return nil
	})
	_, err := cl.MemberRemove(ctx, &catalogpb.MemberRemoveRequest{Id: up.ID()})
	if reasonOf(err) != "UNHEALTHY_CLUSTER" || !strings.Contains(err.Error(), "quorum") {
		t.Fatalf("removing a healthy member with one down: %v, want UNHEALTHY_CLUSTER", err)
	}
	_, err = cl.MemberAdd(ctx, &catalogpb.MemberAddRequest{Name: "m9", PeerAddr: "127.0.0.1:1"})
	if reasonOf(err) != "UNHEALTHY_CLUSTER" {
		t.Fatalf("adding a voter with one down: %v, want UNHEALTHY_CLUSTER", err)
	}
	// Removing the member that is down keeps a healthy quorum: allowed.
	if _, err := cl.MemberRemove(ctx, &catalogpb.MemberRemoveRequest{Id: down.ID()}); err != nil {
		t.Fatalf("removing the stopped member: %v", err)
	}
}

func TestMembershipBadRequests(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := t.Context()
	cl := clusterClient(t, c.follower().ClientAddr())
	lead := c.leader()
	cases := []struct {
		name   string
		call   func() error
		reason string
	}{
		{"empty name", func() error {
			_, err := cl.MemberAdd(ctx, &catalogpb.MemberAddRequest{Name: "", PeerAddr: "127.0.0.1:9"})
			return err
		}, "INVALID_ARGUMENT"},
		{"bad peer address", func() error {
			_, err := cl.MemberAdd(ctx, &catalogpb.MemberAddRequest{Name: "x", PeerAddr: "nope"})
			return err
		}, "INVALID_ARGUMENT"},
		{"duplicate name", func() error {
			_, err := cl.MemberAdd(ctx, &catalogpb.MemberAddRequest{Name: lead.cfg.Name, PeerAddr: "127.0.0.1:9", IsLearner: true})
			return err
		}, "MEMBER_EXISTS"},
		{"duplicate peer address", func() error {
			_, err := cl.MemberAdd(ctx, &catalogpb.MemberAddRequest{Name: "new", PeerAddr: lead.PeerAddr(), IsLearner: true})
			return err
		}, "MEMBER_EXISTS"},
		{"remove unknown", func() error {
			_, err := cl.MemberRemove(ctx, &catalogpb.MemberRemoveRequest{Id: 42})
			return err
		}, "MEMBER_NOT_FOUND"},
		{"promote a voter", func() error {
			_, err := cl.MemberPromote(ctx, &catalogpb.MemberPromoteRequest{Id: lead.ID()})
			return err
		}, "MEMBER_NOT_LEARNER"},
		{"move leader to unknown", func() error {
			_, err := cl.MoveLeader(ctx, &catalogpb.MoveLeaderRequest{TargetId: 42})
			return err
		}, "MEMBER_NOT_FOUND"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if got := reasonOf(err); got != tc.reason {
				t.Fatalf("err = %v (reason %q), want reason %s", err, got, tc.reason)
			}
		})
	}
	resp, err := cl.MemberList(ctx, &catalogpb.MemberListRequest{})
	if err != nil || len(resp.GetMembers()) != 3 {
		t.Fatalf("bad requests changed the membership: %v %v", resp, err)
	}
}

func TestLearnerNotPromotedWhenAutoPromoteIsOffUntilAsked(t *testing.T) {
	c := newTestCluster(t, 1)
	ctx := t.Context()
	for name, s := range c.servers {
		// Restart the single member with automatic promotion off.
		cfg := c.cfgs[name]
		cfg.AutoPromote = false
		c.cfgs[name] = cfg
		s.Stop(context.Background())
		c.start(name)
	}
	lead := c.leader()
	cl := clusterClient(t, lead.ClientAddr())

	// A learner that never starts is never ready.
	resp, err := cl.MemberAdd(ctx, &catalogpb.MemberAddRequest{Name: "ghost", PeerAddr: "127.0.0.1:1", IsLearner: true})
	if err != nil {
		t.Fatal(err)
	}
	ghost := resp.GetMember().GetId()
	_, err = cl.MemberPromote(ctx, &catalogpb.MemberPromoteRequest{Id: ghost})
	if reasonOf(err) != "LEARNER_NOT_READY" {
		t.Fatalf("promote a learner that never started: %v, want LEARNER_NOT_READY", err)
	}
	_, err = cl.MemberAdd(ctx, &catalogpb.MemberAddRequest{Name: "ghost2", PeerAddr: "127.0.0.1:2", IsLearner: true})
	if reasonOf(err) != "TOO_MANY_LEARNERS" {
		t.Fatalf("second learner: %v, want TOO_MANY_LEARNERS", err)
	}
	if _, err := cl.MemberRemove(ctx, &catalogpb.MemberRemoveRequest{Id: ghost}); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t, "m2", freePorts(t, 3))
	cfg.Join = lead.ClientAddr()
	c.cfgs["m2"] = cfg
	joiner := c.start("m2")
	waitFor(t, 10*time.Second, "learner caught up", func() error {
		st := lead.node.Status().Status
		pr, ok := st.Progress[joiner.ID()]
		if !ok {
			return errors.New("not in progress")
		}
		return learnerReady(st, pr)
	})
	time.Sleep(3 * autoPromoteInterval) // automatic promotion is off: nothing may happen
	list, err := cl.MemberList(ctx, &catalogpb.MemberListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m := memberNamed(list.GetMembers(), "m2"); m == nil || !m.GetIsLearner() {
		t.Fatalf("m2 = %v, want still a learner", m)
	}
	if _, err := cl.MemberPromote(ctx, &catalogpb.MemberPromoteRequest{Id: joiner.ID()}); err != nil {
		t.Fatalf("promote caught-up learner: %v", err)
	}
	// Now a two-voter cluster: move leadership to the new voter.
	if _, err := cl.MoveLeader(ctx, &catalogpb.MoveLeaderRequest{TargetId: joiner.ID()}); err != nil {
		t.Fatalf("move leader: %v", err)
	}
	waitFor(t, 5*time.Second, "m2 leads", func() error {
		if l := lead.Leader(); l != joiner.ID() {
			return fmt.Errorf("leader %x", l)
		}
		return nil
	})
}

func TestWipedMemberStopsInsteadOfPanicking(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := t.Context()
	kv := kvClient(t, c.leader().ClientAddr())
	for i := range 20 {
		if _, err := kv.Put(ctx, &catalogpb.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	f := c.follower()
	name := f.cfg.Name
	c.stop(name)
	if err := os.RemoveAll(c.cfgs[name].DataDir); err != nil {
		t.Fatal(err)
	}
	s := c.start(name)
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a member whose log was wiped kept running")
	}
	if !errors.Is(s.Err(), consensus.ErrDataLoss) || !strings.Contains(s.Err().Error(), "--join") {
		t.Fatalf("err = %v, want ErrDataLoss saying how to recover", s.Err())
	}
	delete(c.servers, name)
	// The rest of the cluster is unaffected.
	if _, err := kv.Put(ctx, &catalogpb.PutRequest{Key: []byte("after"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
}

func TestRemovingTheLeaderHandsOverFirst(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := t.Context()
	lead := c.leader()
	cl := clusterClient(t, c.follower().ClientAddr())
	if _, err := cl.MemberRemove(ctx, &catalogpb.MemberRemoveRequest{Id: lead.ID()}); err != nil {
		t.Fatalf("remove the leader: %v", err)
	}
	select {
	case <-lead.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("removed leader did not stop")
	}
	delete(c.servers, lead.cfg.Name)
	newLead := c.leader()
	if newLead.ID() == lead.ID() {
		t.Fatal("old leader still leads")
	}
	if _, err := kvClient(t, newLead.ClientAddr()).Put(ctx, &catalogpb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
}
