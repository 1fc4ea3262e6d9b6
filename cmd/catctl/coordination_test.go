package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
)

func TestCoordinationBadUsage(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"lock without a name", []string{"lock"}, "catctl lock takes NAME, then optionally -- COMMAND ARGS..."},
		{"lock with a command but no --", []string{"lock", "x", "echo", "hi"},
			"catctl lock takes 1 argument (NAME), got 3; put the command to run after --: catctl lock x -- COMMAND ARGS..."},
		{"lock with two names before --", []string{"lock", "x", "y", "--", "true"}, "takes 1 argument (NAME) before --, got 2"},
		{"lock with nothing after --", []string{"lock", "x", "--"}, "no command after --"},
		{"lock with -- but no name", []string{"lock", "--", "true"}, "catctl lock takes NAME"},
		{"lock running a command that does not exist", []string{"lock", "x", "--", "no-such-command-xyz"},
			`cannot run "no-such-command-xyz": executable file not found`},
		{"lock with a TTL below a second", []string{"lock", "x", "--ttl", "500ms"}, "--ttl must be a whole number of seconds, at least 1s, got 500ms"},
		{"lock with a bad lease", []string{"lock", "x", "--lease", "abc"}, `--lease must be a positive lease ID in decimal or 0x-prefixed hex, got "abc"`},
		{"lock with a lease and a TTL", []string{"lock", "x", "--lease", "5", "--ttl", "5s"}, "give --ttl or --lease, not both"},
		{"lock ls with two prefixes", []string{"lock", "ls", "a", "b"}, "catctl lock ls takes at most 1 argument (PREFIX), got 2"},
		{"lock ls of an unknown kind", []string{"lock", "ls", "--kind", "spinlock"}, `--kind must be one of mutex, rwlock, semaphore, election, got "spinlock"`},
		{"lock ls with a bad consistency", []string{"lock", "ls", "--consistency", "x"}, "--consistency must be l (linearizable) or s (serializable)"},
		{"elect without a name", []string{"elect"}, "catctl elect takes 1 or 2 arguments (NAME [VALUE]), got 0"},
		{"elect with three arguments", []string{"elect", "a", "b", "c"}, "takes 1 or 2 arguments (NAME [VALUE]), got 3"},
		{"elect --listen with a value", []string{"elect", "a", "v", "--listen"}, "elect NAME --listen takes 1 argument (NAME), got 2"},
		{"elect --listen with a TTL", []string{"elect", "a", "--listen", "--ttl", "5s"}, "--listen does not campaign: it takes no --ttl or --lease"},
		{"sem acquire without --permits", []string{"sem", "acquire", "s"}, "--permits N is required"},
		{"sem acquire with no permits", []string{"sem", "acquire", "s", "--permits", "0"}, "--permits must be >= 1, got 0"},
		{"sem acquire taking more than there are", []string{"sem", "acquire", "s", "--permits", "2", "--take", "3"}, "--take must be 1..--permits (2), got 3"},
		{"sem acquire with a command but no --", []string{"sem", "acquire", "s", "--permits", "2", "make"}, "put the command to run after --"},
		{"sem with an unknown subcommand", []string{"sem", "grab", "s"}, `unknown command "grab" for "catctl sem" (commands: acquire)`},
		{"barrier enter without --count", []string{"barrier", "enter", "b"}, "--count N is required"},
		{"barrier enter with count 0", []string{"barrier", "enter", "b", "--count", "0"}, "--count must be >= 1, got 0"},
		{"barrier leave without a lease", []string{"barrier", "leave", "b"}, "--lease ID is required: the lease that entered the barrier"},
		{"barrier set with a bad lease", []string{"barrier", "set", "b", "--lease", "-1"}, `--lease must be a positive lease ID in decimal or 0x-prefixed hex, got "-1"`},
		{"barrier wait without a name", []string{"barrier", "wait"}, "catctl barrier wait takes 1 argument (NAME), got 0"},
		{"queue push without a payload", []string{"queue", "push", "q"}, "give the item: PAYLOAD, or --file PATH (- for stdin)"},
		{"queue push with a payload and a file", []string{"queue", "push", "q", "a", "--file", "f"}, "give PAYLOAD or --file, not both"},
		{"queue pop without --ack or --lease", []string{"queue", "pop", "q"}, "give --ack (remove the item once printed) or --lease ID"},
		{"queue pop with a bad lease", []string{"queue", "pop", "q", "--lease", "zz"}, `--lease must be a positive lease ID`},
		{"queue ack of a bad id", []string{"queue", "ack", "q", "abc", "--lease", "5"}, `ITEM_ID must be an item id (a positive number, as queue pop prints it), got "abc"`},
		{"queue ack without a lease", []string{"queue", "ack", "q", "5"}, "--lease ID is required: the lease the item was popped on"},
		{"queue ls --items without a name", []string{"queue", "ls", "--items"}, "--items lists the items of one queue: give its NAME"},
		{"queue ls with a name and a prefix", []string{"queue", "ls", "q", "--prefix", "p"}, "give NAME or --prefix, not both"},
		{"bench lock without clients", []string{"bench", "lock", "--clients", "0"}, "--clients must be >= 1, got 0"},
		{"bench lock without locks", []string{"bench", "lock", "--locks", "0"}, "--locks must be >= 1, got 0"},
		{"bench lock with a total and a duration", []string{"bench", "lock", "--total", "5", "--duration", "1s"}, "give --total or --duration, not both"},
		{"bench election-failover without runs", []string{"bench", "election-failover", "--runs", "0"}, "--runs must be >= 1, got 0"},
	}
	// Nothing listens here: a usage error must be found before any request.
	env := map[string]string{endpointsEnv: deadEndpoint(t)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := catctl(t, env, tt.args...)
			if r.code != exitError {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, exitError, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tt.wantErr)
			}
			if !strings.Contains(r.stderr, "--help' for usage") {
				t.Errorf("stderr = %q, want a pointer to --help", r.stderr)
			}
		})
	}
	t.Run("queue push of a missing file", func(t *testing.T) {
		r := catctl(t, env, "queue", "push", "q", "--file", "/no/such/file")
		if r.code != exitError || !strings.Contains(r.stderr, "read the payload: open /no/such/file: no such file or directory") {
			t.Errorf("catctl queue push --file /no/such/file: %+v, want exit code 1 saying the file does not exist", r)
		}
	})
}

