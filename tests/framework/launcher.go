package framework

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/catalogd/catalogd/server"
)

// A memberSpec is everything needed to start one member; it is the same on
// every restart of that member.
type memberSpec struct {
	index          int
	name           string
	dataDir        string
	clientAddr     string
	peerAddr       string
	httpAddr       string
	initialCluster string

	tuning

	logger *slog.Logger
	// faults is the cluster's fault table; the launcher makes the member's
	// outgoing raft messages obey it.
	faults *faultTable
}

// A launcher starts members. inProcess is the one in use; a launcher that
// execs the catalogd binary would turn a memberSpec into flags and implement
// member over the Cluster.Status RPC.
type launcher interface {
	// launch starts the member and returns once its listeners are bound; it
	// need not know a leader yet. An address taken by someone else is
	// reported as server.ErrAddrInUse.
	launch(spec memberSpec) (member, error)
}

// A member is one running catalogd server.
type member interface {
	// id is the member's raft id.
	id() uint64
	// leader returns the id of the leader the member knows, 0 if none.
	leader(ctx context.Context) (uint64, error)
	// stop stops the member gracefully (a leader hands over first); ctx
	// bounds the handover.
	stop(ctx context.Context)
}

// inProcess runs members as server.Server values in the test's process.
type inProcess struct{}

func (inProcess) launch(spec memberSpec) (member, error) {
	cfg := server.DefaultConfig()
	cfg.Name = spec.name
	cfg.DataDir = spec.dataDir
	cfg.ClientAddr = spec.clientAddr
	cfg.PeerAddr = spec.peerAddr
	cfg.HTTPAddr = spec.httpAddr
	cfg.InitialCluster = spec.initialCluster
	cfg.TickInterval = spec.tickInterval
	cfg.ElectionTicks = spec.electionTicks
	cfg.SnapshotCount = spec.snapshotCount
	cfg.CatchUpEntries = spec.catchUpEntries
	cfg.RequestTimeout = spec.requestTimeout
	cfg.Logger = spec.logger
	faults := spec.faults
	cfg.Drop = faults.drops
	srv, err := server.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("start member %s: %w", spec.name, err)
	}
	// Registered before Start, so no message of this member escapes the table.
	faults.register(spec.index, srv.ID())
	srv.Start()
	return inProcessMember{srv}, nil
}

type inProcessMember struct{ srv *server.Server }

func (m inProcessMember) id() uint64                             { return m.srv.ID() }
func (m inProcessMember) leader(context.Context) (uint64, error) { return m.srv.Leader(), nil }
func (m inProcessMember) stop(ctx context.Context)               { m.srv.Stop(ctx) }
