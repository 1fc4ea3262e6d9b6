// Command catalogd runs one catalogd server. With no flags it is a
// single-node cluster with its data in ./catalogd-data.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"sigs.k8s.io/yaml"

	"github.com/catalogd/catalogd/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run parses args, runs the server until SIGINT or SIGTERM and returns the
// exit code: 0 after a clean stop, 1 (with one line on stderr) on an error.
func run(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "restore" {
		return runRestore(args[1:], stderr)
	}
	cfg, logLevel, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "catalogd: %v\n", err)
		return 1
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := server.Run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "catalogd: %v\n", oneLine(err))
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (server.Config, slog.Level, error) {
	cfg := server.DefaultConfig()
	fs := flag.NewFlagSet("catalogd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Name, "name", cfg.Name, "this member's name, unique in the cluster")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "where the WAL, snapshots and database live")
	fs.StringVar(&cfg.DC, "dc", cfg.DC, "the data center this server belongs to")
	fs.StringVar(&cfg.ClientAddr, "client-addr", cfg.ClientAddr, "gRPC address for clients (host:port)")
	fs.StringVar(&cfg.PeerAddr, "peer-addr", cfg.PeerAddr, "raft address for the other members (host:port)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "HTTP address: GraphQL, metrics, health (host:port)")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "members of a new cluster: name=peerhost:port,... (empty: a single-node cluster)")
	fs.StringVar(&cfg.Join, "join", "", "client address (host:port) of any member of a running cluster to join as a learner")
	fs.BoolVar(&cfg.AutoPromote, "auto-promote", cfg.AutoPromote, "the leader promotes learners to voters once they have caught up")
	fs.Uint64Var(&cfg.SnapshotCount, "snapshot-count", cfg.SnapshotCount, "applied entries between raft snapshots")
	fs.Uint64Var(&cfg.CatchUpEntries, "snapshot-catchup-entries", cfg.CatchUpEntries, "entries kept in the log after a snapshot for slow followers")
	fs.Int64Var(&cfg.EventHistory, "event-history", cfg.EventHistory, "revisions of events kept for watches")
	fs.DurationVar(&cfg.TickInterval, "tick-interval", cfg.TickInterval, "raft tick (heartbeat interval)")
	fs.IntVar(&cfg.ElectionTicks, "election-ticks", cfg.ElectionTicks, "ticks without a leader before an election")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", cfg.RequestTimeout, "bound on a request whose client set no deadline")
	fs.DurationVar(&cfg.WatchProgressInterval, "watch-progress-interval", cfg.WatchProgressInterval, "idle time after which a watch that asked for progress notifications gets one")
	fs.IntVar(&cfg.LeaseRevokeRate, "lease-revoke-rate", cfg.LeaseRevokeRate, "expired leases the leader revokes per second at most")
	fs.DurationVar(&cfg.ProposalHold, "proposal-hold", cfg.ProposalHold, "how long the leader holds new writes while a round of appends is in flight, to send them together when it commits (0: off)")
	fs.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "serve Go's profiler on the HTTP address under /debug/pprof/")
	configFile := fs.String("config", "", "YAML file of flag values (flag name: value); flags given on the command line win")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, 0, err
	}
	if fs.NArg() > 0 {
		return cfg, 0, fmt.Errorf("unexpected argument %q: catalogd takes flags only (see -h)", fs.Arg(0))
	}
	if *configFile != "" {
		if err := applyConfigFile(fs, *configFile); err != nil {
			return cfg, 0, err
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return cfg, 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, 0, err
	}
	return cfg, lvl, nil
}

// applyConfigFile sets every flag the file names that the command line did not.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		return fmt.Errorf("--config %s: not a YAML map of flag: value (%v)", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, v := range values {
		if name == "config" || fs.Lookup(name) == nil {
			return fmt.Errorf("--config %s: unknown setting %q (settings are the flag names, e.g. name, data-dir, initial-cluster)", path, name)
		}
		if set[name] {
			continue
		}
		if err := fs.Set(name, fmt.Sprint(v)); err != nil {
			return fmt.Errorf("--config %s: %s: %v", path, name, err)
		}
	}
	return nil
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
