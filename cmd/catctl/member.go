package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
)

func newMemberCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("member", "List, add, remove and promote members; move the leadership")
	cmd.Long = "Members are named by their id in hex, as `cluster status` and `member list` print\n" +
		"it, or by their name when no other member has that name or id."
	cmd.AddCommand(newMemberListCommand(a), newMemberAddCommand(a), newMemberRemoveCommand(a),
		newMemberPromoteCommand(a), newMoveLeaderCommand(a))
	return cmd
}

func newMemberListCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the members of the cluster",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *sdk.Client) error {
				resp, err := c.MemberList(ctx)
				if err != nil {
					return fmt.Errorf("list members: %w", err)
				}
				if a.jsonOutput() {
					return a.printJSON(resp)
				}
				return a.printMembers(resp.Members)
			})
		},
	}
}

func newMemberAddCommand(a *app) *cobra.Command {
	var (
		peerAddr string
		learner  bool
	)
	cmd := &cobra.Command{
		Use:   "add NAME --peer-addr HOST:PORT",
		Short: "Add a member to the cluster",
		Long: "Adds a member to the cluster, as a voter or, with --learner, as a non-voting learner\n" +
			"that is promoted once it has caught up (automatically, unless the cluster runs with\n" +
			"--auto-promote=false, or with `member promote`).",
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if peerAddr == "" {
				return usageErrorf(cmd, "--peer-addr HOST:PORT is required: the raft address the new member will listen on")
			}
			return a.withClient(cmd, func(ctx context.Context, c *sdk.Client) error {
				resp, err := c.MemberAdd(ctx, args[0], peerAddr, learner)
				if err != nil {
					return fmt.Errorf("add member %s: %w", args[0], err)
				}
				if a.jsonOutput() {
					return a.printJSON(resp)
				}
				role := "voter"
				if resp.GetMember().GetIsLearner() {
					role = "learner"
				}
				fmt.Fprintf(a.stdout, "Member %x added to the cluster as a %s: %s (%s)\n\n",
					resp.GetMember().GetId(), role, resp.GetMember().GetName(), resp.GetMember().GetPeerAddr())
				return a.printMembers(resp.Members)
			})
		},
	}
	cmd.Flags().StringVar(&peerAddr, "peer-addr", "", "raft address of the new member (host:port)")
	cmd.Flags().BoolVar(&learner, "learner", false, "add the member as a non-voting learner")
	return cmd
}

func newMemberRemoveCommand(a *app) *cobra.Command {
	return newMemberChangeCommand(a, "remove ID", "Remove a member from the cluster", "remove member", "removed from the cluster",
		func(ctx context.Context, c *sdk.Client, id uint64) (proto.Message, []*catalogpb.Member, error) {
			resp, err := c.MemberRemove(ctx, id)
			return resp, resp.GetMembers(), err
		})
}

func newMemberPromoteCommand(a *app) *cobra.Command {
	return newMemberChangeCommand(a, "promote ID", "Promote a learner that has caught up to a voting member", "promote member", "promoted to voter",
		func(ctx context.Context, c *sdk.Client, id uint64) (proto.Message, []*catalogpb.Member, error) {
			resp, err := c.MemberPromote(ctx, id)
			return resp, resp.GetMembers(), err
		})
}

// newMemberChangeCommand builds a command that changes one member (named by
// id or name) and prints the membership after the change.
func newMemberChangeCommand(a *app, use, short, failed, done string,
	change func(context.Context, *sdk.Client, uint64) (proto.Message, []*catalogpb.Member, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *sdk.Client) error {
				m, err := resolveMember(ctx, c, args[0])
				if err != nil {
					return err
				}
				resp, members, err := change(ctx, c, m.Id)
				if err != nil {
					return fmt.Errorf("%s %s: %w", failed, memberLabel(m), err)
				}
				if a.jsonOutput() {
					return a.printJSON(resp)
				}
				fmt.Fprintf(a.stdout, "Member %s %s\n\n", memberLabel(m), done)
				return a.printMembers(members)
			})
		},
	}
}

func newMoveLeaderCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "move-leader ID",
		Short: "Hand the leadership to another voting member",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *sdk.Client) error {
				m, err := resolveMember(ctx, c, args[0])
				if err != nil {
					return err
				}
				resp, err := c.MoveLeader(ctx, m.Id)
				if err != nil {
					return fmt.Errorf("move leadership to %s: %w", memberLabel(m), err)
				}
				if a.jsonOutput() {
					return a.printJSON(resp)
				}
				fmt.Fprintf(a.stdout, "Leadership moved to member %s\n", memberLabel(m))
				return nil
			})
		},
	}
}

// withClient runs fn with a client over every endpoint, bounded by --command-timeout.
func (a *app) withClient(cmd *cobra.Command, fn func(ctx context.Context, c *sdk.Client) error) error {
	c, err := a.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := a.commandContext(cmd)
	defer cancel()
	return fn(ctx, c)
}

// resolveMember finds the member arg names: an id in hex (as `cluster
// status` prints it, 0x optional) or a member name, when that is not
// ambiguous.
func resolveMember(ctx context.Context, c *sdk.Client, arg string) (*catalogpb.Member, error) {
	resp, err := c.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list members to find %q: %w", arg, err)
	}
	var byName, byID *catalogpb.Member
	id, idErr := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(arg), "0x"), 16, 64)
	for _, m := range resp.Members {
		if m.Name == arg {
			if byName != nil {
				return nil, fmt.Errorf("members %x and %x are both named %q: give the id", byName.Id, m.Id, arg)
			}
			byName = m
		}
		if idErr == nil && m.Id == id {
			byID = m
		}
	}
	switch {
	case byName != nil && byID != nil && byName != byID:
		return nil, fmt.Errorf("%q is the name of member %x and the id of member %s: give the id of the one you mean",
			arg, byName.Id, memberLabel(byID))
	case byID != nil:
		return byID, nil
	case byName != nil:
		return byName, nil
	}
	var known []string
	for _, m := range resp.Members {
		known = append(known, memberLabel(m))
	}
	what := fmt.Sprintf("no member is named %q", arg)
	if idErr == nil {
		what = fmt.Sprintf("no member has id %x or name %q", id, arg)
	}
	return nil, fmt.Errorf("%w: %s (members: %s)", sdk.ErrMemberNotFound, what, strings.Join(known, ", "))
}

// memberLabel names a member in a message: its id in hex and its name.
func memberLabel(m *catalogpb.Member) string {
	if m.Name == "" {
		return fmt.Sprintf("%x", m.Id)
	}
	return fmt.Sprintf("%x (%s)", m.Id, m.Name)
}

// printMembers prints members as a table, as `cluster status` does.
func (a *app) printMembers(members []*catalogpb.Member) error {
	tw := a.newTable()
	fmt.Fprintln(tw, "ID\tNAME\tPEER ADDR\tCLIENT ADDR\tLEADER\tLEARNER\tHEALTHY")
	for _, m := range members {
		fmt.Fprintf(tw, "%x\t%s\t%s\t%s\t%t\t%t\t%t\n", m.Id, m.Name, m.PeerAddr, m.ClientAddr, m.IsLeader, m.IsLearner, m.Healthy)
	}
	return tw.Flush()
}
