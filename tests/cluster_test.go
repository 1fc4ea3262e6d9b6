package tests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/tests/framework"
)

// Bounds on waiting for a cluster to do something. They bound how long a
// broken cluster takes to fail a test; a healthy one takes a fraction of them.
const (
	// electionWait covers an election after a leader is lost: election
	// timeouts are 1-2 s at the default 100ms tick.
	electionWait = 15 * time.Second
	// catchUpWait covers a restarted member replaying and receiving what it missed.
	catchUpWait = 20 * time.Second
	// stepWait bounds one request or a short series of them.
	stepWait = 10 * time.Second
)

// TestLeaderElection: a fresh 3-member cluster elects one leader that every
// member agrees on, and every member's status lists the 3 members with their
// names, addresses and the one leader.
func TestLeaderElection(t *testing.T) {
	c := framework.NewCluster(t, 3)
	leader := c.WaitLeader(stepContext(t, electionWait))
	leaderID := c.ID(leader)

	framework.Eventually(t, stepWait, "every member's status lists the 3 members with client addresses", func(ctx context.Context) error {
		var clusterID uint64
		for i := range c.Size() {
			st, err := c.Status(ctx, i)
			if err != nil {
				return err
			}
			if st.GetName() != c.Name(i) {
				return fmt.Errorf("member %d reports name %q, want %q", i, st.GetName(), c.Name(i))
			}
			if st.GetLeader() != leaderID {
				return fmt.Errorf("member %d reports leader %x, want %x (member %d)", i, st.GetLeader(), leaderID, leader)
			}
			if i == 0 {
				clusterID = st.GetHeader().GetClusterId()
			} else if got := st.GetHeader().GetClusterId(); got != clusterID {
				return fmt.Errorf("member %d reports cluster id %x, member 0 reports %x", i, got, clusterID)
			}
			if err := checkMemberList(c, i, st, leaderID); err != nil {
				return err
			}
		}
		if clusterID == 0 {
			return errors.New("members report cluster id 0")
		}
		return nil
	})
}

// checkMemberList checks that member i's status lists every member of c once,
// with its name, peer and client address, and marks exactly the leader.
func checkMemberList(c *framework.Cluster, i int, st *catalogpb.StatusResponse, leaderID uint64) error {
	if n := len(st.GetMembers()); n != c.Size() {
		return fmt.Errorf("member %d lists %d members, want %d: %v", i, n, c.Size(), st.GetMembers())
	}
	seen := map[int]bool{}
	leaders := 0
	for _, m := range st.GetMembers() {
		j := c.IndexOf(m.GetId())
		if j < 0 {
			return fmt.Errorf("member %d lists unknown member id %x (%q)", i, m.GetId(), m.GetName())
		}
		if seen[j] {
			return fmt.Errorf("member %d lists member %d twice", i, j)
		}
		seen[j] = true
		if m.GetName() != c.Name(j) {
			return fmt.Errorf("member %d lists member %d with name %q, want %q", i, j, m.GetName(), c.Name(j))
		}
		if m.GetPeerAddr() != c.PeerAddr(j) {
			return fmt.Errorf("member %d lists member %d with peer address %q, want %q", i, j, m.GetPeerAddr(), c.PeerAddr(j))
		}
		if m.GetClientAddr() != c.ClientAddr(j) {
			return fmt.Errorf("member %d lists member %d with client address %q, want %q (published once the member knows a leader)", i, j, m.GetClientAddr(), c.ClientAddr(j))
		}
		if m.GetIsLeader() {
			leaders++
			if m.GetId() != leaderID {
				return fmt.Errorf("member %d marks member %d as leader, want member %d", i, j, c.IndexOf(leaderID))
			}
		}
	}
	if leaders != 1 {
		return fmt.Errorf("member %d marks %d members as leader, want exactly 1", i, leaders)
	}
	return nil
}

