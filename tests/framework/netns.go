package framework

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Member processes in network namespaces.
//
// Each cluster gets a hub namespace holding a bridge, one namespace per member
// joined to the bridge by a veth pair, and a veth pair from the test's own
// (root) namespace to the bridge. The bridge lives in the hub, not in the root
// namespace, on purpose: with br_netfilter loaded, bridged traffic passes the
// iptables FORWARD chain of the bridge's namespace, and a root namespace whose
// FORWARD policy is DROP (Docker sets that) would silently cut every member
// from every other. The hub's iptables are empty. Traffic between the test
// process and a member is routed, not bridged, in the root namespace (OUTPUT
// and INPUT only).
//
// Every name starts with cdb-<pid of the test binary>-, so a later run can
// tell the leftovers of a test binary that died (SIGKILL, a crashed machine)
// and remove them.
const (
	netnsPrefix = "cdb-"
	// Members listen on fixed ports of their own address.
	clientPort = 7400
	peerPort   = 7401
	httpPort   = 7480
	// firstMemberHost is member 0's host number in the cluster's /24; .1 is
	// the test process's end.
	firstMemberHost = 10
	// iptablesWait is how many seconds iptables waits for the xtables lock,
	// which every namespace and every parallel test binary shares.
	iptablesWait = "5"
)

// netnsProbe holds the result of probing, once per test binary, whether
// namespaces can be used.
var netnsProbe struct {
	once   sync.Once
	reason string // why not; empty when they can
}

// netnsSupport reports whether member processes can run in network
// namespaces, and if not, why. The first call also removes what dead test
// binaries left behind.
func netnsSupport() (bool, string) {
	netnsProbe.once.Do(func() { netnsProbe.reason = probeNetns() })
	return netnsProbe.reason == "", netnsProbe.reason
}

func probeNetns() string {
	if os.Getenv("CATALOGD_TEST_NETNS") == "off" {
		return "turned off by CATALOGD_TEST_NETNS=off"
	}
	if runtime.GOOS != "linux" {
		return "network namespaces exist on Linux only, this is " + runtime.GOOS
	}
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Sprintf("the test runs as uid %d, not as root", uid)
	}
	for _, tool := range []struct{ name, pkg string }{{"ip", "iproute2"}, {"iptables", "iptables"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return fmt.Sprintf("%s is not installed (Debian package %s)", tool.name, tool.pkg)
		}
	}
	removeStaleNetns()
	ns := fmt.Sprintf("%s%d-probe", netnsPrefix, os.Getpid())
	if err := ip("netns", "add", ns); err != nil {
		return err.Error()
	}
	defer deleteNetns(ns)
	for _, step := range [][]string{
		{"-n", ns, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"},
		{"-n", ns, "link", "add", "probebr", "type", "bridge"},
		{"netns", "exec", ns, "iptables", "-w", iptablesWait, "-L", "INPUT", "-n"},
	} {
		if err := ip(step...); err != nil {
			return err.Error()
		}
	}
	return ""
}

// ip runs the ip command and returns an error with its output.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// staleNetns matches the namespaces of this package and captures the pid of
// the test binary that made them.
var staleNetns = regexp.MustCompile(`^` + netnsPrefix + `(\d+)-`)

// removeStaleNetns deletes the namespaces of test binaries that no longer run,
// with the processes still in them; their veths and bridges go with them.
func removeStaleNetns() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		m := staleNetns.FindStringSubmatch(fields[0])
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		// Another binary may be removing the same leftovers; losing that race is fine.
		_ = deleteNetns(fields[0])
	}
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// deleteNetns kills the processes left in namespace ns, which would keep it
// (and its veths) alive after its name is gone, and deletes it.
func deleteNetns(ns string) error {
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ip("netns", "del", ns)
}

// A netnsNet is one cluster's namespaces and the drop rules between them.
type netnsNet struct {
	prefix   string // cdb-<pid>-<tag>, the start of every namespace name
	hostLink string // the root namespace's end of the link to the hub: cdb<tag>
	subnet   string // "10.X.Y.", random per cluster

	mu      sync.Mutex
	members map[int]string  // member index -> namespace
	drops   map[[2]int]bool // {from, to}: to drops packets from from
}

// newNetnsNet builds a hub namespace with a bridge and links the root
// namespace to it.
func newNetnsNet() (*netnsNet, error) {
	tag := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	subnet, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	n := &netnsNet{
		prefix:   fmt.Sprintf("%s%d-%s", netnsPrefix, os.Getpid(), tag),
		hostLink: "cdb" + tag,
		subnet:   subnet,
		members:  make(map[int]string),
		drops:    make(map[[2]int]bool),
	}
	hub := n.hub()
	for _, step := range [][]string{
		{"netns", "add", hub},
		{"-n", hub, "link", "set", "lo", "up"},
		{"-n", hub, "link", "add", "br0", "type", "bridge"},
		{"-n", hub, "link", "set", "br0", "up"},
		{"link", "add", n.hostLink, "type", "veth", "peer", "name", "host", "netns", hub},
		{"-n", hub, "link", "set", "host", "master", "br0", "up"},
		{"addr", "add", n.subnet + "1/24", "dev", n.hostLink},
		{"link", "set", n.hostLink, "up"},
	} {
		if err := ip(step...); err != nil {
			n.close()
			return nil, fmt.Errorf("build the cluster's network: %w", err)
		}
	}
	return n, nil
}

