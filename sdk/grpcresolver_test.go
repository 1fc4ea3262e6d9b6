package sdk

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

func parseTarget(t *testing.T, raw string) resolver.Target {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return resolver.Target{URL: *u}
}

func TestParseGRPCTarget(t *testing.T) {
	tests := []struct {
		target     string
		service    string
		wantFilter *catalogpb.InstanceFilter
		wantErr    string
	}{
		{target: "catalog:///orders", service: "orders", wantFilter: &catalogpb.InstanceFilter{}},
		{target: "catalog:orders", service: "orders", wantFilter: &catalogpb.InstanceFilter{}},
		{
			target: "catalog:///orders?tag=v2&tag=canary&zone=z1&meta=env=prod&meta=team=a%3Db", service: "orders",
			wantFilter: &catalogpb.InstanceFilter{Tags: []string{"v2", "canary"}, Zone: "z1", Metadata: map[string]string{"env": "prod", "team": "a=b"}},
		},
		{target: "catalog:///", wantErr: "must name one service"},
		{target: "catalog:///a/b", wantErr: "must name one service"},
		{target: "catalog://dc2/orders", wantErr: `an authority ("dc2") is not supported`},
		{target: "catalog:///orders?color=red", wantErr: `unknown query parameter "color" (allowed: tag, zone, meta)`},
		{target: "catalog:///orders?zone=a&zone=b", wantErr: "zone given 2 times"},
		{target: "catalog:///orders?meta=env", wantErr: `meta must be KEY=VALUE, got "env"`},
		{target: "catalog:///orders?tag=%zz", wantErr: "query"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			service, filters, err := parseGRPCTarget(parseTarget(t, tt.target))
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parse = %v, want ErrInvalidArgument containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got := newFilterSettings(filters).filter
			// Query keys come in a map's order; values of one key in order.
			if service != tt.service || got.GetZone() != tt.wantFilter.GetZone() ||
				fmt.Sprint(got.GetMetadata()) != fmt.Sprint(tt.wantFilter.GetMetadata()) ||
				fmt.Sprint(got.GetTags()) != fmt.Sprint(tt.wantFilter.GetTags()) {
				t.Errorf("parse = %q %v, want %q %v", service, got, tt.service, tt.wantFilter)
			}
		})
	}
}

// A fakeCC records what a resolver gives a gRPC connection.
type fakeCC struct {
	resolver.ClientConn
	mu      sync.Mutex
	states  []resolver.State
	errs    []error
	changed chan struct{}
}

func newFakeCC() *fakeCC { return &fakeCC{changed: make(chan struct{}, 100)} }

// ParseServiceConfig records the config the resolver asks for as parsed
// (a fake parse: the JSON kept as the config's text).
func (f *fakeCC) ParseServiceConfig(js string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{Config: fakeServiceConfig{json: js}}
}

type fakeServiceConfig struct {
	serviceconfig.Config
	json string
}

func (f *fakeCC) UpdateState(s resolver.State) error {
	f.mu.Lock()
	f.states = append(f.states, s)
	f.mu.Unlock()
	f.changed <- struct{}{}
	return nil
}

func (f *fakeCC) ReportError(err error) {
	f.mu.Lock()
	f.errs = append(f.errs, err)
	f.mu.Unlock()
	f.changed <- struct{}{}
}

func (f *fakeCC) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.changed:
	case <-time.After(waitFor):
		t.Fatalf("resolver gave the connection nothing within %v", waitFor)
	}
}

func (f *fakeCC) last() (resolver.State, []error, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s resolver.State
	if len(f.states) > 0 {
		s = f.states[len(f.states)-1]
	}
	return s, append([]error(nil), f.errs...), len(f.states)
}

func endpointsOf(s resolver.State) string {
	var out []string
	for _, ep := range s.Endpoints {
		w, _ := EndpointWeight(ep)
		out = append(out, fmt.Sprintf("%s*%d", ep.Addresses[0].Addr, w))
	}
	return strings.Join(out, " ")
}

