package tests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/tests/framework"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// TestDiscovery runs the SDK's discovery side against a 3-member cluster:
// each subtest uses its own service, so they share one cluster.
func TestDiscovery(t *testing.T) {
	c := framework.NewCluster(t, 3)
	c.WaitLeader(stepContext(t, electionWait))
	cli := c.Client(t)

	t.Run("RegisterThenDiscover", func(t *testing.T) { testRegisterThenDiscover(t, cli) })
	t.Run("ResolverFollowsChanges", func(t *testing.T) { testResolverFollowsChanges(t, cli) })
	t.Run("ReregisterAfterLeaseLoss", func(t *testing.T) { testReregisterAfterLeaseLoss(t, c, cli) })
	t.Run("CloseDrains", func(t *testing.T) { testCloseDrains(t, cli) })
	t.Run("GRPCBalancing", func(t *testing.T) { testGRPCBalancing(t, cli) })
}

// mustRegister registers inst and closes the registration when t ends.
func mustRegister(t *testing.T, cli *sdk.Client, inst sdk.Instance, opts ...sdk.RegisterOption) *sdk.Registration {
	t.Helper()
	reg, err := cli.Register(stepContext(t, stepWait), inst, opts...)
	if err != nil {
		t.Fatalf("Register %s/%s: %v", inst.Service, inst.ID, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepWait)
		defer cancel()
		reg.Close(ctx)
	})
	return reg
}

func instanceIDs(insts []*catalogpb.Instance) string {
	ids := make([]string, 0, len(insts))
	for _, inst := range insts {
		ids = append(ids, inst.GetId())
	}
	return strings.Join(ids, ",")
}

func testRegisterThenDiscover(t *testing.T, cli *sdk.Client) {
	reg := mustRegister(t, cli, sdk.Instance{
		Service: "orders", ID: "o-1", Address: "10.1.0.1:8080",
		Tags: []string{"v2"}, Zone: "z1", Metadata: map[string]string{"env": "prod"}, Weight: 3,
	})
	mustRegister(t, cli, sdk.Instance{Service: "orders", ID: "o-2", Address: "10.1.0.2:8080", Zone: "z2"},
		sdk.WithState(catalogpb.InstanceState_STATE_STARTING))
	ctx := stepContext(t, stepWait)

	insts, err := cli.Discover(ctx, "orders")
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if got := instanceIDs(insts); got != "o-1,o-2" {
		t.Fatalf("Discover = %s, want o-1,o-2", got)
	}
	o1 := insts[0]
	if o1.GetLease() == 0 || o1.GetLease() != reg.Lease() || o1.GetState() != catalogpb.InstanceState_STATE_SERVING ||
		o1.GetHealth() != catalogpb.HealthStatus_PASSING || o1.GetWeight() != 3 || o1.GetAddress() != "10.1.0.1:8080" {
		t.Errorf("o-1 = %v, want SERVING, PASSING, weight 3 on lease %d", o1, reg.Lease())
	}

	filtered := []struct {
		name    string
		filters []sdk.Filter
		want    string
	}{
		{"healthy", []sdk.Filter{sdk.Healthy()}, "o-1"},
		{"tag", []sdk.Filter{sdk.HasTag("v2")}, "o-1"},
		{"missing tag", []sdk.Filter{sdk.HasTag("v3")}, ""},
		{"zone", []sdk.Filter{sdk.InZone("z2")}, "o-2"},
		{"meta", []sdk.Filter{sdk.WithMeta("env", "prod")}, "o-1"},
		{"state", []sdk.Filter{sdk.InState(catalogpb.InstanceState_STATE_STARTING)}, "o-2"},
		{"serializable", []sdk.Filter{sdk.Serializable()}, "o-1,o-2"},
	}
	for _, f := range filtered {
		insts, err := cli.Discover(ctx, "orders", f.filters...)
		if err != nil {
			t.Fatalf("Discover %s: %v", f.name, err)
		}
		// A serializable read may be answered by a member a moment behind.
		if got := instanceIDs(insts); got != f.want && f.name != "serializable" {
			t.Errorf("Discover %s = %q, want %q", f.name, got, f.want)
		}
	}

	if _, err := cli.Discover(ctx, "no-such-service"); !errors.Is(err, sdk.ErrServiceNotFound) {
		t.Errorf("Discover of an unknown service = %v, want ErrServiceNotFound", err)
	}
	if _, err := cli.Register(ctx, sdk.Instance{Service: "Bad_Name", ID: "x", Address: "h:1"}); !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Errorf("Register with a bad service name = %v, want ErrInvalidArgument", err)
	}
}

