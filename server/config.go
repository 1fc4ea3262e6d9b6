package server

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/catalogd/catalogd/consensus"
)

// Version is catalogd's version, reported by Status.
const Version = "0.1.0"

// A Config holds everything a catalogd server needs. DefaultConfig returns
// the single-node defaults of DESIGN.md.
type Config struct {
	Name       string
	DataDir    string
	DC         string
	ClientAddr string
	PeerAddr   string
	HTTPAddr   string
	// InitialCluster lists every member of a new cluster as name=host:port
	// (peer addresses). Empty means a single-node cluster of this server.
	InitialCluster string
	// Join is any running member's client address. A server started with
	// Join and an empty data dir asks that member to add it to its cluster
	// (as a learner) and then fetches the cluster's data; on a restart with
	// data the flag is ignored.
	Join string
	// AutoPromote lets the leader promote a learner to voter once it has
	// caught up with the log.
	AutoPromote bool

	TickInterval  time.Duration
	ElectionTicks int
	SnapshotCount uint64
	// CatchUpEntries is how many applied entries the log keeps after a
	// snapshot, so a follower that lags by less catches up without one.
	CatchUpEntries uint64
	// EventHistory is how many revisions of events the events bucket keeps.
	EventHistory int64
	// RequestTimeout bounds a request whose caller set no deadline.
	RequestTimeout time.Duration

	// WatchProgressInterval is how long a watch that asked for progress
	// notifications may stay idle before it gets a bookmark.
	WatchProgressInterval time.Duration
	// LeaseRevokeRate caps how many expired leases the leader revokes per
	// second, so a mass expiry cannot crowd the log.
	LeaseRevokeRate int
	// ProposalHold is how long the leader holds new proposals while a round
	// of appends is in flight, so that they go out together when it commits
	// (one WAL fsync and one append per follower for all of them); 0 sends
	// each batch at once. A proposal that finds no round in flight is never
	// held.
	ProposalHold time.Duration
	// DisableHealthChecks stops this server from probing instances. For
	// tests only: the other servers still count it as one of the checkers.
	DisableHealthChecks bool

	// EnablePprof serves Go's profiler on the HTTP address under /debug/pprof/.
	EnablePprof bool

	Logger *slog.Logger
	// Drop, for tests, drops peer messages between chosen members.
	Drop consensus.DropFunc
}

// maxProposalHold bounds --proposal-hold: a hold is added to the latency
// of the writes it delays.
const maxProposalHold = 100 * time.Millisecond

// DefaultConfig returns the configuration of `catalogd` with no flags.
func DefaultConfig() Config {
	return Config{
		Name:           "default",
		DataDir:        "catalogd-data",
		DC:             "dc1",
		ClientAddr:     "127.0.0.1:7400",
		PeerAddr:       "127.0.0.1:7401",
		HTTPAddr:       "127.0.0.1:7480",
		TickInterval:   100 * time.Millisecond,
		ElectionTicks:  10,
		SnapshotCount:  10000,
		CatchUpEntries: 5000,
		EventHistory:   100000,
		RequestTimeout: 5 * time.Second,
		AutoPromote:    true,

		WatchProgressInterval: 10 * time.Second,
		LeaseRevokeRate:       1000,
		ProposalHold:          2 * time.Millisecond,
	}
}

// ElectionTimeout is the time a follower waits for the leader before it
// campaigns.
func (c *Config) ElectionTimeout() time.Duration {
	return c.TickInterval * time.Duration(c.ElectionTicks)
}

// MinLeaseTTL is the shortest lease TTL the server grants: above the
// election timeout with room for a new leader to take over (1.5 of it,
// rounded up to a whole second), so a failover alone never expires a lease.
func (c *Config) MinLeaseTTL() int64 {
	d := c.ElectionTimeout() * 3 / 2
	return int64((d + time.Second - 1) / time.Second)
}

