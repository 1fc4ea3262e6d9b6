package main

import (
	"context"
	"fmt"

	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newSemCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("sem", "Take permits of a counting semaphore")
	cmd.AddCommand(newSemAcquireCommand(a))
	return cmd
}

func newSemAcquireCommand(a *app) *cobra.Command {
	var (
		sf            sessionFlags
		permits, take int64
		try           bool
	)
	cmd := &cobra.Command{
		Use:   "acquire NAME --permits N [--take K] [-- COMMAND ARGS...]",
		Short: "Take K of the N permits of semaphore NAME and hold them until interrupted, or while COMMAND runs",
		Long: "acquire waits until K (--take, default 1) of the N permits (--permits) of the\n" +
			"semaphore NAME are free and takes them; waiters are served first come, first\n" +
			"served, so a large request is not starved by small ones. N is fixed when the\n" +
			"semaphore is first used: while anyone holds or waits for NAME, a different\n" +
			"--permits is refused.\n\n" +
			"Without COMMAND it prints the fencing token and holds the permits until\n" +
			"interrupted (Ctrl-C or SIGTERM). With -- COMMAND ARGS... it runs COMMAND while\n" +
			"holding them, with the token in $" + fenceEnv + ", and exits with COMMAND's status,\n" +
			"as catctl lock does (see catctl lock --help for signals and a lost lease).",
		Example: "  # at most 4 backups at a time over the fleet\n" +
			"  catctl sem acquire backups --permits 4 -- ./backup.sh",
		Args: holdArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, argv := args[0], args[1:]
			if !cmd.Flags().Changed("permits") {
				return usageErrorf(cmd, "--permits N is required: the number of permits of the semaphore")
			}
			if permits < 1 {
				return usageErrorf(cmd, "--permits must be >= 1, got %d", permits)
			}
			if take < 1 || take > permits {
				return usageErrorf(cmd, "--take must be 1..--permits (%d), got %d", permits, take)
			}
			if err := sf.validate(cmd); err != nil {
				return err
			}
			path, err := lookCommand(cmd, argv)
			if err != nil {
				return err
			}
			s, done, err := a.session(cmd, sf)
			if err != nil {
				return err
			}
			defer done()
			sem := sdk.NewSemaphore(s, name, permits)
			if try {
				ctx, cancel := a.commandContext(cmd)
				err = sem.TryAcquire(ctx, take)
				cancel()
			} else {
				err = sem.Acquire(cmd.Context(), take)
			}
			if err != nil {
				return a.acquireError(cmd, s.Client(), "semaphore", name, err)
			}
			release := func() error {
				ctx, cancel := context.WithTimeout(context.Background(), a.commandTimeout)
				defer cancel()
				return sem.Release(ctx)
			}
			hold := holding{what: fmt.Sprintf("%d permits of %s", take, quoteKey(name)), name: name, token: sem.Token(),
				lease: s.Lease(), lost: sem.Done()}
			if path != "" {
				return a.runHolding(hold, path, argv, release)
			}
			if a.jsonOutput() {
				if err := a.printJSON(hold.owner(take)); err != nil {
					_ = release()
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "acquired %d of %d permits of %s with token %d on lease %d\n", take, permits, name, hold.token, hold.lease)
			}
			if err := a.holdUntilInterrupted(cmd, hold); err != nil {
				return err
			}
			if err := release(); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "released %d permits of %s (token %d)\n", take, name, hold.token)
			return nil
		},
	}
	sf.register(cmd, "permits")
	cmd.Flags().Int64Var(&permits, "permits", 0, "number of permits of the semaphore (required; fixed while it is in use)")
	cmd.Flags().Int64Var(&take, "take", 1, "number of permits to take")
	cmd.Flags().BoolVar(&try, "try", false, "fail at once if the permits are not free instead of waiting")
	return cmd
}
