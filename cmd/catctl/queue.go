package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newQueueCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("queue", "Push, pop and acknowledge items of FIFO work queues")
	cmd.Long = "A queue hands each item to one consumer at a time. A popped item is in flight,\n" +
		"attached to the consumer's lease, until acknowledged; if the lease ends first\n" +
		"the item goes back to the head of the queue (at-least-once delivery)."
	cmd.AddCommand(newQueuePushCommand(a), newQueuePopCommand(a), newQueueAckCommand(a), newQueueLsCommand(a))
	return cmd
}

// maxPayload is the servers' limit on an item's payload; a bigger file is
// refused without reading it whole.
const maxPayload = 1 << 20

func newQueuePushCommand(a *app) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "push NAME (PAYLOAD | --file PATH)",
		Short: "Append an item to queue NAME and print its id",
		Long:  "push appends PAYLOAD, or the contents of --file (- for stdin), to queue NAME.",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0 || len(args) > 2:
				return usageErrorf(cmd, "%s takes NAME and PAYLOAD (or NAME and --file PATH), got %d arguments", cmd.CommandPath(), len(args))
			case len(args) == 2 && file != "":
				return usageErrorf(cmd, "give PAYLOAD or --file, not both")
			case len(args) == 1 && file == "":
				return usageErrorf(cmd, "give the item: PAYLOAD, or --file PATH (- for stdin)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var payload []byte
			if len(args) == 2 {
				payload = []byte(args[1])
			} else {
				var err error
				if payload, err = readPayload(file); err != nil {
					return err
				}
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.Enqueue(ctx, name, payload)
			if err != nil {
				return fmt.Errorf("push to queue %s: %w", quoteKey(name), err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintf(a.stdout, "pushed item %d to %s\n", resp.Id, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "read the payload from this file (- for stdin)")
	return cmd
}

// readPayload reads a payload file, "-" being stdin.
func readPayload(path string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read the payload: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPayload+1))
	if err != nil {
		return nil, fmt.Errorf("read the payload from %s: %w", path, err)
	}
	if len(b) > maxPayload {
		return nil, fmt.Errorf("the payload in %s is more than %d bytes, the most a queue item holds", path, maxPayload)
	}
	return b, nil
}

func newQueuePopCommand(a *app) *cobra.Command {
	var (
		ack, try bool
		lease    string
		ttl      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "pop NAME (--ack | --lease ID)",
		Short: "Take the next item of queue NAME (waiting for one) and print its id and payload",
		Long: "pop waits until an item is handed to it (first come, first served among\n" +
			"consumers) and prints \"ID PAYLOAD\" (the payload Go-quoted unless printable;\n" +
			"-o json prints the QueueItem, payload in base64). Then either:\n" +
			"  --ack       acknowledges the item: it is removed from the queue;\n" +
			"  --lease ID  leaves it in flight on lease ID, a lease you keep alive, until\n" +
			"              'catctl queue ack NAME ITEM_ID --lease ID'; if the lease ends\n" +
			"              first, the item goes back to the head of the queue.\n" +
			"With --try, pop does not wait: an empty queue is an error.",
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !ack && lease == "" {
				return usageErrorf(cmd, "give --ack (remove the item once printed) or --lease ID (keep it in flight on that lease until 'queue ack')")
			}
			sf := sessionFlags{ttl: ttl}
			var err error
			if sf.leaseID, err = parseLeaseFlag(cmd, lease); err != nil {
				return err
			}
			if sf.leaseID == 0 && (ttl < time.Second || ttl%time.Second != 0) {
				return usageErrorf(cmd, "--ttl must be a whole number of seconds, at least 1s, got %v", ttl)
			}
			s, done, err := a.session(cmd, sf)
			if err != nil {
				return err
			}
			defer done()
			q := sdk.NewQueue(s, name)
			var item *catalogpb.QueueItem
			if try {
				ctx, cancel := a.commandContext(cmd)
				item, err = q.TryDequeue(ctx)
				cancel()
				if err == nil && item == nil {
					return fmt.Errorf("queue %s is empty", quoteKey(name))
				}
			} else {
				item, err = q.Dequeue(cmd.Context())
			}
			if err != nil {
				if cmd.Context().Err() != nil {
					return fmt.Errorf("interrupted while waiting for an item of queue %s (no longer waiting)", quoteKey(name))
				}
				return fmt.Errorf("pop from queue %s: %w", quoteKey(name), err)
			}
			if a.jsonOutput() {
				err = a.printJSON(item)
			} else {
				_, err = fmt.Fprintf(a.stdout, "%d %s\n", item.Id, printable(item.Payload))
			}
			if err != nil {
				return err // not acknowledged: the item goes back when the lease ends
			}
			if !ack {
				fmt.Fprintf(a.stderr, "item %d is in flight on lease %d (fencing token %d, fence name %s/%d) until 'catctl queue ack %s %d --lease %d'\n",
					item.Id, sf.leaseID, item.Token, name, item.Id, name, item.Id, sf.leaseID)
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), a.commandTimeout)
			defer cancel()
			return q.Ack(ctx, item.Id)
		},
	}
	cmd.Flags().BoolVar(&ack, "ack", false, "acknowledge the item once printed")
	cmd.Flags().StringVar(&lease, "lease", "", "take the item on this lease (decimal or 0x hex); it stays in flight until acknowledged")
	cmd.Flags().BoolVar(&try, "try", false, "fail at once if the queue has no item instead of waiting")
	cmd.Flags().DurationVar(&ttl, "ttl", 10*time.Second, "without --lease: TTL of the lease catctl holds the item on until it is acknowledged")
	return cmd
}