// Validate checks the configuration and says what to fix.
func (c *Config) Validate() error {
	if c.Name == "" {
		return errors.New("--name must not be empty")
	}
	if c.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	if c.DC == "" {
		return errors.New("--dc must not be empty")
	}
	for flag, addr := range map[string]string{"--client-addr": c.ClientAddr, "--peer-addr": c.PeerAddr, "--http-addr": c.HTTPAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s %q is not host:port: %v", flag, addr, err)
		}
	}
	if c.TickInterval <= 0 || c.ElectionTicks < 2 {
		return errors.New("tick interval must be positive and election ticks at least 2")
	}
	if c.EventHistory < 1 {
		return errors.New("event history must keep at least 1 revision")
	}
	if c.RequestTimeout <= 0 {
		return errors.New("request timeout must be positive")
	}
	if c.WatchProgressInterval <= 0 {
		return fmt.Errorf("--watch-progress-interval must be positive, got %v", c.WatchProgressInterval)
	}
	if c.LeaseRevokeRate < 1 {
		return fmt.Errorf("--lease-revoke-rate must be at least 1 (revokes per second), got %d", c.LeaseRevokeRate)
	}
	if c.ProposalHold < 0 || c.ProposalHold > maxProposalHold {
		return fmt.Errorf("--proposal-hold must be between 0 (off) and %v, got %v", maxProposalHold, c.ProposalHold)
	}
	if c.Join != "" {
		if c.InitialCluster != "" {
			return fmt.Errorf("--join %s and --initial-cluster exclude each other: --initial-cluster starts a new cluster, --join adds this server to a running one", c.Join)
		}
		if _, _, err := net.SplitHostPort(c.Join); err != nil {
			return fmt.Errorf("--join %q is not host:port (the client address of a running member): %v", c.Join, err)
		}
	}
	members, err := c.members()
	if err != nil {
		return err
	}
	found := false
	for _, m := range members {
		if m.Name == c.Name {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("--initial-cluster %q does not name this server (--name %q): add %s=<peer host:port>", c.InitialCluster, c.Name, c.Name)
	}
	return nil
}

// members parses InitialCluster into peers with their ids.
func (c *Config) members() ([]consensus.Peer, error) {
	spec := c.InitialCluster
	if spec == "" {
		spec = c.Name + "=" + c.PeerAddr
	}
	var peers []consensus.Peer
	names := map[string]bool{}
	addrs := map[string]bool{}
	low := map[uint64]string{}
	for _, part := range strings.Split(spec, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("--initial-cluster entry %q must be name=host:port (e.g. n1=127.0.0.1:7401,n2=127.0.0.1:7411)", part)
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return nil, fmt.Errorf("--initial-cluster entry %q: %q is not host:port", part, addr)
		}
		if names[name] {
			return nil, fmt.Errorf("--initial-cluster names %q twice: member names must be unique", name)
		}
		if addrs[addr] {
			return nil, fmt.Errorf("--initial-cluster gives peer address %q twice: each member needs its own", addr)
		}
		names[name], addrs[addr] = true, true
		id := memberID(name, addr)
		// Request ids carry a member id's low 16 bits: they must differ.
		if other, dup := low[id&0xffff]; dup {
			return nil, fmt.Errorf("--initial-cluster members %q and %q hash to clashing ids: rename one", other, name)
		}
		low[id&0xffff] = name
		peers = append(peers, consensus.Peer{ID: id, Name: name, Addr: addr})
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].ID < peers[j].ID })
	return peers, nil
}

// memberID derives a member's id from its name and peer address, so every
// member computes the same ids from the same --initial-cluster.
func memberID(name, peerAddr string) uint64 {
	h := fnv.New64a()
	h.Write([]byte("catalogd-member\x00" + name + "\x00" + peerAddr))
	id := h.Sum64()
	if id == 0 {
		id = 1
	}
	return id
}

// clusterID derives the cluster's id from its initial members.
func clusterID(peers []consensus.Peer) uint64 {
	h := fnv.New64a()
	h.Write([]byte("catalogd-cluster"))
	for _, p := range peers {
		var b [8]byte
		for i := range 8 {
			b[i] = byte(p.ID >> (8 * i))
		}
		h.Write(b[:])
	}
	return h.Sum64()
}
