package framework

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/catalogd/catalogd/sdk"
)

// Bounds on waiting for a cluster of processes; a healthy one takes a
// fraction of them.
const (
	electionWait = 15 * time.Second
	catchUpWait  = 20 * time.Second
)

// withoutNetns runs processes on loopback ports even where namespaces work.
func withoutNetns() Option { return func(o *options) { o.loopback = true } }

func waitCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// put writes key=value through the given members, retrying while the
// cluster elects a leader.
func put(t *testing.T, c *Cluster, key, value string, members ...int) {
	t.Helper()
	cli := c.Client(t, members...)
	Eventually(t, electionWait, fmt.Sprintf("put %s through members %v", key, members), func(ctx context.Context) error {
		_, err := cli.Put(ctx, key, value)
		return err
	})
}

// waitValue waits until member i answers a serializable (local) read of key
// with value.
func waitValue(t *testing.T, c *Cluster, i int, key, value string) {
	t.Helper()
	cli := c.Client(t, i)
	Eventually(t, catchUpWait, fmt.Sprintf("member %d has %s=%s", i, key, value), func(ctx context.Context) error {
		resp, err := cli.Get(ctx, key, sdk.WithSerializable())
		if err != nil {
			return err
		}
		if kvs := resp.GetKvs(); len(kvs) != 1 || string(kvs[0].GetValue()) != value {
			return fmt.Errorf("got %v", kvs)
		}
		return nil
	})
}

// checkNoProblems fails t if a member process exited or hung on its own.
func checkNoProblems(t *testing.T, c *Cluster) {
	t.Helper()
	if p := c.Problems(); len(p) > 0 {
		t.Errorf("member processes had problems the test did not cause: %s", strings.Join(p, "; "))
	}
}

// TestProcessCluster: three catalogd processes elect a leader, replicate a
// write, survive SIGKILL of the leader and SIGSTOP of a follower.
func TestProcessCluster(t *testing.T) {
	c := NewCluster(t, 3, WithProcesses())
	leader := c.WaitLeader(waitCtx(t, electionWait))

	for i := range c.Size() {
		st, err := c.Status(t.Context(), i)
		if err != nil {
			t.Fatal(err)
		}
		if st.GetName() != c.Name(i) || st.GetHeader().GetMemberId() != c.ID(i) {
			t.Errorf("member %d reports name %q id %x, want %q id %x", i, st.GetName(), st.GetHeader().GetMemberId(), c.Name(i), c.ID(i))
		}
		if n := c.Logged(i, "catalogd started"); n != 1 {
			t.Errorf(`member %d logged "catalogd started" %d times, want 1 (the process's slog lines are counted)`, i, n)
		}
		if _, err := os.Stat(filepath.Join(c.ArtifactDir(), c.Name(i)+".log")); err != nil {
			t.Errorf("log file of member %d: %v", i, err)
		}
	}
	put(t, c, "k1", "v1")
	for i := range c.Size() {
		waitValue(t, c, i, "k1", "v1")
	}

	// SIGKILL: no handover; the others elect a leader among themselves.
	c.Kill(leader)
	if c.Running(leader) {
		t.Fatalf("member %d runs after Kill", leader)
	}
	next := c.WaitLeader(waitCtx(t, electionWait), c.Others(leader)...)
	if next == leader {
		t.Fatalf("killed member %d is still the leader", leader)
	}
	put(t, c, "k2", "v2", c.Others(leader)...)
	c.Restart(leader)
	c.WaitLeader(waitCtx(t, electionWait))
	waitValue(t, c, leader, "k2", "v2")

	// SIGSTOP a follower: the other two are a quorum; after SIGCONT it
	// catches up.
	leader = c.WaitLeader(waitCtx(t, electionWait))
	follower := c.Others(leader)[0]
	c.Pause(follower)
	if !c.Running(follower) || !c.Paused(follower) {
		t.Fatalf("paused member %d: Running %v Paused %v, want both true", follower, c.Running(follower), c.Paused(follower))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, err := c.Status(ctx, follower)
	cancel()
	if err == nil {
		t.Errorf("paused member %d answered Status", follower)
	}
	put(t, c, "k3", "v3", c.Others(follower)...)
	c.Resume(follower)
	waitValue(t, c, follower, "k3", "v3")
	c.WaitLeader(waitCtx(t, electionWait))
	checkNoProblems(t, c)
}

// TestProcessPartitions: packets dropped between member processes move
// leadership as raft says. An isolated leader steps down (CheckQuorum) while
// the majority elects another; a follower that stops hearing the leader
// loses it without deposing it (PreVote); followers cut from each other
// still serve writes through the leader.
func TestProcessPartitions(t *testing.T) {
	c := NewCluster(t, 3, WithProcesses())
	if !c.PartitionsSupported() {
		t.Skip(partitionSkip + c.netnsReason)
	}
	old := c.WaitLeader(waitCtx(t, electionWait))
	put(t, c, "before", "1")

	c.Isolate(old)
	majority := c.Others(old)
	leader := c.WaitLeader(waitCtx(t, electionWait), majority...)
	Eventually(t, electionWait, fmt.Sprintf("isolated member %d steps down", old), func(ctx context.Context) error {
		st, err := c.Status(ctx, old) // the test still reaches it
		if err != nil {
			return err
		}
		if st.GetLeader() == c.ID(old) {
			return errors.New("it still reports itself leader")
		}
		return nil
	})
	put(t, c, "during", "2", majority...)
	c.Heal()
	c.WaitLeader(waitCtx(t, electionWait))
	waitValue(t, c, old, "during", "2")

	leader = c.WaitLeader(waitCtx(t, electionWait))
	deaf, other := c.Others(leader)[0], c.Others(leader)[1]
	c.CutOneWay(leader, deaf)
	Eventually(t, electionWait, fmt.Sprintf("member %d stops following leader %d", deaf, leader), func(ctx context.Context) error {
		st, err := c.Status(ctx, deaf)
		if err != nil {
			return err
		}
		if st.GetLeader() == c.ID(leader) {
			return errors.New("it still follows the leader")
		}
		return nil
	})
	if got := c.WaitLeader(waitCtx(t, electionWait), leader, other); got != leader {
		t.Errorf("leader moved from %d to %d though it kept a quorum with member %d", leader, got, other)
	}
	c.Heal()
	c.WaitLeader(waitCtx(t, electionWait))

	leader = c.WaitLeader(waitCtx(t, electionWait))
	f1, f2 := c.Others(leader)[0], c.Others(leader)[1]
	c.Cut(f1, f2)
	put(t, c, "via-f1", "3", f1)
	put(t, c, "via-f2", "4", f2)
	waitValue(t, c, f1, "via-f2", "4")
	c.Heal()
	checkNoProblems(t, c)
}

// TestMembership: a member whose disk is lost is removed, and a new member
// joins in its place, receives the data and is promoted to voter; in-process
// and as processes.
func TestMembership(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"in-process", nil},
		{"processes", []Option{WithProcesses()}},
	} {
		t.Run(tc.name, func(t *testing.T) { testMembership(t, tc.opts...) })
	}
}