// TestWritesThroughEveryMember: each member accepts writes (a follower's go
// through the leader), every write gets a higher revision than the one
// before, headers say who answered, and every member reads every write.
func TestWritesThroughEveryMember(t *testing.T) {
	c := framework.NewCluster(t, 3)
	ctx := stepContext(t, 30*time.Second)
	clients := make([]*sdk.Client, c.Size())
	for i := range clients {
		clients[i] = c.Client(t, i)
	}
	st, err := c.Status(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	clusterID := st.GetHeader().GetClusterId()

	type write struct {
		key, value string
		rev        int64
	}
	var writes []write
	var lastRev int64
	for round := range 5 {
		for i, cli := range clients {
			w := write{key: fmt.Sprintf("through/m%d/%d", i, round), value: fmt.Sprintf("value %d of member %d", round, i)}
			resp, err := cli.Put(ctx, w.key, w.value)
			if err != nil {
				t.Fatalf("put %q through member %d: %v", w.key, i, err)
			}
			h := resp.GetHeader()
			w.rev = h.GetRevision()
			if w.rev <= lastRev {
				t.Errorf("put %q through member %d got revision %d, want more than the previous write's %d", w.key, i, w.rev, lastRev)
			}
			lastRev = max(lastRev, w.rev)
			if h.GetClusterId() != clusterID {
				t.Errorf("put through member %d: header cluster id %x, want %x", i, h.GetClusterId(), clusterID)
			}
			if h.GetMemberId() != c.ID(i) {
				t.Errorf("put through member %d: header member id %x, want that member's id %x", i, h.GetMemberId(), c.ID(i))
			}
			if h.GetRaftTerm() == 0 {
				t.Errorf("put through member %d: header raft term is 0, want the current term", i)
			}
			writes = append(writes, w)
		}
	}

	for j, cli := range clients {
		for _, w := range writes {
			resp, err := cli.Get(ctx, w.key)
			if err != nil {
				t.Fatalf("linearizable get %q through member %d: %v", w.key, j, err)
			}
			if len(resp.GetKvs()) != 1 {
				t.Errorf("get %q through member %d returned %d keys, want 1", w.key, j, len(resp.GetKvs()))
				continue
			}
			kv := resp.GetKvs()[0]
			if string(kv.GetValue()) != w.value || kv.GetModRevision() != w.rev || kv.GetCreateRevision() != w.rev || kv.GetVersion() != 1 {
				t.Errorf("get %q through member %d = value %q, mod %d, create %d, version %d; want %q written at revision %d, version 1",
					w.key, j, kv.GetValue(), kv.GetModRevision(), kv.GetCreateRevision(), kv.GetVersion(), w.value, w.rev)
			}
			h := resp.GetHeader()
			if h.GetMemberId() != c.ID(j) || h.GetClusterId() != clusterID || h.GetRevision() < lastRev {
				t.Errorf("get %q through member %d: header member %x cluster %x revision %d; want member %x cluster %x revision >= %d",
					w.key, j, h.GetMemberId(), h.GetClusterId(), h.GetRevision(), c.ID(j), clusterID, lastRev)
			}
		}
	}
}

// TestLeaderLoss: when the leader goes away the others elect a new leader,
// writes go on, and every write acknowledged before is still readable. A
// graceful stop hands leadership over; a kill leaves the others to notice.
func TestLeaderLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(c *framework.Cluster, i int)
		// handsOver says whether the leader hands leadership over as it goes.
		handsOver bool
	}{
		{"graceful stop", (*framework.Cluster).Stop, true},
		{"kill", (*framework.Cluster).Kill, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := framework.NewCluster(t, 3)
			ctx := stepContext(t, 60*time.Second)
			old := c.WaitLeader(ctx)
			before, err := c.Status(ctx, old)
			if err != nil {
				t.Fatal(err)
			}
			others := c.Others(old)
			cli := c.Client(t, others...)
			acked, failed := putKeys(ctx, cli, "before/", 50, 5)
			if len(failed) > 0 {
				t.Fatalf("%d of 50 writes before the leader loss failed, e.g. %v", len(failed), firstError(failed))
			}

			tc.stop(c, old)
			notHanded := c.Logged(old, "leadership not handed over before shutdown")
			// A SIGKILLed process says nothing; an in-process kill cuts the
			// member off first, so its stop logs the failed handover.
			if !tc.handsOver && notHanded == 0 && !c.Processes() {
				t.Fatalf("member %d handed leadership over as it went; this case needs the others to elect a leader unaided", old)
			}
			if tc.handsOver && notHanded != 0 {
				t.Fatalf("leader %d stopped gracefully but did not hand leadership to a follower", old)
			}
			leader := c.WaitLeader(stepContext(t, electionWait), others...)
			st, err := c.Status(ctx, leader)
			if err != nil {
				t.Fatal(err)
			}
			if st.GetTerm() <= before.GetTerm() {
				t.Errorf("new leader %d is in term %d, want a term after the old leader's %d", leader, st.GetTerm(), before.GetTerm())
			}

			after, failed := putKeys(ctx, cli, "after/", 50, 5)
			if len(failed) > 0 {
				t.Fatalf("%d of 50 writes after the new leader was elected failed, e.g. %v", len(failed), firstError(failed))
			}
			for _, i := range others {
				member := c.Client(t, i)
				checkKeys(t, ctx, member, fmt.Sprintf("member %d", i), "before/", acked)
				checkKeys(t, ctx, member, fmt.Sprintf("member %d", i), "after/", after)
			}
		})
	}
}

