package robustness

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/catalogd/catalogd/tests/framework"
)

var (
	flagSeed    = flag.Int64("seed", 0, "seed of the first run; with -seed and no -runs, only that run (replays it)")
	flagRuns    = flag.Int("runs", 0, "number of randomized runs (default 10, or 100 with -long)")
	flagLong    = flag.Bool("long", false, "soak: 100 runs with longer load (also CATALOGD_ROBUSTNESS_LONG=1)")
	flagHistory = flag.String("history", "", "TestRecheckHistory: a history-<seed>.json a failed run saved, to check again")
	flagFault   = flag.String("fault", "", "comma-separated faults to draw from (default: all); for example kill-leader,isolate-leader")
	flagCoord   = flag.Bool("coordination", true, "run the coordination workloads (fenced lock, election, queue) alongside the key-value load")
)

// checkTimeout bounds porcupine's linearizability check of one run.
const checkTimeout = 60 * time.Second

// recoveryWait bounds getting every member back, agreeing on a leader and
// applying the same log after the fault is undone; a wiped member that
// needs a snapshot is the slowest case.
const recoveryWait = 60 * time.Second

// initialMembers is the size of each run's cluster; members that join
// during a run get the next numbers.
const initialMembers = 3

// A phaseRange is the bounds of a random duration.
type phaseRange struct{ min, max time.Duration }

func (p phaseRange) draw(rng *rand.Rand) time.Duration {
	return p.min + time.Duration(rng.Int64N(int64(p.max-p.min)+1))
}

// A suite is the settings of one TestRobustness invocation.
type suite struct {
	runs  int
	first int64
	// before, hold and after are how long the load runs before the fault,
	// how long the fault lasts, and how long the load runs after it.
	before, hold, after phaseRange
	load                loadConfig
	coord               coordConfig
	faults              []fault
	// args are the flags besides -seed that a replay must repeat.
	args string
}

// replay returns the command that runs the run of the given seed again.
func (s suite) replay(seed string) string {
	return "go test ./tests/robustness -run TestRobustness -seed " + seed + s.args
}

func suiteFromFlags(t *testing.T) suite {
	long := *flagLong || os.Getenv("CATALOGD_ROBUSTNESS_LONG") == "1"
	s := suite{
		runs:   10,
		before: phaseRange{1500 * time.Millisecond, 3 * time.Second},
		hold:   phaseRange{2 * time.Second, 5 * time.Second},
		after:  phaseRange{2 * time.Second, 3 * time.Second},
		load:   defaultLoad,
		coord:  defaultCoord,
	}
	if long {
		s.args += " -long"
		s.runs = 100
		s.before = phaseRange{3 * time.Second, 8 * time.Second}
		s.hold = phaseRange{5 * time.Second, 15 * time.Second}
		s.after = phaseRange{5 * time.Second, 10 * time.Second}
	}
	var names []string
	if *flagFault != "" {
		names = strings.Split(*flagFault, ",")
		s.args += " -fault " + *flagFault
	}
	fs, err := faultsNamed(names)
	if err != nil {
		t.Fatalf("-fault: %v", err)
	}
	s.faults = fs
	if !*flagCoord {
		s.coord = coordConfig{}
		s.args += " -coordination=false"
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	s.first = rand.Int64N(1 << 31)
	if set["seed"] {
		s.first = *flagSeed
		s.runs = 1
	}
	if set["runs"] {
		if *flagRuns < 1 {
			t.Fatalf("-runs must be at least 1, got %d", *flagRuns)
		}
		s.runs = *flagRuns
	}
	return s
}

// clusterOptions keep runs quick but realistic: the server's default tick
// and election timeout, and a snapshot every 2000 entries keeping 500, so a
// member that joins or comes back empty receives a streamed snapshot.
func clusterOptions() []framework.Option {
	return []framework.Option{
		framework.WithProcesses(),
		framework.WithTickInterval(100 * time.Millisecond),
		framework.WithElectionTicks(10),
		framework.WithSnapshotCount(2000),
		framework.WithCatchUpEntries(500),
	}
}

// TestRobustness runs randomized fault-injection runs against real catalogd
// processes and checks each one's history; see the package documentation.
func TestRobustness(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection on real processes takes minutes; skipped with -short")
	}
	s := suiteFromFlags(t)
	partitions := partitionsSupported(t)
	t.Logf("%d runs, seeds %d..%d; replay one with: %s",
		s.runs, s.first, s.first+int64(s.runs)-1, s.replay("N"))
	for r := range s.runs {
		seed := s.first + int64(r)
		rng := rand.New(rand.NewPCG(uint64(seed), 0)) // the seed alone decides the run
		f, err := chooseFault(rng, s.faults, partitions, t.Logf)
		if err != nil {
			t.Fatalf("run with seed %d: %v", seed, err)
		}
		t.Run(fmt.Sprintf("%s-seed%d", f.name, seed), func(t *testing.T) {
			t.Logf("seed %d, fault %s; replay with: %s", seed, f.name, s.replay(strconv.FormatInt(seed, 10)))
			runOnce(t, s, seed, rng, f)
		})
	}
}

