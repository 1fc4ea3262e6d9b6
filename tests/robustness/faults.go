package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/catalogd/catalogd/tests/framework"
)

// membershipWait bounds one membership change (remove or join) under load.
const membershipWait = 30 * time.Second

// A faultEnv is what a fault acts on during one run.
type faultEnv struct {
	t   testing.TB
	c   *framework.Cluster
	h   *history
	rng *rand.Rand
	// hold is how long the fault lasts before it is undone.
	hold time.Duration
	// notes are the fault's steps on the history's clock, shown in the
	// linearizability visualisation.
	notes []porcupine.Annotation
}

// note records a step of the fault in the test log and the visualisation.
func (e *faultEnv) note(format string, args ...any) {
	e.t.Helper()
	msg := fmt.Sprintf(format, args...)
	at := e.h.now()
	e.t.Logf("%6.2fs  %s", time.Duration(at).Seconds(), msg)
	e.notes = append(e.notes, porcupine.Annotation{Tag: "fault", Start: at, Description: msg, BackgroundColor: "#ffd0d0"})
}

// members returns the members still in the cluster (not removed).
func (e *faultEnv) members() []int { return e.c.Others() }

// leader waits for the members in the cluster to agree on a leader.
func (e *faultEnv) leader(ctx context.Context) int {
	e.t.Helper()
	return e.c.WaitLeader(ctx, e.members()...)
}

