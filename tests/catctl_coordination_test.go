package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/tests/framework"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestCatctlCoordination runs the catctl binary's lock, elect, sem, barrier
// and queue commands and the lock benches against a 3-member cluster, and
// checks what they print, their exit codes, and the state they leave (read
// back with catctl and the SDK). Each subtest uses its own names, so they run
// in parallel on one cluster.
func TestCatctlCoordination(t *testing.T) {
	built := make(chan error, 1)
	bin := filepath.Join(t.TempDir(), "catctl")
	go func() { built <- buildCatctl(bin) }()
	c := framework.NewCluster(t, 3)
	c.WaitLeader(stepContext(t, electionWait))
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	ctl := &catctl{bin: bin, endpoints: strings.Join(c.Endpoints(), ",")}
	cli := c.Client(t)

	t.Run("LockRunsCommand", func(t *testing.T) { t.Parallel(); testCatctlLockRunsCommand(t, ctl) })
	t.Run("LockHoldAndList", func(t *testing.T) { t.Parallel(); testCatctlLockHold(t, ctl, cli) })
	t.Run("LockSerialises", func(t *testing.T) { t.Parallel(); testCatctlLockSerialises(t, ctl) })
	t.Run("LockSignals", func(t *testing.T) { t.Parallel(); testCatctlLockSignals(t, ctl) })
	t.Run("Elect", func(t *testing.T) { t.Parallel(); testCatctlElect(t, ctl) })
	t.Run("Sem", func(t *testing.T) { t.Parallel(); testCatctlSem(t, ctl) })
	t.Run("Barrier", func(t *testing.T) { t.Parallel(); testCatctlBarrier(t, ctl) })
	t.Run("DoubleBarrier", func(t *testing.T) { t.Parallel(); testCatctlDoubleBarrier(t, ctl) })
	t.Run("Queue", func(t *testing.T) { t.Parallel(); testCatctlQueue(t, ctl) })
	t.Run("BadInput", func(t *testing.T) { t.Parallel(); testCatctlCoordinationBadInput(t, ctl) })
	t.Run("Bench", func(t *testing.T) { t.Parallel(); testCatctlCoordinationBench(t, ctl) })
}

// terminate sends SIGTERM and waits for the process to exit.
func (p *ctlProcess) terminate() ctlResult {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("terminate catctl %s: %v", strings.Join(p.args, " "), err)
	}
	return p.wait()
}

// A ctlHold is what a holding catctl printed: its fencing token and lease.
type ctlHold struct {
	token uint64
	lease int64
}

// waitHold waits until the process printed a line of format (two verbs: the
// token, then the lease) and returns them.
func (p *ctlProcess) waitHold(what, format string) ctlHold {
	p.t.Helper()
	var h ctlHold
	p.waitFor(what, func(stdout, _ string) error {
		if _, err := fmt.Sscanf(stdout, format, &h.token, &h.lease); err != nil || h.token == 0 || h.lease == 0 {
			return fmt.Errorf("stdout %q: %v", stdout, err)
		}
		return nil
	})
	return h
}

// ctlLockState reads lock name with catctl lock ls -o json (nil if it does not exist).
func ctlLockState(t *testing.T, ctl *catctl, name string) *catalogpb.LockState {
	t.Helper()
	var ls catalogpb.ListLocksResponse
	ctl.json(t, &ls, "lock", "ls", name)
	for _, l := range ls.GetLocks() {
		if l.GetName() == name {
			return l
		}
	}
	return nil
}

// ctlWaitWaiters waits until lock name has n waiters.
func ctlWaitWaiters(t *testing.T, ctl *catctl, name string, n int) *catalogpb.LockState {
	t.Helper()
	var st *catalogpb.LockState
	framework.Eventually(t, stepWait, fmt.Sprintf("%d waiters on %s", n, name), func(context.Context) error {
		if st = ctlLockState(t, ctl, name); len(st.GetWaiters()) != n {
			return fmt.Errorf("lock %s: %v", name, st)
		}
		return nil
	})
	return st
}

func ctlParseToken(t *testing.T, what, s string) uint64 {
	t.Helper()
	tok, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || tok == 0 {
		t.Fatalf("%s: %q is not a fencing token", what, s)
	}
	return tok
}

