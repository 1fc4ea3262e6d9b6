package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

// Environment variables a command run under lock or sem acquire finds (under
// barrier enter: only the lease).
const (
	// fenceEnv holds the fencing token of the hold: pass it to writes that
	// must be refused once the hold is lost (a KV transaction comparing
	// FENCE, or any store that checks it).
	fenceEnv = "CATALOG_FENCE"
	// lockEnv holds the lock (or semaphore, or barrier) name.
	lockEnv = "CATALOG_LOCK"
	// leaseEnv holds the lease the hold is attached to.
	leaseEnv = "CATALOG_LEASE"
)

func newLockCommand(a *app) *cobra.Command {
	var (
		sf  sessionFlags
		try bool
	)
	cmd := &cobra.Command{
		Use:   "lock NAME [-- COMMAND ARGS...]",
		Short: "Take a lock and hold it until interrupted, or while COMMAND runs",
		Long: "lock waits for the mutex NAME (first come, first served) and takes it.\n\n" +
			"Without COMMAND it prints the fencing token (-o json: the hold as a LockOwner)\n" +
			"and holds the lock until interrupted (Ctrl-C or SIGTERM), then releases it.\n\n" +
			"With -- COMMAND ARGS... it runs COMMAND while holding the lock, with the\n" +
			"token in $" + fenceEnv + " (and the name in $" + lockEnv + ", the lease in $" + leaseEnv + "),\n" +
			"releases the lock when COMMAND exits and exits with COMMAND's status\n" +
			"(128+N if a signal N ended it). SIGINT and SIGTERM sent to catctl are passed\n" +
			"on to COMMAND (a Ctrl-C at the terminal already reaches both); the lock is\n" +
			"released once COMMAND has exited. If the lock is lost meanwhile (its lease\n" +
			"expired: catctl could not reach the cluster for --ttl), COMMAND gets SIGTERM\n" +
			"and catctl exits with status 1: the token is no longer valid.\n\n" +
			"The lock lives on a lease of --ttl that catctl keeps alive (if catctl dies,\n" +
			"the lock is released after --ttl), or on --lease ID, a lease you keep alive\n" +
			"(catctl then releases the lock but leaves the lease).\n\n" +
			"Waiting has no time limit; use --try to fail at once if the lock is held.\n" +
			"A lock named \"ls\" cannot be taken with this command (lock ls lists locks).",
		Example: "  catctl lock backup -- pg_dump -f /backup/db.sql shop\n" +
			"  catctl lock deploy -- sh -c './deploy.sh --fence \"$" + fenceEnv + "\"'",
		Args: holdArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, argv := args[0], args[1:]
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
			m := sdk.NewMutex(s, name)
			if try {
				ctx, cancel := a.commandContext(cmd)
				err = m.TryLock(ctx)
				cancel()
			} else {
				err = m.Lock(cmd.Context())
			}
			if err != nil {
				return a.acquireError(cmd, s.Client(), "lock", name, err)
			}
			unlock := func() error {
				ctx, cancel := context.WithTimeout(context.Background(), a.commandTimeout)
				defer cancel()
				return m.Unlock(ctx)
			}
			hold := holding{what: "lock " + quoteKey(name), name: name, token: m.Token(), lease: s.Lease(), lost: m.Done()}
			if path != "" {
				return a.runHolding(hold, path, argv, unlock)
			}
			if a.jsonOutput() {
				if err := a.printJSON(hold.owner(1)); err != nil {
					_ = unlock()
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "locked %s with token %d on lease %d\n", name, hold.token, hold.lease)
			}
			if err := a.holdUntilInterrupted(cmd, hold); err != nil {
				return err
			}
			if err := unlock(); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "unlocked %s (token %d)\n", name, hold.token)
			return nil
		},
	}
	sf.register(cmd, "lock")
	cmd.Flags().BoolVar(&try, "try", false, "fail at once if the lock is held instead of waiting")
	cmd.AddCommand(newLockLsCommand(a))
	return cmd
}

// sessionFlags choose the lease a hold lives on.
type sessionFlags struct {
	ttl   time.Duration
	lease string

	leaseID int64
}

func (f *sessionFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().DurationVar(&f.ttl, "ttl", 10*time.Second,
		"TTL of the lease catctl grants and keeps alive for the "+what+"; if catctl dies, the "+what+" is released after it")
	cmd.Flags().StringVar(&f.lease, "lease", "",
		"use this existing lease (decimal or 0x hex) instead of granting one; catctl keeps it alive while it runs and leaves it")
}

