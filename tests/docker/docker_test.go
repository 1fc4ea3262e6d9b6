package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
)

// members are the compose services, which are also the members' names and
// their host names on the compose network.
var members = []string{"n1", "n2", "n3"}

const (
	// commandTimeout bounds one docker or compose command; building the
	// binaries without a warm Go cache is the slowest of them.
	commandTimeout = 5 * time.Minute
	// cleanupTimeout bounds removing a cluster or an image after a test.
	cleanupTimeout = 2 * time.Minute
	// leaderTimeout bounds the first election after the containers start.
	leaderTimeout = time.Minute
	// failoverTimeout bounds the survivors' election after the leader dies
	// (about a second with the default tick and election ticks).
	failoverTimeout = 30 * time.Second
	// catchUpTimeout bounds a restarted member's replay and catch-up.
	catchUpTimeout = time.Minute
	// pollInterval is the pause between two checks of eventually.
	pollInterval = 100 * time.Millisecond
)

// TestLeaderKilled kills the leader's container with SIGKILL: the two other
// members elect a leader and take writes, every write acknowledged before
// the kill reads back, and the restarted container catches up.
func TestLeaderKilled(t *testing.T) {
	compose := requireDocker(t)
	c := startCluster(t, compose)
	all := newClient(t, c.endpoints(members...)...)
	leader := waitLeader(t, all, c, members)
	t.Logf("leader before the kill: %s", leader)

	const writes = 50
	want := map[string]string{}
	for i := range writes {
		key, value := fmt.Sprintf("before/%03d", i), fmt.Sprintf("value-%d", i)
		put(t, all, key, value)
		want[key] = value
	}

	c.docker(t, "kill", "--signal", "KILL", c.container(t, leader))
	survivors := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == leader })
	t.Logf("killed %s; survivors %v", leader, survivors)
	sc := newClient(t, c.endpoints(survivors...)...)
	var lastRevision int64
	for i := range writes {
		key, value := fmt.Sprintf("after/%03d", i), fmt.Sprintf("value-%d", i)
		lastRevision = put(t, sc, key, value)
		want[key] = value
	}
	newLeader := waitLeader(t, sc, c, survivors)
	t.Logf("leader after the kill: %s; last revision %d", newLeader, lastRevision)
	checkKeys(t, sc, want)

	c.docker(t, "start", c.container(t, leader))
	restartedEP := c.endpoints(leader)[0]
	eventually(t, catchUpTimeout, "the restarted "+leader+" at the survivors' revision", func(ctx context.Context) error {
		for _, ep := range c.endpoints(members...) {
			st, err := sc.StatusOf(ctx, ep)
			if err != nil {
				return fmt.Errorf("status of %s: %w", ep, err)
			}
			if st.GetRevision() != lastRevision || st.GetLeader() == 0 {
				return fmt.Errorf("%s (%s) at revision %d with leader %x, want revision %d and a leader",
					st.GetName(), ep, st.GetRevision(), st.GetLeader(), lastRevision)
			}
		}
		return nil
	})
	// The restarted member serves what it missed from its own state.
	restarted := newClient(t, restartedEP)
	ctx := t.Context()
	for _, key := range []string{"before/000", fmt.Sprintf("after/%03d", writes-1)} {
		resp, err := restarted.Get(ctx, key, sdk.WithSerializable())
		if err != nil {
			t.Fatalf("serializable get %s from the restarted %s: %v", key, leader, err)
		}
		if kvs := resp.GetKvs(); len(kvs) != 1 || string(kvs[0].GetValue()) != want[key] {
			t.Errorf("serializable get %s from the restarted %s: got %v, want value %q", key, leader, kvs, want[key])
		}
	}
}

