package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newBarrierCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("barrier", "Hold processes back until a barrier is released, or until N have arrived")
	cmd.Long = "Simple barriers: set NAME holds back every 'wait NAME' until 'release NAME'.\n\n" +
		"Double barriers: 'enter NAME --count N' waits until N participants have entered;\n" +
		"'leave' waits until every participant has left. A participant is a lease:\n" +
		"either one catctl grants and keeps alive for as long as it runs (enter then\n" +
		"holds until interrupted, or runs -- COMMAND, and leaves at the end), or an\n" +
		"existing lease given with --lease, for scripts that enter and leave in two\n" +
		"catctl invocations (keep that lease alive meanwhile, with\n" +
		"'catctl lease keep-alive ID' or a TTL long enough)."
	cmd.AddCommand(newBarrierSetCommand(a), newBarrierReleaseCommand(a), newBarrierWaitCommand(a),
		newBarrierEnterCommand(a), newBarrierLeaveCommand(a), newBarrierLsCommand(a))
	return cmd
}

// parseLeaseFlag parses an optional --lease flag ("" → 0).
func parseLeaseFlag(cmd *cobra.Command, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	id, err := strconv.ParseInt(s, 0, 64)
	if err != nil || id <= 0 {
		return 0, usageErrorf(cmd, "--lease must be a positive lease ID in decimal or 0x-prefixed hex, got %q", s)
	}
	return id, nil
}

func newBarrierSetCommand(a *app) *cobra.Command {
	var lease string
	cmd := &cobra.Command{
		Use:   "set NAME",
		Short: "Set simple barrier NAME: 'barrier wait NAME' blocks until it is released",
		Long: "set creates the simple barrier NAME. It stays until 'barrier release NAME', or,\n" +
			"with --lease, until that lease ends. Setting a barrier that is set already\n" +
			"changes nothing (it keeps the lease it was set with).",
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			id, err := parseLeaseFlag(cmd, lease)
			if err != nil {
				return err
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			b := sdk.NewBarrier(c, name)
			if id != 0 {
				err = b.HoldWithLease(ctx, id)
			} else {
				err = b.Hold(ctx)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "OK")
			return nil
		},
	}
	cmd.Flags().StringVar(&lease, "lease", "", "release the barrier when this lease ends (decimal or 0x hex)")
	return cmd
}

func newBarrierReleaseCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "release NAME",
		Short: "Release simple barrier NAME: every 'barrier wait NAME' returns",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			released, err := sdk.NewBarrier(c, name).Release(ctx)
			if err != nil {
				return err
			}
			if !released {
				return fmt.Errorf("release barrier %s: it is not set", quoteKey(name))
			}
			fmt.Fprintln(a.stdout, "OK")
			return nil
		},
	}
}

func newBarrierWaitCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "wait NAME",
		Short: "Wait until simple barrier NAME is not set (at once if it is not)",
		Long:  "wait returns once the barrier is released; it waits with no time limit, until interrupted.",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			c, err := a.newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			if err := sdk.NewBarrier(c, name).Wait(cmd.Context()); err != nil {
				if cmd.Context().Err() != nil {
					return fmt.Errorf("interrupted while waiting for barrier %s", quoteKey(name))
				}
				return fmt.Errorf("wait for barrier %s: %w", quoteKey(name), err)
			}
			fmt.Fprintf(a.stdout, "barrier %s is not set\n", name)
			return nil
		},
	}
}

func newBarrierEnterCommand(a *app) *cobra.Command {
	var (
		count int64
		ttl   sessionFlags
	)
	cmd := &cobra.Command{
		Use:   "enter NAME --count N [-- COMMAND ARGS...]",
		Short: "Enter double barrier NAME and wait until N participants have entered",
		Long: "enter joins the double barrier NAME, which opens when --count participants\n" +
			"have entered, and waits until it opens. Every participant must give the same\n" +
			"--count. Once open, no one else may enter until every participant has left.\n\n" +
			"Without --lease, the participant is a lease catctl grants and keeps alive:\n" +
			"once the barrier opens, enter prints so and holds until interrupted (Ctrl-C or\n" +
			"SIGTERM), or runs -- COMMAND ARGS... (the participation's fencing token in\n" +
			"$" + fenceEnv + ", the barrier's name in $" + lockEnv + "), then leaves, waits until every\n" +
			"participant has left, and exits (with COMMAND's status). If catctl dies, its\n" +
			"lease expires after --ttl, which leaves the barrier for it.\n\n" +
			"With --lease ID, that lease enters and enter returns once the barrier opens\n" +
			"(or, with COMMAND, leaves after it): leave later with\n" +
			"'catctl barrier leave NAME --lease ID'. Keep the lease alive meanwhile.",
		Example: "  # three workers start and finish together\n" +
			"  catctl barrier enter batch-42 --count 3 -- ./worker.sh\n\n" +
			"  # the same, in a script\n" +
			"  L=$(catctl -o json lease grant 60 | jq -r .id)\n" +
			"  catctl barrier enter batch-42 --count 3 --lease $L\n" +
			"  ./worker.sh\n" +
			"  catctl barrier leave batch-42 --lease $L",
		Args: holdArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, argv := args[0], args[1:]
			if !cmd.Flags().Changed("count") {
				return usageErrorf(cmd, "--count N is required: the number of participants the barrier waits for")
			}
			if count < 1 {
				return usageErrorf(cmd, "--count must be >= 1, got %d", count)
			}
			if err := ttl.validate(cmd); err != nil {
				return err
			}
			path, err := lookCommand(cmd, argv)
			if err != nil {
				return err
			}
			s, done, err := a.session(cmd, ttl)
			if err != nil {
				return err
			}
			defer done()
			b := sdk.NewDoubleBarrier(s, name, count)
			if err := b.Enter(cmd.Context()); err != nil {
				if cmd.Context().Err() != nil {
					if ttl.leaseID != 0 {
						return fmt.Errorf("interrupted while waiting for barrier %s to open; lease %d stays entered: "+
							"catctl barrier leave %s --lease %d withdraws it", quoteKey(name), ttl.leaseID, name, ttl.leaseID)
					}
					return fmt.Errorf("interrupted while waiting for barrier %s to open (withdrawn)", quoteKey(name))
				}
				return err
			}
			leave := func(ctx context.Context) error {
				if err := b.Leave(ctx); err != nil {
					if ctx.Err() != nil {
						return fmt.Errorf("interrupted while waiting for the others to leave barrier %s (this participant has left)", quoteKey(name))
					}
					return err
				}
				return nil
			}
			hold := holding{what: "barrier " + quoteKey(name), name: name, token: b.Token(), lease: s.Lease(), lost: b.Done()}
			if path != "" {
				return a.runHolding(hold, path, argv, func() error {
					ctx, stop := interruptContext()
					defer stop()
					return leave(ctx)
				})
			}
			fmt.Fprintf(a.stdout, "entered barrier %s with lease %d (fencing token %d): %d participants are in\n", name, s.Lease(), b.Token(), count)
			if ttl.leaseID != 0 {
				return nil // the lease stays entered: barrier leave --lease
			}
			if err := a.holdUntilInterrupted(cmd, hold); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "leaving barrier %s; waiting for every participant to leave\n", name)
			ctx, stop := interruptContext()
			defer stop()
			if err := leave(ctx); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "left barrier %s: every participant has left\n", name)
			return nil
		},
	}
	cmd.Flags().Int64Var(&count, "count", 0, "number of participants (required; the same for every participant)")
	ttl.register(cmd, "participant")
	return cmd
}