func (f *sessionFlags) validate(cmd *cobra.Command) error {
	if f.lease != "" {
		id, err := strconv.ParseInt(f.lease, 0, 64)
		if err != nil || id <= 0 {
			return usageErrorf(cmd, "--lease must be a positive lease ID in decimal or 0x-prefixed hex, got %q", f.lease)
		}
		if cmd.Flags().Changed("ttl") {
			return usageErrorf(cmd, "give --ttl or --lease, not both: --lease uses the lease's own TTL")
		}
		f.leaseID = id
		return nil
	}
	if f.ttl < time.Second || f.ttl%time.Second != 0 {
		return usageErrorf(cmd, "--ttl must be a whole number of seconds, at least 1s, got %v", f.ttl)
	}
	return nil
}

// session opens a client and a session on it: a lease granted (or --lease
// taken) and kept alive until done, which revokes a granted lease and
// closes the client.
func (a *app) session(cmd *cobra.Command, f sessionFlags) (s *sdk.Session, done func(), err error) {
	c, err := a.newClient()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := a.commandContext(cmd)
	defer cancel()
	var opt sdk.SessionOption
	if f.leaseID != 0 {
		opt = sdk.WithSessionLease(f.leaseID)
	} else {
		opt = sdk.WithSessionTTL(f.ttl)
	}
	if s, err = sdk.NewSession(ctx, c, opt); err != nil {
		c.Close()
		if f.leaseID != 0 {
			return nil, nil, fmt.Errorf("use lease %d: %w", f.leaseID, err)
		}
		return nil, nil, fmt.Errorf("grant a lease of %v: %w", f.ttl, err)
	}
	return s, func() { a.closeSession(s, f); c.Close() }, nil
}

// closeSession revokes the lease catctl granted, which releases whatever is
// still attached to it; a lease given with --lease is left to its owner.
func (a *app) closeSession(s *sdk.Session, f sessionFlags) {
	if f.leaseID != 0 {
		s.Orphan()
		return
	}
	if err := s.Close(); err != nil && !errors.Is(err, sdk.ErrLeaseNotFound) {
		fmt.Fprintf(a.stderr, "warning: revoke lease %d: %v (it expires after its TTL)\n", s.Lease(), err)
	}
}

// holdArgs accepts NAME, then optionally -- COMMAND ARGS...
func holdArgs(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		dash := cmd.ArgsLenAtDash()
		switch {
		case len(args) == 0 || dash == 0:
			return usageErrorf(cmd, "%s takes %s, then optionally -- COMMAND ARGS...", cmd.CommandPath(), name)
		case dash < 0 && len(args) > 1:
			return usageErrorf(cmd, "%s takes 1 argument (%s), got %d; put the command to run after --: %s %s -- COMMAND ARGS...",
				cmd.CommandPath(), name, len(args), cmd.CommandPath(), args[0])
		case dash > 1:
			return usageErrorf(cmd, "%s takes 1 argument (%s) before --, got %d", cmd.CommandPath(), name, dash)
		case dash == 1 && len(args) == 1:
			return usageErrorf(cmd, "no command after --: give -- COMMAND ARGS..., or nothing to hold until interrupted")
		}
		return nil
	}
}

// lookCommand finds the command to run, before anything is taken, so that a
// typo changes nothing. It returns "" when there is no command.
func lookCommand(cmd *cobra.Command, argv []string) (string, error) {
	if len(argv) == 0 {
		return "", nil
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return "", usageErrorf(cmd, "cannot run %q: %v", argv[0], errors.Unwrap(err))
	}
	return path, nil
}

// acquireError explains why a lock, semaphore or election was not taken.
// The SDK's errors name the lock already.
func (a *app) acquireError(cmd *cobra.Command, c *sdk.Client, what, name string, err error) error {
	switch {
	case errors.Is(err, sdk.ErrLocked):
		if held := a.describeHolders(c, name); held != "" {
			return fmt.Errorf("%s %s is %s; --try does not wait: %w", what, quoteKey(name), held, sdk.ErrLocked)
		}
		return fmt.Errorf("%s %s is held; --try does not wait: %w", what, quoteKey(name), sdk.ErrLocked)
	case cmd.Context().Err() != nil && errors.Is(err, context.Canceled):
		return fmt.Errorf("interrupted while waiting for %s %s (no longer waiting)", what, quoteKey(name))
	case errors.Is(err, sdk.ErrKindMismatch):
		if held := a.describeHolders(c, name); held != "" {
			return fmt.Errorf("%w (%s)", err, held)
		}
	}
	return err
}

