package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// metricValue returns the value of the unlabelled gauge or counter name.
func metricValue(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	families, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name || len(f.GetMetric()) != 1 {
			continue
		}
		m := f.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("metric %s is not exported", name)
	return 0
}

func TestLeaseAndWatchMetrics(t *testing.T) {
	cfg := singleNodeConfig(t, "solo", t.TempDir())
	s := startSingleNode(t, cfg)
	conn := dialServer(t, s)
	lc := catalogpb.NewLeaseClient(conn)
	id := grant(t, lc, 60)
	grant(t, lc, 1)
	if got := metricValue(t, s, "catalogd_lease_count"); got != 2 {
		t.Errorf("catalogd_lease_count = %v after two grants, want 2", got)
	}
	ka, err := lc.KeepAlive(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := ka.Send(&catalogpb.LeaseKeepAliveRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := ka.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if got := metricValue(t, s, "catalogd_lease_renewals_total"); got != 3 {
		t.Errorf("catalogd_lease_renewals_total = %v after three keep-alives, want 3", got)
	}
	waitFor(t, 10*time.Second, "the 1 s lease expired", func() error {
		if got := metricValue(t, s, "catalogd_lease_expired_revokes_total"); got != 1 {
			return fmt.Errorf("catalogd_lease_expired_revokes_total = %v", got)
		}
		return nil
	})
	if got := metricValue(t, s, "catalogd_lease_count"); got != 1 {
		t.Errorf("catalogd_lease_count = %v after the expiry, want 1", got)
	}

	w, err := catalogpb.NewWatchClient(conn).Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send(&catalogpb.WatchRequest{Request: &catalogpb.WatchRequest_CreateRequest{CreateRequest: &catalogpb.WatchCreateRequest{
		Filter: catalogpb.WatchCreateRequest_KV, Key: []byte("a/"), Prefix: true,
	}}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := w.Recv(); err != nil || !resp.Created || resp.Canceled {
		t.Fatalf("create watch: %v %v", resp, err)
	}
	waitFor(t, 5*time.Second, "the watch counted", func() error {
		if got := metricValue(t, s, "catalogd_watch_synced_watchers"); got != 1 {
			return fmt.Errorf("catalogd_watch_synced_watchers = %v", got)
		}
		return nil
	})
	for _, name := range []string{"catalogd_watch_slow_cancels_total", "catalogd_health_probes_total", "catalogd_health_transitions_proposed_total"} {
		if got := metricValue(t, s, name); got != 0 {
			t.Errorf("%s = %v, want 0", name, got)
		}
	}
}
