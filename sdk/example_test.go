package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/catalogd/catalogd/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func Example() {
	c, err := sdk.New(sdk.Config{
		Endpoints:   []string{"10.0.0.1:7400", "10.0.0.2:7400", "10.0.0.3:7400"},
		DialTimeout: 2 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if _, err := c.Put(ctx, "config/app/replicas", "3"); errors.Is(err, sdk.ErrTimeout) {
		log.Printf("the put may or may not have applied: %v", err)
	}
	resp, err := c.Get(ctx, "config/app/", sdk.WithPrefix(), sdk.WithLimit(100))
	if err != nil {
		log.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		fmt.Printf("%s=%s\n", kv.Key, kv.Value)
	}
}

func ExampleClient_NewTxn() {
	c, err := sdk.New(sdk.Config{Endpoints: []string{"127.0.0.1:7400"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Create the key only if it does not exist yet; otherwise read it.
	resp, err := c.NewTxn(context.Background()).
		If(sdk.Compare(sdk.Version("leader"), "=", 0)).
		Then(sdk.OpPut("leader", "n1")).
		Else(sdk.OpGet("leader")).
		Commit()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created:", resp.Succeeded)
}

func ExampleClient_Register() {
	c, err := sdk.New(sdk.Config{Endpoints: []string{"127.0.0.1:7400"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// The instance lives by a 10s lease that the Registration keeps alive,
	// and registers again on a new lease if that one is lost.
	reg, err := c.Register(ctx, sdk.Instance{
		Service: "orders",
		ID:      "orders-1",
		Address: "10.0.0.7:8080",
		Tags:    []string{"v2"},
		Zone:    "eu-west-1a",
	}, sdk.WithTTL(10*time.Second), sdk.WithDrain(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("registered on lease", reg.Lease())

	// ... serve ...

	// Set DRAINING, wait 5s for clients to move away, then deregister.
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer closeCancel()
	if err := reg.Close(closeCtx); err != nil {
		log.Printf("deregister: %v", err)
	}
}

func ExampleClient_NewResolver() {
	c, err := sdk.New(sdk.Config{Endpoints: []string{"127.0.0.1:7400"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// One listing, then a watch keeps the cache current.
	res, err := c.NewResolver(ctx, "orders", sdk.Healthy(), sdk.InZone("eu-west-1a"))
	if err != nil {
		log.Fatal(err)
	}
	defer res.Close()
	for _, inst := range res.Instances() { // from memory, no network call
		fmt.Println(inst.GetId(), inst.GetAddress())
	}
	// Updates signals each change until Close: read the cache again then.
	go func() {
		for range res.Updates() {
			log.Printf("revision %d: %d healthy instances", res.Revision(), len(res.Instances()))
		}
	}()
}

func ExampleClient_GRPCResolver() {
	c, err := sdk.New(sdk.Config{Endpoints: []string{"127.0.0.1:7400"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Calls go round robin over the healthy, serving instances of orders
	// that carry the tag v2, and follow them as they come and go.
	conn, err := grpc.NewClient("catalog:///orders?tag=v2",
		grpc.WithResolvers(c.GRPCResolver()),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetStatus())
}

func ExampleClient_Watch() {
	c, err := sdk.New(sdk.Config{Endpoints: []string{"127.0.0.1:7400"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Replay every change of config/app/ from revision 1, then follow new
	// ones. A broken stream is resumed where it stopped, on any server.
	for resp := range c.Watch(ctx, sdk.WatchPrefix("config/app/"), sdk.WithStartRevision(1)) {
		if errors.Is(resp.Err, sdk.ErrCompacted) {
			// The history is gone: read the keys again and watch from the
			// read's revision + 1.
			log.Printf("compacted; oldest revision held is %d", resp.CompactRevision+1)
			return
		}
		if resp.Err != nil {
			log.Fatal(resp.Err)
		}
		for _, ev := range resp.Events {
			fmt.Println(ev.GetKv().GetModRevision(), ev.GetType(), string(ev.GetKv().GetKey()))
		}
	}
}

func ExampleClient_KeepAlive() {
	c, err := sdk.New(sdk.Config{Endpoints: []string{"127.0.0.1:7400"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	lease, err := c.Grant(ctx, 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	// The key is deleted when the lease expires: once this process stops
	// renewing it, 10s at most.
	if _, err := c.Put(ctx, "locks/report-job", "worker-3", sdk.WithLease(lease.GetId())); err != nil {
		log.Fatal(err)
	}
	ka, err := c.KeepAlive(ctx, lease.GetId())
	if err != nil {
		log.Fatal(err)
	}
	defer ka.Stop()
	<-ka.Done()
	if errors.Is(ka.Err(), sdk.ErrLeaseNotFound) {
		log.Printf("lease %d lost (expired or revoked): the key is gone", lease.GetId())
	}
}