func testMembership(t *testing.T, opts ...Option) {
	c := NewCluster(t, 3, opts...)
	leader := c.WaitLeader(waitCtx(t, electionWait))
	put(t, c, "k", "v")
	lost := c.Others(leader)[0]
	lostID := c.ID(lost)
	c.Kill(lost)
	c.WipeDataDir(lost)
	if err := c.RemoveMember(t.Context(), lost); err != nil {
		t.Fatal(err)
	}
	if !c.Removed(lost) || slices.Contains(c.Others(), lost) {
		t.Fatalf("member %d: Removed %v, in Others %v; want removed and left out", lost, c.Removed(lost), c.Others())
	}
	joined, err := c.Join(t.Context(), leader)
	if err != nil {
		t.Fatal(err)
	}
	if joined != 3 || !c.Running(joined) {
		t.Fatalf("Join returned member %d (running %v), want member 3 running", joined, c.Running(joined))
	}
	newID := c.ID(joined)
	if newID == 0 || newID == lostID {
		t.Fatalf("joined member's id %x; want a new non-zero id (the lost member had %x)", newID, lostID)
	}
	waitValue(t, c, joined, "k", "v")
	Eventually(t, catchUpWait, "the member list holds the joined member as a voter and not the removed one", func(ctx context.Context) error {
		st, err := c.Status(ctx, leader)
		if err != nil {
			return err
		}
		var ids []uint64
		for _, m := range st.GetMembers() {
			ids = append(ids, m.GetId())
			if m.GetId() == newID && m.GetIsLearner() {
				return fmt.Errorf("member %x is still a learner", newID)
			}
		}
		if !slices.Contains(ids, newID) || slices.Contains(ids, lostID) {
			return fmt.Errorf("members %x", ids)
		}
		return nil
	})
	c.RestartAll()
	if c.Running(lost) {
		t.Errorf("RestartAll restarted removed member %d", lost)
	}
	c.WaitLeader(waitCtx(t, electionWait))
	checkNoProblems(t, c)
}

