package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// catalogdBin is the binary built once for the process tests.
var catalogdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "catalogd-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	catalogdBin = filepath.Join(dir, "catalogd")
	if out, err := exec.Command("go", "build", "-o", catalogdBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build catalogd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// nodeArgs returns flags for a single-node server on free ports.
func nodeArgs(t *testing.T, dataDir string) (args []string, httpAddr string) {
	t.Helper()
	httpAddr = freeAddr(t)
	return []string{"--data-dir", dataDir, "--client-addr", freeAddr(t), "--peer-addr", freeAddr(t),
		"--http-addr", httpAddr, "--log-level", "warn"}, httpAddr
}

// runToExit runs catalogd and returns its exit code and stderr; it fails the
// test if catalogd is still running after a few seconds.
func runToExit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, catalogdBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("catalogd %v did not exit: %s", args, stderr.String())
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stderr.String()
}

func waitReady(t *testing.T, httpAddr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("catalogd on %s did not become ready", httpAddr)
}

// startNode starts catalogd and returns a function that sends SIGTERM and
// returns the exit code.
func startNode(t *testing.T, args []string, httpAddr string) func() int {
	t.Helper()
	cmd := exec.Command(catalogdBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	waitReady(t, httpAddr)
	return func() int {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				t.Logf("stderr: %s", stderr.String())
				return exit.ExitCode()
			}
			return 0
		case <-time.After(10 * time.Second):
			t.Fatalf("catalogd did not stop on SIGTERM; stderr: %s", stderr.String())
			return -1
		}
	}
}

func TestSIGTERMStopsCleanly(t *testing.T) {
	args, httpAddr := nodeArgs(t, t.TempDir())
	stop := startNode(t, args, httpAddr)
	if code := stop(); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
}

func TestDataDirOfAnotherCluster(t *testing.T) {
	dir := t.TempDir()
	args, httpAddr := nodeArgs(t, dir)
	stop := startNode(t, append(args, "--name", "a"), httpAddr)
	if code := stop(); code != 0 {
		t.Fatalf("first run exit code = %d", code)
	}
	// Same data dir, another member name: another member of another cluster.
	args, _ = nodeArgs(t, dir)
	code, stderr := runToExit(t, append(args, "--name", "b")...)
	if code != 1 {
		t.Fatalf("exit code = %d, want 1; stderr: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"data dir belongs to another cluster", "--data-dir"} {
		if !strings.Contains(last, want) {
			t.Errorf("error line %q does not mention %q", last, want)
		}
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	args, _ := nodeArgs(t, t.TempDir())
	code, stderr := runToExit(t, append(args, "--client-addr", ln.Addr().String())...)
	if code != 1 {
		t.Fatalf("exit code = %d, want 1", code)
	}
	if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
		t.Errorf("want a one-line error, got %d lines: %s", n+1, stderr)
	}
	for _, want := range []string{"--client-addr", ln.Addr().String(), "address already in use"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("error %q does not mention %q", stderr, want)
		}
	}
}

func TestBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"malformed initial cluster", []string{"--name", "n1", "--initial-cluster", "n1=127.0.0.1:7401,n2"}, "must be name=host:port"},
		{"address without port", []string{"--name", "n1", "--initial-cluster", "n1=127.0.0.1"}, "is not host:port"},
		{"duplicate member name", []string{"--name", "n1", "--initial-cluster", "n1=127.0.0.1:1,n1=127.0.0.1:2"}, "names \"n1\" twice"},
		{"this member missing", []string{"--name", "n9", "--initial-cluster", "n1=127.0.0.1:7401"}, "does not name this server"},
		{"bad client address", []string{"--client-addr", "localhost"}, "--client-addr"},
		{"stray argument", []string{"serve"}, "unexpected argument"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
		{"negative proposal hold", []string{"--proposal-hold", "-1ms"}, "--proposal-hold must be between 0 (off) and 100ms, got -1ms"},
		{"proposal hold too long", []string{"--proposal-hold", "1s"}, "--proposal-hold must be between 0 (off) and 100ms, got 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(append([]string{"--data-dir", t.TempDir()}, tt.args...), &stderr)
			if code != 1 {
				t.Fatalf("exit code = %d, want 1", code)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.want)
			}
		})
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "catalogd.yaml")
	if err := os.WriteFile(file, []byte("name: n7\ndc: west\nsnapshot-count: 42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parseFlags([]string{"--config", file, "--dc", "east"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "n7" || cfg.SnapshotCount != 42 {
		t.Errorf("file values not applied: name %q snapshot-count %d", cfg.Name, cfg.SnapshotCount)
	}
	if cfg.DC != "east" {
		t.Errorf("command line should win over the file: dc = %q", cfg.DC)
	}
	if err := os.WriteFile(file, []byte("nmae: n7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := parseFlags([]string{"--config", file}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), `unknown setting "nmae"`) {
		t.Errorf("misspelt setting: err = %v", err)
	}
}
