package sdk_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/catalogd/catalogd/sdk"
)

// A job runs under a mutex, and its result is written only while the
// mutex's token still holds: a holder paused past its lease cannot
// overwrite the work of the next one.
func ExampleMutex() {
	c, err := sdk.New(sdk.Config{Endpoints: []string{"10.0.0.1:7400", "10.0.0.2:7400", "10.0.0.3:7400"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	s, err := sdk.NewSession(ctx, c, sdk.WithSessionTTL(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	m := sdk.NewMutex(s, "jobs/nightly")
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	defer m.Unlock(ctx)

	resp, err := c.NewTxn(ctx).
		If(sdk.Compare(sdk.Fence(m.Name(), m.Token()), "=", true)).
		Then(sdk.OpPut("jobs/nightly/result", "done")).
		Commit()
	if err != nil {
		log.Fatal(err)
	}
	if !resp.Succeeded {
		log.Print("the lock moved on before the result was written; it was not")
	}
}

// A service instance runs its singleton work only while it leads, and
// steps down when its lease is lost.
func ExampleElection() {
	c, err := sdk.New(sdk.Config{Endpoints: []string{"10.0.0.1:7400"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	s, err := sdk.NewSession(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	e := sdk.NewElection(s, "scheduler")
	if err := e.Campaign(ctx, []byte("10.1.0.7:9000")); err != nil {
		log.Fatal(err)
	}
	fmt.Println("leading with token", e.Token())
	select {
	case <-e.Done():
		fmt.Println("lease lost: no longer leading")
	case <-time.After(time.Hour):
		_ = e.Resign(ctx)
	}
}

// A worker takes jobs one by one and acknowledges each once done; a job
// whose worker dies before its Ack is handed to another worker.
func ExampleQueue() {
	c, err := sdk.New(sdk.Config{Endpoints: []string{"10.0.0.1:7400"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	s, err := sdk.NewSession(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	q := sdk.NewQueue(s, "thumbnails")
	for {
		item, err := q.Dequeue(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("job %d (delivery %d): %s\n", item.Id, item.Deliveries, item.Payload)
		if err := q.Ack(ctx, item.Id); err != nil {
			log.Fatal(err)
		}
	}
}