func testResolverFollowsChanges(t *testing.T, cli *sdk.Client) {
	ctx := stepContext(t, stepWait)
	// The service does not exist yet: the resolver starts empty.
	res, err := cli.NewResolver(ctx, "payments", sdk.Healthy())
	if err != nil {
		t.Fatalf("NewResolver: %v", err)
	}
	defer res.Close()
	if got := res.Instances(); len(got) != 0 {
		t.Fatalf("resolver of a new service holds %v", got)
	}
	waitInstances := func(what, want string) {
		t.Helper()
		framework.Eventually(t, stepWait, what, func(context.Context) error {
			if got := instanceIDs(res.Instances()); got != want {
				return fmt.Errorf("resolver holds %q, want %q (revision %d)", got, want, res.Revision())
			}
			return nil
		})
	}

	r1 := mustRegister(t, cli, sdk.Instance{Service: "payments", ID: "p-1", Address: "10.2.0.1:80"})
	r2 := mustRegister(t, cli, sdk.Instance{Service: "payments", ID: "p-2", Address: "10.2.0.2:80"})
	waitInstances("both instances seen", "p-1,p-2")
	select {
	case <-res.Updates():
	default:
		t.Errorf("no update notified after instances registered")
	}

	if err := r1.SetHealth(ctx, catalogpb.HealthStatus_CRITICAL, "disk full"); err != nil {
		t.Fatalf("SetHealth: %v", err)
	}
	waitInstances("a critical instance leaves Healthy()", "p-2")
	if rev := r1.Instance().GetModRevision(); res.Revision() < rev {
		t.Errorf("resolver revision %d is before the health change at %d", res.Revision(), rev)
	}
	if err := r1.SetHealth(ctx, catalogpb.HealthStatus_WARNING, "slow"); err != nil {
		t.Fatalf("SetHealth: %v", err)
	}
	waitInstances("a warning instance is healthy", "p-1,p-2")

	if err := r2.SetState(ctx, catalogpb.InstanceState_STATE_DRAINING); err != nil {
		t.Fatalf("SetState: %v", err)
	}
	waitInstances("a draining instance is not", "p-1")

	if err := r1.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitInstances("a closed registration is gone", "")

	// The health callback drives health on its own.
	var failing atomic.Bool
	check := func(context.Context) (catalogpb.HealthStatus, string) {
		if failing.Load() {
			return catalogpb.HealthStatus_CRITICAL, "failing"
		}
		return catalogpb.HealthStatus_PASSING, "ok"
	}
	mustRegister(t, cli, sdk.Instance{Service: "payments", ID: "p-3", Address: "10.2.0.3:80"},
		sdk.WithHealthCheckFunc(20*time.Millisecond, check))
	waitInstances("instance with a passing check", "p-3")
	failing.Store(true)
	waitInstances("its check fails", "")
	insts, err := cli.Discover(ctx, "payments", sdk.WithHealth(catalogpb.HealthStatus_CRITICAL))
	if err != nil || instanceIDs(insts) != "p-3" || insts[0].GetHealthOutput() != "failing" {
		t.Errorf("Discover critical = %v, %v; want p-3 with output \"failing\"", insts, err)
	}
}

func testReregisterAfterLeaseLoss(t *testing.T, c *framework.Cluster, cli *sdk.Client) {
	reg := mustRegister(t, cli, sdk.Instance{Service: "inventory", ID: "i-1", Address: "10.3.0.1:80"},
		// The keep-alive finds the lease gone at its next renewal, a third
		// of the TTL later: a short TTL keeps the test short.
		sdk.WithTTL(3*time.Second))
	lost := reg.Lease()
	ctx := stepContext(t, stepWait)

	// Another client revokes the lease, as an expiry after a partition would.
	other := c.Client(t, 1)
	if _, err := other.Revoke(ctx, lost); err != nil {
		t.Fatalf("Revoke %d: %v", lost, err)
	}
	select {
	case <-reg.Reregistered():
	case <-ctx.Done():
		t.Fatalf("not registered again; Err() = %v", reg.Err())
	}
	if reg.Lease() == lost || reg.Reregistrations() != 1 {
		t.Errorf("after re-registration Lease %d (lost %d), Reregistrations %d", reg.Lease(), lost, reg.Reregistrations())
	}
	got, err := cli.GetInstance(ctx, "inventory", "i-1")
	if err != nil {
		t.Fatalf("GetInstance after re-registration: %v", err)
	}
	if got.GetInstance().GetLease() != reg.Lease() {
		t.Errorf("stored instance on lease %d, want the new %d", got.GetInstance().GetLease(), reg.Lease())
	}
	ttl, err := cli.TimeToLive(ctx, reg.Lease(), true)
	if err != nil || ttl.GetTtlSeconds() <= 0 || len(ttl.GetItems()) != 1 || ttl.GetItems()[0].GetKey() != "inventory/i-1" {
		t.Errorf("new lease: %v, %v; want it alive holding inventory/i-1", ttl, err)
	}
}