// A lockedBuffer is a bytes.Buffer a child process writes while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitOutput waits until out contains want.
func waitOutput(t *testing.T, out *lockedBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q does not contain %q after 10s", out.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runHeld runs sh -c script under runHolding as if lock "job" were held with
// token 17 on lease 5, and returns its error, what it printed and how many
// times it released the hold. during runs once the script has printed
// "ready".
func runHeld(t *testing.T, script string, lost <-chan struct{}, during func()) (err error, stdout, stderr string, releases int) {
	t.Helper()
	var out, errOut lockedBuffer
	a := &app{stdout: &out, stderr: &errOut}
	h := holding{what: `lock "job"`, name: "job", token: 17, lease: 5, lost: lost}
	done := make(chan error, 1)
	go func() {
		done <- a.runHolding(h, "/bin/sh", []string{"sh", "-c", script}, func() error {
			releases++
			return nil
		})
	}()
	if during != nil {
		waitOutput(t, &out, "ready")
		during()
	}
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("runHolding of %q did not return; stdout %q, stderr %q", script, out.String(), errOut.String())
	}
	return err, out.String(), errOut.String(), releases
}

func TestRunHolding(t *testing.T) {
	t.Run("environment and exit status", func(t *testing.T) {
		err, out, _, releases := runHeld(t, `echo "$CATALOG_FENCE $CATALOG_LOCK $CATALOG_LEASE"; exit 3`, nil, nil)
		if out != "17 job 5\n" {
			t.Errorf("the command printed %q, want the token, the name and the lease from its environment", out)
		}
		if ce, ok := errors.AsType[commandExit](err); !ok || ce.code != 3 {
			t.Errorf("runHolding = %v, want the command's exit status 3", err)
		}
		if releases != 1 {
			t.Errorf("released %d times, want once, after the command", releases)
		}
	})
	t.Run("success", func(t *testing.T) {
		if err, _, _, releases := runHeld(t, "exit 0", nil, nil); err != nil || releases != 1 {
			t.Errorf("runHolding = %v with %d releases, want nil and 1", err, releases)
		}
	})
	t.Run("killed by a signal", func(t *testing.T) {
		err, _, _, releases := runHeld(t, "kill -KILL $$", nil, nil)
		if ce, ok := errors.AsType[commandExit](err); !ok || ce.code != 128+int(syscall.SIGKILL) {
			t.Errorf("runHolding = %v, want exit status 128+9", err)
		}
		if releases != 1 {
			t.Errorf("released %d times, want 1", releases)
		}
	})
	t.Run("SIGTERM is passed on", func(t *testing.T) {
		err, out, _, releases := runHeld(t, `trap 'echo terminated; exit 4' TERM; echo ready; while :; do sleep 0.05; done`, nil, func() {
			// runHolding catches SIGTERM while the command runs: the test
			// process lives on and the command gets it.
			if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		})
		if !strings.Contains(out, "terminated") {
			t.Errorf("the command printed %q: it did not get SIGTERM", out)
		}
		if ce, ok := errors.AsType[commandExit](err); !ok || ce.code != 4 {
			t.Errorf("runHolding = %v, want the command's exit status 4", err)
		}
		if releases != 1 {
			t.Errorf("released %d times, want once the command exited", releases)
		}
	})
	t.Run("lost hold", func(t *testing.T) {
		lost := make(chan struct{})
		err, out, stderr, releases := runHeld(t, `trap 'echo terminated; exit 6' TERM; echo ready; while :; do sleep 0.05; done`, lost,
			func() { close(lost) })
		if !strings.Contains(out, "terminated") {
			t.Errorf("the command printed %q: it did not get SIGTERM when the lock was lost", out)
		}
		want := `lost lock "job" (token 17) while sh ran: lease 5 expired or was revoked; sh was sent SIGTERM and exited with status 6`
		if err == nil || err.Error() != want {
			t.Errorf("runHolding = %v, want %q", err, want)
		}
		if !strings.Contains(stderr, `catctl: lost lock "job" (token 17): lease 5 expired or was revoked; sending SIGTERM to sh`) {
			t.Errorf("stderr %q does not say the lock was lost when it was", stderr)
		}
		if releases != 0 {
			t.Errorf("released a lost lock %d times", releases)
		}
	})
}