// partitionsSupported asks a one-member cluster whether the framework can
// cut links between members here; it does not change while the test
// binary runs.
func partitionsSupported(t *testing.T) bool {
	t.Helper()
	c := framework.NewCluster(t, 1, framework.WithProcesses())
	defer c.StopAll()
	return c.PartitionsSupported()
}

// runOnce is one run: a fresh 3-member cluster, load before, during and
// after the fault, recovery, then the checks.
func runOnce(t *testing.T, s suite, seed int64, rng *rand.Rand, f fault) {
	before, hold, after := s.before.draw(rng), s.hold.draw(rng), s.after.draw(rng)
	c := framework.NewCluster(t, initialMembers, clusterOptions()...)
	h := newHistory()
	e := &faultEnv{t: t, c: c, h: h, rng: rng, hold: hold}
	ctx := t.Context()

	cluster, err := clusterID(ctx, c)
	if err != nil {
		t.Fatalf("%v", err)
	}
	l, err := startLoad(h, c.Endpoints(), cluster, seed, s.load)
	if err != nil {
		t.Fatalf("start load: %v", err)
	}
	defer l.stop()
	co, err := startCoordination(h, c.Endpoints(), cluster, seed, s.coord)
	if err != nil {
		t.Fatalf("start the coordination workloads: %v", err)
	}
	defer co.stop()

	e.note("load started: %d clients on %d keys, coordination: %d lockers, %d campaigners, %d producers, %d consumers; fault %s in %v, held %v, then %v more load",
		s.load.Clients, s.load.Keys, s.coord.Lockers, s.coord.Campaigners, s.coord.Producers, s.coord.Consumers,
		f.name, before.Round(time.Millisecond), hold.Round(time.Millisecond), after.Round(time.Millisecond))
	sleep(ctx, before)
	if err := f.inject(ctx, e); err != nil {
		t.Errorf("fault %s: %v", f.name, err)
	}
	sleep(ctx, after)
	co.cancel() // blocking waits end now, while the key-value load stops
	l.stop()
	co.stop()
	e.note("load stopped")
	verify(t, e, l, co, s.load, seed)
}