// interruptContext is cancelled by the next SIGINT or SIGTERM: after a first
// interrupt has ended the command's context, a wait that follows it (leaving
// a barrier) can still be cut short.
func interruptContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func newBarrierLeaveCommand(a *app) *cobra.Command {
	var lease string
	cmd := &cobra.Command{
		Use:   "leave NAME --lease ID",
		Short: "Leave double barrier NAME and wait until every participant has left",
		Long: "leave withdraws lease ID, which entered with 'barrier enter NAME --lease ID',\n" +
			"and waits (with no time limit, until interrupted) until every participant has\n" +
			"left. Leaving before the barrier opened just withdraws.",
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if lease == "" {
				return usageErrorf(cmd, "--lease ID is required: the lease that entered the barrier")
			}
			id, err := parseLeaseFlag(cmd, lease)
			if err != nil {
				return err
			}
			s, done, err := a.session(cmd, sessionFlags{leaseID: id})
			if err != nil {
				return err
			}
			defer done()
			if err := sdk.NewDoubleBarrier(s, name, 1).Leave(cmd.Context()); err != nil {
				if cmd.Context().Err() != nil {
					return fmt.Errorf("interrupted while waiting for the others to leave barrier %s (lease %d has left)", quoteKey(name), id)
				}
				return err
			}
			fmt.Fprintf(a.stdout, "left barrier %s: every participant has left\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&lease, "lease", "", "the lease that entered (required; decimal or 0x hex)")
	return cmd
}

func newBarrierLsCommand(a *app) *cobra.Command {
	var (
		consistency string
		limit       int64
	)
	cmd := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List barriers: simple ones with their lease, double ones with their participants",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf(cmd, "%s takes at most 1 argument (PREFIX), got %d", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			serializable, err := parseSerializable(cmd, consistency)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usageErrorf(cmd, "--limit must be >= 0 (0: every barrier), got %d", limit)
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			all := &catalogpb.ListBarriersResponse{}
			all.Barriers, all.More, err = pageAll(limit, func(n int64, after string) ([]*catalogpb.BarrierState, bool, error) {
				resp, err := c.ListBarriers(ctx, &catalogpb.ListBarriersRequest{Prefix: prefix, Serializable: serializable, Limit: n, ContinueAfter: after})
				if err != nil {
					return nil, false, fmt.Errorf("list barriers: %w", err)
				}
				all.Header = resp.Header
				return resp.Barriers, resp.More, nil
			}, (*catalogpb.BarrierState).GetName)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(all)
			}
			tw := a.newTable()
			fmt.Fprintln(tw, "NAME\tKIND\tLEASE\tCOUNT\tPARTICIPANTS\tOPEN")
			for _, b := range all.Barriers {
				lease, count, parts, open := "-", "-", "-", "-"
				if b.Kind == catalogpb.BarrierKind_BARRIER_KIND_SIMPLE {
					if b.Lease != 0 {
						lease = strconv.FormatInt(b.Lease, 10)
					}
				} else {
					count = strconv.FormatInt(b.Count, 10)
					ids := make([]string, len(b.Participants))
					for i, p := range b.Participants {
						ids[i] = strconv.FormatInt(p.Lease, 10)
					}
					if len(ids) > 0 {
						parts = strings.Join(ids, ",")
					}
					open = strconv.FormatBool(b.Open)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", printable([]byte(b.Name)),
					strings.ToLower(strings.TrimPrefix(b.Kind.String(), "BARRIER_KIND_")), lease, count, parts, open)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().Int64Var(&limit, "limit", 0, "list at most this many barriers (0: all)")
	cmd.Flags().StringVar(&consistency, "consistency", "l", "l (linearizable) or s (serializable)")
	return cmd
}