func testCatctlLockRunsCommand(t *testing.T, ctl *catctl) {
	const name = "ctl-lock/env"
	out := ctl.ok(t, "lock", name, "--", "sh", "-c", `echo $CATALOG_FENCE`)
	first := ctlParseToken(t, "CATALOG_FENCE", out)
	res := ctl.run(t, "lock", name, "--", "sh", "-c", `echo "$CATALOG_FENCE $CATALOG_LOCK $CATALOG_LEASE"; exit 5`)
	fields := strings.Fields(res.stdout)
	if res.code != 5 || res.stderr != "" || len(fields) != 3 {
		t.Fatalf("lock -- sh -c 'exit 5': %v; want exit code 5, the token, name and lease printed, nothing on stderr", res)
	}
	if tok := ctlParseToken(t, "second CATALOG_FENCE", fields[0]); tok <= first || fields[1] != name {
		t.Errorf("second run: token %d, lock %q; want a token above %d and lock %s", tok, fields[1], first, name)
	}
	lease, err := strconv.ParseInt(fields[2], 10, 64)
	if err != nil || lease <= 0 {
		t.Errorf("CATALOG_LEASE = %q, want the lease id", fields[2])
	}
	// Released on exit; and the session's lease was revoked.
	if st := ctlLockState(t, ctl, name); st != nil {
		t.Errorf("after the command exited, lock %s = %v, want it released", name, st)
	}
	ctl.fails(t, []string{fmt.Sprintf("lease %d", lease), "not found"}, "lease", "ttl", fields[2])

	// A command killed by a signal: 128+N, as a shell reports it.
	if res := ctl.run(t, "lock", name, "--", "sh", "-c", "kill -KILL $$"); res.code != 128+9 {
		t.Errorf("lock -- a command killed by SIGKILL: %v; want exit code 137", res)
	}
	if st := ctlLockState(t, ctl, name); st != nil {
		t.Errorf("after the command was killed, lock %s = %v, want it released", name, st)
	}
}

func testCatctlLockHold(t *testing.T, ctl *catctl, cli *sdk.Client) {
	const name = "ctl-lock/held"
	holder := ctl.start(t, "lock", name)
	h := holder.waitHold("the lock", "locked "+name+" with token %d on lease %d\n")

	waiter := ctl.start(t, "lock", name, "--", "sh", "-c", `echo $CATALOG_FENCE`)
	st := ctlWaitWaiters(t, ctl, name, 1)
	if len(st.GetHolders()) != 1 || st.GetHolders()[0].GetLease() != h.lease || st.GetHolders()[0].GetToken() != h.token ||
		st.GetKind() != catalogpb.LockKind_LOCK_KIND_MUTEX {
		t.Fatalf("lock %s = %v, want a mutex held by lease %d with token %d", name, st, h.lease, h.token)
	}
	waiterLease := st.GetWaiters()[0].GetLease()
	out := ctl.ok(t, "lock", "ls", "ctl-lock/h")
	checkRow(t, "lock ls", tableRow(t, out, "NAME", name), map[string]string{"KIND": "mutex", "LIMIT": "1",
		"HOLDERS": strconv.FormatInt(h.lease, 10), "TOKENS": strconv.FormatUint(h.token, 10), "WAITERS": strconv.FormatInt(waiterLease, 10)})
	if rows := parseTable(t, ctl.ok(t, "lock", "ls", "ctl-lock/none"), "NAME"); len(rows) != 0 {
		t.Errorf("lock ls ctl-lock/none lists %v, want no lock", rows)
	}
	var elections catalogpb.ListLocksResponse
	ctl.json(t, &elections, "lock", "ls", "ctl-lock/", "--kind", "election")
	if len(elections.GetLocks()) != 0 {
		t.Errorf("lock ls --kind election lists %v, want no election under ctl-lock/", elections.GetLocks())
	}

	ctl.fails(t, []string{fmt.Sprintf(`lock "ctl-lock/held" is held by lease %d (token %d), 1 waiting; --try does not wait`, h.lease, h.token)},
		"lock", name, "--try")

	// The token is a valid fence while held, and only then.
	ctx := stepContext(t, stepWait)
	if valid, err := cli.Fence(ctx, name, h.token); err != nil || !valid {
		t.Errorf("Fence(%s, %d) while held = %v, %v; want true", name, h.token, valid, err)
	}
	waiter.running()
	res := holder.interrupt()
	if res.code != 0 || res.stderr != fmt.Sprintf("unlocked %s (token %d)\n", name, h.token) {
		t.Fatalf("interrupted lock: %v; want exit code 0 after unlocking", res)
	}
	res = waiter.wait()
	if res.code != 0 {
		t.Fatalf("waiting lock -- COMMAND: %v; want exit code 0", res)
	}
	if next := ctlParseToken(t, "waiter's CATALOG_FENCE", res.stdout); next <= h.token {
		t.Errorf("the waiter ran with token %d, want more than the first holder's %d", next, h.token)
	}
	if valid, err := cli.Fence(ctx, name, h.token); err != nil || valid {
		t.Errorf("Fence(%s, %d) after the release = %v, %v; want false", name, h.token, valid, err)
	}
	if st := ctlLockState(t, ctl, name); st != nil {
		t.Errorf("lock %s = %v after both released it, want it gone", name, st)
	}

	// -o json prints the hold as a LockOwner.
	holder = ctl.start(t, "-o", "json", "lock", name)
	var owner catalogpb.LockOwner
	holder.waitFor("the JSON hold", func(stdout, _ string) error {
		if !strings.HasSuffix(stdout, "}\n") {
			return fmt.Errorf("stdout %q", stdout)
		}
		return protojson.Unmarshal([]byte(stdout), &owner)
	})
	if owner.GetToken() == 0 || owner.GetLease() == 0 {
		t.Errorf("lock -o json printed %v, want the token and lease", &owner)
	}
	if res := holder.terminate(); res.code != 0 {
		t.Errorf("lock ended with SIGTERM: %v; want exit code 0", res)
	}
}

