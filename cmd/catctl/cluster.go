package main

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

func newClusterCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("cluster", "Inspect the cluster")
	cmd.AddCommand(newClusterStatusCommand(a))
	return cmd
}

// endpointStatus is the answer of one endpoint, or why there is none.
type endpointStatus struct {
	endpoint string
	status   *catalogpb.StatusResponse
	err      error
}

func newClusterStatusCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the status of every endpoint and the members of the cluster",
		Long: "Asks every endpoint for its status and prints one row per endpoint, then the\n" +
			"members as the leader (or else the first endpoint that answered) sees them.\n" +
			"Exit code 0 when every endpoint answered, 2 when none did, 1 otherwise.",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()

			endpoints := a.endpointList()
			results := make([]endpointStatus, len(endpoints))
			var wg sync.WaitGroup
			for i, ep := range endpoints {
				wg.Go(func() {
					st, err := c.StatusOf(ctx, ep)
					results[i] = endpointStatus{endpoint: ep, status: st, err: err}
				})
			}
			wg.Wait()

			if a.jsonOutput() {
				err = a.printStatusJSON(results)
			} else {
				err = a.printStatusTable(results)
			}
			if err != nil {
				return err
			}
			return statusError(results)
		},
	}
}

// statusError says which endpoints did not answer; it keeps the error of the
// first so that a cluster entirely down exits as unavailable.
func statusError(results []endpointStatus) error {
	var failed []endpointStatus
	for _, r := range results {
		if r.err != nil {
			failed = append(failed, r)
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case len(failed) == len(results):
		return fmt.Errorf("no endpoint answered; %s: %w", failed[0].endpoint, failed[0].err)
	default:
		// Some endpoints answered: the cluster is up, so the failure is not
		// "unavailable" but a partial answer (exit code 1).
		return fmt.Errorf("%d of %d endpoints did not answer (first: %s: %v)",
			len(failed), len(results), failed[0].endpoint, failed[0].err)
	}
}

func isLeader(st *catalogpb.StatusResponse) bool {
	return st.Leader != 0 && st.GetHeader().GetMemberId() == st.Leader
}

func (a *app) printStatusTable(results []endpointStatus) error {
	anyFailed := false
	for _, r := range results {
		anyFailed = anyFailed || r.err != nil
	}
	tw := a.newTable()
	header := "ENDPOINT\tNAME\tID\tIS LEADER\tTERM\tRAFT INDEX\tAPPLIED\tREVISION\tDB SIZE\tMEMBERS"
	if anyFailed {
		header += "\tERROR"
	}
	fmt.Fprintln(tw, header)
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%v\n", r.endpoint, r.err)
			continue
		}
		st := r.status
		fmt.Fprintf(tw, "%s\t%s\t%x\t%t\t%d\t%d\t%d\t%d\t%s\t%d", r.endpoint, st.Name, st.GetHeader().GetMemberId(),
			isLeader(st), st.Term, st.CommitIndex, st.AppliedIndex, st.Revision, humanBytes(st.DbSize), len(st.Members))
		if anyFailed {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	view := membersView(results)
	if view == nil {
		return nil
	}
	fmt.Fprintf(a.stdout, "\nMembers as seen by %s (%s):\n", view.status.Name, view.endpoint)
	tw = a.newTable()
	fmt.Fprintln(tw, "ID\tNAME\tPEER ADDR\tCLIENT ADDR\tLEADER\tLEARNER\tHEALTHY")
	for _, m := range view.status.Members {
		fmt.Fprintf(tw, "%x\t%s\t%s\t%s\t%t\t%t\t%t\n", m.Id, m.Name, m.PeerAddr, m.ClientAddr, m.IsLeader, m.IsLearner, m.Healthy)
	}
	return tw.Flush()
}

// membersView picks whose member list to show: the leader's, whose view of
// health comes from heartbeats, or else the first answer.
func membersView(results []endpointStatus) *endpointStatus {
	var first *endpointStatus
	for i := range results {
		r := &results[i]
		if r.err != nil {
			continue
		}
		if isLeader(r.status) {
			return r
		}
		if first == nil {
			first = r
		}
	}
	return first
}

func (a *app) printStatusJSON(results []endpointStatus) error {
	type entry struct {
		Endpoint string          `json:"endpoint"`
		Status   json.RawMessage `json:"status,omitempty"`
		Error    string          `json:"error,omitempty"`
	}
	entries := make([]entry, len(results))
	for i, r := range results {
		entries[i].Endpoint = r.endpoint
		if r.err != nil {
			entries[i].Error = r.err.Error()
			continue
		}
		b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(r.status)
		if err != nil {
			return fmt.Errorf("encode status of %s as JSON: %w", r.endpoint, err)
		}
		entries[i].Status = b
	}
	b, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		return fmt.Errorf("encode statuses as JSON: %w", err)
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", b)
	return err
}
