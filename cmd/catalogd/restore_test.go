package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// memberAddrs are the addresses of one test member.
type memberAddrs struct{ client, peer, http string }

func newMemberAddrs(t *testing.T) memberAddrs {
	t.Helper()
	return memberAddrs{client: freeAddr(t), peer: freeAddr(t), http: freeAddr(t)}
}

func (m memberAddrs) args(name, dataDir string) []string {
	return []string{"--name", name, "--data-dir", dataDir, "--client-addr", m.client, "--peer-addr", m.peer,
		"--http-addr", m.http, "--log-level", "warn", "--tick-interval", "20ms"}
}

func dialClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// saveSnapshot writes a snapshot file from the Snapshot RPC at conn.
func saveSnapshot(t *testing.T, conn *grpc.ClientConn, path string) {
	t.Helper()
	stream, err := catalogpb.NewClusterClient(conn).Snapshot(t.Context(), &catalogpb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var db, sum []byte
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		db = append(db, m.Blob...)
		sum = append(sum, m.Sha256...)
	}
	if want := sha256.Sum256(db); !bytes.Equal(sum, want[:]) {
		t.Fatalf("snapshot checksum %x, want %x", sum, want)
	}
	if err := os.WriteFile(path, append(db, sum...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// restore runs `catalogd restore` in-process and returns its exit code and stderr.
func restore(args ...string) (int, string) {
	var stderr bytes.Buffer
	code := run(append([]string{"restore"}, args...), &stderr)
	return code, stderr.String()
}

func TestRestoreSubcommand(t *testing.T) {
	old := newMemberAddrs(t)
	stop := startNode(t, old.args("old", filepath.Join(t.TempDir(), "old")), old.http)
	kv := catalogpb.NewKVClient(dialClient(t, old.client))
	for i := range 10 {
		if _, err := kv.Put(t.Context(), &catalogpb.PutRequest{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	snapshot := filepath.Join(t.TempDir(), "backup.db")
	saveSnapshot(t, dialClient(t, old.client), snapshot)
	if code := stop(); code != 0 {
		t.Fatalf("old member exit code %d", code)
	}

	restored := newMemberAddrs(t)
	dataDir := filepath.Join(t.TempDir(), "restored")
	code, out := restore("--snapshot", snapshot, "--data-dir", dataDir, "--name", "r1", "--peer-addr", restored.peer)
	if code != 0 {
		t.Fatalf("restore: exit %d: %s", code, out)
	}
	for _, want := range []string{
		"Restored " + snapshot + " into " + dataDir + ": revision 10, 10 keys, ",
		"catalogd --name r1 --data-dir " + dataDir + " --peer-addr " + restored.peer + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("restore output does not say %q:\n%s", want, out)
		}
	}

	startNode(t, restored.args("r1", dataDir), restored.http)
	kv = catalogpb.NewKVClient(dialClient(t, restored.client))
	got, err := kv.Get(t.Context(), &catalogpb.GetRequest{Key: []byte("k"), Prefix: true, CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.Count != 10 {
		t.Errorf("restored member has %d keys, want 10", got.Count)
	}
	put, err := kv.Put(t.Context(), &catalogpb.PutRequest{Key: []byte("new"), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	if put.Header.Revision != 11 {
		t.Errorf("first write after the restore has revision %d, want 11", put.Header.Revision)
	}

	t.Run("refusals", func(t *testing.T) {
		raw, err := os.ReadFile(snapshot)
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)/2] ^= 1
		corrupted := filepath.Join(t.TempDir(), "corrupted.db")
		if err := os.WriteFile(corrupted, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			args []string
			want string
		}{
			{"no snapshot", []string{"--data-dir", t.TempDir()}, "--snapshot FILE is required"},
			{"corrupted", []string{"--snapshot", corrupted, "--data-dir", filepath.Join(t.TempDir(), "d")}, "is truncated or corrupted"},
			{"data dir in use", []string{"--snapshot", snapshot, "--data-dir", dataDir, "--name", "r1"}, "is not empty"},
			{"member not in the cluster", []string{"--snapshot", snapshot, "--data-dir", filepath.Join(t.TempDir(), "d"),
				"--name", "r2", "--initial-cluster", "r1=127.0.0.1:7501"}, "does not name this server"},
			{"stray argument", []string{"--snapshot", snapshot, "now"}, `unexpected argument "now"`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, out := restore(tt.args...)
				if code != 1 || !strings.HasPrefix(out, "catalogd restore: ") || strings.Count(out, "\n") != 1 || !strings.Contains(out, tt.want) {
					t.Errorf("restore %v: exit %d, output %q; want exit 1 and one line saying %q", tt.args, code, out, tt.want)
				}
			})
		}
	})
}