func testCloseDrains(t *testing.T, cli *sdk.Client) {
	reg := mustRegister(t, cli, sdk.Instance{Service: "search", ID: "s-1", Address: "10.4.0.1:80"}, sdk.WithDrain(500*time.Millisecond))
	ctx := stepContext(t, stepWait)
	lease := reg.Lease()
	closed := make(chan error, 1)
	go func() { closed <- reg.Close(ctx) }()

	framework.Eventually(t, stepWait, "the instance drains before leaving", func(ctx context.Context) error {
		resp, err := cli.GetInstance(ctx, "search", "s-1")
		if err != nil {
			return err
		}
		if s := resp.GetInstance().GetState(); s != catalogpb.InstanceState_STATE_DRAINING {
			return fmt.Errorf("state %v", s)
		}
		return nil
	})
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := cli.GetInstance(ctx, "search", "s-1"); !errors.Is(err, sdk.ErrInstanceNotFound) {
		t.Errorf("GetInstance after Close = %v, want ErrInstanceNotFound", err)
	}
	ttl, err := cli.TimeToLive(ctx, lease, false)
	if !errors.Is(err, sdk.ErrLeaseNotFound) && (err != nil || ttl.GetTtlSeconds() != -1) {
		t.Errorf("lease %d after Close: %v, %v; want it revoked", lease, ttl, err)
	}
}

// startHealthBackend serves the gRPC health protocol on a local port, as a
// stand-in for an instance of a real service.
func startHealthBackend(t *testing.T) string {
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

// answeredBy makes n calls over conn and counts them per backend address.
func answeredBy(ctx context.Context, conn *grpc.ClientConn, n int) (map[string]int, error) {
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

func testGRPCBalancing(t *testing.T, cli *sdk.Client) {
	addrA, addrB := startHealthBackend(t), startHealthBackend(t)
	mustRegister(t, cli, sdk.Instance{Service: "echo", ID: "a", Address: addrA})
	regB := mustRegister(t, cli, sdk.Instance{Service: "echo", ID: "b", Address: addrB})
	// Not serving: never balanced to.
	mustRegister(t, cli, sdk.Instance{Service: "echo", ID: "c", Address: "127.0.0.1:1"}, sdk.WithState(catalogpb.InstanceState_STATE_STARTING))

	conn, err := grpc.NewClient("catalog:///echo",
		grpc.WithResolvers(cli.GRPCResolver()),
		// No service config: the resolver chooses round robin.
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	defer conn.Close()

	framework.Eventually(t, stepWait, "calls reach both instances", func(ctx context.Context) error {
		seen, err := answeredBy(ctx, conn, 20)
		if err != nil {
			return err
		}
		if seen[addrA] == 0 || seen[addrB] == 0 || len(seen) != 2 {
			return fmt.Errorf("answered by %v, want %s and %s", seen, addrA, addrB)
		}
		return nil
	})

	if err := regB.Close(stepContext(t, stepWait)); err != nil {
		t.Fatalf("Close b: %v", err)
	}
	framework.Eventually(t, stepWait, "calls follow the deregistration", func(ctx context.Context) error {
		seen, err := answeredBy(ctx, conn, 20)
		if err != nil {
			return err
		}
		if seen[addrA] != 20 {
			return fmt.Errorf("answered by %v, want only %s", seen, addrA)
		}
		return nil
	})

	// A filtered target: only instances with the tag.
	mustRegister(t, cli, sdk.Instance{Service: "echo", ID: "d", Address: addrB, Tags: []string{"canary"}})
	canary, err := grpc.NewClient("catalog:///echo?tag=canary",
		grpc.WithResolvers(cli.GRPCResolver()),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	defer canary.Close()
	seen, err := answeredBy(stepContext(t, stepWait), canary, 5)
	if err != nil || seen[addrB] != 5 {
		t.Errorf("canary calls answered by %v, %v; want all by %s", seen, err, addrB)
	}
}