// describeHolders says who holds a lock name now, best effort ("" if
// unknown): "held by lease 5 (token 17), 2 waiting".
func (a *app) describeHolders(c *sdk.Client, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), a.commandTimeout)
	defer cancel()
	resp, err := c.GetLock(ctx, name)
	st := resp.GetState()
	if err != nil || st == nil {
		return ""
	}
	held := make([]string, len(st.Holders))
	for i, h := range st.Holders {
		held[i] = fmt.Sprintf("lease %d (token %d)", h.Lease, h.Token)
	}
	s := "held by " + strings.Join(held, ", ")
	if len(held) == 0 {
		s = "not held"
	}
	if n := len(st.Waiters); n > 0 {
		s += fmt.Sprintf(", %d waiting", n)
	}
	return s
}

// A holding is something catctl holds for the user: a lock, permits, a
// leadership, a barrier entry.
type holding struct {
	what  string // for messages: `lock "x"`
	name  string
	token uint64
	lease int64
	// lost is closed when the hold is lost (its lease ended).
	lost <-chan struct{}
}

// String names the hold for messages: `lock "x" (token 17)`.
func (h holding) String() string {
	if h.token == 0 {
		return h.what
	}
	return fmt.Sprintf("%s (token %d)", h.what, h.token)
}

// owner is the hold as the API describes an owner, for -o json.
func (h holding) owner(permits int64) *catalogpb.LockOwner {
	return &catalogpb.LockOwner{Lease: h.lease, Token: h.token, Mode: catalogpb.LockMode_LOCK_MODE_EXCLUSIVE, Permits: permits}
}

// holdUntilInterrupted waits for Ctrl-C or SIGTERM. It fails if the hold is
// lost first.
func (a *app) holdUntilInterrupted(cmd *cobra.Command, h holding) error {
	select {
	case <-cmd.Context().Done():
		return nil
	case <-h.lost:
		return fmt.Errorf("lost %s: lease %d expired or was revoked", h, h.lease)
	}
}

// runHolding runs path with argv while h is held, passing on SIGINT and
// SIGTERM, then calls release. It returns the command's exit status as a
// commandExit. If the hold is lost first, the command gets SIGTERM and
// runHolding fails.
func (a *app) runHolding(h holding, path string, argv []string, release func() error) error {
	// Registered before the command starts so that no signal is missed; the
	// root context, cancelled by the same signals, is not what ends the wait.
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigc)

	child := exec.Command(path, argv[1:]...)
	child.Args[0] = argv[0]
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, a.stdout, a.stderr
	child.Env = append(os.Environ(), leaseEnv+"="+strconv.FormatInt(h.lease, 10))
	if h.token != 0 {
		child.Env = append(child.Env, fenceEnv+"="+strconv.FormatUint(h.token, 10), lockEnv+"="+h.name)
	}
	if err := child.Start(); err != nil {
		relErr := release()
		return errors.Join(fmt.Errorf("run %s: %w", argv[0], err), relErr)
	}
	waitc := make(chan error, 1)
	go func() { waitc <- child.Wait() }()

	lost := h.lost
	wasLost := false
	var waitErr error
wait:
	for {
		select {
		case sig := <-sigc:
			if sig == os.Interrupt && interruptFromTerminal() {
				continue // the terminal sent it to COMMAND as well
			}
			_ = child.Process.Signal(sig)
		case <-lost:
			lost, wasLost = nil, true
			fmt.Fprintf(a.stderr, "catctl: lost %s: lease %d expired or was revoked; sending SIGTERM to %s\n", h, h.lease, argv[0])
			_ = child.Process.Signal(syscall.SIGTERM)
		case waitErr = <-waitc:
			break wait
		}
	}
	code := child.ProcessState.ExitCode()
	if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	if wasLost {
		return fmt.Errorf("lost %s while %s ran: lease %d expired or was revoked; %s was sent SIGTERM and exited with status %d",
			h, argv[0], h.lease, argv[0], code)
	}
	if err := release(); err != nil {
		if errors.Is(err, sdk.ErrNotHeld) || errors.Is(err, sdk.ErrLeaseNotFound) {
			return fmt.Errorf("lost %s while %s ran, before catctl noticed: %w", h, argv[0], err)
		}
		return err
	}
	if code == 0 {
		return nil
	}
	if code < 0 {
		return fmt.Errorf("run %s: %w", argv[0], waitErr)
	}
	return commandExit{code: code}
}

