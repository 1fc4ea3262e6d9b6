package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/tests/framework"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TestCatctlRegistry runs the catctl binary's service, lease, watch, shard
// and registry bench commands against a 3-member cluster, and checks what
// they print (tables, and -o json decoded into the API's messages) and their
// exit codes. Each subtest uses its own services, keys and leases, so they
// run in parallel on one cluster.
func TestCatctlRegistry(t *testing.T) {
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

	t.Run("Service", func(t *testing.T) { t.Parallel(); testCatctlService(t, ctl) })
	t.Run("Filters", func(t *testing.T) { t.Parallel(); testCatctlFilters(t, ctl) })
	t.Run("RegisterWithTTL", func(t *testing.T) { t.Parallel(); testCatctlRegisterWithTTL(t, ctl) })
	t.Run("Lease", func(t *testing.T) { t.Parallel(); testCatctlLease(t, ctl) })
	t.Run("LeaseKeepAlive", func(t *testing.T) { t.Parallel(); testCatctlLeaseKeepAlive(t, ctl) })
	t.Run("WatchService", func(t *testing.T) { t.Parallel(); testCatctlWatchService(t, ctl, cli) })
	t.Run("WatchPrefix", func(t *testing.T) { t.Parallel(); testCatctlWatchPrefix(t, ctl, cli) })
	t.Run("Shard", func(t *testing.T) { t.Parallel(); testCatctlShard(t, ctl) })
	t.Run("BadInput", func(t *testing.T) { t.Parallel(); testCatctlBadInput(t, ctl) })
	t.Run("Bench", func(t *testing.T) { t.Parallel(); testCatctlBench(t, ctl) })
}

// buildCatctl builds cmd/catctl into bin.
func buildCatctl(bin string) error {
	build := exec.Command("go", "build", "-o", bin, "github.com/catalogd/catalogd/cmd/catctl")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build catctl: %v\n%s", err, out)
	}
	return nil
}

// catctlWait bounds one catctl command; the bench commands take the longest
// (bench instances holds its instances for 2s).
const catctlWait = 30 * time.Second

// A catctl runs the catctl binary against the test's cluster.
type catctl struct {
	bin       string
	endpoints string
}

// A ctlResult is what a catctl process printed and its exit code.
type ctlResult struct {
	stdout, stderr string
	code           int
}

func (r ctlResult) String() string {
	return fmt.Sprintf("exit code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

func (ctl *catctl) command(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, ctl.bin, append([]string{"--endpoints", ctl.endpoints}, args...)...)
	cmd.Env = append(os.Environ(), "CATALOG_ENDPOINTS=")
	return cmd
}

// run runs catctl with args until it exits.
func (ctl *catctl) run(t *testing.T, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), catctlWait)
	defer cancel()
	cmd := ctl.command(ctx, args)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := ctlResult{stdout: stdout.String(), stderr: stderr.String()}
	if exit, ok := errors.AsType[*exec.ExitError](err); ok && ctx.Err() == nil {
		res.code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("catctl %s: %v; stdout %q, stderr %q", strings.Join(args, " "), err, res.stdout, res.stderr)
	}
	return res
}

// ok runs catctl, fails t unless it exits 0, and returns its stdout.
func (ctl *catctl) ok(t *testing.T, args ...string) string {
	t.Helper()
	res := ctl.run(t, args...)
	if res.code != 0 {
		t.Fatalf("catctl %s: %v; want exit code 0", strings.Join(args, " "), res)
	}
	return res.stdout
}

// fails runs catctl and checks that it exits 1 with an error message on
// stderr that contains each of want.
func (ctl *catctl) fails(t *testing.T, want []string, args ...string) {
	t.Helper()
	res := ctl.run(t, args...)
	if res.code != 1 {
		t.Errorf("catctl %s: %v; want exit code 1", strings.Join(args, " "), res)
		return
	}
	if !strings.HasPrefix(res.stderr, "Error: ") {
		t.Errorf("catctl %s: stderr %q does not start with \"Error: \"", strings.Join(args, " "), res.stderr)
	}
	for _, w := range want {
		if !strings.Contains(res.stderr, w) {
			t.Errorf("catctl %s: stderr %q does not say %q", strings.Join(args, " "), res.stderr, w)
		}
	}
}

// json runs catctl -o json with args and decodes its stdout into m.
func (ctl *catctl) json(t *testing.T, m proto.Message, args ...string) {
	t.Helper()
	out := ctl.ok(t, append([]string{"-o", "json"}, args...)...)
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("catctl -o json %s printed %q, not a %s: %v", strings.Join(args, " "), out, m.ProtoReflect().Descriptor().Name(), err)
	}
}

// A ctlProcess is a catctl command that runs until interrupted.
type ctlProcess struct {
	t              *testing.T
	args           []string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	donec          chan struct{}
	err            error
}

// start starts catctl with args; it is killed when t ends if it still runs.
func (ctl *catctl) start(t *testing.T, args ...string) *ctlProcess {
	t.Helper()
	p := &ctlProcess{t: t, args: args, donec: make(chan struct{})}
	p.cmd = ctl.command(t.Context(), args)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start catctl %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.donec)
	}()
	return p
}

// waitFor waits until cond accepts what the process printed so far; it fails
// t if the process exits first.
func (p *ctlProcess) waitFor(what string, cond func(stdout, stderr string) error) {
	p.t.Helper()
	framework.Eventually(p.t, stepWait, what, func(context.Context) error {
		err := cond(p.stdout.String(), p.stderr.String())
		if err == nil {
			return nil
		}
		select {
		case <-p.donec:
			p.t.Fatalf("catctl %s exited (%v) before %s: %v; stdout %q, stderr %q",
				strings.Join(p.args, " "), p.err, what, err, p.stdout.String(), p.stderr.String())
		default:
		}
		return err
	})
}

// running fails t if the process has exited.
func (p *ctlProcess) running() {
	p.t.Helper()
	select {
	case <-p.donec:
		p.t.Fatalf("catctl %s exited: %v; stdout %q, stderr %q", strings.Join(p.args, " "), p.err, p.stdout.String(), p.stderr.String())
	default:
	}
}

