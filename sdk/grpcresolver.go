package sdk

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

// roundRobinConfig is the service config the resolver gives connections:
// calls spread over every healthy serving instance.
const roundRobinConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// GRPCScheme is the target scheme GRPCResolver resolves.
const GRPCScheme = "catalog"

// GRPCResolver returns a gRPC name resolver for targets
// "catalog:///SERVICE[?tag=T&zone=Z&meta=KEY=VALUE]": it follows SERVICE
// with a Resolver and gives gRPC the addresses of its healthy (PASSING or
// WARNING), SERVING instances that pass the query's filters (every tag and
// meta pair given must match), each endpoint carrying the instance's weight
// (EndpointWeight), with a service config choosing round robin. Give it to
// one connection only:
//
//	conn, err := grpc.NewClient("catalog:///orders",
//		grpc.WithResolvers(cli.GRPCResolver()),
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
//
// When no instance qualifies the resolver reports an error naming the
// service: following gRPC's convention for resolver errors, a connection
// that had addresses keeps using them, and one that had none fails its calls
// with that error. The resolver lives as long as the gRPC connection (or
// until the Client is closed).
func (c *Client) GRPCResolver() resolver.Builder { return &grpcBuilder{src: clientSource{c}} }

type grpcBuilder struct{ src instanceSource }

// Scheme returns "catalog".
func (b *grpcBuilder) Scheme() string { return GRPCScheme }

// Build starts following the target's service. It does not wait for the
// first listing: gRPC holds calls until the first state (or error) arrives.
func (b *grpcBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service, filters, err := parseGRPCTarget(target)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &grpcResolver{
		src:      b.src,
		cc:       cc,
		service:  service,
		filters:  append(filters, Healthy()),
		retryMin: 100 * time.Millisecond,
		retryMax: 5 * time.Second,
		cancel:   cancel,
		donec:    make(chan struct{}),
	}
	go g.run(ctx)
	return g, nil
}

// parseGRPCTarget returns the service and filters a target names.
func parseGRPCTarget(target resolver.Target) (string, []Filter, error) {
	raw := target.URL.String()
	if target.URL.Host != "" {
		return "", nil, fmt.Errorf("%w: catalog target %q: an authority (%q) is not supported, write catalog:///SERVICE", ErrInvalidArgument, raw, target.URL.Host)
	}
	service := target.Endpoint()
	if service == "" || strings.Contains(service, "/") {
		return "", nil, fmt.Errorf("%w: catalog target %q must name one service: catalog:///SERVICE[?tag=T&zone=Z&meta=KEY=VALUE]", ErrInvalidArgument, raw)
	}
	query, err := url.ParseQuery(target.URL.RawQuery)
	if err != nil {
		return "", nil, fmt.Errorf("%w: catalog target %q: query: %v", ErrInvalidArgument, raw, err)
	}
	var filters []Filter
	for key, values := range query {
		switch key {
		case "tag":
			for _, v := range values {
				filters = append(filters, HasTag(v))
			}
		case "zone":
			if len(values) != 1 {
				return "", nil, fmt.Errorf("%w: catalog target %q: zone given %d times, want once", ErrInvalidArgument, raw, len(values))
			}
			filters = append(filters, InZone(values[0]))
		case "meta":
			for _, v := range values {
				k, val, ok := strings.Cut(v, "=")
				if !ok || k == "" {
					return "", nil, fmt.Errorf("%w: catalog target %q: meta must be KEY=VALUE, got %q", ErrInvalidArgument, raw, v)
				}
				filters = append(filters, WithMeta(k, val))
			}
		default:
			return "", nil, fmt.Errorf("%w: catalog target %q: unknown query parameter %q (allowed: tag, zone, meta)", ErrInvalidArgument, raw, key)
		}
	}
	return service, filters, nil
}

type grpcWeightKey struct{}

// EndpointWeight returns the weight of the instance behind an endpoint the
// catalog resolver produced, for a weighted balancer; false for another
// endpoint.
func EndpointWeight(ep resolver.Endpoint) (int32, bool) {
	w, ok := ep.Attributes.Value(grpcWeightKey{}).(int32)
	return w, ok
}

// grpcResolver feeds a gRPC connection from a Resolver.
type grpcResolver struct {
	src                instanceSource
	cc                 resolver.ClientConn
	service            string
	filters            []Filter
	retryMin, retryMax time.Duration

	// last is what was last given to cc, to skip updates that change no
	// address or weight ("" before the first).
	last string

	cancel    context.CancelFunc
	donec     chan struct{}
	closeOnce sync.Once
}

// ResolveNow does nothing: the addresses are kept live by a watch.
func (g *grpcResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops following the service.
func (g *grpcResolver) Close() {
	g.closeOnce.Do(func() {
		g.cancel()
		<-g.donec
	})
}

func (g *grpcResolver) run(ctx context.Context) {
	defer close(g.donec)
	var res *Resolver
	for failures := 0; ; failures++ {
		var err error
		res, err = newResolver(ctx, g.src, g.service, g.filters)
		if err == nil {
			break
		}
		if ctx.Err() != nil || g.src.closed() {
			return
		}
		g.cc.ReportError(fmt.Errorf("catalog resolver: %w", err))
		if sleepCtx(ctx, backoffWait(g.retryMin, g.retryMax, failures)) != nil {
			return
		}
	}
	defer res.Close()
	g.push(res)
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-res.Updates():
			if !ok {
				return
			}
			g.push(res)
		}
	}
}

// push gives cc the addresses of res's instances, or an error if there are
// none.
func (g *grpcResolver) push(res *Resolver) {
	insts := res.Instances()
	if len(insts) == 0 {
		if g.last != "empty" {
			g.last = "empty"
			g.cc.ReportError(fmt.Errorf("catalog resolver: service %q has no healthy SERVING instance (at revision %d)", g.service, res.Revision()))
		}
		return
	}
	state := grpcState(insts)
	var key strings.Builder
	for _, inst := range insts {
		key.WriteString(inst.GetAddress())
		key.WriteByte('*')
		key.WriteString(strconv.Itoa(int(inst.GetWeight())))
		key.WriteByte(' ')
	}
	if key.String() == g.last {
		return
	}
	g.last = key.String()
	// Round robin over the instances unless the connection has a service
	// config of its own (grpc.WithDefaultServiceConfig is overridden by a
	// resolver's config, so only a config that disables resolver configs,
	// grpc.WithDisableServiceConfig, keeps the connection's choice).
	state.ServiceConfig = g.cc.ParseServiceConfig(roundRobinConfig)
	// An error means the balancer refused the state; nothing to do but wait
	// for the next change.
	_ = g.cc.UpdateState(state)
}

// grpcState lists insts as gRPC endpoints, one address each, carrying the
// instance's weight.
func grpcState(insts []*catalogpb.Instance) resolver.State {
	state := resolver.State{
		Endpoints: make([]resolver.Endpoint, 0, len(insts)),
		Addresses: make([]resolver.Address, 0, len(insts)),
	}
	for _, inst := range insts {
		weight := max(inst.GetWeight(), 1)
		addr := resolver.Address{Addr: inst.GetAddress()}
		state.Addresses = append(state.Addresses, addr)
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{
			Addresses:  []resolver.Address{addr},
			Attributes: attributes.New(grpcWeightKey{}, weight),
		})
	}
	return state
}