func TestHoldingMessages(t *testing.T) {
	for _, tt := range []struct {
		h    holding
		want string
	}{
		{holding{what: `lock "x"`, token: 3}, `lock "x" (token 3)`},
		{holding{what: `barrier "b"`}, `barrier "b"`},
	} {
		if got := tt.h.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.h, got, tt.want)
		}
	}
	owners := []*catalogpb.LockOwner{{Lease: 5, Permits: 2}, {Lease: 7, Permits: 1, Mode: catalogpb.LockMode_LOCK_MODE_SHARED}}
	for _, tt := range []struct {
		kind catalogpb.LockKind
		want string
	}{
		{catalogpb.LockKind_LOCK_KIND_MUTEX, "5,7"},
		{catalogpb.LockKind_LOCK_KIND_SEMAPHORE, "5(2),7(1)"},
		{catalogpb.LockKind_LOCK_KIND_RWLOCK, "5(exclusive),7(shared)"},
	} {
		if got := ownerList(tt.kind, owners); got != tt.want {
			t.Errorf("ownerList(%v) = %q, want %q", tt.kind, got, tt.want)
		}
	}
	if got := ownerList(catalogpb.LockKind_LOCK_KIND_MUTEX, nil) + " " + tokenList(nil); got != "- -" {
		t.Errorf("no owners print as %q, want \"- -\"", got)
	}
	if got := fmt.Sprint(plural(1, "lock"), " ", plural(10, "client")); got != "1 lock 10 clients" {
		t.Errorf("plural: %q", got)
	}
	if got := valueText(nil) + " " + valueText([]byte("a\tb")) + " " + valueText([]byte("v1")); got != `"" "a\tb" v1` {
		t.Errorf("valueText: %q", got)
	}
}
