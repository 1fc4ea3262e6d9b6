package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/spf13/cobra"
)

func newServiceCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("service", "Register, list and inspect services and their instances")
	cmd.AddCommand(newServiceLsCommand(a), newServiceGetCommand(a), newServiceRegisterCommand(a),
		newServiceDeregisterCommand(a), newServiceSetCommand(a), newServiceDeleteCommand(a),
		newServiceHealthCommand(a), newServiceStateCommand(a))
	return cmd
}

func newServiceLsCommand(a *app) *cobra.Command {
	var (
		tag, consistency string
		limit            int64
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List services with their instance counts by health",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cons, err := parseConsistency(cmd, consistency)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usageErrorf(cmd, "--limit must be >= 0 (0: every service), got %d", limit)
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			all := &catalogpb.ListServicesResponse{}
			req := &catalogpb.ListServicesRequest{Tag: tag, Consistency: cons, Limit: limit}
			for {
				resp, err := c.ListServices(ctx, req)
				if err != nil {
					return fmt.Errorf("list services: %w", err)
				}
				all.Header = resp.Header
				all.Services = append(all.Services, resp.Services...)
				all.More = resp.More
				if !resp.More || len(resp.Services) == 0 || (limit > 0 && int64(len(all.Services)) >= limit) {
					break
				}
				req.After = resp.Services[len(resp.Services)-1].GetService().GetName()
			}
			if a.jsonOutput() {
				return a.printJSON(all)
			}
			tw := a.newTable()
			fmt.Fprintln(tw, "NAME\tINSTANCES\tPASSING\tWARNING\tCRITICAL\tSERVING\tOWNER\tTAGS")
			for _, s := range all.Services {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", s.GetService().GetName(), s.Instances, s.Passing,
					s.Warning, s.Critical, s.Serving, printable([]byte(s.GetService().GetOwner())), strings.Join(s.GetService().GetTags(), ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&tag, "tag", "", "only services carrying this tag")
	cmd.Flags().Int64Var(&limit, "limit", 0, "list at most this many services (0: all)")
	cmd.Flags().StringVar(&consistency, "consistency", "l", "l (linearizable) or s (serializable)")
	return cmd
}

// instanceFilterFlags are the flags that select instances.
type instanceFilterFlags struct {
	healthy       bool
	tags, meta    []string
	zone          string
	states, healt []string
}

func (f *instanceFilterFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.healthy, "healthy", false, "only healthy instances: health passing or warning, state serving")
	fl.StringArrayVar(&f.tags, "tag", nil, "only instances carrying this tag (repeatable: all must match)")
	fl.StringVar(&f.zone, "zone", "", "only instances in this zone")
	fl.StringArrayVar(&f.meta, "meta", nil, "only instances whose metadata has KEY=VALUE (repeatable)")
	fl.StringArrayVar(&f.states, "state", nil, "only instances in this state: starting, serving, draining, stopped (repeatable)")
	fl.StringArrayVar(&f.healt, "health", nil, "only instances with this health: passing, warning, critical (repeatable)")
}

func (f *instanceFilterFlags) filter(cmd *cobra.Command) (*catalogpb.InstanceFilter, error) {
	out := &catalogpb.InstanceFilter{Healthy: f.healthy, Tags: f.tags, Zone: f.zone}
	meta, err := parsePairs(cmd, "--meta", f.meta)
	if err != nil {
		return nil, err
	}
	if len(meta) > 0 {
		out.Metadata = meta
	}
	for _, s := range f.states {
		st, err := parseState(cmd, s)
		if err != nil {
			return nil, err
		}
		out.State = append(out.State, st)
	}
	for _, h := range f.healt {
		hs, err := parseHealth(cmd, h)
		if err != nil {
			return nil, err
		}
		out.Health = append(out.Health, hs)
	}
	return out, nil
}

func newServiceGetCommand(a *app) *cobra.Command {
	var (
		f           instanceFilterFlags
		consistency string
	)
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a service and its instances (filtered)",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cons, err := parseConsistency(cmd, consistency)
			if err != nil {
				return err
			}
			filter, err := f.filter(cmd)
			if err != nil {
				return err
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			req := &catalogpb.GetServiceRequest{Name: args[0], Filter: filter, Consistency: cons}
			var all *catalogpb.GetServiceResponse
			for {
				resp, err := c.GetService(ctx, req)
				if err != nil {
					return fmt.Errorf("get service %q: %w", args[0], err)
				}
				if all == nil {
					all = resp
				} else {
					all.Instances = append(all.Instances, resp.Instances...)
				}
				all.More = resp.More
				if !resp.More || len(resp.Instances) == 0 {
					break
				}
				req.After = resp.Instances[len(resp.Instances)-1].Id
			}
			if a.jsonOutput() {
				return a.printJSON(all)
			}
			s := all.Service
			fmt.Fprintf(a.stdout, "Service %s: %d matching instances\n", s.GetName(), all.Count)
			if s.GetDescription() != "" {
				fmt.Fprintf(a.stdout, "  description: %s\n", printable([]byte(s.GetDescription())))
			}
			if s.GetOwner() != "" {
				fmt.Fprintf(a.stdout, "  owner: %s\n", printable([]byte(s.GetOwner())))
			}
			if len(s.GetTags()) > 0 {
				fmt.Fprintf(a.stdout, "  tags: %s\n", strings.Join(s.GetTags(), ","))
			}
			if len(s.GetMetadata()) > 0 {
				fmt.Fprintf(a.stdout, "  metadata: %s\n", formatPairs(s.GetMetadata()))
			}
			return a.printInstances(all.Instances)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&consistency, "consistency", "l", "l (linearizable) or s (serializable)")
	return cmd
}

// printInstances prints instances as a table; nothing when there are none.
func (a *app) printInstances(insts []*catalogpb.Instance) error {
	if len(insts) == 0 {
		return nil
	}
	tw := a.newTable()
	fmt.Fprintln(tw, "ID\tADDRESS\tSTATE\tHEALTH\tZONE\tDC\tWEIGHT\tLEASE\tTAGS\tOUTPUT")
	for _, in := range insts {
		lease := "-"
		if in.Lease != 0 {
			lease = strconv.FormatInt(in.Lease, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", in.Id, in.Address, stateName(in.State), healthName(in.Health),
			in.Zone, in.Dc, in.Weight, lease, strings.Join(in.Tags, ","), printable([]byte(shorten(in.HealthOutput, 60))))
	}
	return tw.Flush()
}

func newServiceRegisterCommand(a *app) *cobra.Command {
	var (
		id, addr, zone, state                    string
		checkHTTP, checkTCP, checkGRPC, grpcName string
		ttl, drain, checkInterval, checkTimeout  time.Duration
		weight                                   int32
		tags, meta, ports                        []string
	)
	cmd := &cobra.Command{
		Use:   "register NAME --id ID --addr HOST:PORT",
		Short: "Register an instance of service NAME",
		Long: "Without --ttl the instance stays until deregistered. With --ttl the instance\n" +
			"lives by a lease that catctl keeps alive until interrupted (Ctrl-C), and then\n" +
			"deregisters it (after --drain in state draining, if given). If the lease is\n" +
			"lost meanwhile (server restart, partition), catctl registers the instance again.",
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" || addr == "" {
				return usageErrorf(cmd, "--id and --addr are required")
			}
			n := 0
			for _, v := range []string{checkHTTP, checkTCP, checkGRPC} {
				if v != "" {
					n++
				}
			}
			if n > 1 {
				return usageErrorf(cmd, "give at most one of --check-http, --check-tcp and --check-grpc")
			}
			metadata, err := parsePairs(cmd, "--meta", meta)
			if err != nil {
				return err
			}
			portMap, err := parsePorts(cmd, ports)
			if err != nil {
				return err
			}
			st, err := parseState(cmd, state)
			if err != nil {
				return err
			}
			var check *catalogpb.HealthCheck
			if n == 1 {
				check = &catalogpb.HealthCheck{Http: checkHTTP, Tcp: checkTCP, Grpc: checkGRPC, GrpcService: grpcName,
					IntervalMs: checkInterval.Milliseconds(), TimeoutMs: checkTimeout.Milliseconds()}
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			if ttl == 0 {
				ctx, cancel := a.commandContext(cmd)
				defer cancel()
				resp, err := c.RegisterInstance(ctx, &catalogpb.Instance{Service: args[0], Id: id, Address: addr, Ports: portMap,
					Tags: tags, Metadata: metadata, Zone: zone, Weight: weight, State: st, Check: check})
				if err != nil {
					return fmt.Errorf("register %s/%s: %w", args[0], id, err)
				}
				if a.jsonOutput() {
					return a.printJSON(resp)
				}
				fmt.Fprintf(a.stdout, "registered %s/%s at revision %d\n", args[0], id, resp.GetHeader().GetRevision())
				return nil
			}
			opts := []sdk.RegisterOption{sdk.WithTTL(ttl)}
			if st != catalogpb.InstanceState_STATE_UNSPECIFIED {
				opts = append(opts, sdk.WithState(st))
			}
			if drain > 0 {
				opts = append(opts, sdk.WithDrain(drain))
			}
			ctx, cancel := a.commandContext(cmd)
			reg, err := c.Register(ctx, sdk.Instance{Service: args[0], ID: id, Address: addr, Ports: portMap, Tags: tags,
				Metadata: metadata, Zone: zone, Weight: weight, Check: check}, opts...)
			cancel()
			if err != nil {
				return fmt.Errorf("register %s/%s: %w", args[0], id, err)
			}
			fmt.Fprintf(a.stderr, "registered %s/%s with lease %d (ttl %v); keeping it alive until interrupted\n", args[0], id, reg.Lease(), ttl)
			<-cmd.Context().Done()
			closeCtx, closeCancel := context.WithTimeout(context.Background(), a.commandTimeout+drain)
			defer closeCancel()
			if err := reg.Close(closeCtx); err != nil {
				return fmt.Errorf("deregister %s/%s: %w", args[0], id, err)
			}
			fmt.Fprintf(a.stderr, "deregistered %s/%s\n", args[0], id)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&id, "id", "", "instance id, unique in the service (required)")
	fl.StringVar(&addr, "addr", "", "instance address host:port (required)")
	fl.DurationVar(&ttl, "ttl", 0, "live by a lease of this TTL, kept alive until interrupted (0: no lease)")
	fl.DurationVar(&drain, "drain", 0, "with --ttl: on interrupt, set state draining and wait this long before deregistering")
	fl.StringArrayVar(&tags, "tag", nil, "tag (repeatable)")
	fl.StringArrayVar(&meta, "meta", nil, "metadata KEY=VALUE (repeatable)")
	fl.StringArrayVar(&ports, "port", nil, "named port NAME=PORT (repeatable)")
	fl.StringVar(&zone, "zone", "", "zone")
	fl.Int32Var(&weight, "weight", 0, "load-balancing weight 1..1000 (0: 1)")
	fl.StringVar(&state, "state", "", "initial state: starting, serving (default), draining, stopped")
	fl.StringVar(&checkHTTP, "check-http", "", "servers probe this URL with GET; 2xx passes")
	fl.StringVar(&checkTCP, "check-tcp", "", "servers connect to this host:port")
	fl.StringVar(&checkGRPC, "check-grpc", "", "servers ask this host:port's gRPC health service")
	fl.StringVar(&grpcName, "check-grpc-service", "", "with --check-grpc: the service name to ask about")
	fl.DurationVar(&checkInterval, "check-interval", 0, "time between probes (0: 10s)")
	fl.DurationVar(&checkTimeout, "check-timeout", 0, "timeout of one probe (0: 5s)")
	return cmd
}

func newServiceDeregisterCommand(a *app) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "deregister NAME --id ID",
		Short: "Remove an instance of service NAME",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" {
				return usageErrorf(cmd, "--id is required")
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.Deregister(ctx, args[0], id)
			if err != nil {
				return fmt.Errorf("deregister %s/%s: %w", args[0], id, err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			if !resp.Deleted {
				return fmt.Errorf("deregister %s/%s: %w", args[0], id, sdk.ErrInstanceNotFound)
			}
			fmt.Fprintln(a.stdout, "OK")
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "instance id (required)")
	return cmd
}

func newServiceSetCommand(a *app) *cobra.Command {
	var (
		description, owner string
		tags, meta         []string
	)
	cmd := &cobra.Command{
		Use:   "set NAME",
		Short: "Create service NAME or set its description, owner, tags and metadata",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			metadata, err := parsePairs(cmd, "--meta", meta)
			if err != nil {
				return err
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.PutService(ctx, &catalogpb.Service{Name: args[0], Description: description, Owner: owner, Tags: tags, Metadata: metadata})
			if err != nil {
				return fmt.Errorf("set service %q: %w", args[0], err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintln(a.stdout, "OK")
			return nil
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "what the service does")
	cmd.Flags().StringVar(&owner, "owner", "", "who owns it (team, person)")
	cmd.Flags().StringArrayVar(&tags, "tag", nil, "tag (repeatable)")
	cmd.Flags().StringArrayVar(&meta, "meta", nil, "metadata KEY=VALUE (repeatable)")
	return cmd
}

func newServiceDeleteCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete service NAME (with --force, also its instances and shard map)",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.DeleteService(ctx, args[0], force)
			if err != nil {
				if errors.Is(err, sdk.ErrServiceNotEmpty) {
					return fmt.Errorf("delete service %q: %w (use --force to delete its instances too)", args[0], err)
				}
				return fmt.Errorf("delete service %q: %w", args[0], err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintf(a.stdout, "OK (%d instances deleted)\n", resp.DeletedInstances)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete the service's instances and shard map as well")
	return cmd
}

func newServiceHealthCommand(a *app) *cobra.Command {
	var id, output string
	cmd := &cobra.Command{
		Use:   "health NAME --id ID passing|warning|critical",
		Short: "Set the health of an instance (instances without server-run checks)",
		Args:  exactArgs("NAME", "HEALTH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" {
				return usageErrorf(cmd, "--id is required")
			}
			h, err := parseHealth(cmd, args[1])
			if err != nil {
				return err
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.SetInstanceHealth(ctx, args[0], id, h, output)
			if err != nil {
				return fmt.Errorf("set health of %s/%s: %w", args[0], id, err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintln(a.stdout, "OK")
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "instance id (required)")
	cmd.Flags().StringVar(&output, "output", "", "text explaining the health")
	return cmd
}

func newServiceStateCommand(a *app) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "state NAME --id ID starting|serving|draining|stopped",
		Short: "Set the lifecycle state of an instance",
		Args:  exactArgs("NAME", "STATE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" {
				return usageErrorf(cmd, "--id is required")
			}
			st, err := parseState(cmd, args[1])
			if err != nil {
				return err
			}
			if st == catalogpb.InstanceState_STATE_UNSPECIFIED {
				return usageErrorf(cmd, "STATE must be one of starting, serving, draining, stopped")
			}
			ctx, c, done, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.SetInstanceState(ctx, args[0], id, st)
			if err != nil {
				return fmt.Errorf("set state of %s/%s: %w", args[0], id, err)
			}
			if a.jsonOutput() {
				return a.printJSON(resp)
			}
			fmt.Fprintln(a.stdout, "OK")
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "instance id (required)")
	return cmd
}

func parseConsistency(cmd *cobra.Command, s string) (catalogpb.Consistency, error) {
	switch s {
	case "l":
		return catalogpb.Consistency_LINEARIZABLE, nil
	case "s":
		return catalogpb.Consistency_SERIALIZABLE, nil
	}
	return 0, usageErrorf(cmd, "--consistency must be l (linearizable) or s (serializable), got %q", s)
}

// parseState accepts a state name in any case, with or without the STATE_
// prefix; "" is STATE_UNSPECIFIED.
func parseState(cmd *cobra.Command, s string) (catalogpb.InstanceState, error) {
	if s == "" {
		return catalogpb.InstanceState_STATE_UNSPECIFIED, nil
	}
	name := strings.ToUpper(strings.TrimPrefix(strings.ToLower(s), "state_"))
	if v, ok := catalogpb.InstanceState_value["STATE_"+name]; ok && v != 0 {
		return catalogpb.InstanceState(v), nil
	}
	return 0, usageErrorf(cmd, "state must be one of starting, serving, draining, stopped, got %q", s)
}

func parseHealth(cmd *cobra.Command, s string) (catalogpb.HealthStatus, error) {
	if v, ok := catalogpb.HealthStatus_value[strings.ToUpper(s)]; ok && v != 0 {
		return catalogpb.HealthStatus(v), nil
	}
	return 0, usageErrorf(cmd, "health must be one of passing, warning, critical, got %q", s)
}

func stateName(s catalogpb.InstanceState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

func healthName(h catalogpb.HealthStatus) string { return strings.ToLower(h.String()) }

// parsePairs parses KEY=VALUE flags into a map.
func parsePairs(cmd *cobra.Command, flag string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usageErrorf(cmd, "%s must be KEY=VALUE with a non-empty KEY, got %q", flag, p)
		}
		out[k] = v
	}
	return out, nil
}

func parsePorts(cmd *cobra.Command, ports []string) (map[string]int32, error) {
	pairs, err := parsePairs(cmd, "--port", ports)
	if err != nil || pairs == nil {
		return nil, err
	}
	out := make(map[string]int32, len(pairs))
	for k, v := range pairs {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return nil, usageErrorf(cmd, "--port %s=%s: the port must be a number in 1..65535", k, v)
		}
		out[k] = int32(n)
	}
	return out, nil
}

// formatPairs prints a map as k=v pairs in key order.
func formatPairs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
