package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newLeaseCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("lease", "Grant, renew, inspect and revoke leases")
	cmd.AddCommand(newLeaseGrantCommand(a), newLeaseRevokeCommand(a), newLeaseTTLCommand(a),
		newLeaseLsCommand(a), newLeaseKeepAliveCommand(a))
	return cmd
}

// parseLeaseID accepts a lease id in decimal or 0x-prefixed hex.
func parseLeaseID(cmd *cobra.Command, s string) (int64, error) {
	id, err := strconv.ParseInt(s, 0, 64)
	if err != nil || id <= 0 {
		return 0, usageErrorf(cmd, "LEASE_ID must be a positive lease id in decimal or 0x-prefixed hex, got %q", s)
	}
	return id, nil
}

// parseTTL accepts a TTL in seconds ("10") or as a duration ("10s", "1m").
func parseTTL(cmd *cobra.Command, s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d%time.Second != 0 {
		return 0, usageErrorf(cmd, "TTL must be a whole number of seconds (10) or a duration in whole seconds (10s, 2m), got %q", s)
	}
	return d, nil
}

func newLeaseGrantCommand(a *app) *cobra.Command {
	var id int64
	cmd := &cobra.Command{
		Use:   "grant TTL",
		Short: "Grant a lease of TTL (seconds, or a duration such as 30s)",
		Args:  exactArgs("TTL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ttl, err := parseTTL(cmd, args[0])
			if err != nil {
				return err
			}
			if id < 0 {
				return usageErrorf(cmd, "--id must be >= 0 (0: the server chooses), got %d", id)
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			var resp *catalogpb.LeaseGrantResponse
			if id == 0 {
				resp, err = c.Grant(ctx, ttl)
			} else {
				resp, err = c.GrantWithID(ctx, id, ttl)
			}
			if err != nil {
				return fmt.Errorf("grant lease: %w", err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintf(a.stdout, "lease %d granted with TTL(%ds)\n", resp.Id, resp.TtlSeconds)
			return nil
		},
	}
	cmd.Flags().Int64Var(&id, "id", 0, "the lease id to grant (0: the server chooses)")
	return cmd
}

func newLeaseRevokeCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke LEASE_ID",
		Short: "Revoke a lease, deleting everything attached to it",
		Args:  exactArgs("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(cmd, args[0])
			if err != nil {
				return err
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.Revoke(ctx, id)
			if err != nil {
				return fmt.Errorf("revoke lease %d: %w", id, err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintf(a.stdout, "lease %d revoked (%d attached items deleted)\n", id, len(resp.Items))
			return nil
		},
	}
}

func newLeaseTTLCommand(a *app) *cobra.Command {
	var items bool
	cmd := &cobra.Command{
		Use:   "ttl LEASE_ID",
		Short: "Show the time a lease has left (and with --items, what is attached)",
		Args:  exactArgs("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(cmd, args[0])
			if err != nil {
				return err
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.TimeToLive(ctx, id, items)
			if err != nil {
				return fmt.Errorf("time to live of lease %d: %w", id, err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			if resp.TtlSeconds < 0 {
				return fmt.Errorf("lease %d: %w (expired, revoked or never granted)", id, sdk.ErrLeaseNotFound)
			}
			fmt.Fprintf(a.stdout, "lease %d granted with TTL(%ds), remaining(%ds)\n", id, resp.GrantedTtlSeconds, resp.TtlSeconds)
			if items {
				tw := a.newTable()
				fmt.Fprintln(tw, "KIND\tKEY")
				for _, it := range resp.Items {
					fmt.Fprintf(tw, "%s\t%s\n", it.Kind, printable([]byte(it.Key)))
				}
				return tw.Flush()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&items, "items", false, "list what is attached to the lease")
	return cmd
}

func newLeaseLsCommand(a *app) *cobra.Command {
	var limit int64
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List leases with their remaining time",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageErrorf(cmd, "--limit must be >= 0 (0: every lease), got %d", limit)
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			all := &catalogpb.LeaseListResponse{}
			var after int64
			for {
				page := int64(0)
				if limit > 0 {
					page = limit - int64(len(all.Leases))
				}
				resp, err := c.Leases(ctx, after, page)
				if err != nil {
					return fmt.Errorf("list leases: %w", err)
				}
				all.Header, all.Count = resp.Header, resp.Count
				all.Leases = append(all.Leases, resp.Leases...)
				all.More = resp.More
				if !resp.More || len(resp.Leases) == 0 || (limit > 0 && int64(len(all.Leases)) >= limit) {
					break
				}
				after = resp.Leases[len(resp.Leases)-1].Id
			}
			if a.jsonOutput() {
				return a.printJSON(all)
			}
			tw := a.newTable()
			fmt.Fprintln(tw, "ID\tTTL\tREMAINING\tITEMS\tGRANTED AT REVISION")
			for _, l := range all.Leases {
				fmt.Fprintf(tw, "%d\t%ds\t%s\t%d\t%d\n", l.Id, l.TtlSeconds,
					(time.Duration(l.RemainingMs) * time.Millisecond).Round(time.Millisecond), l.Items, l.GrantRevision)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%d leases\n", all.Count)
			return nil
		},
	}
	cmd.Flags().Int64Var(&limit, "limit", 0, "list at most this many leases (0: all)")
	return cmd
}

func newLeaseKeepAliveCommand(a *app) *cobra.Command {
	var once bool
	cmd := &cobra.Command{
		Use:   "keep-alive LEASE_ID",
		Short: "Keep a lease alive until interrupted (or renew it once with --once)",
		Args:  exactArgs("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(cmd, args[0])
			if err != nil {
				return err
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			if once {
				ctx, cancel := a.commandContext(cmd)
				defer cancel()
				resp, err := c.KeepAliveOnce(ctx, id)
				if err != nil {
					return fmt.Errorf("keep lease %d alive: %w", id, err)
				}
				if a.jsonOutput() {
					return a.printJSON(resp)
				}
				if resp.TtlSeconds <= 0 {
					return fmt.Errorf("lease %d: %w (expired, revoked or never granted)", id, sdk.ErrLeaseNotFound)
				}
				fmt.Fprintf(a.stdout, "lease %d keepalived with TTL(%ds)\n", id, resp.TtlSeconds)
				return nil
			}
			ka, err := c.KeepAlive(cmd.Context(), id)
			if err != nil {
				return fmt.Errorf("keep lease %d alive: %w", id, err)
			}
			defer ka.Stop()
			for {
				select {
				case resp := <-ka.C():
					if a.jsonOutput() {
						if err := a.printJSON(resp); err != nil {
							return err
						}
						continue
					}
					fmt.Fprintf(a.stdout, "lease %d keepalived with TTL(%ds)\n", id, resp.TtlSeconds)
				case <-ka.Done():
					err := ka.Err()
					if cmd.Context().Err() != nil {
						return nil // interrupted: the lease stays until its TTL passes
					}
					if errors.Is(err, sdk.ErrLeaseNotFound) {
						return fmt.Errorf("lease %d expired or was revoked: %w", id, err)
					}
					return fmt.Errorf("keep lease %d alive: %w", id, err)
				}
			}
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "renew the lease once and exit")
	return cmd
}
