// Command catctl is the command-line client of catalogd, shaped like etcdctl:
// one subcommand per noun (cluster, member, snapshot, kv, bench), global
// flags for where the servers are and how to print answers.
//
// It is built only on the sdk and api packages, never on server-side
// packages: a test enforces it.
//
// Exit codes are listed in global.go.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// SIGTERM ends a command as Ctrl-C does, so that what it holds (a lock,
	// a leadership, a registration) is released rather than left to expire.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