// TestFollowerCatchesUp: a follower that was down while the others took
// writes catches up from the leader's log once restarted.
func TestFollowerCatchesUp(t *testing.T) {
	c := framework.NewCluster(t, 3)
	ctx := stepContext(t, 60*time.Second)
	leader := c.WaitLeader(ctx)
	follower := c.Others(leader)[0]
	c.Stop(follower)

	cli := c.Client(t, c.Others(follower)...)
	acked, failed := putKeys(ctx, cli, "missed/", 200, 8)
	if len(failed) > 0 {
		t.Fatalf("%d of 200 writes with one follower down failed, e.g. %v", len(failed), firstError(failed))
	}
	leaderSt, err := c.Status(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	c.Restart(follower)
	fc := c.Client(t, follower)
	framework.Eventually(t, catchUpWait, fmt.Sprintf("restarted follower %d catches up", follower), func(ctx context.Context) error {
		st, err := c.Status(ctx, follower)
		if err != nil {
			return err
		}
		if st.GetAppliedIndex() < leaderSt.GetAppliedIndex() {
			return fmt.Errorf("follower applied index %d, leader's was %d after the writes", st.GetAppliedIndex(), leaderSt.GetAppliedIndex())
		}
		resp, err := fc.Get(ctx, "missed/", sdk.WithPrefix(), sdk.WithCountOnly(), sdk.WithSerializable())
		if err != nil {
			return err
		}
		if resp.GetCount() != int64(len(acked)) {
			return fmt.Errorf("serializable count of missed/ on the follower is %d, want %d", resp.GetCount(), len(acked))
		}
		return nil
	})
	checkKeys(t, ctx, fc, fmt.Sprintf("follower %d (serializable)", follower), "missed/", acked, sdk.WithSerializable())
}

// TestWholeClusterRestart: every write acknowledged before the whole
// cluster stopped is there after it restarts, with its value and revision.
func TestWholeClusterRestart(t *testing.T) {
	c := framework.NewCluster(t, 3)
	ctx := stepContext(t, 60*time.Second)
	cli := c.Client(t)
	acked, failed := putKeys(ctx, cli, "durable/", 300, 10)
	if len(failed) > 0 {
		// The contract covers only acknowledged writes, but a healthy
		// cluster failing writes is a bug worth seeing.
		t.Errorf("%d of 300 writes to a healthy cluster failed, e.g. %v", len(failed), firstError(failed))
	}
	revs := map[int64]string{}
	var maxRev int64
	for key, w := range acked {
		if other, dup := revs[w.rev]; dup {
			t.Errorf("writes of %q and %q were both acknowledged at revision %d; each write must get its own", key, other, w.rev)
		}
		revs[w.rev] = key
		maxRev = max(maxRev, w.rev)
	}

	c.StopAll()
	c.RestartAll()
	c.WaitLeader(stepContext(t, electionWait))

	for i := range c.Size() {
		member := c.Client(t, i)
		checkKeys(t, ctx, member, fmt.Sprintf("member %d after restart", i), "durable/", acked)
		st, err := c.Status(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		if st.GetRevision() < maxRev {
			t.Errorf("member %d is at revision %d after restart, want at least %d (the last acknowledged write)", i, st.GetRevision(), maxRev)
		}
	}
}

// TestIsolatedLeader: a leader cut off from the others cannot commit; the
// others elect a new leader and go on; once the network heals, the old
// leader follows the new one and has what was written meanwhile.
func TestIsolatedLeader(t *testing.T) {
	c := framework.NewCluster(t, 3)
	ctx := stepContext(t, 60*time.Second)
	old := c.WaitLeader(ctx)
	others := c.Others(old)
	oldCli := c.Client(t, old)
	if _, err := oldCli.Put(ctx, "before", "isolation"); err != nil {
		t.Fatalf("put through the leader before isolating it: %v", err)
	}

	c.Isolate(old)
	leader := c.WaitLeader(stepContext(t, electionWait), others...)
	t.Logf("isolated leader %d; the others elected %d", old, leader)

	majority := c.Client(t, others...)
	during, failed := putKeys(ctx, majority, "during/", 20, 4)
	if len(failed) > 0 {
		t.Fatalf("%d of 20 writes to the majority side failed, e.g. %v", len(failed), firstError(failed))
	}

	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	_, err := oldCli.Put(short, "isolated/write", "must not commit")
	cancel()
	if err == nil {
		t.Fatal("a write through the isolated old leader succeeded; it cannot reach a quorum, so it must fail or time out")
	}
	t.Logf("write through the isolated old leader failed as it must: %v", err)
	short, cancel = context.WithTimeout(ctx, 1500*time.Millisecond)
	_, err = oldCli.Get(short, "during/", sdk.WithPrefix())
	cancel()
	if err == nil {
		t.Error("a linearizable read through the isolated old leader succeeded; it cannot confirm it is up to date, so it must fail")
	}
	resp, err := oldCli.Get(ctx, "during/", sdk.WithPrefix(), sdk.WithCountOnly(), sdk.WithSerializable())
	if err != nil {
		t.Fatalf("serializable read through the isolated old leader: %v", err)
	}
	if resp.GetCount() != 0 {
		t.Errorf("the isolated old leader serves %d keys written on the other side; it cannot have received them", resp.GetCount())
	}

	c.Heal()
	healed := c.WaitLeader(stepContext(t, electionWait))
	if healed == old {
		t.Errorf("after healing, the old leader %d leads again, but its log lacks the writes of the newer term", old)
	}
	framework.Eventually(t, catchUpWait, "the old leader receives the writes made while it was isolated", func(ctx context.Context) error {
		resp, err := oldCli.Get(ctx, "during/", sdk.WithPrefix(), sdk.WithCountOnly(), sdk.WithSerializable())
		if err != nil {
			return err
		}
		if resp.GetCount() != int64(len(during)) {
			return fmt.Errorf("old leader has %d of the %d keys written during its isolation", resp.GetCount(), len(during))
		}
		return nil
	})
	checkKeys(t, ctx, oldCli, fmt.Sprintf("old leader %d", old), "during/", during)
	for i := range c.Size() {
		resp, err := c.Client(t, i).Get(ctx, "isolated/write")
		if err != nil {
			t.Fatalf("get isolated/write through member %d: %v", i, err)
		}
		if len(resp.GetKvs()) != 0 {
			t.Errorf("member %d has isolated/write, which the isolated leader could never commit: %v", i, resp.GetKvs()[0])
		}
	}
}

// snapshotCatchUpKeys is how many writes a stopped follower misses in
// TestSnapshotCatchUp: far more than the 50 entries the leader's log keeps
// after each snapshot, so the follower can only catch up from the database.
const snapshotCatchUpKeys = 600

// TestSnapshotCatchUp: a follower whose missing entries were compacted away
// on the leader is sent the leader's database with a snapshot, and ends up
// with every key at the leader's revision.
func TestSnapshotCatchUp(t *testing.T) {
	c := framework.NewCluster(t, 3, framework.WithSnapshotCount(100), framework.WithCatchUpEntries(50))
	ctx := stepContext(t, 60*time.Second)
	leader := c.WaitLeader(ctx)
	follower := c.Others(leader)[0]
	c.Stop(follower)

	cli := c.Client(t, c.Others(follower)...)
	acked, failed := putKeys(ctx, cli, "snap/", snapshotCatchUpKeys, 32)
	if len(failed) > 0 {
		t.Fatalf("%d of %d writes with one follower down failed, e.g. %v", len(failed), snapshotCatchUpKeys, firstError(failed))
	}
	leaderSt, err := c.Status(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	// The leader snapshots once its store has committed what it applied
	// (batched, within 100ms): its first snapshot, past index 100,
	// compacts its log past everything the follower holds.
	framework.Eventually(t, stepWait, "the leader takes a snapshot", func(context.Context) error {
		if n := metricValue(t, c, leader, "catalogd_server_snapshots_saved_total"); n < 1 {
			return fmt.Errorf("leader saved %v snapshots", n)
		}
		return nil
	})

	c.Restart(follower)
	framework.Eventually(t, catchUpWait, fmt.Sprintf("restarted follower %d reaches the leader's applied index and revision", follower), func(ctx context.Context) error {
		fst, err := c.Status(ctx, follower)
		if err != nil {
			return err
		}
		lst, err := c.Status(ctx, leader)
		if err != nil {
			return err
		}
		if fst.GetAppliedIndex() < leaderSt.GetAppliedIndex() {
			return fmt.Errorf("follower applied index %d, leader's was %d after the writes", fst.GetAppliedIndex(), leaderSt.GetAppliedIndex())
		}
		if fst.GetRevision() != lst.GetRevision() {
			return fmt.Errorf("follower at revision %d, leader at %d", fst.GetRevision(), lst.GetRevision())
		}
		return nil
	})
	if n := c.Logged(follower, "restored snapshot"); n == 0 {
		t.Errorf("follower %d caught up without restoring a snapshot: the leader's log should have been compacted past its entries (SnapshotCount 100, %d writes missed)", follower, snapshotCatchUpKeys)
	}
	fc := c.Client(t, follower)
	checkKeys(t, ctx, fc, fmt.Sprintf("follower %d (serializable)", follower), "snap/", acked, sdk.WithSerializable())
	// Writes after the restore reach the follower through the log again.
	rev := mustPut(t, ctx, cli, "after-snapshot", "x")
	framework.Eventually(t, stepWait, "the follower applies writes made after its snapshot", func(ctx context.Context) error {
		resp, err := fc.Get(ctx, "after-snapshot", sdk.WithSerializable())
		if err != nil {
			return err
		}
		if len(resp.GetKvs()) != 1 || resp.GetKvs()[0].GetModRevision() != rev {
			return fmt.Errorf("follower returns %v, want after-snapshot at revision %d", resp.GetKvs(), rev)
		}
		return nil
	})
}

// TestReadAfterWriteAcrossMembers: a default (linearizable) read through one
// member sees a write acknowledged just before by another member.
func TestReadAfterWriteAcrossMembers(t *testing.T) {
	c := framework.NewCluster(t, 3)
	ctx := stepContext(t, 60*time.Second)
	clients := make([]*sdk.Client, c.Size())
	for i := range clients {
		clients[i] = c.Client(t, i)
	}
	const key = "raw/key"
	for round := range 100 {
		writer, reader := round%c.Size(), (round+1)%c.Size()
		value := fmt.Sprintf("round %d", round)
		rev := mustPut(t, ctx, clients[writer], key, value)
		resp, err := clients[reader].Get(ctx, key)
		if err != nil {
			t.Fatalf("round %d: get through member %d: %v", round, reader, err)
		}
		if len(resp.GetKvs()) != 1 {
			t.Fatalf("round %d: get through member %d returned %d keys right after member %d wrote %q", round, reader, len(resp.GetKvs()), writer, key)
		}
		kv := resp.GetKvs()[0]
		if string(kv.GetValue()) != value || kv.GetModRevision() != rev || kv.GetVersion() != int64(round+1) {
			t.Fatalf("round %d: member %d read %q at revision %d (version %d) right after member %d wrote %q at revision %d (version %d): a stale read",
				round, reader, kv.GetValue(), kv.GetModRevision(), kv.GetVersion(), writer, value, rev, round+1)
		}
	}
}

// TestBadInput: requests the server must refuse are refused with the error a
// caller can match, whichever member receives them, and change nothing.
func TestBadInput(t *testing.T) {
	c := framework.NewCluster(t, 3)
	ctx := stepContext(t, 60*time.Second)
	follower := c.Others(c.WaitLeader(ctx))[0]
	cli := c.Client(t, follower)
	waitAttributesPublished(t, c)

	manyOps := func(n int) *catalogpb.TxnRequest {
		req := &catalogpb.TxnRequest{}
		for k := range n {
			req.Success = append(req.Success, &catalogpb.TxnOp{Op: &catalogpb.TxnOp_Put{Put: &catalogpb.PutRequest{
				Key: fmt.Appendf(nil, "bad/txn/%03d", k), Value: []byte("v"),
			}}})
		}
		return req
	}
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) error
		want error
		// inMessage are parts of the error message that tell the caller
		// what was wrong and what is allowed.
		inMessage []string
	}{
		{
			name: "key of 4097 bytes",
			call: func(ctx context.Context) error {
				_, err := cli.Put(ctx, "bad/"+strings.Repeat("k", 4093), "v")
				return err
			},
			want:      sdk.ErrKeyTooLarge,
			inMessage: []string{"4096", "4097"},
		},
		{
			name: "empty key",
			call: func(ctx context.Context) error {
				_, err := cli.Put(ctx, "", "v")
				return err
			},
			want: sdk.ErrKeyEmpty,
		},
		{
			name: "txn with 129 ops",
			call: func(ctx context.Context) error {
				_, err := cli.Txn(ctx, manyOps(129))
				return err
			},
			want:      sdk.ErrTooManyOps,
			inMessage: []string{"128", "129"},
		},
		{
			name: "txn writing a key twice",
			call: func(ctx context.Context) error {
				_, err := cli.NewTxn(ctx).Then(sdk.OpPut("bad/twice", "1"), sdk.OpPut("bad/twice", "2")).Commit()
				return err
			},
			want: sdk.ErrDuplicateKey,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := revision(t, ctx, c, follower)
			err := tc.call(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got error %v, want one matching %v", err, tc.want)
			}
			for _, part := range tc.inMessage {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not mention %s: it should say what was sent and what is allowed", err, part)
				}
			}
			resp, err := cli.Get(ctx, "bad/", sdk.WithPrefix(), sdk.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetCount() != 0 {
				t.Errorf("a refused request stored %d keys under bad/", resp.GetCount())
			}
			if after := revision(t, ctx, c, follower); after != before {
				t.Errorf("revision went from %d to %d across a refused request; it must change nothing", before, after)
			}
		})
	}

	t.Run("txn with 128 ops is accepted", func(t *testing.T) {
		before := revision(t, ctx, c, follower)
		resp, err := cli.Txn(ctx, manyOps(128))
		if err != nil {
			t.Fatalf("txn with the maximum of 128 ops: %v", err)
		}
		if !resp.GetSucceeded() || resp.GetHeader().GetRevision() != before+1 {
			t.Errorf("txn of 128 puts: succeeded %v at revision %d; want it to succeed as one write at revision %d", resp.GetSucceeded(), resp.GetHeader().GetRevision(), before+1)
		}
	})
}