func TestGRPCResolverGivesHealthyServingAddresses(t *testing.T) {
	pass, warn, crit := catalogpb.HealthStatus_PASSING, catalogpb.HealthStatus_WARNING, catalogpb.HealthStatus_CRITICAL
	a, b, c, d := inst("1", 3, pass), inst("2", 4, warn), inst("3", 5, crit), inst("4", 6, pass)
	b.Weight = 7
	d.State = catalogpb.InstanceState_STATE_DRAINING
	src := newFakeSource(10, a, b, c, d)
	cc := newFakeCC()
	res, err := (&grpcBuilder{src: src}).Build(parseTarget(t, "catalog:///orders"), cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	res.ResolveNow(resolver.ResolveNowOptions{})
	cc.wait(t)
	state, _, _ := cc.last()
	if got := endpointsOf(state); got != "10.0.0.1:80*1 10.0.0.2:80*7" {
		t.Errorf("endpoints %q, want the passing and warning SERVING instances with weights", got)
	}
	if len(state.Addresses) != 2 {
		t.Errorf("addresses %v, want the same two", state.Addresses)
	}
	if sc, ok := state.ServiceConfig.Config.(fakeServiceConfig); state.ServiceConfig == nil || !ok || !strings.Contains(sc.json, "round_robin") {
		t.Errorf("service config %+v, want round robin", state.ServiceConfig)
	}

	w := src.nextWatch(t)
	// A change that moves no address or weight gives the connection nothing.
	a2 := inst("1", 11, pass)
	a2.Metadata = map[string]string{"build": "2"}
	w.send(WatchResponse{Events: []*catalogpb.Event{putEvent(a2)}})
	// The critical instance turns passing: three addresses.
	w.send(WatchResponse{Events: []*catalogpb.Event{putEvent(inst("3", 12, pass))}})
	cc.wait(t)
	state, errs, n := cc.last()
	if got := endpointsOf(state); got != "10.0.0.1:80*1 10.0.0.2:80*7 10.0.0.3:80*1" || n != 2 || len(errs) != 0 {
		t.Errorf("after c turned passing: %d states, last %q, errors %v; want 2 states, three addresses", n, got, errs)
	}

	// No instance left: an error naming the service, once.
	w.send(WatchResponse{Events: []*catalogpb.Event{deleteEvent("orders", "1", 13), deleteEvent("orders", "2", 13), deleteEvent("orders", "3", 13)}})
	cc.wait(t)
	w.send(WatchResponse{Events: []*catalogpb.Event{deleteEvent("orders", "4", 14)}})
	w.send(WatchResponse{Events: []*catalogpb.Event{putEvent(inst("5", 15, pass))}})
	cc.wait(t)
	state, errs, n = cc.last()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `service "orders" has no healthy SERVING instance`) {
		t.Errorf("errors %v, want one naming the service", errs)
	}
	if got := endpointsOf(state); got != "10.0.0.5:80*1" || n != 3 {
		t.Errorf("after a new instance: %d states, last %q; want 3, the new one", n, got)
	}
}

func TestGRPCResolverRetriesTheFirstListing(t *testing.T) {
	src := newFakeSource(10, inst("1", 3, catalogpb.HealthStatus_PASSING))
	src.failLists(ErrUnavailable)
	cc := newFakeCC()
	res, err := (&grpcBuilder{src: src}).Build(parseTarget(t, "catalog:///orders"), cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	cc.wait(t)
	cc.wait(t)
	state, errs, _ := cc.last()
	if len(errs) != 1 || !errors.Is(errs[0], ErrUnavailable) {
		t.Errorf("errors %v, want the failed listing's", errs)
	}
	if got := endpointsOf(state); got != "10.0.0.1:80*1" {
		t.Errorf("endpoints %q after the retry, want the instance", got)
	}
}

// startHealthServer serves the gRPC health protocol on a local port.
func startHealthServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// whoAnswers calls Check n times and counts the answers per server address.
func whoAnswers(ctx context.Context, conn *grpc.ClientConn, n int) (map[string]int, error) {
	seen := map[string]int{}
	client := healthpb.NewHealthClient(conn)
	for range n {
		var p peer.Peer
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			return seen, err
		}
		seen[p.Addr.String()]++
	}
	return seen, nil
}

// TestGRPCResolverBalances: a real gRPC connection over the resolver
// spreads calls over the instances and follows a deregistration.
func TestGRPCResolverBalances(t *testing.T) {
	addrA, addrB := startHealthServer(t), startHealthServer(t)
	a, b := inst("a", 3, catalogpb.HealthStatus_PASSING), inst("b", 4, catalogpb.HealthStatus_PASSING)
	a.Address, b.Address = addrA, addrB
	src := newFakeSource(10, a, b)
	conn, err := grpc.NewClient("catalog:///orders",
		grpc.WithResolvers(&grpcBuilder{src: src}),
		// No service config: the resolver chooses round robin.
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()

	deadline := time.Now().Add(waitFor)
	for {
		seen, err := whoAnswers(ctx, conn, 10)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if seen[addrA] > 0 && seen[addrB] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls went to %v, want both %s and %s", seen, addrA, addrB)
		}
	}

	w := src.nextWatch(t)
	w.send(WatchResponse{Events: []*catalogpb.Event{deleteEvent("orders", "b", 11)}})
	for {
		seen, err := whoAnswers(ctx, conn, 10)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if seen[addrA] == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after b left calls went to %v, want only %s", seen, addrA)
		}
	}

	// A connection to a service without instances fails with the
	// resolver's error.
	empty, err := grpc.NewClient("catalog:///nothing",
		grpc.WithResolvers(&grpcBuilder{src: newFakeSource(10)}),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	_, err = healthpb.NewHealthClient(empty).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil || !strings.Contains(err.Error(), `service "nothing" has no healthy SERVING instance`) {
		t.Errorf("call over an empty service = %v, want the resolver's error", err)
	}
}