func testCatctlLockSerialises(t *testing.T, ctl *catctl) {
	const name = "ctl-lock/serial"
	log := filepath.Join(t.TempDir(), "log")
	// Each run appends "start TOKEN", waits, appends "end TOKEN": under the
	// lock, no run starts before the one before it ended.
	script := `echo "start $CATALOG_FENCE" >> "$1"; sleep 0.3; echo "end $CATALOG_FENCE" >> "$1"`
	var procs []*ctlProcess
	for range 3 {
		procs = append(procs, ctl.start(t, "lock", name, "--", "sh", "-c", script, "sh", log))
	}
	for _, p := range procs {
		if res := p.wait(); res.code != 0 {
			t.Fatalf("lock -- script: %v", res)
		}
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	ls := lines(string(b))
	if len(ls) != 6 {
		t.Fatalf("log %q, want 3 start/end pairs", ls)
	}
	var last uint64
	for i := 0; i < len(ls); i += 2 {
		var start, end uint64
		if _, err := fmt.Sscanf(ls[i], "start %d", &start); err != nil {
			t.Fatalf("log line %d = %q, want a start: runs overlapped (%q)", i, ls[i], ls)
		}
		if _, err := fmt.Sscanf(ls[i+1], "end %d", &end); err != nil || end != start {
			t.Fatalf("log line %d = %q, want the end of run %d: runs overlapped (%q)", i+1, ls[i+1], start, ls)
		}
		if start <= last {
			t.Errorf("token %d ran after token %d, want increasing tokens (%q)", start, last, ls)
		}
		last = start
	}
}

func testCatctlLockSignals(t *testing.T, ctl *catctl) {
	const name = "ctl-lock/sig"
	loop := `trap 'echo terminated; exit 7' TERM; echo "ready $CATALOG_LEASE"; while :; do sleep 0.05; done`
	p := ctl.start(t, "lock", name, "--", "sh", "-c", loop)
	p.waitFor("the command", func(stdout, _ string) error {
		if !strings.HasPrefix(stdout, "ready ") {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})
	res := p.terminate()
	if res.code != 7 || !strings.Contains(res.stdout, "terminated") {
		t.Fatalf("SIGTERM to lock -- COMMAND: %v; want COMMAND to get it and catctl to exit with its status 7", res)
	}
	if st := ctlLockState(t, ctl, name); st != nil {
		t.Errorf("lock %s = %v after the command ended, want it released", name, st)
	}

	// The lease is revoked under the running command: it gets SIGTERM and
	// catctl fails.
	p = ctl.start(t, "lock", name, "--ttl", "3s", "--", "sh", "-c", loop)
	var lease int64
	p.waitFor("the command", func(stdout, _ string) error {
		if _, err := fmt.Sscanf(stdout, "ready %d", &lease); err != nil {
			return fmt.Errorf("stdout %q: %v", stdout, err)
		}
		return nil
	})
	ctl.ok(t, "lease", "revoke", strconv.FormatInt(lease, 10))
	res = p.wait()
	if res.code != 1 || !strings.Contains(res.stdout, "terminated") ||
		!strings.Contains(res.stderr, fmt.Sprintf(`Error: lost lock "ctl-lock/sig" (token`)) ||
		!strings.Contains(res.stderr, fmt.Sprintf("while sh ran: lease %d expired or was revoked; sh was sent SIGTERM and exited with status 7", lease)) {
		t.Fatalf("lock -- COMMAND whose lease was revoked: %v; want COMMAND terminated and exit code 1 saying the lock was lost", res)
	}

	// Interrupted while waiting: the wait is removed, the command never runs.
	holder := ctl.start(t, "lock", name)
	holder.waitHold("the lock", "locked "+name+" with token %d on lease %d\n")
	waiter := ctl.start(t, "lock", name, "--", "sh", "-c", "echo ran")
	ctlWaitWaiters(t, ctl, name, 1)
	res = waiter.interrupt()
	if res.code != 1 || res.stdout != "" || !strings.Contains(res.stderr, `interrupted while waiting for lock "ctl-lock/sig" (no longer waiting)`) {
		t.Errorf("interrupted waiting lock: %v; want exit code 1, the command not run", res)
	}
	if st := ctlWaitWaiters(t, ctl, name, 0); len(st.GetHolders()) != 1 {
		t.Errorf("lock %s = %v, want the holder alone", name, st)
	}
	holder.interrupt()
}

func testCatctlElect(t *testing.T, ctl *catctl) {
	const name = "ctl-elect"
	listener := ctl.start(t, "elect", name, "--listen")
	listener.waitFor("no leader", func(stdout, _ string) error {
		if !strings.HasSuffix(stdout, " no leader of "+name+"\n") {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})
	one := ctl.start(t, "elect", name, "one")
	h1 := one.waitHold("leadership", "elected leader of "+name+" with token %d on lease %d\n")
	two := ctl.start(t, "elect", name, "two")
	ctlWaitWaiters(t, ctl, name, 1)
	checkRow(t, "lock ls --kind election", tableRow(t, ctl.ok(t, "lock", "ls", name, "--kind", "election"), "NAME", name),
		map[string]string{"KIND": "election", "HOLDERS": strconv.FormatInt(h1.lease, 10), "TOKENS": strconv.FormatUint(h1.token, 10)})
	leads := func(h ctlHold, value string) string {
		return fmt.Sprintf(" leader of %s: lease %d, token %d, value %s\n", name, h.lease, h.token, value)
	}
	listener.waitFor("the first leader", func(stdout, _ string) error {
		if !strings.Contains(stdout, leads(h1, "one")) {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})

	res := one.terminate()
	if res.code != 0 || !strings.Contains(res.stderr, fmt.Sprintf("resigned leadership of %s (token %d)\n", name, h1.token)) {
		t.Fatalf("SIGTERM to the leader: %v; want exit code 0 after resigning", res)
	}
	h2 := two.waitHold("leadership", "elected leader of "+name+" with token %d on lease %d\n")
	if h2.token <= h1.token || h2.lease == h1.lease {
		t.Errorf("second leader %+v, want another lease with a token above %d", h2, h1.token)
	}
	listener.waitFor("the second leader", func(stdout, _ string) error {
		if !strings.Contains(stdout, leads(h2, "two")) {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})
	var cur catalogpb.LeaderResponse
	jsonListener := ctl.start(t, "-o", "json", "elect", name, "-l")
	jsonListener.waitFor("the leader as JSON", func(stdout, _ string) error {
		first, _, ok := strings.Cut(stdout, "\n")
		if !ok {
			return fmt.Errorf("stdout %q", stdout)
		}
		return protojson.Unmarshal([]byte(first), &cur)
	})
	if !cur.GetHasLeader() || cur.GetLeader().GetToken() != h2.token || string(cur.GetValue()) != "two" || cur.GetLeader().GetName() != name {
		t.Errorf("elect --listen -o json printed %v, want leader token %d with value two", &cur, h2.token)
	}
	jsonListener.interrupt()

	two.interrupt()
	listener.waitFor("no leader again", func(stdout, _ string) error {
		ls := lines(stdout)
		if len(ls) < 4 || !strings.HasSuffix(ls[len(ls)-1], " no leader of "+name) {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})
	if res := listener.interrupt(); res.code != 0 {
		t.Errorf("interrupted elect --listen: %v; want exit code 0", res)
	}
	// Each line was one change: none, one, two, none.
	ls := lines(listener.stdout.String())
	if len(ls) != 4 {
		t.Errorf("elect --listen printed %q, want 4 changes", ls)
	}
}

func testCatctlSem(t *testing.T, ctl *catctl) {
	const name = "ctl-sem"
	holder := ctl.start(t, "sem", "acquire", name, "--permits", "3", "--take", "2")
	h := holder.waitHold("the permits", "acquired 2 of 3 permits of "+name+" with token %d on lease %d\n")
	checkRow(t, "lock ls", tableRow(t, ctl.ok(t, "lock", "ls", name), "NAME", name), map[string]string{"KIND": "semaphore", "LIMIT": "3",
		"HOLDERS": fmt.Sprintf("%d(2)", h.lease), "TOKENS": strconv.FormatUint(h.token, 10), "WAITERS": "-"})

	// One permit is left: a command taking it runs now.
	out := ctl.ok(t, "sem", "acquire", name, "--permits", "3", "--", "sh", "-c", "echo $CATALOG_FENCE")
	if tok := ctlParseToken(t, "CATALOG_FENCE", out); tok <= h.token {
		t.Errorf("sem acquire -- COMMAND ran with token %d, want more than %d", tok, h.token)
	}
	ctl.fails(t, []string{fmt.Sprintf(`semaphore "ctl-sem" is held by lease %d (token %d); --try does not wait`, h.lease, h.token)},
		"sem", "acquire", name, "--permits", "3", "--take", "2", "--try")
	ctl.fails(t, []string{"permits exceeded", `"ctl-sem"`, "3"}, "sem", "acquire", name, "--permits", "5", "--try")
	ctl.fails(t, []string{"name in use as another kind", fmt.Sprintf("held by lease %d (token %d)", h.lease, h.token)}, "lock", name, "--try")

	res := holder.interrupt()
	if res.code != 0 || res.stderr != fmt.Sprintf("released 2 permits of %s (token %d)\n", name, h.token) {
		t.Errorf("interrupted sem acquire: %v; want exit code 0 after releasing", res)
	}
	if st := ctlLockState(t, ctl, name); st != nil {
		t.Errorf("semaphore %s = %v after the release, want it gone", name, st)
	}
	// Gone, it may come back with another limit.
	ctl.ok(t, "sem", "acquire", name, "--permits", "5", "--take", "5", "--", "true")
}

func testCatctlBarrier(t *testing.T, ctl *catctl) {
	const name = "ctl-barrier"
	if out := ctl.ok(t, "barrier", "wait", name); out != "barrier ctl-barrier is not set\n" {
		t.Errorf("barrier wait of an unset barrier printed %q", out)
	}
	if out := ctl.ok(t, "barrier", "set", name); out != "OK\n" {
		t.Errorf("barrier set printed %q, want OK", out)
	}
	ctl.ok(t, "barrier", "set", name)
	checkRow(t, "barrier ls", tableRow(t, ctl.ok(t, "barrier", "ls", "ctl-b"), "NAME", name),
		map[string]string{"KIND": "simple", "LEASE": "-", "COUNT": "-", "PARTICIPANTS": "-", "OPEN": "-"})
	waiter := ctl.start(t, "barrier", "wait", name)
	// Nothing tells when the wait reached the server; the release must let
	// it through whenever it arrives.
	waiter.running()
	if out := ctl.ok(t, "barrier", "release", name); out != "OK\n" {
		t.Errorf("barrier release printed %q, want OK", out)
	}
	if res := waiter.wait(); res.code != 0 || res.stdout != "barrier ctl-barrier is not set\n" {
		t.Errorf("barrier wait: %v; want exit code 0 once released", res)
	}
	ctl.fails(t, []string{`release barrier "ctl-barrier": it is not set`}, "barrier", "release", name)

	// A barrier set on a lease goes with it.
	var grant catalogpb.LeaseGrantResponse
	ctl.json(t, &grant, "lease", "grant", "30")
	lease := strconv.FormatInt(grant.GetId(), 10)
	ctl.ok(t, "barrier", "set", name, "--lease", lease)
	checkRow(t, "barrier ls", tableRow(t, ctl.ok(t, "barrier", "ls"), "NAME", name), map[string]string{"KIND": "simple", "LEASE": lease})
	waiter = ctl.start(t, "barrier", "wait", name)
	ctl.ok(t, "lease", "revoke", lease)
	if res := waiter.wait(); res.code != 0 {
		t.Errorf("barrier wait: %v; want exit code 0 once the lease was revoked", res)
	}
	var ls catalogpb.ListBarriersResponse
	ctl.json(t, &ls, "barrier", "ls", name)
	if len(ls.GetBarriers()) != 0 {
		t.Errorf("barrier ls after the revoke: %v, want none", ls.GetBarriers())
	}
}

func testCatctlDoubleBarrier(t *testing.T, ctl *catctl) {
	const name = "ctl-double"
	var grant catalogpb.LeaseGrantResponse
	ctl.json(t, &grant, "lease", "grant", "60")
	lease := strconv.FormatInt(grant.GetId(), 10)

	first := ctl.start(t, "barrier", "enter", name, "--count", "3")
	worker := ctl.start(t, "barrier", "enter", name, "--count", "3", "--", "sh", "-c", "echo inside; exit 3")
	framework.Eventually(t, stepWait, "two participants", func(context.Context) error {
		var ls catalogpb.ListBarriersResponse
		ctl.json(t, &ls, "barrier", "ls", name)
		if len(ls.GetBarriers()) != 1 || len(ls.GetBarriers()[0].GetParticipants()) != 2 || ls.GetBarriers()[0].GetOpen() {
			return fmt.Errorf("barriers %v", ls.GetBarriers())
		}
		return nil
	})
	checkRow(t, "barrier ls", tableRow(t, ctl.ok(t, "barrier", "ls", name), "NAME", name),
		map[string]string{"KIND": "double", "LEASE": "-", "COUNT": "3", "OPEN": "false"})
	if worker.stdout.String() != "" {
		t.Errorf("the command ran before the barrier opened: %q", worker.stdout.String())
	}
	ctl.fails(t, []string{"barrier mismatch", "3 participants", "count 2"}, "barrier", "enter", name, "--count", "2", "--lease", lease)

	out := ctl.ok(t, "barrier", "enter", name, "--count", "3", "--lease", lease)
	if want := regexp.MustCompile(fmt.Sprintf(`^entered barrier %s with lease %s \(fencing token [1-9][0-9]*\): 3 participants are in\n$`, name, lease)); !want.MatchString(out) {
		t.Errorf("barrier enter --lease printed %q, want %q", out, want)
	}
	first.waitFor("the barrier open", func(stdout, _ string) error {
		if !strings.HasPrefix(stdout, "entered barrier "+name+" with lease ") {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})
	worker.waitFor("the command", func(stdout, _ string) error {
		if stdout != "inside\n" {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})
	checkRow(t, "barrier ls", tableRow(t, ctl.ok(t, "barrier", "ls", name), "NAME", name), map[string]string{"OPEN": "true"})
	// Open: no one else may enter.
	ctl.json(t, &grant, "lease", "grant", "60")
	ctl.fails(t, []string{"barrier mismatch"}, "barrier", "enter", name, "--count", "3", "--lease", strconv.FormatInt(grant.GetId(), 10))

	// The command has exited and its participant left; the two others stay
	// until they leave, and no one finishes before.
	if err := first.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	first.waitFor("the leave", func(_, stderr string) error {
		if stderr != "leaving barrier ctl-double; waiting for every participant to leave\n" {
			return fmt.Errorf("stderr %q", stderr)
		}
		return nil
	})
	worker.running()
	first.running()
	out = ctl.ok(t, "barrier", "leave", name, "--lease", lease)
	if out != "left barrier ctl-double: every participant has left\n" {
		t.Errorf("barrier leave printed %q", out)
	}
	if res := first.wait(); res.code != 0 || !strings.HasSuffix(res.stdout, "left barrier ctl-double: every participant has left\n") {
		t.Errorf("interrupted barrier enter: %v; want exit code 0 once all left", res)
	}
	if res := worker.wait(); res.code != 3 {
		t.Errorf("barrier enter -- COMMAND: %v; want COMMAND's exit status 3", res)
	}
	ctl.fails(t, []string{"not entered", fmt.Sprintf("lease %s has not entered barrier", lease)}, "barrier", "leave", name, "--lease", lease)
	var ls catalogpb.ListBarriersResponse
	ctl.json(t, &ls, "barrier", "ls", name)
	if len(ls.GetBarriers()) != 0 {
		t.Errorf("barrier ls after all left: %v, want none", ls.GetBarriers())
	}
}

func testCatctlQueue(t *testing.T, ctl *catctl) {
	const name = "ctl-queue"
	var ids []uint64
	push := func(args ...string) {
		t.Helper()
		out := ctl.ok(t, append([]string{"queue", "push", name}, args...)...)
		var id uint64
		if _, err := fmt.Sscanf(out, "pushed item %d to "+name+"\n", &id); err != nil {
			t.Fatalf("queue push printed %q: %v", out, err)
		}
		ids = append(ids, id)
	}
	push("hello")
	push("two words")
	file := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(file, []byte("line1\nline2"), 0o644); err != nil {
		t.Fatal(err)
	}
	push("--file", file)
	if !slices.IsSorted(ids) || ids[0] == ids[1] || ids[1] == ids[2] {
		t.Fatalf("item ids %v, want increasing", ids)
	}
	id := func(i int) string { return strconv.FormatUint(ids[i], 10) }

	checkRow(t, "queue ls", tableRow(t, ctl.ok(t, "queue", "ls", "--prefix", "ctl-q"), "NAME", name),
		map[string]string{"DEPTH": "3", "IN FLIGHT": "0", "CONSUMERS": "-"})
	out := ctl.ok(t, "queue", "ls", name, "--items")
	if !strings.HasPrefix(out, "queue ctl-queue: depth 3, in flight 0, consumers waiting -\n") {
		t.Errorf("queue ls NAME printed %q", out)
	}
	checkRow(t, "first item", tableRow(t, out, "ID", id(0)), map[string]string{"STATE": "ready", "DELIVERIES": "0", "PAYLOAD": "hello"})
	checkRow(t, "third item", tableRow(t, out, "ID", id(2)), map[string]string{"PAYLOAD": `"line1\nline2"`})

	if out := ctl.ok(t, "queue", "pop", name, "--ack"); out != id(0)+" hello\n" {
		t.Errorf("queue pop --ack printed %q, want the first item", out)
	}
	var grant catalogpb.LeaseGrantResponse
	ctl.json(t, &grant, "lease", "grant", "60")
	lease := strconv.FormatInt(grant.GetId(), 10)
	res := ctl.run(t, "queue", "pop", name, "--lease", lease)
	inFlight := regexp.MustCompile(fmt.Sprintf(`^item %s is in flight on lease %s \(fencing token [1-9][0-9]*, fence name %s/%s\) until 'catctl queue ack %s %s --lease %s'\n$`,
		id(1), lease, name, id(1), name, id(1), lease))
	if res.code != 0 || res.stdout != id(1)+" two words\n" || !inFlight.MatchString(res.stderr) {
		t.Errorf("queue pop --lease: %v; want the second item, in flight on the lease", res)
	}
	out = ctl.ok(t, "queue", "ls", name)
	if !strings.HasPrefix(out, "queue ctl-queue: depth 1, in flight 1, consumers waiting -\n") {
		t.Errorf("queue ls NAME printed %q", out)
	}
	checkRow(t, "item in flight", tableRow(t, out, "ID", id(1)), map[string]string{"STATE": "in-flight", "CONSUMER": lease, "DELIVERIES": "1"})

	// The lease ends before the ack: the item goes back to the head.
	ctl.ok(t, "lease", "revoke", lease)
	checkRow(t, "item back", tableRow(t, ctl.ok(t, "queue", "ls", name, "--items"), "ID", id(1)),
		map[string]string{"STATE": "ready", "CONSUMER": "-", "DELIVERIES": "1"})
	ctl.json(t, &grant, "lease", "grant", "60")
	lease = strconv.FormatInt(grant.GetId(), 10)
	if out := ctl.ok(t, "queue", "pop", name, "--lease", lease); out != id(1)+" two words\n" {
		t.Errorf("queue pop after the revoke printed %q, want the second item again", out)
	}
	ctl.fails(t, []string{fmt.Sprintf(`queue "ctl-queue" has no item %s handed to lease`, id(2))}, "queue", "ack", name, id(2), "--lease", lease)
	if out := ctl.ok(t, "queue", "ack", name, id(1), "--lease", lease); out != "OK\n" {
		t.Errorf("queue ack printed %q, want OK", out)
	}
	ctl.fails(t, []string{fmt.Sprintf(`queue "ctl-queue" has no item %s handed to lease %s`, id(1), lease)}, "queue", "ack", name, id(1), "--lease", lease)

	var item catalogpb.QueueItem
	ctl.json(t, &item, "queue", "pop", name, "--ack")
	if item.GetId() != ids[2] || string(item.GetPayload()) != "line1\nline2" || item.GetDeliveries() != 1 {
		t.Errorf("queue pop -o json = %v, want item %d with the file's payload", &item, ids[2])
	}
	ctl.fails(t, []string{`queue "ctl-queue" is empty`}, "queue", "pop", name, "--ack", "--try")

	// A consumer waits; a push hands it the item.
	consumer := ctl.start(t, "queue", "pop", name, "--ack")
	framework.Eventually(t, stepWait, "a waiting consumer", func(context.Context) error {
		var st catalogpb.QueueStatusResponse
		ctl.json(t, &st, "queue", "ls", name)
		if len(st.GetStatus().GetConsumers()) != 1 {
			return fmt.Errorf("status %v", &st)
		}
		return nil
	})
	row := tableRow(t, ctl.ok(t, "queue", "ls"), "NAME", name)
	if row["CONSUMERS"] == "-" || row["DEPTH"] != "0" {
		t.Errorf("queue ls row %v, want one waiting consumer and no items", row)
	}
	push("late")
	if res := consumer.wait(); res.code != 0 || res.stdout != id(3)+" late\n" {
		t.Errorf("waiting queue pop: %v; want the pushed item", res)
	}
	// Without items or consumers, the queue is gone.
	var st catalogpb.QueueStatusResponse
	ctl.json(t, &st, "queue", "ls", name)
	if s := st.GetStatus(); s.GetDepth() != 0 || len(s.GetInFlight()) != 0 || len(s.GetConsumers()) != 0 {
		t.Errorf("queue ls after the last ack: %v, want an empty queue", s)
	}
	if rows := parseTable(t, ctl.ok(t, "queue", "ls", "--prefix", name), "NAME"); len(rows) != 0 {
		t.Errorf("queue ls lists %v, want no queue left", rows)
	}
}

func testCatctlCoordinationBadInput(t *testing.T, ctl *catctl) {
	var grant catalogpb.LeaseGrantResponse
	ctl.json(t, &grant, "lease", "grant", "60")
	lease := strconv.FormatInt(grant.GetId(), 10)
	long := strings.Repeat("n", 600)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"lock name too long", []string{"lock", long, "--try"}, []string{"512", "600"}},
		{"lock name with a control character", []string{"lock", "bad\x01name", "--try"}, []string{"control"}},
		{"lock on a lease that does not exist", []string{"lock", "ctl-bad/lock", "--lease", "123456789"}, []string{"lease 123456789", "not found"}},
		{"elect on a lease that does not exist", []string{"elect", "ctl-bad/elect", "v", "--lease", "123456789"}, []string{"lease 123456789", "not found"}},
		{"listen to a bad election name", []string{"elect", long, "--listen"}, []string{"512", "600"}},
		{"leave without enter", []string{"barrier", "leave", "ctl-bad/barrier", "--lease", lease}, []string{"not entered", "lease " + lease}},
		{"ack of an unknown item", []string{"queue", "ack", "ctl-bad/queue", "7", "--lease", lease}, []string{`queue "ctl-bad/queue" has no item 7 handed to lease ` + lease}},
		{"ack on a lease that does not exist", []string{"queue", "ack", "ctl-bad/queue", "7", "--lease", "123456789"}, []string{"lease 123456789", "not found"}},
		{"pop on a lease that does not exist", []string{"queue", "pop", "ctl-bad/queue", "--lease", "123456789"}, []string{"lease 123456789", "not found"}},
		{"barrier set on a lease that does not exist", []string{"barrier", "set", "ctl-bad/barrier", "--lease", "123456789"}, []string{"lease 123456789", "not found"}},
		{"sem acquire more than the limit", []string{"sem", "acquire", "ctl-bad/sem", "--permits", "2", "--take", "3"}, []string{"--take must be 1..--permits (2), got 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) { ctl.fails(t, tc.want, tc.args...) })
	}
	t.Run("payload too large", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "big")
		if err := os.WriteFile(file, make([]byte, 2<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		ctl.fails(t, []string{"is more than 1048576 bytes, the most a queue item holds"}, "queue", "push", "ctl-bad/queue", "--file", file)
	})
	// Nothing was changed by the refused requests.
	var locks catalogpb.ListLocksResponse
	ctl.json(t, &locks, "lock", "ls", "ctl-bad/")
	var queues catalogpb.ListQueuesResponse
	ctl.json(t, &queues, "queue", "ls", "--prefix", "ctl-bad/")
	var barriers catalogpb.ListBarriersResponse
	ctl.json(t, &barriers, "barrier", "ls", "ctl-bad/")
	if len(locks.GetLocks())+len(queues.GetQueues())+len(barriers.GetBarriers()) != 0 {
		t.Errorf("after refused requests: locks %v, queues %v, barriers %v; want none", locks.GetLocks(), queues.GetQueues(), barriers.GetBarriers())
	}
}

func testCatctlCoordinationBench(t *testing.T, ctl *catctl) {
	t.Run("lock", func(t *testing.T) {
		out := ctl.ok(t, "bench", "lock", "--clients", "3", "--locks", "2", "--total", "60", "--prefix", "ctl-bench-lock/")
		if got := histogramCounts(out); !slices.Equal(got, []int{60}) || !strings.Contains(out, "3 clients on 2 locks: a request is one lock+unlock cycle") ||
			!strings.Contains(out, "Requests/sec:") || strings.Contains(out, "Error distribution") {
			t.Errorf("bench lock printed %q, want a report of 60 cycles without errors", out)
		}
		if st := ctlLockState(t, ctl, "ctl-bench-lock/0"); st != nil {
			t.Errorf("bench lock left %v", st)
		}
	})
	t.Run("election-failover", func(t *testing.T) {
		out := ctl.ok(t, "bench", "election-failover", "--runs", "3", "--name", "ctl-bench-election")
		if !strings.Contains(out, "Election failover, 3 runs") {
			t.Errorf("bench election-failover printed %q", out)
		}
		for _, from := range []string{"the revoke's response", "the revoke's request", "the revoke's proposal"} {
			row := tableRow(t, out, "FROM", from)
			for _, col := range []string{"MIN", "P50", "P90", "P99", "MAX"} {
				if !strings.HasSuffix(row[col], "ms") {
					t.Errorf("bench election-failover: %s %s = %q, want a duration in ms", from, col, row[col])
				}
			}
		}
	})
}
