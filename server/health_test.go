package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/registry"
)

// checkTestUnit is a check millisecond in these tests: the 1s minimum
// interval becomes 20ms.
const checkTestUnit = 20 * time.Microsecond

func TestRendezvousOwner(t *testing.T) {
	if got := rendezvousOwner("svc/a", nil); got != 0 {
		t.Fatalf("owner among no members = %x, want 0", got)
	}
	three := []uint64{0x1111, 0x2222, 0x3333}
	counts := map[uint64]int{}
	owners := map[string]uint64{}
	for i := range 3000 {
		key := fmt.Sprintf("svc-%d/inst-%d", i%7, i)
		o := rendezvousOwner(key, three)
		counts[o]++
		owners[key] = o
		if again := rendezvousOwner(key, []uint64{0x3333, 0x1111, 0x2222}); again != o {
			t.Fatalf("owner of %s depends on member order: %x then %x", key, o, again)
		}
	}
	for _, id := range three {
		// An even share is 1000; hashing gives a few percent either way.
		if counts[id] < 850 || counts[id] > 1150 {
			t.Errorf("member %x owns %d of 3000 keys, want about 1000 (%v)", id, counts[id], counts)
		}
	}
	// Without 0x2222, only its keys move.
	two := []uint64{0x1111, 0x3333}
	moved := 0
	for key, o := range owners {
		n := rendezvousOwner(key, two)
		if o != 0x2222 && n != o {
			t.Fatalf("%s moved from %x to %x although %x stayed", key, o, n, o)
		}
		if o == 0x2222 {
			moved++
		}
	}
	if moved != counts[0x2222] {
		t.Fatalf("moved %d keys, want the %d of the member that left", moved, counts[0x2222])
	}
}

func TestBoundOutput(t *testing.T) {
	long := strings.Repeat("é", registry.MaxHealthOutputLen) // 2 bytes each
	got := boundOutput(long)
	if len(got) > registry.MaxHealthOutputLen || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Fatalf("bounded output is %d bytes, valid %v, ends %q; want at most %d valid bytes ending in ...",
			len(got), utf8.ValidString(got), got[len(got)-5:], registry.MaxHealthOutputLen)
	}
	if got := boundOutput("ok \xff\xfe"); got != "ok \uFFFD" {
		t.Fatalf("boundOutput of invalid UTF-8 = %q, want the bad bytes replaced", got)
	}
}

// newProbeChecker returns a checker that is not attached to a running
// server, for the probe functions.
func newProbeChecker(t *testing.T) *healthChecker {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name = "prober"
	return newHealthChecker(&Server{cfg: cfg, lg: slog.New(slog.DiscardHandler)})
}

func TestProbeHTTP(t *testing.T) {
	var agent atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		agent.Store(r.Header.Get("User-Agent"))
		fmt.Fprint(w, "all good")
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database unreachable", http.StatusInternalServerError)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://other.example:1/ok", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(strings.Repeat("x\xff", 1<<20)))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	dead := freePorts(t, 1)[0]

	tests := []struct {
		name     string
		url      string
		wantOK   bool
		wantText string
	}{
		{"2xx passes", srv.URL + "/ok", true, "200 OK: all good"},
		{"5xx fails with the body", srv.URL + "/fail", false, "500 Internal Server Error: database unreachable"},
		{"same-host redirect followed", srv.URL + "/moved", true, "200 OK"},
		{"other-host redirect refused", srv.URL + "/elsewhere", false, "302 Found (redirect to http://other.example:1/ok not followed"},
		{"redirect loop stops", srv.URL + "/loop", false, "stopped after 5 redirects"},
		{"huge body bounded", srv.URL + "/huge", false, "503 Service Unavailable: x\uFFFDx"},
		{"timeout", srv.URL + "/slow", false, "timed out"},
		{"refused", "http://" + dead + "/", false, "connection refused"},
	}
	c := newProbeChecker(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			ok, out := c.probe(ctx, &catalogpb.HealthCheck{Http: tt.url})
			if ok != tt.wantOK || !strings.Contains(out, tt.wantText) || !strings.HasPrefix(out, "HTTP GET "+tt.url+": ") {
				t.Fatalf("probe = %v %q, want %v and text with %q", ok, out, tt.wantOK, tt.wantText)
			}
			if len(out) > probeBodySnippet+200 || !utf8.ValidString(out) {
				t.Fatalf("output is %d bytes (valid UTF-8: %v), want a short valid line", len(out), utf8.ValidString(out))
			}
		})
	}
	if ua, _ := agent.Load().(string); !strings.Contains(ua, "catalogd-health-check/") || !strings.Contains(ua, "member prober") {
		t.Errorf("User-Agent %q, want catalogd-health-check with the member name", ua)
	}
}

func TestProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	c := newProbeChecker(t)
	ok, out := c.probe(t.Context(), &catalogpb.HealthCheck{Tcp: ln.Addr().String()})
	if !ok || out != "TCP connect "+ln.Addr().String()+": success" {
		t.Fatalf("probe of a listener = %v %q, want a success", ok, out)
	}
	dead := freePorts(t, 1)[0]
	ok, out = c.probe(t.Context(), &catalogpb.HealthCheck{Tcp: dead})
	if ok || !strings.Contains(out, "TCP connect "+dead+": ") || !strings.Contains(out, "refused") {
		t.Fatalf("probe of a closed port = %v %q, want a refusal", ok, out)
	}
}

// startGRPCHealth serves the gRPC health protocol; the returned server sets
// the statuses.
func startGRPCHealth(t *testing.T) (*grpchealth.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := grpchealth.NewServer()
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return hs, ln.Addr().String()
}

func TestProbeGRPC(t *testing.T) {
	hs, addr := startGRPCHealth(t)
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("payments", healthpb.HealthCheckResponse_NOT_SERVING)
	dead := freePorts(t, 1)[0]
	tests := []struct {
		name, addr, service string
		wantOK              bool
		wantText            string
	}{
		{"whole server", addr, "", true, "gRPC health " + addr + ": SERVING"},
		{"serving service", addr, "orders", true, `gRPC health ` + addr + ` service "orders": SERVING`},
		{"not serving", addr, "payments", false, `service "payments": NOT_SERVING`},
		{"unknown service", addr, "nope", false, `service "nope": NotFound: unknown service`},
		{"nobody listening", dead, "", false, "gRPC health " + dead + ": Unavailable"},
	}
	c := newProbeChecker(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			ok, out := c.probe(ctx, &catalogpb.HealthCheck{Grpc: tt.addr, GrpcService: tt.service})
			if ok != tt.wantOK || !strings.Contains(out, tt.wantText) {
				t.Fatalf("probe = %v %q, want %v and text with %q", ok, out, tt.wantOK, tt.wantText)
			}
		})
	}
}

// scriptedHTTP is an instance's health endpoint: it answers the queued
// status codes one per probe, then its default; it counts what it answered.
type scriptedHTTP struct {
	mu       sync.Mutex
	script   []int
	fallback int
	served   map[int]int
	byMember map[string]map[string]int // path → member name → probes
}

func newScriptedHTTP(t *testing.T) (*scriptedHTTP, string) {
	t.Helper()
	h := &scriptedHTTP{fallback: http.StatusOK, served: map[int]int{}, byMember: map[string]map[string]int{}}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv.URL
}

func (h *scriptedHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	code := h.fallback
	if len(h.script) > 0 {
		code, h.script = h.script[0], h.script[1:]
	}
	h.served[code]++
	ua := r.Header.Get("User-Agent")
	member := ua[strings.LastIndex(ua, " ")+1:]
	member = strings.TrimSuffix(member, ")")
	if h.byMember[r.URL.Path] == nil {
		h.byMember[r.URL.Path] = map[string]int{}
	}
	h.byMember[r.URL.Path][member]++
	h.mu.Unlock()
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d", code)
}

// set queues script and then answers fallback.
func (h *scriptedHTTP) set(fallback int, script ...int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fallback, h.script = fallback, script
}

func (h *scriptedHTTP) count(code int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.served[code]
}

func (h *scriptedHTTP) scriptLeft() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.script)
}

func (h *scriptedHTTP) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.served {
		n += c
	}
	return n
}

// probers returns, per path, who probed it since the last reset, and resets.
func (h *scriptedHTTP) probers() map[string]map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.byMember
	h.byMember = map[string]map[string]int{}
	return out
}

func fastChecks(servers map[string]*Server, unit time.Duration) {
	for _, s := range servers {
		s.checks.checkUnit.Store(int64(unit))
	}
}

