package framework

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
)

// Join starts a new member (the next number, a new name, data dir and
// addresses) with --join set to member via's client address, and returns its
// number once it runs and knows the id the cluster gave it. It does not wait
// for the member to catch up or to be promoted. If the member does not start,
// Join returns the error and the number is used up (Removed reports true).
func (c *Cluster) Join(ctx context.Context, via int) (int, error) {
	c.t.Helper()
	c.check(via)
	if !c.Running(via) {
		return -1, fmt.Errorf("join through member %d (%s): it is not running", via, c.Name(via))
	}
	i := c.Size()
	var addrs []string
	if c.net == nil {
		var err error
		if addrs, err = freeAddrs(3); err != nil {
			return -1, err
		}
	}
	l, err := c.newLog(memberName(i))
	if err != nil {
		return -1, err
	}
	spec, err := c.newSpec(i, addrs, l)
	if err != nil {
		return -1, fmt.Errorf("join member %d: %w", i, err)
	}
	spec.join = c.ClientAddr(via)
	c.mu.Lock()
	c.specs = append(c.specs, spec)
	c.logs = append(c.logs, l)
	c.members = append(c.members, nil)
	c.ids = append(c.ids, 0)
	c.removed = append(c.removed, false)
	c.mu.Unlock()
	if err := c.launch(ctx, i); err != nil {
		c.setRemoved(i, true)
		return -1, fmt.Errorf("join member %d (%s) through member %d: %w", i, spec.name, via, err)
	}
	return i, nil
}

// RemoveMember removes member i from the cluster (Cluster.MemberRemove of
// ID(i)) through a running member other than i, trying the next one while
// members are unreachable. Afterwards Removed(i) is true: RestartAll leaves
// it stopped and Others, RunningMembers and Endpoints leave it out. The
// framework does not stop a running member i; if it exits once it learns of
// its removal, that exit is not one of Problems.
func (c *Cluster) RemoveMember(ctx context.Context, i int) error {
	c.t.Helper()
	c.check(i)
	id := c.ID(i)
	if id == 0 {
		return fmt.Errorf("remove member %d (%s): its id is unknown: it never started", i, c.Name(i))
	}
	vias := slices.DeleteFunc(c.RunningMembers(), func(j int) bool { return j == i })
	if len(vias) == 0 {
		return fmt.Errorf("remove member %d (%s, id %x): no other member is running", i, c.Name(i), id)
	}
	// Marked before asking: a running member may exit as soon as it applies
	// its removal, and that exit is no problem.
	c.setRemoved(i, true)
	var errs []error
	for _, via := range vias {
		err := c.memberRemove(ctx, via, id)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("through member %d: %w", via, err))
		// Only a member that could not be reached surely did not apply it.
		if status.Code(err) != codes.Unavailable {
			break
		}
	}
	c.setRemoved(i, false)
	return fmt.Errorf("remove member %d (%s, id %x): %w", i, c.Name(i), id, errors.Join(errs...))
}

func (c *Cluster) setRemoved(i int, removed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed[i] = removed
}

func (c *Cluster) memberRemove(ctx context.Context, via int, id uint64) error {
	cli, err := sdk.New(sdk.Config{Endpoints: []string{c.ClientAddr(via)}, DialTimeout: 2 * time.Second, MaxRetries: -1})
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.Cluster().MemberRemove(ctx, &catalogpb.MemberRemoveRequest{Id: id})
	return err
}