// follower returns a randomly chosen member other than the leader.
func (e *faultEnv) follower(leader int) int {
	fs := slices.DeleteFunc(e.members(), func(i int) bool { return i == leader })
	return fs[e.rng.IntN(len(fs))]
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// A fault is one kind of failure injected while the load runs. inject
// starts it, keeps it for e.hold and undoes what can be undone (a removed
// member stays removed); it returns an error when the cluster refused an
// operation the fault needed.
type fault struct {
	name string
	// partition marks faults that cut the network between members.
	partition bool
	inject    func(ctx context.Context, e *faultEnv) error
}

var faults = []fault{
	{name: "kill-leader", inject: func(ctx context.Context, e *faultEnv) error {
		return killAndRestart(ctx, e, e.leader(ctx), "leader")
	}},
	{name: "kill-follower", inject: func(ctx context.Context, e *faultEnv) error {
		return killAndRestart(ctx, e, e.follower(e.leader(ctx)), "follower")
	}},
	{name: "kill-all", inject: func(ctx context.Context, e *faultEnv) error {
		for _, i := range e.members() {
			e.c.Kill(i)
		}
		e.note("killed every member (SIGKILL)")
		sleep(ctx, e.hold)
		for _, i := range e.members() {
			e.c.Restart(i)
		}
		e.note("restarted every member")
		return nil
	}},
	{name: "pause-leader", inject: func(ctx context.Context, e *faultEnv) error {
		return pauseAndResume(ctx, e, e.leader(ctx), "leader")
	}},
	{name: "pause-follower", inject: func(ctx context.Context, e *faultEnv) error {
		return pauseAndResume(ctx, e, e.follower(e.leader(ctx)), "follower")
	}},
	{name: "isolate-follower", partition: true, inject: func(ctx context.Context, e *faultEnv) error {
		f := e.follower(e.leader(ctx))
		e.c.Isolate(f)
		e.note("isolated follower %d (a minority) from the other members", f)
		return healAfter(ctx, e)
	}},
	{name: "isolate-leader", partition: true, inject: func(ctx context.Context, e *faultEnv) error {
		l := e.leader(ctx)
		e.c.Isolate(l)
		e.note("isolated leader %d from the other members", l)
		return healAfter(ctx, e)
	}},
	{name: "bridge", partition: true, inject: func(ctx context.Context, e *faultEnv) error {
		ms := e.members()
		bridge := ms[e.rng.IntN(len(ms))]
		ends := slices.DeleteFunc(slices.Clone(ms), func(i int) bool { return i == bridge })
		e.c.Cut(ends[0], ends[1])
		e.note("cut members %d and %d from each other; member %d still reaches both", ends[0], ends[1], bridge)
		return healAfter(ctx, e)
	}},
	{name: "one-way-cut", partition: true, inject: func(ctx context.Context, e *faultEnv) error {
		l := e.leader(ctx)
		f := e.follower(l)
		from, to := l, f
		if e.rng.IntN(2) == 0 {
			from, to = f, l
		}
		e.c.CutOneWay(from, to)
		e.note("cut one way: member %d's packets to member %d are dropped (leader %d)", from, to, l)
		return healAfter(ctx, e)
	}},
	{name: "restart-follower", inject: func(ctx context.Context, e *faultEnv) error {
		f := e.follower(e.leader(ctx))
		e.c.Stop(f)
		e.note("stopped follower %d (SIGTERM), data kept", f)
		sleep(ctx, e.hold)
		e.c.Restart(f)
		e.note("restarted member %d", f)
		return nil
	}},
	{name: "wipe-follower", inject: func(ctx context.Context, e *faultEnv) error {
		f := e.follower(e.leader(ctx))
		e.c.Stop(f)
		e.c.WipeDataDir(f)
		e.note("stopped follower %d and wiped its data dir", f)
		if err := removeMember(ctx, e, f); err != nil {
			return err
		}
		sleep(ctx, e.hold)
		return joinMember(ctx, e)
	}},
	{name: "replace-follower", inject: func(ctx context.Context, e *faultEnv) error {
		f := e.follower(e.leader(ctx))
		if err := removeMember(ctx, e, f); err != nil {
			return err
		}
		sleep(ctx, e.hold)
		return joinMember(ctx, e)
	}},
}

func killAndRestart(ctx context.Context, e *faultEnv, i int, role string) error {
	e.c.Kill(i)
	e.note("killed %s %d (SIGKILL)", role, i)
	sleep(ctx, e.hold)
	e.c.Restart(i)
	e.note("restarted member %d", i)
	return nil
}

func pauseAndResume(ctx context.Context, e *faultEnv, i int, role string) error {
	e.c.Pause(i)
	e.note("paused %s %d (SIGSTOP)", role, i)
	sleep(ctx, e.hold)
	e.c.Resume(i)
	e.note("resumed member %d (SIGCONT)", i)
	return nil
}

func healAfter(ctx context.Context, e *faultEnv) error {
	sleep(ctx, e.hold)
	e.c.Heal()
	e.note("healed the network")
	return nil
}

// removeMember removes member i through another member (the framework
// tries the next member only while they are unreachable: a removal whose
// answer was lost may have happened). A running member i is left running.
func removeMember(ctx context.Context, e *faultEnv, i int) error {
	ctx, cancel := context.WithTimeout(ctx, membershipWait)
	defer cancel()
	id := e.c.ID(i)
	if err := e.c.RemoveMember(ctx, i); err != nil {
		e.note("removing member %d (id %x) failed: %v", i, id, err)
		return fmt.Errorf("remove member %d (id %x) under load: %w", i, id, err)
	}
	state := "stopped"
	if e.c.Running(i) {
		state = "still running: clients may reach it"
	}
	e.note("removed member %d (id %x) from the cluster (%s)", i, id, state)
	return nil
}

// joinMember starts a new member that joins through the current leader.
func joinMember(ctx context.Context, e *faultEnv) error {
	ctx, cancel := context.WithTimeout(ctx, membershipWait)
	defer cancel()
	via := e.leader(ctx)
	j, err := e.c.Join(ctx, via)
	if err != nil {
		e.note("joining a new member through member %d failed: %v", via, err)
		return fmt.Errorf("join a new member through member %d under load: %w", via, err)
	}
	e.note("member %d (id %x) joined through member %d", j, e.c.ID(j), via)
	return nil
}

// faultsNamed returns the faults with the given names (all for none), or an
// error naming the faults that exist.
func faultsNamed(names []string) ([]fault, error) {
	if len(names) == 0 {
		return faults, nil
	}
	var out []fault
	for _, name := range names {
		k := slices.IndexFunc(faults, func(f fault) bool { return f.name == name })
		if k < 0 {
			all := make([]string, len(faults))
			for j, f := range faults {
				all[j] = f.name
			}
			return nil, fmt.Errorf("no fault %q; the faults are %s", name, strings.Join(all, ", "))
		}
		out = append(out, faults[k])
	}
	return out, nil
}

// chooseFault draws the fault of a run among candidates. A partition fault
// drawn when the cluster cannot cut links is replaced by a draw among the
// others, and the reason is logged.
func chooseFault(rng *rand.Rand, candidates []fault, partitions bool, logf func(string, ...any)) (fault, error) {
	f := candidates[rng.IntN(len(candidates))]
	if !f.partition || partitions {
		return f, nil
	}
	others := slices.DeleteFunc(slices.Clone(candidates), func(f fault) bool { return f.partition })
	if len(others) == 0 {
		return fault{}, fmt.Errorf("fault %s cuts the network, which the framework cannot do here (Cluster.PartitionsSupported is false), and no other fault was allowed", f.name)
	}
	g := others[rng.IntN(len(others))]
	logf("drew fault %s, but the framework cannot cut links between members here (Cluster.PartitionsSupported is false: processes need network namespaces, see tests/framework); running %s instead", f.name, g.name)
	return g, nil
}

// recoverAll undoes whatever a fault left: it heals the network, resumes
// paused members and restarts stopped ones that are still in the cluster,
// then waits for a leader.
func recoverAll(ctx context.Context, e *faultEnv) {
	e.t.Helper()
	if e.c.PartitionsSupported() {
		e.c.Heal()
	}
	for _, i := range e.members() {
		if e.c.Paused(i) {
			e.c.Resume(i)
		}
	}
	e.c.RestartAll()
	e.leader(ctx)
}
