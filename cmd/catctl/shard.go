package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

func newShardCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("shard", "Read and write a service's shard map")
	cmd.AddCommand(newShardGetCommand(a), newShardSetCommand(a))
	return cmd
}

func newShardGetCommand(a *app) *cobra.Command {
	var consistency string
	cmd := &cobra.Command{
		Use:   "get SERVICE",
		Short: "Show a service's shard map",
		Args:  exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := parseConsistency(cmd, consistency); err != nil {
				return err
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.GetShardMap(ctx, args[0])
			if err != nil {
				return fmt.Errorf("get shard map of %q: %w", args[0], err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			m := resp.GetMap()
			if m.GetEpoch() == 0 {
				fmt.Fprintf(a.stdout, "service %s has no shard map\n", args[0])
				return nil
			}
			fmt.Fprintf(a.stdout, "shard map of %s: epoch %d, %d shards", args[0], m.Epoch, len(m.Shards))
			if m.TotalSlots > 0 {
				fmt.Fprintf(a.stdout, ", %d slots", m.TotalSlots)
			}
			fmt.Fprintln(a.stdout)
			tw := a.newTable()
			fmt.Fprintln(tw, "SHARD\tRANGE\tSLOTS\tREPLICAS (PRIMARY FIRST)")
			for _, s := range m.Shards {
				rng := "-"
				if len(s.Slots) == 0 {
					end := printable(s.EndKey)
					if len(s.EndKey) == 0 {
						end = "(end)"
					}
					rng = "[" + printable(s.StartKey) + ", " + end + ")"
				}
				slots := make([]string, len(s.Slots))
				for i, r := range s.Slots {
					slots[i] = fmt.Sprintf("%d-%d", r.From, r.To)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Id, rng, strings.Join(slots, ","), strings.Join(s.Replicas, ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&consistency, "consistency", "l", "l (linearizable) or s (serializable)")
	return cmd
}

func newShardSetCommand(a *app) *cobra.Command {
	var (
		file  string
		epoch int64
	)
	cmd := &cobra.Command{
		Use:   "set SERVICE --file MAP.json --epoch N",
		Short: "Replace a service's shard map if its epoch is still N",
		Long: "The file holds a shard map as JSON, for example\n" +
			`  {"totalSlots": 1024, "shards": [{"id": "s0", "slots": [{"from": 0, "to": 511}], "replicas": ["i-1", "i-2"]},` + "\n" +
			`                                  {"id": "s1", "slots": [{"from": 512, "to": 1023}], "replicas": ["i-2", "i-3"]}]}` + "\n" +
			"(key ranges: \"startKey\" and \"endKey\", base64). --epoch is the epoch the map\n" +
			"must still have (0: the service has none yet); the new map gets epoch N+1.\n" +
			"\"-\" reads the map from stdin.",
		Args: exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usageErrorf(cmd, "--file is required (a JSON shard map, or - for stdin)")
			}
			if !cmd.Flags().Changed("epoch") || epoch < 0 {
				return usageErrorf(cmd, "--epoch N is required: the epoch the stored map must have (0: none yet), as shard get prints it")
			}
			var raw []byte
			var err error
			if file == "-" {
				raw, err = io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
			} else {
				raw, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("read shard map: %w", err)
			}
			m := &catalogpb.ShardMap{}
			if err := protojson.Unmarshal(raw, m); err != nil {
				return fmt.Errorf("shard map in %s is not valid JSON for a ShardMap: %w", file, err)
			}
			if m.Service != "" && m.Service != args[0] {
				return usageErrorf(cmd, "the file's shard map names service %q, the command %q", m.Service, args[0])
			}
			m.Service = args[0]
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.SetShardMap(ctx, m, epoch)
			if err != nil {
				return fmt.Errorf("set shard map of %q: %w", args[0], err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintf(a.stdout, "shard map of %s is now at epoch %d\n", args[0], resp.GetMap().GetEpoch())
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "JSON file holding the shard map (- for stdin)")
	cmd.Flags().Int64Var(&epoch, "epoch", 0, "the epoch the stored map must have (0: none yet)")
	return cmd
}