func registerChecked(t *testing.T, rc catalogpb.RegistryClient, service, id string, check *catalogpb.HealthCheck) *catalogpb.Instance {
	t.Helper()
	resp, err := rc.Register(t.Context(), &catalogpb.RegisterRequest{Instance: &catalogpb.Instance{
		Service: service, Id: id, Address: "127.0.0.1:1", Check: check,
	}})
	if err != nil {
		t.Fatalf("register %s/%s: %v", service, id, err)
	}
	return resp.Instance
}

func instanceHealth(t *testing.T, rc catalogpb.RegistryClient, service, id string) *catalogpb.Instance {
	t.Helper()
	resp, err := rc.GetInstance(t.Context(), &catalogpb.GetInstanceRequest{Service: service, Id: id})
	if err != nil {
		t.Fatalf("get %s/%s: %v", service, id, err)
	}
	return resp.Instance
}

func waitHealth(t *testing.T, rc catalogpb.RegistryClient, service, id string, want catalogpb.HealthStatus) *catalogpb.Instance {
	t.Helper()
	var inst *catalogpb.Instance
	waitFor(t, 10*time.Second, fmt.Sprintf("%s/%s %s", service, id, want), func() error {
		inst = instanceHealth(t, rc, service, id)
		if inst.Health != want {
			return fmt.Errorf("health %s (%q)", inst.Health, inst.HealthOutput)
		}
		return nil
	})
	return inst
}

