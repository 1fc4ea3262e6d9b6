package main

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

func TestKVPutGetDel(t *testing.T) {
	srv := startFake(t, nil)
	ep := "--endpoints=" + srv.addr

	if r := catctl(t, nil, ep, "kv", "put", "app/a", "one"); r.code != 0 || r.stdout != "OK\n" {
		t.Fatalf("put: %+v, want OK and exit 0", r)
	}
	r := catctl(t, nil, ep, "kv", "put", "app/a", "two", "--prev-kv")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "OK\n") || !regexp.MustCompile(`app/a\s+one\s+1\s+1`).MatchString(r.stdout) {
		t.Fatalf("put --prev-kv: %+v, want OK then the previous key-value", r)
	}
	catctl(t, nil, ep, "kv", "put", "app/b", "three")
	catctl(t, nil, ep, "kv", "put", "other", "four")

	r = catctl(t, nil, ep, "kv", "get", "app/a")
	wantTable := "KEY    VALUE  MOD REVISION  VERSION\napp/a  two    2             2\n"
	if r.code != 0 || r.stdout != wantTable {
		t.Fatalf("get app/a: %+v\nwant stdout %q", r, wantTable)
	}

	r = catctl(t, nil, ep, "kv", "get", "app/", "--prefix", "--keys-only")
	if r.code != 0 || !strings.Contains(r.stdout, "app/a") || !strings.Contains(r.stdout, "app/b") ||
		strings.Contains(r.stdout, "other") || strings.Contains(r.stdout, "VALUE") || strings.Contains(r.stdout, "two") {
		t.Fatalf("get --prefix --keys-only: %+v, want app/a and app/b without values", r)
	}

	if r = catctl(t, nil, ep, "kv", "get", "app/", "--prefix", "--count-only"); r.code != 0 || r.stdout != "2\n" {
		t.Fatalf("get --count-only: %+v, want 2", r)
	}

	r = catctl(t, nil, ep, "-o", "json", "kv", "get", "app/a", "--consistency", "s")
	var got struct {
		Kvs   []struct{ Key, Value string }
		Count string
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
		t.Fatalf("get -o json: %+v, %v; want JSON", r, err)
	}
	if len(got.Kvs) != 1 || got.Kvs[0].Key != b64("app/a") || got.Kvs[0].Value != b64("two") || got.Count != "1" {
		t.Errorf("get -o json decoded to %+v, want app/a=two, count 1", got)
	}

	if r = catctl(t, nil, ep, "kv", "del", "app/", "--prefix"); r.code != 0 || r.stdout != "2\n" {
		t.Fatalf("del --prefix: %+v, want 2", r)
	}
	if keys := srv.keys(); len(keys) != 1 || keys[0] != "other" {
		t.Errorf("keys left after del --prefix: %v, want [other]", keys)
	}
	r = catctl(t, nil, ep, "kv", "del", "other", "--prev-kv")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "1\n") || !strings.Contains(r.stdout, "four") {
		t.Fatalf("del --prev-kv: %+v, want 1 and the deleted key-value", r)
	}
	if r = catctl(t, nil, ep, "kv", "get", "other"); r.code != 0 || r.stdout != "" {
		t.Fatalf("get of a deleted key: %+v, want no output and exit 0", r)
	}
	r = catctl(t, nil, ep, "-o", "json", "kv", "del", "nothing")
	var del struct{ Deleted string }
	if err := json.Unmarshal([]byte(r.stdout), &del); err != nil || r.code != 0 || del.Deleted != "0" {
		t.Fatalf("del -o json: %+v (%v), want deleted 0", r, err)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestKVGetPages(t *testing.T) {
	srv := startFake(t, nil)
	ep := "--endpoints=" + srv.addr
	for _, k := range []string{"p/1", "p/2", "p/3"} {
		if r := catctl(t, nil, ep, "kv", "put", k, "v"+k); r.code != 0 {
			t.Fatalf("put %s: %+v", k, r)
		}
	}
	r := catctl(t, nil, ep, "kv", "get", "p/", "--prefix", "--limit", "2")
	m := regexp.MustCompile(`\(2 of 3 keys shown; next page: --continue (\S+)\)`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || !strings.Contains(r.stdout, "p/2") || strings.Contains(r.stdout, "p/3") {
		t.Fatalf("first page: %+v, want p/1, p/2 and a continue token", r)
	}
	r = catctl(t, nil, ep, "kv", "get", "p/", "--prefix", "--limit", "2", "--continue", m[1])
	if r.code != 0 || !strings.Contains(r.stdout, "p/3") || strings.Contains(r.stdout, "p/2") || strings.Contains(r.stdout, "next page") {
		t.Fatalf("second page: %+v, want only p/3 and no further token", r)
	}

	// The token printed in JSON output (standard base64) is accepted too.
	r = catctl(t, nil, ep, "-o", "json", "kv", "get", "p/", "--prefix", "--limit", "1")
	var page struct {
		More      bool
		NextToken string
	}
	if err := json.Unmarshal([]byte(r.stdout), &page); err != nil || !page.More {
		t.Fatalf("json page: %+v (%v), want more with a token", r, err)
	}
	r = catctl(t, nil, ep, "kv", "get", "p/", "--prefix", "--limit", "1", "--continue", page.NextToken)
	if r.code != 0 || !strings.Contains(r.stdout, "p/2") {
		t.Fatalf("page from a JSON token: %+v, want p/2", r)
	}
}

func TestKVServerErrors(t *testing.T) {
	srv := startFake(t, nil)
	ep := "--endpoints=" + srv.addr
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"key too large", []string{ep, "kv", "put", strings.Repeat("k", 100), "v"}, exitError,
			`put "` + strings.Repeat("k", 64) + `"... (100 bytes): key must be 1..64 bytes, got 100`},
		{"lease not found", []string{ep, "kv", "put", "k", "v", "--lease", "0x10"}, exitError, "lease 16 not found"},
		{"empty key", []string{ep, "kv", "get", ""}, exitError, "key must not be empty"},
		{"bad continue token", []string{ep, "kv", "get", "k", "--continue", "eno"}, exitError, "continue token matches no key"},
		{"unreachable", []string{"--endpoints=" + deadEndpoint(t), "--command-timeout=2s", "kv", "get", "k"}, exitUnavailable, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := catctl(t, nil, tt.args...)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantErr) {
				t.Fatalf("catctl %v: %+v, want exit %d and stderr containing %q", tt.args, r, tt.wantCode, tt.wantErr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing on failure", r.stdout)
			}
		})
	}
}

func TestEndpointsFromEnvironment(t *testing.T) {
	fromEnv, fromFlag := startFake(t, nil), startFake(t, nil)
	env := map[string]string{endpointsEnv: fromEnv.addr}

	if r := catctl(t, env, "kv", "put", "k", "v"); r.code != 0 {
		t.Fatalf("put with %s set: %+v", endpointsEnv, r)
	}
	if r := catctl(t, env, "--endpoints", fromFlag.addr, "kv", "put", "f", "v"); r.code != 0 {
		t.Fatalf("put with --endpoints: %+v", r)
	}
	if got := fromEnv.keys(); len(got) != 1 || got[0] != "k" {
		t.Errorf("server named by %s holds %v, want [k]", endpointsEnv, got)
	}
	if got := fromFlag.keys(); len(got) != 1 || got[0] != "f" {
		t.Errorf("server named by --endpoints holds %v, want [f]: the flag overrides the environment", got)
	}
	r := catctl(t, nil, "kv", "get", "--help")
	if !strings.Contains(r.stdout, `(default "127.0.0.1:7400")`) {
		t.Errorf("help without %s does not show the default endpoint:\n%s", endpointsEnv, r.stdout)
	}
}