// verify brings every member still in the cluster back, waits until they
// applied the same log, and runs the checks of the package documentation.
// On a failure it saves the history next to the members' logs.
func verify(t *testing.T, e *faultEnv, l *load, co *coordination, cfg loadConfig, seed int64) {
	c, h := e.c, e.h
	ctx, cancel := context.WithTimeout(t.Context(), recoveryWait)
	defer cancel()
	recoverAll(ctx, e)
	members := e.members()
	if err := co.drain(ctx); err != nil {
		t.Errorf("%v", err)
	}
	addrs := map[int]string{}
	for _, i := range members {
		addrs[i] = c.ClientAddr(i)
	}
	round, err := waitConverged(ctx, addrs)
	if err != nil {
		t.Errorf("after recovery: %v", err)
	} else {
		e.note("members %v converged at applied index %d, revision %d", members, round[0].resp.GetAppliedIndex(), round[0].resp.GetRevision())
		for _, p := range checkHashes(round, l.cluster) {
			t.Errorf("%s", p)
		}
	}
	for _, i := range members {
		if i >= initialMembers {
			t.Logf("member %d joined during the run and restored %d snapshot(s) sent by the leader", i, c.Logged(i, "restored snapshot"))
		}
	}
	for _, p := range c.Problems() {
		t.Errorf("member process: %s", p)
	}
	if unexpected := l.unexpectedErrors(); len(unexpected) > 0 {
		t.Errorf("the load got errors no fault explains: %s", strings.Join(unexpected, "; "))
	}
	if unexpected := co.unexpectedErrors(); len(unexpected) > 0 {
		t.Errorf("the coordination workloads got errors no fault explains: %s", strings.Join(unexpected, "; "))
	}

	keys := cfg.keys()
	if co.cfg.Lockers > 0 {
		keys = append(keys, registerKey)
	}
	final, err := finalReads(ctx, h, c.Endpoints(members...), l.cluster, keys)
	if err != nil {
		t.Errorf("%v", err)
	}
	n := h.counts()
	t.Logf("history: %d acknowledged, %d of unknown outcome, %d refused (no leader)",
		n[outcomeOK], n[outcomeUnknown], n[outcomeNotApplied])
	ops := h.operations()
	if ackedWrites(ops) == 0 {
		t.Errorf("no write was acknowledged during the run: the load checked nothing")
	}
	for _, p := range checkAcknowledged(ops, final) {
		t.Errorf("%s", p)
	}
	start := time.Now()
	if problem := checkLinearizable(ops, checkTimeout, e.notes, c.ArtifactDir(), seed); problem != "" {
		t.Errorf("%s", problem)
	} else {
		t.Logf("linearizable: %d operations checked in %v", len(ops), time.Since(start).Round(time.Millisecond))
	}
	if co.cfg.enabled() {
		problems, summary := co.check()
		t.Logf("coordination: %s", summary)
		for _, p := range problems {
			t.Errorf("%s", p)
		}
	}
	if t.Failed() {
		path := filepath.Join(c.ArtifactDir(), fmt.Sprintf("history-%d.json", seed))
		if err := saveHistory(path, ops); err != nil {
			t.Errorf("%v", err)
		} else {
			t.Logf("saved the history to %s; check it again with: go test ./tests/robustness -run TestRecheckHistory -history %s", path, path)
		}
		if co.cfg.enabled() {
			path := filepath.Join(c.ArtifactDir(), fmt.Sprintf("coordination-%d.json", seed))
			if err := co.save(path); err != nil {
				t.Errorf("%v", err)
			} else {
				t.Logf("saved the coordination records (lock and election facts, queue operations) to %s", path)
			}
		}
	}
}

// TestRecheckHistory runs the linearizability check on a history a failed
// run saved (-history FILE), for example after changing the model; the
// visualisation goes next to the file.
func TestRecheckHistory(t *testing.T) {
	if *flagHistory == "" {
		t.Skip("no -history FILE given")
	}
	ops, err := loadHistory(*flagHistory)
	if err != nil {
		t.Fatal(err)
	}
	if problem := checkLinearizable(ops, checkTimeout, nil, filepath.Dir(*flagHistory), 0); problem != "" {
		t.Fatalf("%s", problem)
	}
	t.Logf("%s: %d operations, linearizable", *flagHistory, len(ops))
}

// ackedWrites counts the writes the servers acknowledged.
func ackedWrites(ops []porcupine.Operation) int {
	n := 0
	for _, op := range ops {
		if op.Input.(input).Kind.writes() && op.Output.(output).Outcome == outcomeOK {
			n++
		}
	}
	return n
}
