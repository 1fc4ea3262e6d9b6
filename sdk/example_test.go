package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/catalogd/catalogd/sdk"
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