// TestProcessCrashNoticed: a process that exits without the test asking is
// no longer running, is reported, and can be restarted.
func TestProcessCrashNoticed(t *testing.T) {
	c := NewCluster(t, 1, WithProcesses())
	c.mu.Lock()
	pid := c.members[0].(*processMember).cmd.Process.Pid
	c.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	Eventually(t, catchUpWait, "the framework notices the exit", func(context.Context) error {
		if c.Running(0) {
			return errors.New("member 0 still counts as running")
		}
		return nil
	})
	if p := c.Problems(); len(p) != 1 || !strings.Contains(p[0], "exited unexpectedly: signal: killed") {
		t.Errorf("Problems() = %q, want the unexpected exit with its status", p)
	}
	if n := c.Logged(0, "catalogd started"); n != 1 {
		t.Fatalf(`member 0 logged "catalogd started" %d times before the restart, want 1`, n)
	}
	c.Restart(0)
	c.WaitLeader(waitCtx(t, electionWait))
	if n := c.Logged(0, "catalogd started"); n != 2 {
		t.Errorf(`member 0 logged "catalogd started" %d times, want 2 (counts span restarts)`, n)
	}
}

func TestMemberFlags(t *testing.T) {
	spec := memberSpec{name: "m0", dataDir: "/d", clientAddr: "a:1", peerAddr: "a:2", httpAddr: "a:3",
		initialCluster: "m0=a:2", tuning: tuning{autoPromote: false, tickInterval: 50 * time.Millisecond, electionTicks: 5}}
	initial := strings.Join(spec.flags(), " ")
	for _, want := range []string{"--name m0", "--initial-cluster m0=a:2", "--auto-promote=false", "--tick-interval 50ms", "--election-ticks 5"} {
		if !strings.Contains(initial, want) {
			t.Errorf("flags %q lack %q", initial, want)
		}
	}
	spec.join, spec.initialCluster = "b:1", ""
	joining := strings.Join(spec.flags(), " ")
	if !strings.Contains(joining, "--join b:1") || strings.Contains(joining, "--initial-cluster") {
		t.Errorf("flags of a joining member %q: want --join and no --initial-cluster (catalogd refuses both)", joining)
	}
}

// TestProcessesOnLoopback: without network namespaces, processes run on
// loopback ports and partitions skip the test with the reason.
func TestProcessesOnLoopback(t *testing.T) {
	var inner *testing.T
	var c *Cluster
	t.Run("cut", func(t *testing.T) {
		inner = t
		c = NewCluster(t, 1, WithProcesses(), withoutNetns())
		if c.PartitionsSupported() {
			t.Fatal("PartitionsSupported is true for loopback processes")
		}
		if !strings.HasPrefix(c.ClientAddr(0), "127.0.0.1:") {
			t.Errorf("client address %s, want one on 127.0.0.1", c.ClientAddr(0))
		}
		put(t, c, "k", "v", 0)
		c.Heal() // nothing to heal: no skip
		c.Isolate(0)
		t.Error("Isolate returned instead of skipping the test")
	})
	if !inner.Skipped() {
		t.Fatal("Isolate of a loopback process did not skip the test")
	}
}

// TestInProcessPause: Pause needs processes; in-process it skips.
func TestInProcessPause(t *testing.T) {
	var inner *testing.T
	t.Run("pause", func(t *testing.T) {
		inner = t
		c := NewCluster(t, 1)
		if !c.PartitionsSupported() {
			t.Error("PartitionsSupported is false in-process")
		}
		c.Pause(0)
		t.Error("Pause returned instead of skipping the test")
	})
	if !inner.Skipped() {
		t.Fatal("Pause of an in-process member did not skip the test")
	}
}

// TestArtifactDir: the dir is removed after a passing test and kept after a
// failing one.
func TestArtifactDir(t *testing.T) {
	parent := t.TempDir()
	t.Setenv(artifactsEnv, parent)
	var dir string
	t.Run("passes", func(t *testing.T) {
		c := NewCluster(t, 1)
		dir = c.ArtifactDir()
		if filepath.Dir(dir) != parent {
			t.Errorf("ArtifactDir %s is not under $%s=%s", dir, artifactsEnv, parent)
		}
		if _, err := os.Stat(filepath.Join(dir, c.Name(0)+".log")); err != nil {
			t.Errorf("in-process member's log file: %v", err)
		}
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("artifact dir of a passing test: stat = %v, want it removed", err)
	}
}