// waitAttributesPublished waits until every member's status shows every
// member's client address: from then on no member writes its attributes.
func waitAttributesPublished(t *testing.T, c *framework.Cluster) {
	t.Helper()
	framework.Eventually(t, stepWait, "every member publishes its client address", func(ctx context.Context) error {
		for i := range c.Size() {
			st, err := c.Status(ctx, i)
			if err != nil {
				return err
			}
			for _, m := range st.GetMembers() {
				if m.GetClientAddr() == "" {
					return fmt.Errorf("member %d does not know member %q's client address yet", i, m.GetName())
				}
			}
		}
		return nil
	})
}

// revision returns the revision member i has reached after a linearizable
// read, so it includes every write acknowledged before the call.
func revision(t *testing.T, ctx context.Context, c *framework.Cluster, i int) int64 {
	t.Helper()
	resp, err := c.Client(t, i).Get(ctx, "revision-probe")
	if err != nil {
		t.Fatalf("read revision through member %d: %v", i, err)
	}
	return resp.GetHeader().GetRevision()
}

// stepContext returns a context for a step of a test, ended when the test ends.
func stepContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// A written is an acknowledged write: its value and the revision it got.
type written struct {
	value string
	rev   int64
}

// putKeys writes n keys under prefix from workers goroutines and returns the
// writes that were acknowledged and the errors of those that were not.
func putKeys(ctx context.Context, cli *sdk.Client, prefix string, n, workers int) (map[string]written, map[string]error) {
	acked := make(map[string]written, n)
	failed := map[string]error{}
	var mu sync.Mutex
	keys := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for k := range keys {
				key := fmt.Sprintf("%s%05d", prefix, k)
				value := fmt.Sprintf("value of %s", key)
				resp, err := cli.Put(ctx, key, value)
				mu.Lock()
				if err != nil {
					failed[key] = err
				} else {
					acked[key] = written{value: value, rev: resp.GetHeader().GetRevision()}
				}
				mu.Unlock()
			}
		})
	}
	for k := range n {
		keys <- k
	}
	close(keys)
	wg.Wait()
	return acked, failed
}

