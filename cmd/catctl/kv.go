package main

import (
	"fmt"
	"strconv"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newKVCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("kv", "Read and write config keys")
	cmd.AddCommand(newKVPutCommand(a), newKVGetCommand(a), newKVDelCommand(a))
	return cmd
}

func newKVPutCommand(a *app) *cobra.Command {
	var (
		lease  string
		prevKV bool
	)
	cmd := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Set KEY to VALUE",
		Args:  exactArgs("KEY", "VALUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts []sdk.OpOption
			if lease != "" {
				id, err := strconv.ParseInt(lease, 0, 64)
				if err != nil {
					return usageErrorf(cmd, "--lease must be a lease ID in decimal or 0x-prefixed hex, got %q", lease)
				}
				opts = append(opts, sdk.WithLease(id))
			}
			if prevKV {
				opts = append(opts, sdk.WithPrevKV())
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.Put(ctx, args[0], args[1], opts...)
			if err != nil {
				return fmt.Errorf("put %s: %w", quoteKey(args[0]), err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintln(a.stdout, "OK")
			if resp.PrevKv != nil {
				return a.printKVs([]*catalogpb.KeyValue{resp.PrevKv}, true)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&lease, "lease", "", "attach the key to this lease ID (decimal or 0x hex)")
	cmd.Flags().BoolVar(&prevKV, "prev-kv", false, "print the key-value the put replaced")
	return cmd
}

func newKVGetCommand(a *app) *cobra.Command {
	var (
		prefix, keysOnly, countOnly bool
		limit                       int64
		consistency, continueToken  string
	)
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Read KEY, or every key starting with KEY (--prefix)",
		Args:  exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts []sdk.OpOption
			switch consistency {
			case "l":
			case "s":
				opts = append(opts, sdk.WithSerializable())
			default:
				return usageErrorf(cmd, "--consistency must be l (linearizable) or s (serializable), got %q", consistency)
			}
			if limit < 0 {
				return usageErrorf(cmd, "--limit must be >= 0 (0 means the server maximum), got %d", limit)
			}
			if limit > 0 {
				opts = append(opts, sdk.WithLimit(limit))
			}
			if continueToken != "" {
				token, err := decodeToken(continueToken)
				if err != nil {
					return usageErrorf(cmd, "--continue must be the base64 token printed by an earlier get, got %q", continueToken)
				}
				opts = append(opts, sdk.WithContinue(token))
			}
			if prefix {
				opts = append(opts, sdk.WithPrefix())
			}
			if keysOnly {
				opts = append(opts, sdk.WithKeysOnly())
			}
			if countOnly {
				opts = append(opts, sdk.WithCountOnly())
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.Get(ctx, args[0], opts...)
			if err != nil {
				return fmt.Errorf("get %s: %w", quoteKey(args[0]), err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			if countOnly {
				fmt.Fprintln(a.stdout, resp.Count)
				return nil
			}
			if err := a.printKVs(resp.Kvs, !keysOnly); err != nil {
				return err
			}
			if resp.More {
				fmt.Fprintf(a.stdout, "(%d of %d keys shown; next page: --continue %s)\n",
					len(resp.Kvs), resp.Count, encodeToken(resp.NextToken))
			}
			return nil
		},
	}
	flags := cmd.Flags()
	flags.BoolVar(&prefix, "prefix", false, "read every key starting with KEY")
	flags.Int64Var(&limit, "limit", 0, "return at most this many keys (0: the server maximum)")
	flags.BoolVar(&keysOnly, "keys-only", false, "return keys without values")
	flags.BoolVar(&countOnly, "count-only", false, "print only the number of keys")
	flags.StringVar(&consistency, "consistency", "l", "l (linearizable) or s (serializable: this server's state, maybe stale)")
	flags.StringVar(&continueToken, "continue", "", "resume where an earlier get stopped (its next-page token)")
	return cmd
}

func newKVDelCommand(a *app) *cobra.Command {
	var prefix, prevKV bool
	cmd := &cobra.Command{
		Use:   "del KEY",
		Short: "Delete KEY, or every key starting with KEY (--prefix); prints the number deleted",
		Args:  exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts []sdk.OpOption
			if prefix {
				opts = append(opts, sdk.WithPrefix())
			}
			if prevKV {
				opts = append(opts, sdk.WithPrevKV())
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.Delete(ctx, args[0], opts...)
			if err != nil {
				return fmt.Errorf("delete %s: %w", quoteKey(args[0]), err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintln(a.stdout, resp.Deleted)
			return a.printKVs(resp.PrevKvs, true)
		},
	}
	cmd.Flags().BoolVar(&prefix, "prefix", false, "delete every key starting with KEY")
	cmd.Flags().BoolVar(&prevKV, "prev-kv", false, "print the deleted key-values")
	return cmd
}

// printKVs prints key-values as a table; nothing when there are none.
func (a *app) printKVs(kvs []*catalogpb.KeyValue, withValues bool) error {
	if len(kvs) == 0 {
		return nil
	}
	tw := a.newTable()
	if withValues {
		fmt.Fprintln(tw, "KEY\tVALUE\tMOD REVISION\tVERSION")
	} else {
		fmt.Fprintln(tw, "KEY\tMOD REVISION\tVERSION")
	}
	for _, kv := range kvs {
		if withValues {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", printable(kv.Key), printable(kv.Value), kv.ModRevision, kv.Version)
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%d\n", printable(kv.Key), kv.ModRevision, kv.Version)
		}
	}
	return tw.Flush()
}
