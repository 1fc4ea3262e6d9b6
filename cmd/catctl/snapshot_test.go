package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
)

// fakeChunkSize is the fake's Snapshot chunk, small so that tests see several.
const fakeChunkSize = 4096

// database returns a catalogd-shaped database of the fake's keys: a "meta"
// bucket with the revision and a "kv" bucket.
func (f *fakeServer) database() ([]byte, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, err := os.MkdirTemp("", "catctl-fake-db")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	db, err := bbolt.Open(filepath.Join(dir, "db"), 0o600, nil)
	if err != nil {
		return nil, 0, err
	}
	defer db.Close()
	var out bytes.Buffer
	err = db.Update(func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucket(snapshotMetaBucket)
		if err != nil {
			return err
		}
		rev := make([]byte, 8)
		binary.BigEndian.PutUint64(rev, uint64(f.revision))
		if err := meta.Put(snapshotRevisionKey, rev); err != nil {
			return err
		}
		kv, err := tx.CreateBucket(snapshotKVBucket)
		if err != nil {
			return err
		}
		for k, v := range f.kvs {
			if err := kv.Put([]byte(k), v.Value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	err = db.View(func(tx *bbolt.Tx) error { _, err := tx.WriteTo(&out); return err })
	return out.Bytes(), f.revision, err
}

func (f *fakeServer) Snapshot(_ *catalogpb.SnapshotRequest, stream grpc.ServerStreamingServer[catalogpb.SnapshotResponse]) error {
	msgs, err := f.snapshotMessages()
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeServer) snapshotMessages() ([]*catalogpb.SnapshotResponse, error) {
	db, rev, err := f.database()
	if err != nil {
		return nil, err
	}
	var msgs []*catalogpb.SnapshotResponse
	for off := 0; off < len(db); off += fakeChunkSize {
		msgs = append(msgs, &catalogpb.SnapshotResponse{Blob: db[off:min(off+fakeChunkSize, len(db))]})
	}
	msgs[0].Header, msgs[0].TotalSize = f.header(), int64(len(db))
	msgs[0].Header.Revision = rev
	sum := sha256.Sum256(db)
	msgs[len(msgs)-1].Sha256 = sum[:]
	return msgs, nil
}

// A corruptingFake streams the fake's database with one byte changed.
type corruptingFake struct{ *fakeServer }

func (f corruptingFake) Snapshot(_ *catalogpb.SnapshotRequest, stream grpc.ServerStreamingServer[catalogpb.SnapshotResponse]) error {
	msgs, err := f.snapshotMessages()
	if err != nil {
		return err
	}
	blob := append([]byte(nil), msgs[1].Blob...)
	blob[100] ^= 0xff
	msgs[1].Blob = blob
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

// startCorruptingFake serves a fake whose snapshots arrive corrupted.
func startCorruptingFake(t *testing.T) *fakeServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: lis.Addr().String(), kvs: map[string]*catalogpb.KeyValue{}}
	srv := grpc.NewServer()
	catalogpb.RegisterKVServer(srv, f)
	catalogpb.RegisterClusterServer(srv, corruptingFake{f})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

// fill writes n keys through catctl.
func fill(t *testing.T, f *fakeServer, n int) {
	t.Helper()
	for i := range n {
		key := "key/" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + hex.EncodeToString([]byte{byte(i)})
		if r := catctl(t, nil, "--endpoints", f.addr, "kv", "put", key, strings.Repeat("v", 200)); r.code != exitOK {
			t.Fatalf("kv put: %+v", r)
		}
	}
}

func TestSnapshotSaveAndStatus(t *testing.T) {
	f := startFake(t, memberStatus("n1", 0xa1))
	fill(t, f, 60)
	file := filepath.Join(t.TempDir(), "backup.db")

	r := catctl(t, nil, "--endpoints", f.addr, "snapshot", "save", file)
	if r.code != exitOK {
		t.Fatalf("snapshot save: %+v", r)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	db, _, err := f.database()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(db)
	if !bytes.Equal(raw, append(db, sum[:]...)) {
		t.Fatalf("saved %d bytes, want the %d-byte database and its sha256", len(raw), len(db))
	}
	if _, err := os.Stat(file + ".part"); !os.IsNotExist(err) {
		t.Errorf("%s.part left behind (stat: %v)", file, err)
	}
	want := regexp.MustCompile(`^Snapshot saved to ` + regexp.QuoteMeta(file) + ` from ` + regexp.QuoteMeta(f.addr) +
		`: \d+\.\d kB, revision 60, sha256 ` + hex.EncodeToString(sum[:]) + `, in \d+\.\d s \(\d+\.\d MB/s\)\n$`)
	if !want.MatchString(r.stdout) {
		t.Errorf("stdout %q does not match %s", r.stdout, want)
	}
	// The progress bar ends on the complete transfer.
	if !regexp.MustCompile(`\r\d+\.\d kB / \d+\.\d kB  100%  \d+\.\d MB/s\s*\n$`).MatchString(r.stderr) {
		t.Errorf("stderr %q does not end with a complete progress bar", r.stderr)
	}

	r = catctl(t, nil, "snapshot", "status", file)
	if r.code != exitOK {
		t.Fatalf("snapshot status: %+v", r)
	}
	if !regexp.MustCompile(`SHA256\s+REVISION\s+KEYS\s+SIZE\n` + hex.EncodeToString(sum[:]) + `\s+60\s+60\s+\d+\.\d kB\n`).MatchString(r.stdout) {
		t.Errorf("snapshot status output:\n%s", r.stdout)
	}

	r = catctl(t, nil, "-o", "json", "snapshot", "status", file)
	var st snapshotStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != exitOK {
		t.Fatalf("snapshot status -o json: %+v (%v)", r, err)
	}
	if st != (snapshotStatus{SHA256: hex.EncodeToString(sum[:]), Revision: 60, Keys: 60, Size: int64(len(db))}) {
		t.Errorf("status %+v", st)
	}

	r = catctl(t, nil, "--endpoints", f.addr, "-o", "json", "snapshot", "save", file)
	var saved struct {
		File, Endpoint, SHA256 string
		Revision, Size         int64
	}
	if err := json.Unmarshal([]byte(r.stdout), &saved); err != nil || r.code != exitOK {
		t.Fatalf("snapshot save -o json: %+v (%v)", r, err)
	}
	if saved.File != file || saved.Endpoint != f.addr || saved.Revision != 60 || saved.Size != int64(len(db)) || saved.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("save -o json: %+v", saved)
	}
}

func TestSnapshotStatusRefusesDamagedFiles(t *testing.T) {
	f := startFake(t, memberStatus("n1", 0xa1))
	fill(t, f, 5)
	good := filepath.Join(t.TempDir(), "good.db")
	if r := catctl(t, nil, "--endpoints", f.addr, "snapshot", "save", good); r.code != exitOK {
		t.Fatalf("snapshot save: %+v", r)
	}
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	withSum := func(b []byte) []byte {
		sum := sha256.Sum256(b)
		return append(append([]byte(nil), b...), sum[:]...)
	}
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)/3] ^= 1
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"flipped byte", flipped, "is truncated or corrupted: the sha256 of its first"},
		{"truncated", raw[:len(raw)-4096], "is truncated or corrupted"},
		{"too short", raw[:31], "is too short (31 bytes) to be a snapshot file"},
		{"not a database", withSum(bytes.Repeat([]byte("nope"), 2000)), "does not hold a catalogd database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snap.db")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			r := catctl(t, nil, "snapshot", "status", path)
			if r.code != exitError || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("snapshot status: exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, exitError, tt.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		r := catctl(t, nil, "snapshot", "status", filepath.Join(t.TempDir(), "none.db"))
		if r.code != exitError || !strings.Contains(r.stderr, "no such file") {
			t.Errorf("snapshot status of a missing file: %+v", r)
		}
	})
}