func newLockLsCommand(a *app) *cobra.Command {
	var (
		kind, consistency string
		limit             int64
	)
	cmd := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List locks (mutexes, RW locks, semaphores, elections) with their holders and waiters",
		Long: "ls lists every lock name starting with PREFIX: its kind, its holders (lease and\n" +
			"fencing token; permits for a semaphore, mode for an RW lock) and its waiters\n" +
			"in the order they will be granted. A name without holders or waiters does not\n" +
			"exist. -o json prints the ListLocksResponse.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf(cmd, "%s takes at most 1 argument (PREFIX), got %d", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			k, err := parseLockKind(cmd, kind)
			if err != nil {
				return err
			}
			serializable, err := parseSerializable(cmd, consistency)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usageErrorf(cmd, "--limit must be >= 0 (0: every lock), got %d", limit)
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			all := &catalogpb.ListLocksResponse{}
			all.Locks, all.More, err = pageAll(limit, func(n int64, after string) ([]*catalogpb.LockState, bool, error) {
				resp, err := c.ListLocks(ctx, &catalogpb.ListLocksRequest{Prefix: prefix, Kind: k, Serializable: serializable, Limit: n, ContinueAfter: after})
				if err != nil {
					return nil, false, fmt.Errorf("list locks: %w", err)
				}
				all.Header = resp.Header
				return resp.Locks, resp.More, nil
			}, (*catalogpb.LockState).GetName)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(all)
			}
			tw := a.newTable()
			fmt.Fprintln(tw, "NAME\tKIND\tLIMIT\tHOLDERS\tTOKENS\tWAITERS")
			for _, l := range all.Locks {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", printable([]byte(l.Name)), kindName(l.Kind), l.Limit,
					ownerList(l.Kind, l.Holders), tokenList(l.Holders), ownerList(l.Kind, l.Waiters))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "", "only locks of this kind: mutex, rwlock, semaphore or election")
	cmd.Flags().Int64Var(&limit, "limit", 0, "list at most this many locks (0: all)")
	cmd.Flags().StringVar(&consistency, "consistency", "l", "l (linearizable) or s (serializable)")
	return cmd
}

func parseSerializable(cmd *cobra.Command, consistency string) (bool, error) {
	switch consistency {
	case "l":
		return false, nil
	case "s":
		return true, nil
	}
	return false, usageErrorf(cmd, "--consistency must be l (linearizable) or s (serializable), got %q", consistency)
}

func parseLockKind(cmd *cobra.Command, s string) (catalogpb.LockKind, error) {
	if s == "" {
		return catalogpb.LockKind_LOCK_KIND_UNSPECIFIED, nil
	}
	name := strings.ToUpper(strings.TrimPrefix(strings.ToLower(s), "lock_kind_"))
	if v, ok := catalogpb.LockKind_value["LOCK_KIND_"+name]; ok && v != 0 {
		return catalogpb.LockKind(v), nil
	}
	return 0, usageErrorf(cmd, "--kind must be one of mutex, rwlock, semaphore, election, got %q", s)
}

func kindName(k catalogpb.LockKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "LOCK_KIND_"))
}

// ownerList prints owners as leases in order, with what differs from a
// plain exclusive hold of one permit: "5,7(shared),9(2)".
func ownerList(kind catalogpb.LockKind, owners []*catalogpb.LockOwner) string {
	if len(owners) == 0 {
		return "-"
	}
	parts := make([]string, len(owners))
	for i, o := range owners {
		parts[i] = strconv.FormatInt(o.Lease, 10)
		switch {
		case kind == catalogpb.LockKind_LOCK_KIND_RWLOCK && o.Mode == catalogpb.LockMode_LOCK_MODE_SHARED:
			parts[i] += "(shared)"
		case kind == catalogpb.LockKind_LOCK_KIND_RWLOCK:
			parts[i] += "(exclusive)"
		case kind == catalogpb.LockKind_LOCK_KIND_SEMAPHORE:
			parts[i] += fmt.Sprintf("(%d)", o.Permits)
		}
	}
	return strings.Join(parts, ",")
}

func tokenList(holders []*catalogpb.LockOwner) string {
	if len(holders) == 0 {
		return "-"
	}
	parts := make([]string, len(holders))
	for i, h := range holders {
		parts[i] = strconv.FormatUint(h.Token, 10)
	}
	return strings.Join(parts, ",")
}

// pageAll reads a list page by page, each continuing after the last name of
// the one before, until no more remain or limit items (0: no limit) were
// read. fetch asks for at most n items (0: the server's default).
func pageAll[T any](limit int64, fetch func(n int64, after string) ([]T, bool, error), name func(T) string) (items []T, more bool, err error) {
	after := ""
	for {
		var n int64
		if limit > 0 {
			n = limit - int64(len(items))
		}
		page, m, err := fetch(n, after)
		if err != nil {
			return nil, false, err
		}
		items, more = append(items, page...), m
		if !m || len(page) == 0 || (limit > 0 && int64(len(items)) >= limit) {
			return items, more, nil
		}
		after = name(page[len(page)-1])
	}
}
