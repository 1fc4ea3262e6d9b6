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