func TestSnapshotSaveFailures(t *testing.T) {
	t.Run("corrupted in transfer", func(t *testing.T) {
		f := startCorruptingFake(t)
		fill(t, f, 40)
		file := filepath.Join(t.TempDir(), "backup.db")
		r := catctl(t, nil, "--endpoints", f.addr, "snapshot", "save", file)
		if r.code != exitError || !strings.Contains(r.stderr, "snapshot corrupted in transfer") {
			t.Errorf("snapshot save of a corrupted stream: %+v", r)
		}
		for _, p := range []string{file, file + ".part"} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("%s exists after a failed save (stat: %v)", p, err)
			}
		}
	})
	t.Run("no server", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "backup.db")
		r := catctl(t, nil, "--endpoints", deadEndpoint(t), "--command-timeout", "1s", "snapshot", "save", file)
		if r.code != exitUnavailable {
			t.Errorf("snapshot save without a server: exit %d, want %d; stderr %q", r.code, exitUnavailable, r.stderr)
		}
		if _, err := os.Stat(file + ".part"); !os.IsNotExist(err) {
			t.Errorf("%s.part exists after a failed save (stat: %v)", file, err)
		}
	})
	t.Run("unwritable directory", func(t *testing.T) {
		f := startFake(t, memberStatus("n1", 0xa1))
		r := catctl(t, nil, "--endpoints", f.addr, "snapshot", "save", filepath.Join(t.TempDir(), "no", "such", "dir", "b.db"))
		if r.code != exitError || !strings.Contains(r.stderr, "no such file or directory") {
			t.Errorf("snapshot save into a missing directory: %+v", r)
		}
	})
}