func firstError(failed map[string]error) error {
	for key, err := range failed {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

func mustPut(t *testing.T, ctx context.Context, cli *sdk.Client, key, value string) int64 {
	t.Helper()
	resp, err := cli.Put(ctx, key, value)
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return resp.GetHeader().GetRevision()
}

// checkKeys reads every key under prefix through cli and checks it holds
// exactly the acknowledged writes in want, each with its value and revision.
func checkKeys(t *testing.T, ctx context.Context, cli *sdk.Client, who, prefix string, want map[string]written, opts ...sdk.OpOption) {
	t.Helper()
	resp, err := cli.Get(ctx, prefix, append([]sdk.OpOption{sdk.WithPrefix()}, opts...)...)
	if err != nil {
		t.Fatalf("%s: get %s*: %v", who, prefix, err)
	}
	if resp.GetMore() {
		t.Fatalf("%s: get %s* returned one page of %d keys; the test expects the range to fit one page", who, prefix, len(resp.GetKvs()))
	}
	got := make(map[string]*catalogpb.KeyValue, len(resp.GetKvs()))
	for _, kv := range resp.GetKvs() {
		got[string(kv.GetKey())] = kv
	}
	missing, wrong := 0, 0
	for key, w := range want {
		kv, ok := got[key]
		switch {
		case !ok:
			if missing++; missing <= 5 {
				t.Errorf("%s: acknowledged write %q (revision %d) is missing", who, key, w.rev)
			}
		case string(kv.GetValue()) != w.value || kv.GetModRevision() != w.rev:
			if wrong++; wrong <= 5 {
				t.Errorf("%s: %q = %q at revision %d, want %q at revision %d", who, key, kv.GetValue(), kv.GetModRevision(), w.value, w.rev)
			}
		}
	}
	if missing+wrong > 0 {
		t.Errorf("%s: %d of %d acknowledged writes under %s missing, %d with the wrong value or revision", who, missing, len(want), prefix, wrong)
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d keys under %s, want the %d acknowledged", who, len(got), prefix, len(want))
	}
}
