package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

func newWatchCommand(a *app) *cobra.Command {
	var (
		key, prefix, service, shards string
		allServices, leases          bool
		rev                          int64
		progress, prevKV             bool
	)
	cmd := &cobra.Command{
		Use:   "watch (--key K | --prefix P | --service NAME | --all-services | --shards NAME | --leases) [--rev N]",
		Short: "Print changes as they happen, until interrupted",
		Long: "watch prints one line per event: revision, type, kind, key and a summary\n" +
			"(-o json: each event as JSON on one line). With --rev it first replays the\n" +
			"history from that revision. If the revision was compacted, it says which is\n" +
			"the oldest revision still held.",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var filters []sdk.WatchFilter
			fl := cmd.Flags()
			if fl.Changed("key") {
				filters = append(filters, sdk.WatchKey(key))
			}
			if fl.Changed("prefix") {
				filters = append(filters, sdk.WatchPrefix(prefix))
			}
			if fl.Changed("service") {
				if service == "" {
					return usageErrorf(cmd, "--service needs a service name (use --all-services for every service)")
				}
				filters = append(filters, sdk.WatchServiceFilter(service))
			}
			if allServices {
				filters = append(filters, sdk.WatchServiceFilter(""))
			}
			if fl.Changed("shards") {
				filters = append(filters, sdk.WatchShardMapFilter(shards))
			}
			if leases {
				filters = append(filters, sdk.WatchLeases())
			}
			if len(filters) != 1 {
				return usageErrorf(cmd, "give exactly one of --key, --prefix, --service, --all-services, --shards and --leases")
			}
			if rev < 0 {
				return usageErrorf(cmd, "--rev must be >= 0 (0: from now on), got %d", rev)
			}
			var opts []sdk.WatchOption
			if rev > 0 {
				opts = append(opts, sdk.WithStartRevision(rev))
			}
			if progress {
				opts = append(opts, sdk.WithProgressNotify())
			}
			if prevKV {
				opts = append(opts, sdk.WithWatchPrevKV())
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			for resp := range c.Watch(ctx, filters[0], opts...) {
				if resp.Err != nil {
					if errors.Is(resp.Err, sdk.ErrCompacted) {
						return fmt.Errorf("watch from revision %d: %w; the oldest revision still held is %d", rev, resp.Err, resp.CompactRevision+1)
					}
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("watch: %w", resp.Err)
				}
				if resp.Progress {
					if !a.jsonOutput() {
						fmt.Fprintf(a.stdout, "%d PROGRESS\n", resp.Header.GetRevision())
					}
					continue
				}
				for _, ev := range resp.Events {
					if err := a.printEvent(ev); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&key, "key", "", "watch one config key")
	fl.StringVar(&prefix, "prefix", "", "watch every config key starting with this prefix (\"\": every key)")
	fl.StringVar(&service, "service", "", "watch a service and its instances")
	fl.BoolVar(&allServices, "all-services", false, "watch every service and instance")
	fl.StringVar(&shards, "shards", "", "watch a service's shard map (\"\": every shard map)")
	fl.BoolVar(&leases, "leases", false, "watch lease grants and revokes")
	fl.Int64Var(&rev, "rev", 0, "replay from this revision first (0: only new changes)")
	fl.BoolVar(&progress, "progress", false, "print progress notifications while idle")
	fl.BoolVar(&prevKV, "prev-kv", false, "include the previous value of config keys")
	return cmd
}

var eventJSON = protojson.MarshalOptions{}

// printEvent prints one event on one line.
func (a *app) printEvent(ev *catalogpb.Event) error {
	if a.jsonOutput() {
		b, err := eventJSON.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	kv := ev.GetKv()
	line := []string{fmt.Sprint(kv.GetModRevision()), ev.Type.String(), ev.Kind, printable(kv.GetKey())}
	switch ev.Kind {
	case "kv":
		if ev.Type == catalogpb.Event_PUT {
			line = append(line, printable(kv.GetValue()))
		}
	case "instance":
		if in := ev.GetInstance(); in != nil && ev.Type == catalogpb.Event_PUT {
			line = append(line, in.Address, stateName(in.State), healthName(in.Health))
		}
	case "lease":
		if l := ev.GetLease(); l != nil && ev.Type == catalogpb.Event_PUT {
			line = append(line, fmt.Sprintf("ttl=%ds", l.TtlSeconds))
		}
	case "shard_map":
		if m := ev.GetShardMap(); m != nil && ev.Type == catalogpb.Event_PUT {
			line = append(line, fmt.Sprintf("epoch=%d shards=%d", m.Epoch, len(m.Shards)))
		}
	}
	_, err := fmt.Fprintln(a.stdout, strings.Join(line, " "))
	return err
}
