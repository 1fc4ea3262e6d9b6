package tests

import (
	"context"
	"testing"

	"github.com/catalogd/catalogd/tests/framework"
)

// fastCampaignMsg is what a follower logs when the leader's host refuses its
// redial and it campaigns without waiting for its election timeout.
const fastCampaignMsg = "leader's process is gone (its host refuses connections): campaigning now"

// TestDeadLeaderTriggersImmediateCampaign: when the leader's process dies
// (kill -9), a follower's redial is refused and it campaigns at once; when
// the leader is only cut off (a partition times out, nothing refuses), no
// follower takes that shortcut and the ordinary election timeout decides.
func TestDeadLeaderTriggersImmediateCampaign(t *testing.T) {
	c := framework.NewCluster(t, 3, framework.WithProcesses())
	if !c.PartitionsSupported() {
		t.Skip("the partition half of this test needs network namespaces (root, iproute2, iptables)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), electionWait)
	defer cancel()

	old := c.WaitLeader(ctx)
	c.Isolate(old)
	others := c.Others(old)
	newLeader := c.WaitLeader(ctx, others...)
	for _, i := range others {
		if n := c.Logged(i, fastCampaignMsg); n != 0 {
			t.Fatalf("member %d campaigned as if leader %d had died, but it was only cut off", i, old)
		}
	}
	c.Heal()
	c.WaitLeader(ctx)

	c.Kill(newLeader)
	survivors := c.Others(newLeader)
	next := c.WaitLeader(ctx, survivors...)
	campaigned := 0
	for _, i := range survivors {
		campaigned += c.Logged(i, fastCampaignMsg)
	}
	if campaigned == 0 {
		t.Fatalf("leader %d was killed and member %d leads now, but no follower campaigned at once", newLeader, next)
	}
	cli := c.Client(t, survivors...)
	if _, err := cli.Put(ctx, "after-kill", "v"); err != nil {
		t.Fatalf("put after the kill: %v", err)
	}
}
