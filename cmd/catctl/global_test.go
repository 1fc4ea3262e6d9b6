package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/catalogd/catalogd/sdk"
)

func TestBadUsage(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown output", []string{"-o", "yaml", "kv", "get", "k"}, `--output must be table or json, got "yaml"`},
		{"endpoint without port", []string{"--endpoints", "localhost", "kv", "get", "k"}, `endpoint "localhost" must be host:port`},
		{"empty endpoints", []string{"--endpoints", " , ", "kv", "get", "k"}, "at least one endpoint"},
		{"zero dial timeout", []string{"--dial-timeout", "0s", "kv", "get", "k"}, "--dial-timeout must be > 0"},
		{"bad command timeout", []string{"--command-timeout", "soon", "kv", "get", "k"}, `invalid argument "soon"`},
		{"unknown flag", []string{"kv", "get", "k", "--bogus"}, "unknown flag: --bogus"},
		{"unknown command", []string{"nope"}, `unknown command "nope"`},
		{"missing argument", []string{"kv", "put", "k"}, "catctl kv put takes 2 arguments (KEY VALUE), got 1"},
		{"extra argument", []string{"cluster", "status", "x"}, "catctl cluster status takes no arguments"},
		{"bad consistency", []string{"kv", "get", "k", "--consistency", "x"}, `--consistency must be l (linearizable) or s (serializable), got "x"`},
		{"negative limit", []string{"kv", "get", "k", "--limit", "-1"}, "--limit must be >= 0"},
		{"bad token", []string{"kv", "get", "k", "--continue", "!!"}, "--continue must be the base64 token"},
		{"bad lease", []string{"kv", "put", "k", "v", "--lease", "abc"}, "--lease must be a lease ID"},
		{"zero clients", []string{"bench", "put", "--clients", "0"}, "--clients must be >= 1, got 0"},
		{"negative rate", []string{"bench", "get", "--rate", "-5"}, "--rate must be >= 0, got -5"},
		{"key size too small", []string{"bench", "put", "--total", "1000", "--key-size", "2"}, "--key-size 2 is too small: keys are zero-padded decimal numbers up to 999, which needs 3 digits"},
		{"bench get empty key", []string{"bench", "get", "--key", ""}, "--key must not be empty"},
	}
	// Nothing listens here: a usage error must be found before any request.
	env := map[string]string{endpointsEnv: deadEndpoint(t)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := catctl(t, env, tt.args...)
			if r.code != exitError {
				t.Errorf("exit code %d, want %d", r.code, exitError)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tt.wantErr)
			}
			if !strings.Contains(r.stderr, "--help' for usage") {
				t.Errorf("stderr = %q, want a pointer to --help", r.stderr)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{fmt.Errorf("get: %w", sdk.ErrUnavailable), exitUnavailable},
		{sdk.ErrNoLeader, exitUnavailable},
		{sdk.ErrStopped, exitUnavailable},
		{fmt.Errorf("put: %w", context.DeadlineExceeded), exitTimeout},
		{sdk.ErrTimeout, exitTimeout},
		{sdk.ErrKeyTooLarge, exitError},
		{context.Canceled, exitError},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.err), func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestHelpers(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain", "plain"}, {"with space", "with space"}, {"tab\there", `"tab\there"`},
		{"line\n", `"line\n"`}, {"\xff", `"\xff"`}, {"ünï", "ünï"},
	} {
		if got := printable([]byte(tt.in)); got != tt.want {
			t.Errorf("printable(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	for _, tt := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {999, "999 B"}, {1000, "1.0 kB"}, {25_300, "25.3 kB"}, {4_500_000, "4.5 MB"}, {3_000_000_000, "3.0 GB"}} {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	token := []byte{0xfb, 0xff, 0x00, 'k'}
	for _, s := range []string{encodeToken(token), b64(string(token))} {
		if got, err := decodeToken(s); err != nil || string(got) != string(token) {
			t.Errorf("decodeToken(%q) = %v, %v; want %v", s, got, err, token)
		}
	}
}