func (n *netnsNet) hub() string { return n.prefix + "-hub" }

// memberIP returns member i's address.
func (n *netnsNet) memberIP(i int) string { return n.subnet + strconv.Itoa(firstMemberHost+i) }

// addMember makes member i's namespace, linked to the hub, and returns the
// member's address.
func (n *netnsNet) addMember(i int) (string, error) {
	if firstMemberHost+i > 254 {
		return "", fmt.Errorf("member %d: a cluster's /24 has room for %d members", i, 255-firstMemberHost)
	}
	ns := fmt.Sprintf("%s-m%d", n.prefix, i)
	port := fmt.Sprintf("m%d", i) // the hub's end, named inside the hub
	addr := n.memberIP(i)
	for _, step := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", n.hub(), "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", n.hub(), "link", "set", port, "master", "br0", "up"},
		{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	} {
		if err := ip(step...); err != nil {
			_ = deleteNetns(ns)
			return "", fmt.Errorf("network of member %d: %w", i, err)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.members[i] = ns
	return addr, nil
}

// command returns the command prefix that runs a program in member i's
// namespace. ip execs the program (it does not fork), so the started
// process's pid is the program's.
func (n *netnsNet) command(i int) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return []string{"ip", "netns", "exec", n.members[i]}
}

// drop makes member to drop every packet from member from: an iptables rule
// in to's namespace on INPUT by source address. TCP needs both directions, so
// connections that from opens to to fail at once (to drops the SYN), and so
// do connections that to opens to from (to drops the SYN-ACK); on a
// connection already open from to to from, to's data still reaches from
// until to's retransmissions or keepalives give up. A one-way cut is
// therefore a cut both ways whose timing differs by direction.
func (n *netnsNet) drop(from, to int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	link := [2]int{from, to}
	if n.drops[link] {
		return nil
	}
	ns, ok := n.members[to]
	if !ok {
		return fmt.Errorf("member %d has no network namespace", to)
	}
	if err := ip("netns", "exec", ns, "iptables", "-w", iptablesWait, "-A", "INPUT", "-s", n.memberIP(from), "-j", "DROP"); err != nil {
		return fmt.Errorf("drop packets from member %d at member %d: %w", from, to, err)
	}
	n.drops[link] = true
	return nil
}

// heal removes every drop rule.
func (n *netnsNet) heal() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	flushed := map[int]bool{}
	var errs []error
	for link := range n.drops {
		to := link[1]
		if flushed[to] {
			continue
		}
		flushed[to] = true
		if err := ip("netns", "exec", n.members[to], "iptables", "-w", iptablesWait, "-F", "INPUT"); err != nil {
			errs = append(errs, fmt.Errorf("heal member %d: %w", to, err))
		}
	}
	clear(n.drops)
	return errors.Join(errs...)
}

// close deletes the namespaces, with any process left in them; the veths and
// the bridge go with them.
func (n *netnsNet) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for _, ns := range n.members {
		errs = append(errs, deleteNetns(ns))
	}
	clear(n.members)
	if err := deleteNetns(n.hub()); err != nil && !strings.Contains(err.Error(), "No such file") {
		errs = append(errs, err)
	}
	// Gone with the hub's end, unless the hub was never made.
	_ = exec.Command("ip", "link", "del", n.hostLink).Run()
	return errors.Join(errs...)
}

// freeSubnet picks a random 10.X.Y.0/24 that no address or route of the root
// namespace overlaps, so that clusters of parallel test binaries (each has
// its route to its own /24) never clash.
func freeSubnet() (string, error) {
	used, err := usedIPv4Nets()
	if err != nil {
		return "", err
	}
	for range 100 {
		x, y := 16+rand.IntN(239), rand.IntN(256)
		_, cand, _ := net.ParseCIDR(fmt.Sprintf("10.%d.%d.0/24", x, y))
		free := true
		for _, u := range used {
			if u.Contains(cand.IP) || cand.Contains(u.IP) {
				free = false
				break
			}
		}
		if free {
			return fmt.Sprintf("10.%d.%d.", x, y), nil
		}
	}
	return "", errors.New("no free 10.X.Y.0/24 in 100 random tries: the root namespace's routes cover them")
}

// usedIPv4Nets returns the destinations of every IPv4 route of the root
// namespace, in every table (local addresses included), except default.
func usedIPv4Nets() ([]*net.IPNet, error) {
	out, err := exec.Command("ip", "-4", "-o", "route", "show", "table", "all").Output()
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	routeTypes := map[string]bool{"unicast": true, "local": true, "broadcast": true, "multicast": true, "anycast": true,
		"blackhole": true, "unreachable": true, "prohibit": true, "throw": true, "nat": true}
	var nets []*net.IPNet
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) > 1 && routeTypes[fields[0]] {
			fields = fields[1:]
		}
		if len(fields) == 0 || fields[0] == "default" {
			continue
		}
		dst := fields[0]
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if _, n, err := net.ParseCIDR(dst); err == nil {
			nets = append(nets, n)
		}
	}
	return nets, nil
}
