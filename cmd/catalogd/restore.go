package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/catalogd/catalogd/server"
)

// runRestore runs `catalogd restore`: it prepares a data dir from a snapshot
// file for a member of a new cluster and says how to start that member.
func runRestore(args []string, stderr io.Writer) int {
	defaults := server.DefaultConfig()
	cfg := server.RestoreConfig{}
	fs := flag.NewFlagSet("catalogd restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: catalogd restore --snapshot FILE [--data-dir DIR] [--name NAME] [--initial-cluster name=host:port,...] [--peer-addr HOST:PORT]\n\n"+
			"Prepares an empty data dir from a snapshot file (catctl snapshot save) for one member of a\n"+
			"new cluster. Run it on every member with the same --snapshot and --initial-cluster, then\n"+
			"start each member with the same --name, --data-dir, --initial-cluster and --peer-addr.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.SnapshotPath, "snapshot", "", "snapshot file to restore (a database followed by its sha256)")
	fs.StringVar(&cfg.DataDir, "data-dir", defaults.DataDir, "data dir of the new member; must not exist or be empty")
	fs.StringVar(&cfg.Name, "name", defaults.Name, "name of the new member, as it will be started")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "members of the new cluster: name=peerhost:port,... (empty: a single-node cluster)")
	fs.StringVar(&cfg.PeerAddr, "peer-addr", defaults.PeerAddr, "raft address of the new member (host:port)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "catalogd restore: %v\n", oneLine(err))
		return 1
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "catalogd restore: unexpected argument %q: restore takes flags only (see -h)\n", fs.Arg(0))
		return 1
	}
	if cfg.SnapshotPath == "" {
		fmt.Fprintln(stderr, "catalogd restore: --snapshot FILE is required (a file written by catctl snapshot save)")
		return 1
	}
	summary, err := server.InspectSnapshot(cfg.SnapshotPath)
	if err == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
		err = server.Restore(cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "catalogd restore: %v\n", oneLine(err))
		return 1
	}

	fmt.Fprintf(stderr, "Restored %s into %s: revision %d, %d keys, %d bytes, sha256 %s\n",
		cfg.SnapshotPath, cfg.DataDir, summary.Revision, summary.Keys, summary.Size, summary.SHA256)
	start := []string{"catalogd", "--name", cfg.Name, "--data-dir", cfg.DataDir, "--peer-addr", cfg.PeerAddr}
	if cfg.InitialCluster != "" {
		start = append(start, "--initial-cluster", cfg.InitialCluster)
	}
	fmt.Fprintf(stderr, "Start the member with (add your other flags, such as --client-addr):\n  %s\n", shellJoin(start))
	return 0
}

// shellJoin joins args into a command line a POSIX shell reads back as args.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,@", r))
		}) < 0 {
			quoted[i] = a
			continue
		}
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}