// instanceEvents returns the events of one instance in the server's history.
func instanceEvents(t *testing.T, s *Server, key string) []*catalogpb.Event {
	t.Helper()
	var out []*catalogpb.Event
	err := s.sm.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(eventsBucket).ForEach(func(_, v []byte) error {
			var b catalogpb.EventBatch
			if err := proto.Unmarshal(v, &b); err != nil {
				return err
			}
			for _, ev := range b.Events {
				if ev.Kind == registry.InstanceKind && string(ev.Kv.GetKey()) == key {
					out = append(out, ev)
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	return out
}

// healthChanges describes the health transitions among evs.
func healthChanges(evs []*catalogpb.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == catalogpb.Event_PUT && ev.PrevInstance != nil && ev.PrevInstance.Health != ev.Instance.Health {
			out = append(out, ev.PrevInstance.Health.String()+"→"+ev.Instance.Health.String())
		}
	}
	return out
}

func TestHealthCheckFlapDamping(t *testing.T) {
	c := newTestCluster(t, 1)
	fastChecks(c.servers, checkTestUnit)
	s := c.leader()
	rc := registryClient(t, s.ClientAddr())
	h, url := newScriptedHTTP(t)

	registerChecked(t, rc, "web", "w1", &catalogpb.HealthCheck{
		Http: url + "/health", IntervalMs: 1000, FailuresBeforeCritical: 3, SuccessesBeforePassing: 2,
	})
	inst := waitHealth(t, rc, "web", "w1", catalogpb.HealthStatus_PASSING)
	if inst.HealthOutput != "HTTP GET "+url+"/health: 200 OK: status 200" || inst.HealthChangedUnixNano == 0 {
		t.Errorf("passing instance has output %q changed at %d, want the probe's line and a time", inst.HealthOutput, inst.HealthChangedUnixNano)
	}

	waitProbes := func(what string, n int) {
		t.Helper()
		target := h.total() + n
		waitFor(t, 10*time.Second, what, func() error {
			if got := h.total(); got < target {
				return fmt.Errorf("%d probes, want %d", got, target)
			}
			return nil
		})
	}

	// Two failures, fewer than three: no transition.
	h.set(http.StatusOK, http.StatusInternalServerError, http.StatusInternalServerError)
	waitFor(t, 10*time.Second, "the two failures served", func() error {
		if n := h.scriptLeft(); n > 0 {
			return fmt.Errorf("%d left", n)
		}
		return nil
	})
	waitProbes("probes after the failures", 5)
	if got := instanceHealth(t, rc, "web", "w1").Health; got != catalogpb.HealthStatus_PASSING {
		t.Fatalf("health after 2 failures in a row = %s, want PASSING (3 needed)", got)
	}

	// Failures from now on: critical once three in a row were seen.
	failuresBefore := h.count(http.StatusInternalServerError)
	h.set(http.StatusInternalServerError)
	inst = waitHealth(t, rc, "web", "w1", catalogpb.HealthStatus_CRITICAL)
	if n := h.count(http.StatusInternalServerError) - failuresBefore; n < 3 {
		t.Errorf("critical after %d failures, want at least 3", n)
	}
	if !strings.Contains(inst.HealthOutput, "500 Internal Server Error") {
		t.Errorf("critical instance's output %q, want the failing probe's", inst.HealthOutput)
	}

	// One success, fewer than two: still critical.
	h.set(http.StatusInternalServerError, http.StatusOK)
	waitProbes("probes after the single success", 5)
	if got := instanceHealth(t, rc, "web", "w1").Health; got != catalogpb.HealthStatus_CRITICAL {
		t.Fatalf("health after 1 success = %s, want CRITICAL (2 needed)", got)
	}
	h.set(http.StatusOK)
	waitHealth(t, rc, "web", "w1", catalogpb.HealthStatus_PASSING)
	waitProbes("more passing probes", 5)

	// Only the transitions were written, however many probes ran.
	evs := instanceEvents(t, s, "web/w1")
	changes := healthChanges(evs)
	if got, want := strings.Join(changes, " "), "CRITICAL→PASSING PASSING→CRITICAL CRITICAL→PASSING"; got != want {
		t.Errorf("health transitions %s, want %s", got, want)
	}
	if len(evs) != 1+len(changes) {
		t.Errorf("%d events for the instance, want the registration and %d transitions", len(evs), len(changes))
	}
	probes, proposals := s.checks.probes.Load(), s.checks.proposals.Load()
	if proposals != 3 || probes < 20 {
		t.Errorf("%d probes and %d proposals, want at least 20 probes and 3 proposals", probes, proposals)
	}

	// Deregistered: the probes stop.
	if _, err := rc.Deregister(t.Context(), &catalogpb.DeregisterRequest{Service: "web", Id: "w1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the checker to drop w1", func() error {
		n := h.total()
		time.Sleep(200 * time.Millisecond) // ten intervals
		if got := h.total(); got != n {
			return fmt.Errorf("still probed: %d probes became %d", n, got)
		}
		return nil
	})
}

func TestHealthCheckTCPAndGRPC(t *testing.T) {
	c := newTestCluster(t, 1)
	fastChecks(c.servers, checkTestUnit)
	rc := registryClient(t, c.leader().ClientAddr())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	registerChecked(t, rc, "db", "d1", &catalogpb.HealthCheck{Tcp: ln.Addr().String(), IntervalMs: 1000, FailuresBeforeCritical: 2, SuccessesBeforePassing: 1})
	hs, addr := startGRPCHealth(t)
	hs.SetServingStatus("queue", healthpb.HealthCheckResponse_SERVING)
	registerChecked(t, rc, "mq", "q1", &catalogpb.HealthCheck{Grpc: addr, GrpcService: "queue", IntervalMs: 1000, FailuresBeforeCritical: 2, SuccessesBeforePassing: 1})

	waitHealth(t, rc, "db", "d1", catalogpb.HealthStatus_PASSING)
	waitHealth(t, rc, "mq", "q1", catalogpb.HealthStatus_PASSING)

	ln.Close()
	inst := waitHealth(t, rc, "db", "d1", catalogpb.HealthStatus_CRITICAL)
	if !strings.Contains(inst.HealthOutput, "TCP connect "+ln.Addr().String()) {
		t.Errorf("tcp output %q, want the failed connect", inst.HealthOutput)
	}
	hs.SetServingStatus("queue", healthpb.HealthCheckResponse_NOT_SERVING)
	inst = waitHealth(t, rc, "mq", "q1", catalogpb.HealthStatus_CRITICAL)
	if !strings.Contains(inst.HealthOutput, "NOT_SERVING") {
		t.Errorf("grpc output %q, want NOT_SERVING", inst.HealthOutput)
	}

	// A changed check starts over with the new target.
	hs2, addr2 := startGRPCHealth(t)
	hs2.SetServingStatus("queue", healthpb.HealthCheckResponse_SERVING)
	registerChecked(t, rc, "mq", "q1", &catalogpb.HealthCheck{Grpc: addr2, GrpcService: "queue", IntervalMs: 1000, FailuresBeforeCritical: 2, SuccessesBeforePassing: 1})
	inst = waitHealth(t, rc, "mq", "q1", catalogpb.HealthStatus_PASSING)
	if !strings.Contains(inst.HealthOutput, addr2) {
		t.Errorf("output %q, want the new target %s", inst.HealthOutput, addr2)
	}
}

func TestHealthChecksResumeAfterRestart(t *testing.T) {
	c := newTestCluster(t, 1)
	fastChecks(c.servers, checkTestUnit)
	rc := registryClient(t, c.leader().ClientAddr())
	h, url := newScriptedHTTP(t)
	registerChecked(t, rc, "web", "w1", &catalogpb.HealthCheck{Http: url + "/", IntervalMs: 1000, FailuresBeforeCritical: 1, SuccessesBeforePassing: 1})
	waitHealth(t, rc, "web", "w1", catalogpb.HealthStatus_PASSING)

	c.stop("m1")
	s := c.start("m1")
	s.checks.checkUnit.Store(int64(checkTestUnit))
	c.leader()
	rc = registryClient(t, s.ClientAddr())
	h.set(http.StatusServiceUnavailable)
	waitHealth(t, rc, "web", "w1", catalogpb.HealthStatus_CRITICAL)
}

func TestHealthChecksDisabled(t *testing.T) {
	cfg := testConfig(t, "m1", freePorts(t, 3))
	cfg.DisableHealthChecks = true
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Stop(context.Background()) })
	s.checks.checkUnit.Store(int64(checkTestUnit))
	waitFor(t, 10*time.Second, "a leader", func() error {
		if s.Leader() == 0 {
			return fmt.Errorf("none")
		}
		return nil
	})
	rc := registryClient(t, s.ClientAddr())
	h, url := newScriptedHTTP(t)
	registerChecked(t, rc, "web", "w1", &catalogpb.HealthCheck{Http: url + "/", IntervalMs: 1000})
	time.Sleep(300 * time.Millisecond) // fifteen intervals
	if n := h.total(); n != 0 || s.checks.probes.Load() != 0 {
		t.Fatalf("%d probes with health checks disabled, want none", n)
	}
	if got := instanceHealth(t, rc, "web", "w1").Health; got != catalogpb.HealthStatus_CRITICAL {
		t.Fatalf("health %s, want CRITICAL (unchecked since registration)", got)
	}
}

func TestHealthChecksSharedAmongServers(t *testing.T) {
	c := newTestCluster(t, 3)
	// Slower than the other tests: 30 instances probed every 100ms, with a
	// 500ms timeout, keep three servers and a race detector comfortable.
	fastChecks(c.servers, 100*time.Microsecond)
	rc := registryClient(t, c.leader().ClientAddr())
	h, url := newScriptedHTTP(t)
	const n = 30
	for i := range n {
		registerChecked(t, rc, "web", fmt.Sprintf("w%d", i), &catalogpb.HealthCheck{
			Http: fmt.Sprintf("%s/w%d", url, i), IntervalMs: 1000, FailuresBeforeCritical: 2, SuccessesBeforePassing: 1,
		})
	}

	// shared waits until every instance is probed by the member rendezvous
	// hashing over the running servers names, and by no other.
	shared := func(what string) map[string]int {
		t.Helper()
		var ids []uint64
		names := map[uint64]string{}
		for name, s := range c.servers {
			ids = append(ids, s.ID())
			names[s.ID()] = name
		}
		var perMember map[string]int
		waitFor(t, 15*time.Second, what, func() error {
			h.probers()
			time.Sleep(500 * time.Millisecond) // five intervals
			probed := h.probers()
			perMember = map[string]int{}
			for i := range n {
				path := fmt.Sprintf("/w%d", i)
				want := names[rendezvousOwner("web"+path, ids)]
				by := probed[path]
				if len(by) != 1 || by[want] == 0 {
					return fmt.Errorf("%s probed by %v, want only %s", path, by, want)
				}
				perMember[want]++
			}
			return nil
		})
		return perMember
	}
	perMember := shared("instances shared among 3 servers")
	if len(perMember) != 3 {
		t.Errorf("instances per member %v, want a share for each of the 3", perMember)
	}

	victim := c.follower()
	name := victim.cfg.Name
	c.stop(name)
	perMember = shared("the stopped server's instances taken over")
	if len(perMember) != 2 || perMember[name] != 0 {
		t.Errorf("instances per member %v, want them all on the 2 running servers", perMember)
	}
	resp, err := registryClient(t, c.leader().ClientAddr()).GetService(t.Context(), &catalogpb.GetServiceRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range resp.Instances {
		if inst.Health != catalogpb.HealthStatus_PASSING {
			t.Errorf("%s is %s (%q), want PASSING", inst.Id, inst.Health, inst.HealthOutput)
		}
	}
}
