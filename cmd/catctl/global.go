package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Exit codes. Scripts may rely on them.
const (
	// exitOK: the command did what was asked.
	exitOK = 0
	// exitError: bad flags or arguments, a request the server refused
	// (invalid key, compacted revision...), or any other failure.
	exitError = 1
	// exitUnavailable: no server could be reached, or the cluster had no
	// leader. Nothing was applied.
	exitUnavailable = 2
	// exitTimeout: no answer in time (--command-timeout, or the server's own
	// commit timeout). A write may or may not have been applied.
	exitTimeout = 3
)

// exitCode maps the error a command returned to the process exit code.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, sdk.ErrUnavailable), errors.Is(err, sdk.ErrNoLeader), errors.Is(err, sdk.ErrStopped):
		return exitUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, sdk.ErrTimeout):
		return exitTimeout
	default:
		return exitError
	}
}

const (
	defaultEndpoint = "127.0.0.1:7400"
	endpointsEnv    = "CATALOG_ENDPOINTS"
)

// An app holds what every command shares: the global flags and where output goes.
type app struct {
	stdout, stderr io.Writer

	endpoints      string
	dialTimeout    time.Duration
	commandTimeout time.Duration
	output         string
}

// A commandExit is the exit status of a command that catctl ran while
// holding something (lock NAME -- COMMAND): catctl exits with that status
// and prints nothing more, the command having said what went wrong.
type commandExit struct{ code int }

func (e commandExit) Error() string { return fmt.Sprintf("the command exited with status %d", e.code) }

// A usageError is a mistake in the command line, reported with a pointer to --help.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(cmd *cobra.Command, format string, args ...any) error {
	return usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// run executes catctl with args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := newRootCommand(a, getenv)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if ce, ok := errors.AsType[commandExit](err); ok {
		return ce.code
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	if ue, ok := errors.AsType[usageError](err); ok {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.cmd.CommandPath())
	}
	code := exitCode(err)
	if code == exitUnavailable {
		fmt.Fprintf(stderr, "The cluster at --endpoints %s is unavailable: check that catalogd runs there and has a leader.\n", a.endpoints)
	}
	return code
}

func newRootCommand(a *app, getenv func(string) string) *cobra.Command {
	root := newGroupCommand("catctl", "Command-line client of catalogd")
	root.Long = "catctl talks to a catalogd cluster over gRPC.\n\n" +
		"Exit codes: 0 done; 1 bad usage, refused request or other error;\n" +
		"2 no server reachable or no leader (nothing applied);\n" +
		"3 timed out (a write may or may not have applied).\n" +
		"lock, sem acquire and barrier enter with -- COMMAND exit with COMMAND's status."
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.PersistentPreRunE = a.validate
	endpoints := getenv(endpointsEnv)
	if endpoints == "" {
		endpoints = defaultEndpoint
	}
	flags := root.PersistentFlags()
	flags.StringVar(&a.endpoints, "endpoints", endpoints,
		"comma-separated server client addresses (host:port); default from $"+endpointsEnv)
	flags.DurationVar(&a.dialTimeout, "dial-timeout", 2*time.Second, "timeout of each attempt to connect to a server")
	flags.DurationVar(&a.commandTimeout, "command-timeout", 5*time.Second, "timeout of a command (of each request, for bench)")
	flags.StringVarP(&a.output, "output", "o", "table", "output format: table or json (the response as protojson)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{cmd: cmd, err: err}
	})
	root.AddCommand(newClusterCommand(a), newMemberCommand(a), newSnapshotCommand(a), newKVCommand(a), newBenchCommand(a),
		newServiceCommand(a), newLeaseCommand(a), newWatchCommand(a), newShardCommand(a),
		newLockCommand(a), newElectCommand(a), newSemCommand(a), newBarrierCommand(a), newQueueCommand(a))
	return root
}

// exactArgs is cobra.ExactArgs with the argument names in the error.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == len(names):
			return nil
		case len(names) == 0:
			return usageErrorf(cmd, "%s takes no arguments, got %q", cmd.CommandPath(), args)
		case len(names) == 1:
			return usageErrorf(cmd, "%s takes 1 argument (%s), got %d", cmd.CommandPath(), names[0], len(args))
		default:
			return usageErrorf(cmd, "%s takes %d arguments (%s), got %d",
				cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))
		}
	}
}

// newGroupCommand returns a command that only holds subcommands: alone it
// prints its help, and an unknown subcommand is a usage error.
func newGroupCommand(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			var names []string
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			return usageErrorf(cmd, "unknown command %q for %q (commands: %s)", args[0], cmd.CommandPath(), strings.Join(names, ", "))
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
}

// validate checks the global flags before any command runs.
func (a *app) validate(cmd *cobra.Command, _ []string) error {
	if a.output != "table" && a.output != "json" {
		return usageErrorf(cmd, "--output must be table or json, got %q", a.output)
	}
	if a.dialTimeout <= 0 {
		return usageErrorf(cmd, "--dial-timeout must be > 0, got %v", a.dialTimeout)
	}
	if a.commandTimeout <= 0 {
		return usageErrorf(cmd, "--command-timeout must be > 0, got %v", a.commandTimeout)
	}
	if err := a.config(a.endpointList()).Validate(); err != nil {
		return usageErrorf(cmd, "--endpoints %q: %w", a.endpoints, err)
	}
	return nil
}

func (a *app) endpointList() []string {
	var eps []string
	for ep := range strings.SplitSeq(a.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	return eps
}

func (a *app) config(endpoints []string) sdk.Config {
	return sdk.Config{Endpoints: endpoints, DialTimeout: a.dialTimeout}
}

// newClient returns a client over every endpoint.
func (a *app) newClient() (*sdk.Client, error) {
	return sdk.New(a.config(a.endpointList()))
}

// connect returns a client over every endpoint and a context bounded by
// --command-timeout; done releases both.
func (a *app) connect(cmd *cobra.Command) (ctx context.Context, c *sdk.Client, done func(), err error) {
	c, err = a.newClient()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := a.commandContext(cmd)
	return ctx, c, func() { cancel(); c.Close() }, nil
}

// commandContext bounds one command by --command-timeout.
func (a *app) commandContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), a.commandTimeout)
}

func (a *app) jsonOutput() bool { return a.output == "json" }

var jsonOptions = protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}

// printJSON writes m as protojson.
func (a *app) printJSON(m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", b)
	return err
}

// newTable returns a writer aligning tab-separated columns; Flush prints it.
func (a *app) newTable() *tabwriter.Writer {
	return tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
}

// printable returns b as text when it is printable UTF-8 without tabs or
// newlines (which would break a table), and Go-quoted otherwise.
func printable(b []byte) string {
	if !utf8.Valid(b) {
		return strconv.Quote(string(b))
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) {
			return strconv.Quote(string(b))
		}
	}
	return string(b)
}

// quoteKey quotes a key for an error message, shortened when long so that
// the message stays readable.
func quoteKey(key string) string {
	const shown = 64
	if len(key) <= shown {
		return strconv.Quote(key)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(key[:shown]), len(key))
}

// encodeToken makes a continue token safe to paste into a shell.
func encodeToken(token []byte) string { return base64.RawURLEncoding.EncodeToString(token) }

// decodeToken accepts a token as encodeToken prints it, and also in standard
// base64, as the JSON output (protojson) prints bytes.
func decodeToken(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	return base64.RawURLEncoding.DecodeString(s)
}

// humanBytes formats a size in SI units, as etcdctl does ("25 kB").
func humanBytes(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	v := float64(n)
	i := -1
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