// interrupt sends SIGINT, as Ctrl-C does, and waits for the process to exit.
func (p *ctlProcess) interrupt() ctlResult {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		p.t.Fatalf("interrupt catctl %s: %v", strings.Join(p.args, " "), err)
	}
	return p.wait()
}

// wait waits for the process to exit on its own.
func (p *ctlProcess) wait() ctlResult {
	p.t.Helper()
	select {
	case <-p.donec:
	case <-time.After(stepWait):
		p.t.Fatalf("catctl %s still runs after %v; stdout %q, stderr %q", strings.Join(p.args, " "), stepWait, p.stdout.String(), p.stderr.String())
	}
	res := ctlResult{stdout: p.stdout.String(), stderr: p.stderr.String()}
	if exit, ok := errors.AsType[*exec.ExitError](p.err); ok && exit.Exited() {
		res.code = exit.ExitCode()
	} else if p.err != nil {
		p.t.Fatalf("catctl %s: %v; stdout %q, stderr %q", strings.Join(p.args, " "), p.err, res.stdout, res.stderr)
	}
	return res
}

// A syncBuffer is a bytes.Buffer that a process writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines splits output into its non-empty lines.
func lines(out string) []string {
	var ls []string
	for l := range strings.SplitSeq(out, "\n") {
		if l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// parseTable reads the table in out whose header line starts with first:
// one map per row, from column name to cell. Columns are found by where
// their names start in the header (names are separated by at least two
// spaces); the rows end at the first empty line.
func parseTable(t *testing.T, out, first string) []map[string]string {
	t.Helper()
	all := strings.Split(out, "\n")
	start := slices.IndexFunc(all, func(l string) bool { return strings.HasPrefix(l, first+" ") })
	if start < 0 {
		t.Fatalf("no table with a %s column in %q", first, out)
	}
	header := all[start]
	type column struct {
		name string
		at   int
	}
	var cols []column
	for _, loc := range regexp.MustCompile(`\S+( \S+)*`).FindAllStringIndex(header, -1) {
		cols = append(cols, column{header[loc[0]:loc[1]], loc[0]})
	}
	var rows []map[string]string
	for _, l := range all[start+1:] {
		if strings.TrimSpace(l) == "" {
			break
		}
		row := make(map[string]string, len(cols))
		for i, c := range cols {
			end := len(l)
			if i+1 < len(cols) {
				end = min(cols[i+1].at, len(l))
			}
			if c.at < end {
				row[c.name] = strings.TrimSpace(l[c.at:end])
			} else {
				row[c.name] = ""
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// tableRow returns the row of the table in out whose first column (first)
// holds key.
func tableRow(t *testing.T, out, first, key string) map[string]string {
	t.Helper()
	for _, row := range parseTable(t, out, first) {
		if row[first] == key {
			return row
		}
	}
	t.Fatalf("no row %s=%s in %q", first, key, out)
	return nil
}

// checkRow checks the cells of row named in want.
func checkRow(t *testing.T, what string, row, want map[string]string) {
	t.Helper()
	for col, w := range want {
		if got := row[col]; got != w {
			t.Errorf("%s: %s = %q, want %q (row %v)", what, col, got, w, row)
		}
	}
}

func idList(insts []*catalogpb.Instance) string {
	ids := make([]string, len(insts))
	for i, in := range insts {
		ids[i] = in.GetId()
	}
	return strings.Join(ids, ",")
}

func testCatctlService(t *testing.T, ctl *catctl) {
	const svc = "ctl-orders"
	if out := ctl.ok(t, "service", "set", svc, "--description", "Order API"); out != "OK\n" {
		t.Errorf("service set printed %q, want OK", out)
	}
	var put catalogpb.PutServiceResponse
	ctl.json(t, &put, "service", "set", svc, "--description", "Orders and their lines", "--owner", "team-a",
		"--tag", "public", "--meta", "tier=1")
	if s := put.GetService(); s.GetName() != svc || s.GetDescription() != "Orders and their lines" || s.GetOwner() != "team-a" ||
		!slices.Equal(s.GetTags(), []string{"public"}) || s.GetMetadata()["tier"] != "1" || s.GetModRevision() != put.GetHeader().GetRevision() {
		t.Errorf("service set -o json = %v, want the service as set, modified at the header's revision", &put)
	}

	out := ctl.ok(t, "service", "register", svc, "--id", "o-1", "--addr", "10.0.0.1:8080", "--tag", "v2", "--zone", "z1",
		"--meta", "env=prod", "--weight", "3", "--port", "http=8081")
	var rev int64
	if _, err := fmt.Sscanf(out, "registered ctl-orders/o-1 at revision %d\n", &rev); err != nil || rev <= put.GetHeader().GetRevision() {
		t.Errorf("service register printed %q (%v), want the registration's revision, after %d", out, err, put.GetHeader().GetRevision())
	}
	ctl.ok(t, "service", "register", svc, "--id", "o-2", "--addr", "10.0.0.2:8080", "--zone", "z2", "--state", "starting")
	var reg catalogpb.RegisterResponse
	ctl.json(t, &reg, "service", "register", svc, "--id", "o-3", "--addr", "10.0.0.3:8080", "--zone", "z1", "--tag", "v2", "--tag", "canary")
	if in := reg.GetInstance(); in.GetService() != svc || in.GetId() != "o-3" || in.GetAddress() != "10.0.0.3:8080" ||
		in.GetState() != catalogpb.InstanceState_STATE_SERVING || in.GetHealth() != catalogpb.HealthStatus_PASSING ||
		in.GetWeight() != 1 || in.GetLease() != 0 || !slices.Equal(in.GetTags(), []string{"v2", "canary"}) {
		t.Errorf("service register -o json = %v, want o-3 serving, passing, weight 1, no lease, tags v2,canary", &reg)
	}

	out = ctl.ok(t, "service", "get", svc)
	for _, want := range []string{"Service ctl-orders: 3 matching instances\n", "  description: Orders and their lines\n",
		"  owner: team-a\n", "  tags: public\n", "  metadata: tier=1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("service get printed %q, want a line %q", out, want)
		}
	}
	rows := parseTable(t, out, "ID")
	if len(rows) != 3 {
		t.Fatalf("service get lists %d instances, want 3: %q", len(rows), out)
	}
	checkRow(t, "o-1", rows[0], map[string]string{"ID": "o-1", "ADDRESS": "10.0.0.1:8080", "STATE": "serving", "HEALTH": "passing",
		"ZONE": "z1", "WEIGHT": "3", "LEASE": "-", "TAGS": "v2", "OUTPUT": ""})
	checkRow(t, "o-2", rows[1], map[string]string{"ID": "o-2", "ADDRESS": "10.0.0.2:8080", "STATE": "starting", "HEALTH": "passing",
		"ZONE": "z2", "WEIGHT": "1", "LEASE": "-", "TAGS": ""})
	checkRow(t, "o-3", rows[2], map[string]string{"ID": "o-3", "STATE": "serving", "TAGS": "v2,canary"})

	var got catalogpb.GetServiceResponse
	ctl.json(t, &got, "service", "get", svc)
	if got.GetCount() != 3 || idList(got.GetInstances()) != "o-1,o-2,o-3" || got.GetService().GetOwner() != "team-a" {
		t.Fatalf("service get -o json = %v, want o-1,o-2,o-3 of a service owned by team-a", &got)
	}
	if o1 := got.GetInstances()[0]; o1.GetPorts()["http"] != 8081 || o1.GetMetadata()["env"] != "prod" || o1.GetWeight() != 3 || o1.GetZone() != "z1" {
		t.Errorf("o-1 = %v, want port http=8081, metadata env=prod, weight 3, zone z1", o1)
	}

	out = ctl.ok(t, "service", "ls")
	checkRow(t, "service ls", tableRow(t, out, "NAME", svc), map[string]string{"INSTANCES": "3", "PASSING": "3", "WARNING": "0",
		"CRITICAL": "0", "SERVING": "2", "OWNER": "team-a", "TAGS": "public"})
	var ls catalogpb.ListServicesResponse
	ctl.json(t, &ls, "service", "ls", "--tag", "public")
	i := slices.IndexFunc(ls.GetServices(), func(s *catalogpb.ServiceSummary) bool { return s.GetService().GetName() == svc })
	if i < 0 {
		t.Fatalf("service ls --tag public -o json does not list %s: %v", svc, &ls)
	}
	if s := ls.GetServices()[i]; s.GetInstances() != 3 || s.GetPassing() != 3 || s.GetServing() != 2 {
		t.Errorf("service ls -o json: %v, want 3 instances, 3 passing, 2 serving", s)
	}
	ctl.json(t, &ls, "service", "ls", "--tag", "no-such-tag")
	if slices.ContainsFunc(ls.GetServices(), func(s *catalogpb.ServiceSummary) bool { return s.GetService().GetName() == svc }) {
		t.Errorf("service ls --tag no-such-tag lists %s", svc)
	}

	if out := ctl.ok(t, "service", "health", svc, "--id", "o-1", "critical", "--output", "disk full"); out != "OK\n" {
		t.Errorf("service health printed %q, want OK", out)
	}
	if out := ctl.ok(t, "service", "state", svc, "--id", "o-3", "draining"); out != "OK\n" {
		t.Errorf("service state printed %q, want OK", out)
	}
	out = ctl.ok(t, "service", "get", svc)
	checkRow(t, "o-1 after service health", tableRow(t, out, "ID", "o-1"), map[string]string{"HEALTH": "critical", "STATE": "serving", "OUTPUT": "disk full"})
	checkRow(t, "o-3 after service state", tableRow(t, out, "ID", "o-3"), map[string]string{"HEALTH": "passing", "STATE": "draining"})
	checkRow(t, "service ls after the changes", tableRow(t, ctl.ok(t, "service", "ls"), "NAME", svc),
		map[string]string{"INSTANCES": "3", "PASSING": "2", "CRITICAL": "1", "SERVING": "1"})

	if out := ctl.ok(t, "service", "deregister", svc, "--id", "o-2"); out != "OK\n" {
		t.Errorf("service deregister printed %q, want OK", out)
	}
	ctl.fails(t, []string{"ctl-orders/o-2", "instance not found"}, "service", "deregister", svc, "--id", "o-2")
	ctl.fails(t, []string{`"ctl-orders"`, "still has 2 instances", "--force"}, "service", "delete", svc)
	var del catalogpb.DeleteServiceResponse
	ctl.json(t, &del, "service", "delete", svc, "--force")
	if del.GetDeletedInstances() != 2 {
		t.Errorf("service delete --force -o json = %v, want 2 instances deleted", &del)
	}
	ctl.fails(t, []string{`service "ctl-orders" does not exist`}, "service", "get", svc)
}

func testCatctlFilters(t *testing.T, ctl *catctl) {
	const svc = "ctl-filter"
	for _, args := range [][]string{
		{"--id", "f-1", "--addr", "10.1.0.1:80", "--zone", "z1", "--tag", "v2", "--meta", "env=prod"},
		{"--id", "f-2", "--addr", "10.1.0.2:80", "--zone", "z2", "--tag", "v1", "--meta", "env=dev", "--state", "starting"},
		{"--id", "f-3", "--addr", "10.1.0.3:80", "--zone", "z1", "--tag", "v2", "--tag", "canary", "--meta", "env=prod", "--meta", "team=search"},
		{"--id", "f-4", "--addr", "10.1.0.4:80", "--zone", "z2", "--tag", "v2"},
	} {
		ctl.ok(t, append([]string{"service", "register", svc}, args...)...)
	}
	ctl.ok(t, "service", "health", svc, "--id", "f-3", "critical")
	ctl.ok(t, "service", "health", svc, "--id", "f-4", "warning")

	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"none", nil, "f-1,f-2,f-3,f-4"},
		{"healthy", []string{"--healthy"}, "f-1,f-4"},
		{"tag", []string{"--tag", "v2"}, "f-1,f-3,f-4"},
		{"every tag", []string{"--tag", "v2", "--tag", "canary"}, "f-3"},
		{"zone", []string{"--zone", "z2"}, "f-2,f-4"},
		{"meta", []string{"--meta", "env=prod"}, "f-1,f-3"},
		{"every meta pair", []string{"--meta", "env=prod", "--meta", "team=search"}, "f-3"},
		{"state", []string{"--state", "starting"}, "f-2"},
		{"states", []string{"--state", "STATE_DRAINING", "--state", "Starting"}, "f-2"},
		{"health", []string{"--health", "critical"}, "f-3"},
		{"healths", []string{"--health", "critical", "--health", "warning"}, "f-3,f-4"},
		{"healthy in a zone", []string{"--healthy", "--zone", "z1"}, "f-1"},
		{"nothing matches", []string{"--zone", "z9"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"service", "get", svc}, tc.flags...)
			var got catalogpb.GetServiceResponse
			ctl.json(t, &got, args...)
			if ids := idList(got.GetInstances()); ids != tc.want {
				t.Errorf("catctl -o json %s: instances %q, want %q", strings.Join(args, " "), ids, tc.want)
			}
			want := lines(strings.ReplaceAll(tc.want, ",", "\n"))
			if got.GetCount() != int64(len(want)) {
				t.Errorf("catctl -o json %s: count %d, want %d", strings.Join(args, " "), got.GetCount(), len(want))
			}
			out := ctl.ok(t, args...)
			if head := fmt.Sprintf("Service %s: %d matching instances\n", svc, len(want)); !strings.HasPrefix(out, head) {
				t.Errorf("catctl %s printed %q, want it to start with %q", strings.Join(args, " "), out, head)
			}
			var ids []string
			if len(want) > 0 {
				for _, row := range parseTable(t, out, "ID") {
					ids = append(ids, row["ID"])
				}
			}
			if !slices.Equal(ids, want) {
				t.Errorf("catctl %s: table lists %v, want %v", strings.Join(args, " "), ids, want)
			}
		})
	}
}

func testCatctlRegisterWithTTL(t *testing.T, ctl *catctl) {
	const svc = "ctl-ttl"
	p := ctl.start(t, "service", "register", svc, "--id", "t-1", "--addr", "10.2.0.1:80", "--ttl", "3s", "--zone", "z1")
	var lease int64
	p.waitFor("the registration", func(_, stderr string) error {
		if _, err := fmt.Sscanf(stderr, "registered ctl-ttl/t-1 with lease %d (ttl 3s); keeping it alive until interrupted\n", &lease); err != nil {
			return fmt.Errorf("stderr %q: %v", stderr, err)
		}
		return nil
	})

	// Only renewals keep the instance past its lease's TTL.
	time.Sleep(4 * time.Second)
	p.running()
	var got catalogpb.GetServiceResponse
	ctl.json(t, &got, "service", "get", svc)
	if len(got.GetInstances()) != 1 || got.GetInstances()[0].GetId() != "t-1" || got.GetInstances()[0].GetLease() != lease {
		t.Fatalf("after 4s: %v, want t-1 still registered on lease %d", got.GetInstances(), lease)
	}
	out := ctl.ok(t, "lease", "ttl", strconv.FormatInt(lease, 10), "--items")
	var granted, remaining int64
	if _, err := fmt.Sscanf(out, "lease "+strconv.FormatInt(lease, 10)+" granted with TTL(%ds), remaining(%ds)\n", &granted, &remaining); err != nil || granted != 3 || remaining <= 0 {
		t.Errorf("lease ttl printed %q (%v), want a 3s lease with time left", out, err)
	}
	checkRow(t, "lease ttl --items", tableRow(t, out, "KIND", "instance"), map[string]string{"KEY": "ctl-ttl/t-1"})

	res := p.interrupt()
	if res.code != 0 || !strings.Contains(res.stderr, "deregistered ctl-ttl/t-1\n") {
		t.Fatalf("interrupted service register --ttl: %v; want exit code 0 after deregistering", res)
	}
	ctl.json(t, &got, "service", "get", svc)
	if got.GetCount() != 0 || len(got.GetInstances()) != 0 {
		t.Errorf("after the interrupt: %v, want no instance", got.GetInstances())
	}
	ctl.fails(t, []string{fmt.Sprintf("lease %d", lease), "not found"}, "lease", "ttl", strconv.FormatInt(lease, 10))
}

func testCatctlLease(t *testing.T, ctl *catctl) {
	out := ctl.ok(t, "lease", "grant", "10")
	var id int64
	if _, err := fmt.Sscanf(out, "lease %d granted with TTL(10s)\n", &id); err != nil || id <= 0 {
		t.Fatalf("lease grant printed %q (%v), want the lease's id and TTL", out, err)
	}
	idArg := strconv.FormatInt(id, 10)
	const chosen = 0x7e570001
	var grant catalogpb.LeaseGrantResponse
	ctl.json(t, &grant, "lease", "grant", "1m", "--id", "0x7e570001")
	if grant.GetId() != chosen || grant.GetTtlSeconds() != 60 {
		t.Errorf("lease grant 1m --id 0x7e570001 -o json = %v, want id %d with TTL 60", &grant, chosen)
	}
	ctl.fails(t, []string{"lease 2119630849 is already granted"}, "lease", "grant", "30", "--id", "2119630849")

	if out := ctl.ok(t, "kv", "put", "ctl/lease/key", "v1", "--lease", idArg); out != "OK\n" {
		t.Errorf("kv put --lease printed %q, want OK", out)
	}
	out = ctl.ok(t, "lease", "ttl", idArg, "--items")
	var granted, remaining int64
	if _, err := fmt.Sscanf(out, "lease "+idArg+" granted with TTL(%ds), remaining(%ds)\n", &granted, &remaining); err != nil ||
		granted != 10 || remaining <= 0 || remaining > 10 {
		t.Errorf("lease ttl --items printed %q (%v), want a 10s lease with 1..10s left", out, err)
	}
	checkRow(t, "lease ttl --items", tableRow(t, out, "KIND", "kv"), map[string]string{"KEY": "ctl/lease/key"})
	var ttl catalogpb.LeaseTimeToLiveResponse
	ctl.json(t, &ttl, "lease", "ttl", idArg, "--items")
	if ttl.GetId() != id || ttl.GetGrantedTtlSeconds() != 10 || ttl.GetTtlSeconds() <= 0 || len(ttl.GetItems()) != 1 ||
		ttl.GetItems()[0].GetKind() != "kv" || ttl.GetItems()[0].GetKey() != "ctl/lease/key" {
		t.Errorf("lease ttl --items -o json = %v, want lease %d alive holding kv ctl/lease/key", &ttl, id)
	}

	out = ctl.ok(t, "lease", "ls")
	checkRow(t, "lease ls", tableRow(t, out, "ID", idArg), map[string]string{"TTL": "10s", "ITEMS": "1"})
	checkRow(t, "lease ls", tableRow(t, out, "ID", strconv.Itoa(chosen)), map[string]string{"TTL": "60s", "ITEMS": "0"})
	if !regexp.MustCompile(`(?m)^\d+ leases$`).MatchString(out) {
		t.Errorf("lease ls printed %q, want a last line counting the leases", out)
	}
	var ls catalogpb.LeaseListResponse
	ctl.json(t, &ls, "lease", "ls")
	i := slices.IndexFunc(ls.GetLeases(), func(l *catalogpb.LeaseStatus) bool { return l.GetId() == id })
	if i < 0 || ls.GetLeases()[i].GetItems() != 1 || ls.GetLeases()[i].GetTtlSeconds() != 10 || ls.GetCount() < 2 {
		t.Errorf("lease ls -o json = %v, want lease %d with TTL 10 and 1 item", &ls, id)
	}

	if out := ctl.ok(t, "lease", "keep-alive", idArg, "--once"); out != "lease "+idArg+" keepalived with TTL(10s)\n" {
		t.Errorf("lease keep-alive --once printed %q", out)
	}
	if out := ctl.ok(t, "lease", "revoke", idArg); out != "lease "+idArg+" revoked (1 attached items deleted)\n" {
		t.Errorf("lease revoke printed %q", out)
	}
	var get catalogpb.GetResponse
	ctl.json(t, &get, "kv", "get", "ctl/lease/key")
	if get.GetCount() != 0 || len(get.GetKvs()) != 0 {
		t.Errorf("kv get of the key of a revoked lease = %v, want nothing", &get)
	}
	gone := []string{"lease " + idArg, "not found"}
	ctl.fails(t, gone, "lease", "ttl", idArg)
	ctl.fails(t, gone, "lease", "revoke", idArg)
	ctl.fails(t, gone, "lease", "keep-alive", idArg, "--once")

	var revoke catalogpb.LeaseRevokeResponse
	ctl.json(t, &revoke, "lease", "revoke", "0x7e570001")
	if len(revoke.GetItems()) != 0 {
		t.Errorf("lease revoke -o json of a lease without items = %v", &revoke)
	}
}

func testCatctlLeaseKeepAlive(t *testing.T, ctl *catctl) {
	grant := func(ttl string) string {
		t.Helper()
		var resp catalogpb.LeaseGrantResponse
		ctl.json(t, &resp, "lease", "grant", ttl)
		return strconv.FormatInt(resp.GetId(), 10)
	}
	renewals := func(id, ttl string, n int) func(stdout, _ string) error {
		return func(stdout, _ string) error {
			if got := strings.Count(stdout, "lease "+id+" keepalived with TTL("+ttl+")\n"); got < n {
				return fmt.Errorf("%d renewals printed, want %d: %q", got, n, stdout)
			}
			return nil
		}
	}

	// Interrupted, keep-alive leaves the lease to its TTL.
	id := grant("10s")
	p := ctl.start(t, "lease", "keep-alive", id)
	p.waitFor("a renewal", renewals(id, "10s", 1))
	if res := p.interrupt(); res.code != 0 {
		t.Errorf("interrupted lease keep-alive: %v, want exit code 0", res)
	}
	var ttl catalogpb.LeaseTimeToLiveResponse
	ctl.json(t, &ttl, "lease", "ttl", id)
	if ttl.GetTtlSeconds() <= 0 {
		t.Errorf("after an interrupted keep-alive, lease %s: %v; want it alive until its TTL passes", id, &ttl)
	}
	ctl.ok(t, "lease", "revoke", id)

	// A revoked lease ends keep-alive with an error. With the shortest TTL
	// renewals come every 2/3 s: two show that it renews again and again.
	id = grant("2s")
	p = ctl.start(t, "lease", "keep-alive", id)
	p.waitFor("two renewals", renewals(id, "2s", 2))
	ctl.ok(t, "lease", "revoke", id)
	res := p.wait()
	if res.code != 1 || !strings.Contains(res.stderr, "lease "+id+" expired or was revoked") {
		t.Errorf("lease keep-alive of a revoked lease: %v, want exit code 1 saying the lease is gone", res)
	}
}

func testCatctlWatchService(t *testing.T, ctl *catctl, cli *sdk.Client) {
	const svc = "ctl-watch"
	ctx := stepContext(t, stepWait)
	reg, err := cli.RegisterInstance(ctx, &catalogpb.Instance{Service: svc, Id: "w-1", Address: "10.3.0.1:80"})
	if err != nil {
		t.Fatal(err)
	}
	health, err := cli.SetInstanceHealth(ctx, svc, "w-1", catalogpb.HealthStatus_CRITICAL, "boom")
	if err != nil {
		t.Fatal(err)
	}
	dereg, err := cli.Deregister(ctx, svc, "w-1")
	if err != nil {
		t.Fatal(err)
	}
	// Changes of other services, which the watch must not print.
	if _, err := cli.RegisterInstance(ctx, &catalogpb.Instance{Service: svc + "-other", Id: "x", Address: "10.3.0.9:80"}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("%d PUT service ctl-watch", reg.GetHeader().GetRevision()),
		fmt.Sprintf("%d PUT instance ctl-watch/w-1 10.3.0.1:80 serving passing", reg.GetHeader().GetRevision()),
		fmt.Sprintf("%d PUT instance ctl-watch/w-1 10.3.0.1:80 serving critical", health.GetHeader().GetRevision()),
		fmt.Sprintf("%d DELETE instance ctl-watch/w-1", dereg.GetHeader().GetRevision()),
	}
	untilLines := func(n int) func(stdout, _ string) error {
		return func(stdout, _ string) error {
			if got := len(lines(stdout)); got < n {
				return fmt.Errorf("%d lines, want %d: %q", got, n, stdout)
			}
			return nil
		}
	}

	p := ctl.start(t, "watch", "--service", svc, "--rev", "1")
	p.waitFor("the history", untilLines(len(want)))
	// Then it follows new changes.
	live, err := cli.RegisterInstance(ctx, &catalogpb.Instance{Service: svc, Id: "w-2", Address: "10.3.0.2:80", State: catalogpb.InstanceState_STATE_STARTING})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, fmt.Sprintf("%d PUT instance ctl-watch/w-2 10.3.0.2:80 starting passing", live.GetHeader().GetRevision()))
	p.waitFor("the live change", untilLines(len(want)))
	res := p.interrupt()
	if res.code != 0 {
		t.Errorf("interrupted watch: %v, want exit code 0", res)
	}
	if got := lines(res.stdout); !slices.Equal(got, want) {
		t.Errorf("watch --service %s --rev 1 printed\n%s\nwant\n%s", svc, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// -o json: one event per line.
	p = ctl.start(t, "-o", "json", "watch", "--service", svc, "--rev", "1")
	p.waitFor("the history as JSON", untilLines(len(want)))
	res = p.interrupt()
	var got []string
	for _, l := range lines(res.stdout) {
		var ev catalogpb.Event
		if err := protojson.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("watch -o json printed %q, not an Event: %v", l, err)
		}
		got = append(got, fmt.Sprintf("%d %v %s %s", ev.GetKv().GetModRevision(), ev.GetType(), ev.GetKind(), ev.GetKv().GetKey()))
		if ev.GetKind() == "instance" && ev.GetType() == catalogpb.Event_DELETE && ev.GetPrevInstance().GetHealthOutput() != "boom" {
			t.Errorf("the DELETE event's previous instance = %v, want the critical one with output \"boom\"", ev.GetPrevInstance())
		}
	}
	var wantJSON []string
	for _, w := range want {
		f := strings.Fields(w)
		wantJSON = append(wantJSON, strings.Join(f[:4], " "))
	}
	if !slices.Equal(got, wantJSON) {
		t.Errorf("watch -o json printed events\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantJSON, "\n"))
	}
}

func testCatctlWatchPrefix(t *testing.T, ctl *catctl, cli *sdk.Client) {
	ctx := stepContext(t, stepWait)
	put := func(key, value string) int64 {
		t.Helper()
		resp, err := cli.Put(ctx, key, value)
		if err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		return resp.GetHeader().GetRevision()
	}
	revA := put("ctl/watch/a", "1")
	put("ctl/other", "x")

	// From a revision: the history, then live changes; keys outside the
	// prefix are left out.
	p := ctl.start(t, "watch", "--prefix", "ctl/watch/", "--rev", strconv.FormatInt(revA, 10))
	first := fmt.Sprintf("%d PUT kv ctl/watch/a 1", revA)
	p.waitFor("the first put", func(stdout, _ string) error {
		if !strings.Contains(stdout, first) {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})
	revB := put("ctl/watch/b", "2")
	put("ctl/watchers", "not under ctl/watch/")
	del, err := cli.Delete(ctx, "ctl/watch/a")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{first, fmt.Sprintf("%d PUT kv ctl/watch/b 2", revB), fmt.Sprintf("%d DELETE kv ctl/watch/a", del.GetHeader().GetRevision())}
	p.waitFor("the later changes", func(stdout, _ string) error {
		if got := lines(stdout); len(got) < len(want) {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})
	res := p.interrupt()
	if got := lines(res.stdout); res.code != 0 || !slices.Equal(got, want) {
		t.Errorf("watch --prefix ctl/watch/ --rev %d: exit code %d, printed\n%s\nwant\n%s", revA, res.code, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Without --rev: from the revision the watch starts at on, every change.
	// When it starts is not printed, so keep writing until a line comes.
	p = ctl.start(t, "watch", "--prefix", "ctl/live/")
	var puts []string
	framework.Eventually(t, stepWait, "the watch prints a put made after it started", func(context.Context) error {
		p.running()
		rev := put("ctl/live/k", strconv.Itoa(len(puts)))
		puts = append(puts, fmt.Sprintf("%d PUT kv ctl/live/k %d", rev, len(puts)))
		if p.stdout.String() == "" {
			return errors.New("nothing printed yet")
		}
		return nil
	})
	for range 2 {
		rev := put("ctl/live/k", strconv.Itoa(len(puts)))
		puts = append(puts, fmt.Sprintf("%d PUT kv ctl/live/k %d", rev, len(puts)))
	}
	p.waitFor("the last put", func(stdout, _ string) error {
		if !strings.Contains(stdout, puts[len(puts)-1]) {
			return fmt.Errorf("stdout %q", stdout)
		}
		return nil
	})
	res = p.interrupt()
	got := lines(res.stdout)
	// The watch printed a tail of the puts, every one from its first on.
	if res.code != 0 || len(got) == 0 || len(got) > len(puts) || !slices.Equal(got, puts[len(puts)-len(got):]) {
		t.Errorf("watch --prefix ctl/live/: exit code %d, printed\n%s\nwant a tail of\n%s", res.code, strings.Join(got, "\n"), strings.Join(puts, "\n"))
	}
}

func testCatctlShard(t *testing.T, ctl *catctl) {
	const svc = "ctl-shard"
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	slots := write("slots.json", `{"totalSlots": 1024, "shards": [
		{"id": "s0", "slots": [{"from": 0, "to": 511}], "replicas": ["i-1", "i-2"]},
		{"id": "s1", "slots": [{"from": 512, "to": 1023}], "replicas": ["i-2", "i-3"]}]}`)
	// Key ranges split at "m" (base64 bQ==).
	ranges := write("ranges.json", `{"shards": [
		{"id": "low", "endKey": "bQ==", "replicas": ["i-1"]},
		{"id": "high", "startKey": "bQ==", "replicas": ["i-2"]}]}`)

	ctl.fails(t, []string{`service "ctl-shard" does not exist`}, "shard", "set", svc, "--file", slots, "--epoch", "0")
	ctl.ok(t, "service", "set", svc)
	if out := ctl.ok(t, "shard", "get", svc); out != "service ctl-shard has no shard map\n" {
		t.Errorf("shard get of a service without a map printed %q", out)
	}
	if out := ctl.ok(t, "shard", "set", svc, "--file", slots, "--epoch", "0"); out != "shard map of ctl-shard is now at epoch 1\n" {
		t.Errorf("shard set printed %q, want epoch 1", out)
	}
	out := ctl.ok(t, "shard", "get", svc)
	if !strings.HasPrefix(out, "shard map of ctl-shard: epoch 1, 2 shards, 1024 slots\n") {
		t.Errorf("shard get printed %q, want epoch 1 with 2 shards over 1024 slots", out)
	}
	checkRow(t, "s0", tableRow(t, out, "SHARD", "s0"), map[string]string{"RANGE": "-", "SLOTS": "0-511", "REPLICAS (PRIMARY FIRST)": "i-1,i-2"})
	checkRow(t, "s1", tableRow(t, out, "SHARD", "s1"), map[string]string{"RANGE": "-", "SLOTS": "512-1023", "REPLICAS (PRIMARY FIRST)": "i-2,i-3"})
	var got catalogpb.GetShardMapResponse
	ctl.json(t, &got, "shard", "get", svc)
	if m := got.GetMap(); m.GetService() != svc || m.GetEpoch() != 1 || m.GetTotalSlots() != 1024 || len(m.GetShards()) != 2 ||
		m.GetShards()[1].GetSlots()[0].GetFrom() != 512 || !slices.Equal(m.GetShards()[1].GetReplicas(), []string{"i-2", "i-3"}) {
		t.Errorf("shard get -o json = %v, want the map set, at epoch 1", &got)
	}

	// A writer that read epoch 0 lost the race: refused, nothing changes.
	ctl.fails(t, []string{"epoch mismatch", "is at epoch 1", "expected_epoch is 0", "read the map again"},
		"shard", "set", svc, "--file", ranges, "--epoch", "0")
	ctl.fails(t, []string{"is at epoch 1", "expected_epoch is 5"}, "shard", "set", svc, "--file", ranges, "--epoch", "5")
	if out := ctl.ok(t, "shard", "get", svc); !strings.HasPrefix(out, "shard map of ctl-shard: epoch 1, 2 shards, 1024 slots\n") {
		t.Errorf("after refused sets, shard get printed %q, want the map at epoch 1 unchanged", out)
	}

	if out := ctl.ok(t, "shard", "set", svc, "--file", ranges, "--epoch", "1"); out != "shard map of ctl-shard is now at epoch 2\n" {
		t.Errorf("shard set --epoch 1 printed %q, want epoch 2", out)
	}
	out = ctl.ok(t, "shard", "get", svc)
	if !strings.HasPrefix(out, "shard map of ctl-shard: epoch 2, 2 shards\n") {
		t.Errorf("shard get printed %q, want epoch 2 with 2 shards", out)
	}
	checkRow(t, "low", tableRow(t, out, "SHARD", "low"), map[string]string{"RANGE": "[, m)", "SLOTS": "", "REPLICAS (PRIMARY FIRST)": "i-1"})
	checkRow(t, "high", tableRow(t, out, "SHARD", "high"), map[string]string{"RANGE": "[m, (end))", "REPLICAS (PRIMARY FIRST)": "i-2"})

	ctl.fails(t, []string{"not valid JSON for a ShardMap"}, "shard", "set", svc, "--file", write("bad.json", `{"shards": 3}`), "--epoch", "2")
	ctl.fails(t, []string{`names service "other"`}, "shard", "set", svc, "--file", write("other.json", `{"service": "other"}`), "--epoch", "2")
	ctl.fails(t, []string{"--epoch N is required"}, "shard", "set", svc, "--file", slots)
}

func testCatctlBadInput(t *testing.T, ctl *catctl) {
	// A service without instances.
	ctl.ok(t, "service", "set", "ctl-bad")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"bad service name", []string{"service", "set", "Bad_Name"},
			[]string{"service.name must be 1..63 characters of a-z, 0-9 and '-'", `got "Bad_Name"`}},
		{"bad service name on register", []string{"service", "register", "bad-", "--id", "x", "--addr", "10.0.0.1:80"},
			[]string{"instance.service must be 1..63 characters", `got "bad-"`}},
		{"address without port", []string{"service", "register", "ctl-bad", "--id", "x", "--addr", "10.0.0.1"},
			[]string{"instance.address must be host:port", `got "10.0.0.1"`}},
		{"register without an id", []string{"service", "register", "ctl-bad", "--addr", "10.0.0.1:80"},
			[]string{"--id and --addr are required"}},
		{"register TTL below the minimum", []string{"service", "register", "ctl-bad", "--id", "x", "--addr", "10.0.0.1:80", "--ttl", "1s"},
			[]string{"ttl_seconds must be 2..", "got 1"}},
		{"lease TTL 0", []string{"lease", "grant", "0"}, []string{"TTL must be a whole number of seconds", `got "0"`}},
		{"lease TTL below the minimum", []string{"lease", "grant", "1"}, []string{"TTL out of range", "ttl_seconds must be 2..", "got 1"}},
		{"lease TTL not whole seconds", []string{"lease", "grant", "2500ms"}, []string{"whole seconds", `got "2500ms"`}},
		{"unknown lease ttl", []string{"lease", "ttl", "123456789"}, []string{"lease 123456789", "not found"}},
		{"unknown lease revoke", []string{"lease", "revoke", "123456789"}, []string{"lease 123456789", "not found"}},
		{"unknown lease keep-alive", []string{"lease", "keep-alive", "123456789", "--once"}, []string{"lease 123456789", "not found"}},
		{"unknown lease streaming keep-alive", []string{"lease", "keep-alive", "123456789"}, []string{"lease 123456789", "not found"}},
		{"key on an unknown lease", []string{"kv", "put", "ctl/bad", "v", "--lease", "123456789"},
			[]string{"names lease 123456789, which does not exist"}},
		{"lease id not a number", []string{"lease", "ttl", "abc"}, []string{"LEASE_ID must be a positive lease id", `got "abc"`}},
		{"watch with two filters", []string{"watch", "--key", "a", "--prefix", "b"}, []string{"give exactly one of --key, --prefix, --service"}},
		{"watch without a filter", []string{"watch"}, []string{"give exactly one of --key, --prefix, --service"}},
		{"watch a negative revision", []string{"watch", "--key", "a", "--rev", "-1"}, []string{"--rev must be >= 0", "-1"}},
		{"unknown state", []string{"service", "get", "ctl-bad", "--state", "bogus"}, []string{"state must be one of starting, serving, draining, stopped", `"bogus"`}},
		{"unknown health", []string{"service", "health", "ctl-bad", "--id", "x", "sick"}, []string{"health must be one of passing, warning, critical", `"sick"`}},
		{"meta without a value", []string{"service", "get", "ctl-bad", "--meta", "env"}, []string{"--meta must be KEY=VALUE", `"env"`}},
		{"port out of range", []string{"service", "register", "ctl-bad", "--id", "x", "--addr", "h:1", "--port", "http=70000"}, []string{"--port http=70000", "1..65535"}},
		{"unknown service", []string{"service", "get", "ctl-no-such-service"}, []string{`service "ctl-no-such-service" does not exist`}},
		{"health of an unknown service", []string{"service", "health", "ctl-no-such-service", "--id", "x", "passing"},
			[]string{"set health of ctl-no-such-service/x", `service "ctl-no-such-service" does not exist`}},
		{"health of an unknown instance", []string{"service", "health", "ctl-bad", "--id", "x", "passing"},
			[]string{`instance "x" of service "ctl-bad" does not exist`}},
		{"state of an unknown instance", []string{"service", "state", "ctl-bad", "--id", "x", "serving"},
			[]string{`instance "x" of service "ctl-bad" does not exist`}},
		{"state unspecified", []string{"service", "state", "ctl-bad", "--id", "x", "unspecified"},
			[]string{"state must be one of starting, serving, draining, stopped"}},
	} {
		t.Run(tc.name, func(t *testing.T) { ctl.fails(t, tc.want, tc.args...) })
	}
}

// histogramCounts returns, for each "Response time histogram" of a bench
// report, the sum of its counts: the number of requests it measured.
func histogramCounts(out string) []int {
	var sums []int
	in := false
	bar := regexp.MustCompile(`^\s+\S+ \[(\d+)\]\t\|`)
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "Response time histogram:"):
			in = true
			sums = append(sums, 0)
		case in && bar.MatchString(l):
			n, _ := strconv.Atoi(bar.FindStringSubmatch(l)[1])
			sums[len(sums)-1] += n
		default:
			in = false
		}
	}
	return sums
}

func testCatctlBench(t *testing.T, ctl *catctl) {
	checkReport := func(t *testing.T, out string, want ...int) {
		t.Helper()
		if got := histogramCounts(out); !slices.Equal(got, want) || !strings.Contains(out, "Requests/sec:") {
			t.Errorf("report %q measures %v requests, want %v", out, got, want)
		}
		if strings.Contains(out, "Error distribution") {
			t.Errorf("report %q lists errors", out)
		}
	}
	t.Run("keepalive", func(t *testing.T) {
		checkReport(t, ctl.ok(t, "bench", "keepalive", "--clients", "2", "--total", "50"), 50)
	})
	t.Run("watch", func(t *testing.T) {
		out := ctl.ok(t, "bench", "watch", "--watchers", "2", "--conns", "1", "--total", "20", "--rate", "200", "--service", "ctl-bench-watch")
		// Two distributions over the 2 watchers × 20 registrations.
		checkReport(t, out, 40, 40)
		ctl.fails(t, []string{"does not exist"}, "service", "get", "ctl-bench-watch")
	})
	t.Run("discover", func(t *testing.T) {
		for _, mode := range []string{"l", "cache"} {
			checkReport(t, ctl.ok(t, "bench", "discover", "--instances", "20", "--total", "50", "--mode", mode, "--service", "ctl-bench-discover"), 50)
		}
		var got catalogpb.GetServiceResponse
		ctl.json(t, &got, "service", "get", "ctl-bench-discover", "--healthy")
		if got.GetCount() != 20 {
			t.Errorf("bench discover left %d healthy instances, want the 20 it registered", got.GetCount())
		}
	})
	t.Run("instances", func(t *testing.T) {
		out := ctl.ok(t, "bench", "instances", "--count", "20", "--conns", "2", "--ttl", "3s", "--hold", "2s", "--service", "ctl-bench-leased")
		for _, want := range []string{"registered 20 instances in ", "Keep-alive latency over the hold:", "Summary:",
			"instances held at the end: 20 of 20; instance deletions seen: 0\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("bench instances printed %q, want %q", out, want)
			}
		}
	})
}
