package framework

import "sync"

// A faultTable records which links between members are cut. Every member's
// transport consults it for each outgoing raft message, from its own
// goroutines, so it is guarded by a mutex.
type faultTable struct {
	mu sync.RWMutex
	// index maps a member id to its index in the cluster; a message from or to
	// an id it does not know (a member not launched yet) is never dropped.
	index map[uint64]int
	// cut holds directed links: cut[[2]int{from, to}] drops from's messages to to.
	cut map[[2]int]bool
}

func newFaultTable() *faultTable {
	return &faultTable{index: make(map[uint64]int), cut: make(map[[2]int]bool)}
}

// register tells the table which member index owns id.
func (f *faultTable) register(i int, id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index[id] = i
}

// drops reports whether a message from member id from to member id to is lost.
func (f *faultTable) drops(from, to uint64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	i, ok := f.index[from]
	if !ok {
		return false
	}
	j, ok := f.index[to]
	if !ok {
		return false
	}
	return f.cut[[2]int{i, j}]
}

// cutLink drops messages between members i and j in both directions.
func (f *faultTable) cutLink(i, j int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut[[2]int{i, j}] = true
	f.cut[[2]int{j, i}] = true
}

// cutOneWay drops member from's messages to member to only.
func (f *faultTable) cutOneWay(from, to int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut[[2]int{from, to}] = true
}

// isolate cuts every link of member i in a cluster of n members.
func (f *faultTable) isolate(i, n int) {
	for j := range n {
		if j != i {
			f.cutLink(i, j)
		}
	}
}

// healMember restores every link of member i.
func (f *faultTable) healMember(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for link := range f.cut {
		if link[0] == i || link[1] == i {
			delete(f.cut, link)
		}
	}
}

// heal restores every link.
func (f *faultTable) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.cut)
}

// links returns the cut links that involve member i.
func (f *faultTable) links(i int) [][2]int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var links [][2]int
	for link := range f.cut {
		if link[0] == i || link[1] == i {
			links = append(links, link)
		}
	}
	return links
}

// restore cuts the given directed links again.
func (f *faultTable) restore(links [][2]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, link := range links {
		f.cut[link] = true
	}
}

// partitionSkip starts the message of a test skipped because its partitions
// cannot be made.
const partitionSkip = "network partitions of real processes need network namespaces (root, iproute2, iptables): "

// PartitionsSupported reports whether Cut, CutOneWay and Isolate work: always
// for in-process members (a drop table in the transport), and for processes
// when they run in network namespaces.
func (c *Cluster) PartitionsSupported() bool {
	return !c.processes || c.netnsReason == ""
}

// dropLinks drops the traffic of each directed link {from, to}.
func (c *Cluster) dropLinks(links ...[2]int) {
	c.t.Helper()
	switch {
	case c.faults != nil:
		for _, l := range links {
			c.faults.cutOneWay(l[0], l[1])
		}
	case c.net != nil:
		for _, l := range links {
			if err := c.net.drop(l[0], l[1]); err != nil {
				c.t.Fatalf("framework: %v", err)
			}
		}
	default:
		c.t.Skip(partitionSkip + c.netnsReason)
	}
}

// Cut drops traffic between members i and j, both ways: in-process their raft
// messages, between processes every packet (raft and any connection between
// them). Clients, the test's included, still reach both.
func (c *Cluster) Cut(i, j int) {
	c.t.Helper()
	c.check(i)
	c.check(j)
	if i == j {
		c.t.Fatalf("framework: cannot cut member %d from itself", i)
	}
	c.dropLinks([2]int{i, j}, [2]int{j, i})
}

// CutOneWay drops what member from sends to member to. In-process that is
// exactly one direction of raft messages. Between processes, to drops every
// packet from from; TCP needs both directions, so every connection between
// the two fails, at once for new ones and after retransmissions or keepalives
// give up for those that to had opened: only the timing differs from Cut.
func (c *Cluster) CutOneWay(from, to int) {
	c.t.Helper()
	c.check(from)
	c.check(to)
	if from == to {
		c.t.Fatalf("framework: cannot cut member %d from itself", from)
	}
	c.dropLinks([2]int{from, to})
}

// Isolate cuts member i from every other member, as Cut does. Clients still
// reach it.
func (c *Cluster) Isolate(i int) {
	c.t.Helper()
	c.check(i)
	var links [][2]int
	for j := range c.Size() {
		if j != i {
			links = append(links, [2]int{i, j}, [2]int{j, i})
		}
	}
	c.dropLinks(links...)
}

// Heal restores every link cut by Cut, CutOneWay or Isolate.
func (c *Cluster) Heal() {
	c.t.Helper()
	switch {
	case c.faults != nil:
		c.faults.heal()
	case c.net != nil:
		if err := c.net.heal(); err != nil {
			c.t.Fatalf("framework: %v", err)
		}
	}
}

// Pause freezes member i's process (SIGSTOP) and returns once all its threads
// have stopped: its connections stay open and nothing answers, as a stalled
// disk or a long GC pause would look. It skips the test for in-process
// members.
func (c *Cluster) Pause(i int) {
	c.t.Helper()
	if err := c.process(i, "Pause").pause(); err != nil {
		c.t.Fatalf("framework: pause member %d: %v", i, err)
	}
}

// Resume lets a paused member run again (SIGCONT).
func (c *Cluster) Resume(i int) {
	c.t.Helper()
	pm := c.process(i, "Resume")
	if !pm.isPaused() {
		c.t.Fatalf("framework: cannot resume member %d (%s): it is not paused", i, c.Name(i))
	}
	pm.resume()
}

// Paused reports whether member i is paused.
func (c *Cluster) Paused(i int) bool {
	c.check(i)
	c.mu.Lock()
	m := c.members[i]
	c.mu.Unlock()
	pm, ok := m.(*processMember)
	return ok && pm.isPaused()
}

// process returns member i's running process for op, skipping the test when
// members are in-process.
func (c *Cluster) process(i int, op string) *processMember {
	c.t.Helper()
	c.check(i)
	if !c.processes {
		c.t.Skipf("framework: %s needs members run as processes (WithProcesses): an in-process member cannot be frozen", op)
	}
	c.mu.Lock()
	m := c.members[i]
	c.mu.Unlock()
	pm, _ := m.(*processMember)
	if pm == nil || !pm.alive() {
		c.t.Fatalf("framework: %s member %d (%s): it is not running", op, i, c.Name(i))
	}
	return pm
}