func newQueueAckCommand(a *app) *cobra.Command {
	var lease string
	cmd := &cobra.Command{
		Use:   "ack NAME ITEM_ID --lease ID",
		Short: "Acknowledge an item popped with --lease: it is removed from the queue",
		Args:  exactArgs("NAME", "ITEM_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			id, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil || id == 0 {
				return usageErrorf(cmd, "ITEM_ID must be an item id (a positive number, as queue pop prints it), got %q", args[1])
			}
			if lease == "" {
				return usageErrorf(cmd, "--lease ID is required: the lease the item was popped on")
			}
			leaseID, err := parseLeaseFlag(cmd, lease)
			if err != nil {
				return err
			}
			s, done, err := a.session(cmd, sessionFlags{leaseID: leaseID})
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := a.commandContext(cmd)
			defer cancel()
			if err := sdk.NewQueue(s, name).Ack(ctx, id); err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(&catalogpb.AckResponse{})
			}
			fmt.Fprintln(a.stdout, "OK")
			return nil
		},
	}
	cmd.Flags().StringVar(&lease, "lease", "", "the lease the item was popped on (required; decimal or 0x hex)")
	return cmd
}

func newQueueLsCommand(a *app) *cobra.Command {
	var (
		prefix, consistency string
		items               bool
		limit               int64
	)
	cmd := &cobra.Command{
		Use:   "ls [NAME]",
		Short: "Show queue NAME (depth, items in flight, waiting consumers), or list queues",
		Long: "ls NAME prints the queue's depth (ready items), its items in flight (handed\n" +
			"to a consumer's lease and not acknowledged) and its waiting consumers; with\n" +
			"--items, also its ready items (up to --limit). ls without NAME lists every\n" +
			"queue (starting with --prefix) with its depth, in-flight count and waiting\n" +
			"consumers.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf(cmd, "%s takes at most 1 argument (NAME), got %d", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			serializable, err := parseSerializable(cmd, consistency)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usageErrorf(cmd, "--limit must be >= 0, got %d", limit)
			}
			if len(args) == 1 && prefix != "" {
				return usageErrorf(cmd, "give NAME or --prefix, not both")
			}
			if len(args) == 0 && items {
				return usageErrorf(cmd, "--items lists the items of one queue: give its NAME")
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			if len(args) == 1 {
				return a.printQueue(ctx, c, &catalogpb.QueueStatusRequest{Queue: args[0], Serializable: serializable, Items: items, Limit: limit})
			}
			all := &catalogpb.ListQueuesResponse{}
			all.Queues, all.More, err = pageAll(limit, func(n int64, after string) ([]*catalogpb.QueueStatus, bool, error) {
				resp, err := c.ListQueues(ctx, &catalogpb.ListQueuesRequest{Prefix: prefix, Serializable: serializable, Limit: n, ContinueAfter: after})
				if err != nil {
					return nil, false, fmt.Errorf("list queues: %w", err)
				}
				all.Header = resp.Header
				return resp.Queues, resp.More, nil
			}, (*catalogpb.QueueStatus).GetQueue)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(all)
			}
			tw := a.newTable()
			fmt.Fprintln(tw, "NAME\tDEPTH\tIN FLIGHT\tCONSUMERS\tNEXT ID")
			for _, q := range all.Queues {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\n", printable([]byte(q.Queue)), q.Depth, len(q.InFlight), consumerList(q.Consumers), q.NextId)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "without NAME: only queues whose name starts with this")
	cmd.Flags().BoolVar(&items, "items", false, "with NAME: list the ready items too")
	cmd.Flags().Int64Var(&limit, "limit", 0, "with NAME and --items: list at most this many ready items (0: 100); without NAME: at most this many queues (0: all)")
	cmd.Flags().StringVar(&consistency, "consistency", "l", "l (linearizable) or s (serializable)")
	return cmd
}

// printQueue prints one queue's status.
func (a *app) printQueue(ctx context.Context, c *sdk.Client, req *catalogpb.QueueStatusRequest) error {
	resp, err := c.QueueStatus(ctx, req)
	if err != nil {
		return fmt.Errorf("status of queue %s: %w", quoteKey(req.Queue), err)
	}
	if a.jsonOutput() {
		return a.printJSON(resp)
	}
	st := resp.GetStatus()
	fmt.Fprintf(a.stdout, "queue %s: depth %d, in flight %d, consumers waiting %s\n", req.Queue, st.GetDepth(),
		len(st.GetInFlight()), consumerList(st.GetConsumers()))
	rows := append(append([]*catalogpb.QueueItem(nil), st.GetInFlight()...), st.GetReady()...)
	if len(rows) == 0 {
		return nil
	}
	tw := a.newTable()
	fmt.Fprintln(tw, "ID\tSTATE\tCONSUMER\tDELIVERIES\tPAYLOAD")
	for _, it := range rows {
		state, consumer := "ready", "-"
		if it.Consumer != 0 {
			state, consumer = "in-flight", strconv.FormatInt(it.Consumer, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", it.Id, state, consumer, it.Deliveries, printable([]byte(shorten(string(it.Payload), 60))))
	}
	return tw.Flush()
}

// consumerList prints waiting consumers as their leases in order.
func consumerList(cs []*catalogpb.QueueConsumer) string {
	if len(cs) == 0 {
		return "-"
	}
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = strconv.FormatInt(c.Lease, 10)
	}
	return strings.Join(ids, ",")
}
