package framework

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

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
	// join is the client address of the member a joining member asks to add
	// it; empty for the initial members.
	join string

	tuning

	// log records the member's output over all its runs.
	log *memberLog
	// logger writes into log; in-process members log through it.
	logger *slog.Logger
	// faults is the cluster's fault table for in-process members (nil for
	// processes); the launcher makes the member's outgoing raft messages obey it.
	faults *faultTable
	// netns is the command prefix that runs a process in the member's network
	// namespace; nil when processes run in the test's namespace.
	netns []string
}

// flags returns the catalogd command line of the member.
func (s memberSpec) flags() []string {
	args := []string{
		"--name", s.name,
		"--data-dir", s.dataDir,
		"--client-addr", s.clientAddr,
		"--peer-addr", s.peerAddr,
		"--http-addr", s.httpAddr,
		"--auto-promote=" + strconv.FormatBool(s.autoPromote),
		"--snapshot-count", strconv.FormatUint(s.snapshotCount, 10),
		"--snapshot-catchup-entries", strconv.FormatUint(s.catchUpEntries, 10),
		"--tick-interval", s.tickInterval.String(),
		"--election-ticks", strconv.Itoa(s.electionTicks),
		"--request-timeout", s.requestTimeout.String(),
		"--log-level", "info",
	}
	if s.join != "" {
		return append(args, "--join", s.join)
	}
	return append(args, "--initial-cluster", s.initialCluster)
}

// A launcher starts members: inProcess runs them in the test's process,
// processLauncher execs the catalogd binary.
type launcher interface {
	// launch starts the member and returns once it knows its raft id; it need
	// not know a leader yet. An address taken by someone else is reported as
	// server.ErrAddrInUse.
	launch(ctx context.Context, spec memberSpec) (member, error)
}

// A member is one running catalogd server.
type member interface {
	// id is the member's raft id.
	id() uint64
	// leader returns the id of the leader the member knows, 0 if none.
	leader(ctx context.Context) (uint64, error)
	// stop stops the member gracefully (a leader hands over first); ctx
	// bounds the handover of an in-process member.
	stop(ctx context.Context)
	// alive reports whether the member still runs: false once a process
	// exited, whoever ended it.
	alive() bool
}

// inProcess runs members as server.Server values in the test's process.
type inProcess struct{}

// joinIDWait bounds how long an in-process member that joined may take to
// learn the id the cluster gave it.
const joinIDWait = 20 * time.Second

func (inProcess) launch(ctx context.Context, spec memberSpec) (member, error) {
	cfg := server.DefaultConfig()
	cfg.Name = spec.name
	cfg.DataDir = spec.dataDir
	cfg.ClientAddr = spec.clientAddr
	cfg.PeerAddr = spec.peerAddr
	cfg.HTTPAddr = spec.httpAddr
	cfg.InitialCluster = spec.initialCluster
	cfg.Join = spec.join
	cfg.AutoPromote = spec.autoPromote
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
	if spec.join == "" {
		// Registered before Start, so no message of this member escapes the table.
		faults.register(spec.index, srv.ID())
		srv.Start()
		return inProcessMember{srv}, nil
	}
	// A joining member may learn its id from the cluster only once started;
	// its messages are not dropped before it is registered.
	srv.Start()
	ctx, cancel := context.WithTimeout(ctx, joinIDWait)
	defer cancel()
	for srv.ID() == 0 {
		select {
		case <-ctx.Done():
			srv.Stop(context.Background())
			return nil, fmt.Errorf("member %s joined through %s but learned no id within %v: %w", spec.name, spec.join, joinIDWait, context.Cause(ctx))
		case <-time.After(pollInterval):
		}
	}
	faults.register(spec.index, srv.ID())
	return inProcessMember{srv}, nil
}

type inProcessMember struct{ srv *server.Server }

func (m inProcessMember) id() uint64                             { return m.srv.ID() }
func (m inProcessMember) leader(context.Context) (uint64, error) { return m.srv.Leader(), nil }
func (m inProcessMember) stop(ctx context.Context)               { m.srv.Stop(ctx) }
func (m inProcessMember) alive() bool                            { return true }
