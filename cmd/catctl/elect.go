package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newElectCommand(a *app) *cobra.Command {
	var (
		sf     sessionFlags
		listen bool
	)
	cmd := &cobra.Command{
		Use:   "elect NAME [VALUE] | elect NAME --listen",
		Short: "Campaign in election NAME and lead until interrupted, or watch who leads",
		Long: "elect NAME [VALUE] campaigns in election NAME with VALUE (default empty): it\n" +
			"waits its turn (candidates are elected in the order they campaigned), prints\n" +
			"when elected, with the leader's fencing token, and leads until interrupted\n" +
			"(Ctrl-C or SIGTERM); it then resigns and the next candidate is elected.\n" +
			"Leadership lives on a lease of --ttl that catctl keeps alive (if catctl dies,\n" +
			"the next candidate is elected after --ttl), or on --lease ID. If the lease\n" +
			"is lost while leading, catctl exits with status 1.\n\n" +
			"elect NAME --listen prints the current leadership and then every change (a\n" +
			"new leader, a new value, no leader) until interrupted, without campaigning.\n" +
			"-o json prints each LeaderResponse on one line.",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case listen && len(args) != 1:
				return usageErrorf(cmd, "elect NAME --listen takes 1 argument (NAME), got %d", len(args))
			case len(args) < 1 || len(args) > 2:
				return usageErrorf(cmd, "%s takes 1 or 2 arguments (NAME [VALUE]), got %d", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if listen {
				if cmd.Flags().Changed("ttl") || cmd.Flags().Changed("lease") {
					return usageErrorf(cmd, "--listen does not campaign: it takes no --ttl or --lease")
				}
				return a.listenElection(cmd, name)
			}
			var value []byte
			if len(args) == 2 {
				value = []byte(args[1])
			}
			if err := sf.validate(cmd); err != nil {
				return err
			}
			s, done, err := a.session(cmd, sf)
			if err != nil {
				return err
			}
			defer done()
			e := sdk.NewElection(s, name)
			fmt.Fprintf(a.stderr, "campaigning for %s with lease %d\n", name, s.Lease())
			if err := e.Campaign(cmd.Context(), value); err != nil {
				return a.acquireError(cmd, s.Client(), "election", name, err)
			}
			key := e.Key()
			if a.jsonOutput() {
				if err := a.printJSON(&catalogpb.LeaderResponse{HasLeader: true, Leader: key, Value: value}); err != nil {
					_ = a.resign(e, name)
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "elected leader of %s with token %d on lease %d\n", name, key.GetToken(), key.GetLease())
			}
			h := holding{what: "leadership of " + quoteKey(name), name: name, token: key.GetToken(), lease: key.GetLease(), lost: e.Done()}
			if err := a.holdUntilInterrupted(cmd, h); err != nil {
				return err
			}
			if err := a.resign(e, name); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "resigned leadership of %s (token %d)\n", name, key.GetToken())
			return nil
		},
	}
	sf.register(cmd, "leadership")
	cmd.Flags().BoolVarP(&listen, "listen", "l", false, "print each change of leadership instead of campaigning")
	return cmd
}

func (a *app) resign(e *sdk.Election, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.commandTimeout)
	defer cancel()
	return e.Resign(ctx)
}

// listenElection prints the leadership of name and each change of it until
// interrupted.
func (a *app) listenElection(cmd *cobra.Command, name string) error {
	c, err := a.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	// One read first: a bad name is refused here, with the server's reason,
	// rather than retried by the stream.
	ctx, cancel := a.commandContext(cmd)
	_, err = c.ElectionLeader(ctx, name)
	cancel()
	if err != nil {
		return fmt.Errorf("leader of %s: %w", quoteKey(name), err)
	}
	for resp := range c.ObserveElection(cmd.Context(), name) {
		if err := a.printLeader(name, resp); err != nil {
			return err
		}
	}
	if cmd.Context().Err() != nil {
		return nil
	}
	return errors.New("observe " + quoteKey(name) + ": the stream ended")
}

// printLeader prints one leadership on one line.
func (a *app) printLeader(name string, resp *catalogpb.LeaderResponse) error {
	if a.jsonOutput() {
		b, err := eventJSON.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	var err error
	if resp.HasLeader {
		_, err = fmt.Fprintf(a.stdout, "%d leader of %s: lease %d, token %d, value %s\n", resp.GetHeader().GetRevision(), name,
			resp.GetLeader().GetLease(), resp.GetLeader().GetToken(), valueText(resp.Value))
	} else {
		_, err = fmt.Fprintf(a.stdout, "%d no leader of %s\n", resp.GetHeader().GetRevision(), name)
	}
	return err
}

// valueText prints a value as printable does, and "" when empty.
func valueText(b []byte) string {
	if len(b) == 0 {
		return `""`
	}
	return printable(b)
}