// TestCatctlInImage runs the catctl of the image inside the containers,
// reaching the members by their host names on the compose network.
func TestCatctlInImage(t *testing.T) {
	compose := requireDocker(t)
	c := startCluster(t, compose)
	client := newClient(t, c.endpoints(members...)...)
	leader := waitLeader(t, client, c, members)

	out := c.exec(t, "n1", "/catctl", "--endpoints", "n1:7400,n2:7400,n3:7400", "-o", "json", "cluster", "status")
	var entries []struct {
		Endpoint string          `json:"endpoint"`
		Status   json.RawMessage `json:"status"`
		Error    string          `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("catctl cluster status -o json: %v; output:\n%s", err, out)
	}
	if len(entries) != len(members) {
		t.Fatalf("catctl cluster status: %d endpoints, want %d; output:\n%s", len(entries), len(members), out)
	}
	for i, e := range entries {
		if e.Error != "" {
			t.Fatalf("catctl cluster status: %s: %s", e.Endpoint, e.Error)
		}
		var st catalogpb.StatusResponse
		if err := protojson.Unmarshal(e.Status, &st); err != nil {
			t.Fatalf("catctl cluster status: status of %s: %v", e.Endpoint, err)
		}
		if st.GetName() != members[i] || len(st.GetMembers()) != len(members) {
			t.Errorf("catctl cluster status: %s is %q with %d members, want %q with %d",
				e.Endpoint, st.GetName(), len(st.GetMembers()), members[i], len(members))
		}
		for _, m := range st.GetMembers() {
			if m.GetIsLeader() != (m.GetName() == leader) {
				t.Errorf("catctl cluster status: %s says member %s is_leader=%t, but the leader is %s",
					e.Endpoint, m.GetName(), m.GetIsLeader(), leader)
			}
		}
	}

	c.exec(t, "n2", "/catctl", "--endpoints", "n2:7400", "kv", "put", "catctl/key", "from-n2")
	out = c.exec(t, "n3", "/catctl", "--endpoints", "n3:7400", "-o", "json", "kv", "get", "catctl/key")
	var got catalogpb.GetResponse
	if err := protojson.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("catctl kv get -o json: %v; output:\n%s", err, out)
	}
	if kvs := got.GetKvs(); len(kvs) != 1 || string(kvs[0].GetValue()) != "from-n2" {
		t.Errorf("catctl kv get catctl/key in n3: got %v, want the value from-n2 that catctl put in n2", kvs)
	}
	checkKeys(t, client, map[string]string{"catctl/key": "from-n2"})
}

// requireDocker skips the test unless a Docker engine answers and a compose
// tool is installed, and returns the compose tool's command line.
func requireDocker(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("skipping: the docker CLI is not in PATH; these tests need a Docker engine and a compose tool")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("skipping: no Docker engine answers (docker info: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if path, err := exec.LookPath("docker-compose"); err == nil && exec.CommandContext(ctx, path, "version").Run() == nil {
		return []string{path}
	}
	t.Skip("skipping: no compose tool: neither the docker compose plugin nor docker-compose works")
	return nil
}

// A cluster is one compose project of docker/compose.yaml.
type cluster struct {
	compose []string
	file    string
	project string
	// env sets the image and the published ports for compose.
	env []string
	// clientPorts are the host ports published for the members' gRPC.
	clientPorts map[string]int
	containers  map[string]string
}

// startCluster builds an image and starts the compose cluster on it, both
// named for this test alone, on free host ports. When the test ends it
// prints the members' logs if the test failed, then removes the containers,
// volumes, network and image.
func startCluster(t *testing.T, compose []string) *cluster {
	t.Helper()
	root := repoRoot(t)
	suffix := fmt.Sprintf("%d%06x", os.Getpid(), rand.Uint32()&0xffffff)
	image := "catalogd:test" + suffix
	start := time.Now()
	buildCtx, cancel := context.WithTimeout(t.Context(), commandTimeout)
	defer cancel()
	runCommand(t, exec.CommandContext(buildCtx, filepath.Join(root, "scripts", "docker-build.sh"), "test"+suffix))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "docker", "rmi", "--force", image).CombinedOutput(); err != nil {
			t.Errorf("remove image %s: %v\n%s", image, err, out)
		}
	})
	t.Logf("built %s in %v", image, time.Since(start).Round(time.Millisecond))

	c := &cluster{
		compose:     compose,
		file:        filepath.Join(root, "docker", "compose.yaml"),
		project:     "catalogdtest" + suffix,
		env:         []string{"CATALOGD_IMAGE=" + image},
		clientPorts: map[string]int{},
		containers:  map[string]string{},
	}
	ports := freePorts(t, 2*len(members))
	for i, m := range members {
		c.clientPorts[m] = ports[2*i]
		upper := strings.ToUpper(m)
		c.env = append(c.env,
			fmt.Sprintf("CATALOGD_%s_PORT=%d", upper, ports[2*i]),
			fmt.Sprintf("CATALOGD_%s_HTTP_PORT=%d", upper, ports[2*i+1]))
	}
	// Registered before up, so that a half-started project is removed too.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if t.Failed() {
			out, err := c.composeCommand(ctx, "logs", "--no-color", "--timestamps", "--tail=300").CombinedOutput()
			t.Logf("logs of compose project %s (err %v):\n%s", c.project, err, out)
		}
		if out, err := c.composeCommand(ctx, "down", "--volumes", "--remove-orphans", "--timeout", "2").CombinedOutput(); err != nil {
			t.Errorf("remove compose project %s: %v\n%s", c.project, err, out)
		}
	})
	start = time.Now()
	c.runCompose(t, "up", "--detach")
	t.Logf("compose project %s up in %v, client ports %v", c.project, time.Since(start).Round(time.Millisecond), c.clientPorts)
	return c
}

// composeCommand returns the compose tool running args on this project.
func (c *cluster) composeCommand(ctx context.Context, args ...string) *exec.Cmd {
	argv := append(slices.Clone(c.compose[1:]), "--file", c.file, "--project-name", c.project)
	cmd := exec.CommandContext(ctx, c.compose[0], append(argv, args...)...)
	cmd.Env = append(os.Environ(), c.env...)
	return cmd
}

// runCompose runs the compose tool on this project and returns its output.
func (c *cluster) runCompose(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), commandTimeout)
	defer cancel()
	return runCommand(t, c.composeCommand(ctx, args...))
}

// endpoints returns the host addresses of the named members' gRPC ports.
func (c *cluster) endpoints(names ...string) []string {
	eps := make([]string, len(names))
	for i, n := range names {
		eps[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(c.clientPorts[n]))
	}
	return eps
}

// container returns the id of the member's container, which stays the same
// across a kill and a start.
func (c *cluster) container(t *testing.T, member string) string {
	t.Helper()
	if id, ok := c.containers[member]; ok {
		return id
	}
	id := strings.TrimSpace(c.runCompose(t, "ps", "-q", member))
	if id == "" {
		t.Fatalf("compose project %s has no container for %s", c.project, member)
	}
	c.containers[member] = id
	return id
}

// docker runs a docker command and returns its output.
func (c *cluster) docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), commandTimeout)
	defer cancel()
	return runCommand(t, exec.CommandContext(ctx, "docker", args...))
}

// exec runs argv inside the member's container and returns its output.
func (c *cluster) exec(t *testing.T, member string, argv ...string) string {
	t.Helper()
	return c.docker(t, append([]string{"exec", c.container(t, member)}, argv...)...)
}

// runCommand runs cmd and returns its standard output; it fails the test
// with both outputs if cmd fails.
func runCommand(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// newClient returns an sdk client of endpoints, closed when the test ends.
func newClient(t *testing.T, endpoints ...string) *sdk.Client {
	t.Helper()
	c, err := sdk.New(sdk.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("sdk.New(%v): %v", endpoints, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitLeader waits until every one of names reports the same leader, one
// of names, and returns that leader's name.
func waitLeader(t *testing.T, client *sdk.Client, c *cluster, names []string) string {
	t.Helper()
	var leader string
	eventually(t, leaderTimeout, fmt.Sprintf("one leader known to %v", names), func(ctx context.Context) error {
		leader = ""
		var leaderID uint64
		for i, ep := range c.endpoints(names...) {
			st, err := client.StatusOf(ctx, ep)
			if err != nil {
				return fmt.Errorf("status of %s (%s): %w", names[i], ep, err)
			}
			switch {
			case st.GetLeader() == 0:
				return fmt.Errorf("%s knows no leader", names[i])
			case leaderID != 0 && st.GetLeader() != leaderID:
				return fmt.Errorf("%s follows %x, another member follows %x", names[i], st.GetLeader(), leaderID)
			}
			leaderID = st.GetLeader()
			if st.GetHeader().GetMemberId() == leaderID {
				leader = st.GetName()
			}
		}
		if leader == "" {
			return fmt.Errorf("the leader %x is none of %v", leaderID, names)
		}
		return nil
	})
	return leader
}

// put writes key until a write is acknowledged, for at most failoverTimeout,
// and returns the revision of that write. A write whose answer was lost may
// have been applied as well: it wrote the same value.
func put(t *testing.T, client *sdk.Client, key, value string) int64 {
	t.Helper()
	var revision int64
	eventually(t, failoverTimeout, "put "+key, func(ctx context.Context) error {
		resp, err := client.Put(ctx, key, value)
		revision = resp.GetHeader().GetRevision()
		return err
	})
	return revision
}

// checkKeys reads every key of want with a linearizable get and checks its value.
func checkKeys(t *testing.T, client *sdk.Client, want map[string]string) {
	t.Helper()
	for _, key := range slices.Sorted(maps.Keys(want)) {
		resp, err := client.Get(t.Context(), key)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		if kvs := resp.GetKvs(); len(kvs) != 1 || string(kvs[0].GetValue()) != want[key] {
			t.Errorf("get %s: got %v, want value %q", key, kvs, want[key])
		}
	}
}

// eventually calls cond every pollInterval until it returns nil, and fails
// t if that does not happen within timeout, with what and cond's last error.
// The ctx given to cond ends at the deadline. (framework.Eventually does the
// same; this package does not import the framework, which builds the server.)
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := cond(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %v; last check: %v", what, timeout, err)
		case <-tick.C:
		}
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port on 127.0.0.1: %v", err)
		}
		listeners = append(listeners, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// repoRoot returns the module's root directory, where go.mod is.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("look for go.mod in %s: %v", dir, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory: run the test inside the catalogd module")
		}
		dir = parent
	}
}
