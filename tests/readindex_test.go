package tests

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/catalogd/catalogd/tests/framework"
)

// readIndexRounds reads how many ReadIndex rounds member i has run, from its
// read-index latency histogram's sample count in /metrics.
func readIndexRounds(t *testing.T, c *framework.Cluster, i int) int {
	t.Helper()
	return int(metricValue(t, c, i, "catalogd_server_read_index_duration_seconds_count"))
}

// metricValue reads the value of an unlabelled metric from member i's /metrics.
func metricValue(t *testing.T, c *framework.Cluster, i int, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + c.HTTPAddr(i) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", name, v, err)
			}
			return n
		}
	}
	t.Fatalf("member %d's /metrics has no %s", i, name)
	return 0
}

// TestConcurrentReadsShareReadIndexRounds: linearizable reads that arrive
// together are served by shared ReadIndex rounds, not one round each, and
// every one of them still sees a write acknowledged before it started.
func TestConcurrentReadsShareReadIndexRounds(t *testing.T) {
	c := framework.NewCluster(t, 3)
	ctx := stepContext(t, 60*time.Second)
	leader := c.WaitLeader(ctx)
	follower := c.Others(leader)[0]
	writer := c.Client(t, leader)
	reader := c.Client(t, follower)
	rev := mustPut(t, ctx, writer, "shared", "v1")

	const readers, readsEach = 50, 20
	before := readIndexRounds(t, c, follower)
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range readsEach {
				resp, err := reader.Get(ctx, "shared")
				if err != nil {
					errs <- err
					return
				}
				if len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision < rev {
					errs <- fmt.Errorf("linearizable read saw %v, want the write at revision %d", resp.Kvs, rev)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rounds := readIndexRounds(t, c, follower) - before
	if rounds <= 0 {
		t.Fatalf("%d linearizable reads ran %d ReadIndex rounds: the reads were not linearized", readers*readsEach, rounds)
	}
	if rounds >= readers*readsEach {
		t.Fatalf("%d concurrent linearizable reads ran %d ReadIndex rounds: rounds are not shared", readers*readsEach, rounds)
	}
	t.Logf("%d reads, %d ReadIndex rounds", readers*readsEach, rounds)
}
