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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
