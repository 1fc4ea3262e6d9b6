package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// writeSnapshotFile writes sm's database as a snapshot file to path.
func writeSnapshotFile(t *testing.T, sm *stateMachine, path string) {
	t.Helper()
	db := dbBytes(t, sm)
	sum := sha256.Sum256(db)
	if err := os.WriteFile(path, append(db, sum[:]...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// snapshotOf returns the path of a snapshot file of a state machine that
// applied n puts.
func snapshotOf(t *testing.T, n int) string {
	t.Helper()
	sm, _ := newTestStateMachine(t, 1000)
	applyPuts(t, sm, "k", 1, n, n, []byte("v"))
	path := filepath.Join(t.TempDir(), "snap.db")
	writeSnapshotFile(t, sm, path)
	return path
}

func restoreConfig(snapshot, dataDir string) RestoreConfig {
	return RestoreConfig{
		SnapshotPath:   snapshot,
		DataDir:        dataDir,
		Name:           "r1",
		InitialCluster: "r1=127.0.0.1:7501,r2=127.0.0.1:7511,r3=127.0.0.1:7521",
	}
}

func TestRestoreRoundTrip(t *testing.T) {
	src := startSingleNode(t, singleNodeConfig(t, "old", filepath.Join(t.TempDir(), "old")))
	conn := dialServer(t, src)
	kv := catalogpb.NewKVClient(conn)
	for i := range 20 {
		if _, err := kv.Put(t.Context(), &catalogpb.PutRequest{Key: fmt.Appendf(nil, "k%02d", i), Value: fmt.Appendf(nil, "v%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Delete(t.Context(), &catalogpb.DeleteRequest{Key: []byte("k00")}); err != nil {
		t.Fatal(err)
	}
	snapshot := filepath.Join(t.TempDir(), "backup.db")
	rev := saveSnapshot(t, conn, snapshot)
	if rev != 21 {
		t.Fatalf("snapshot revision %d, want 21", rev)
	}

	cfg := singleNodeConfig(t, "restored", filepath.Join(t.TempDir(), "restored"))
	rcfg := RestoreConfig{SnapshotPath: snapshot, DataDir: cfg.DataDir, Name: cfg.Name, PeerAddr: cfg.PeerAddr}
	if err := Restore(rcfg); err != nil {
		t.Fatal(err)
	}
	if err := checkRestored(cfg); err != nil {
		t.Fatalf("checkRestored with the flags of the restore: %v", err)
	}
	var marker restoreMarker
	raw, err := os.ReadFile(filepath.Join(cfg.DataDir, "member", "restored.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &marker); err != nil {
		t.Fatal(err)
	}
	if marker.Name != "restored" || marker.InitialCluster != "restored="+cfg.PeerAddr || marker.Revision != 21 || len(marker.SHA256) != 64 {
		t.Errorf("restore marker %+v", marker)
	}

	s := startSingleNode(t, cfg)
	kv = catalogpb.NewKVClient(dialServer(t, s))
	got, err := kv.Get(t.Context(), &catalogpb.GetRequest{Key: []byte("k"), Prefix: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 19 || string(got.Kvs[0].Key) != "k01" || string(got.Kvs[18].Value) != "v19" {
		t.Fatalf("restored keys: %v, want k01..k19", got.Kvs)
	}
	put, err := kv.Put(t.Context(), &catalogpb.PutRequest{Key: []byte("after"), Value: []byte("restore")})
	if err != nil {
		t.Fatal(err)
	}
	if put.Header.Revision != 22 {
		t.Errorf("first put after the restore has revision %d, want 22 (the history continues)", put.Header.Revision)
	}
	members, err := s.sm.members()
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || members[0].ID != s.ID() || members[0].Name != "restored" {
		t.Errorf("members after the restore: %+v, want only the new member %x", members, s.ID())
	}
	h, err := s.sm.hashState()
	if err != nil {
		t.Fatal(err)
	}
	if h.EventsProblem != "" || h.EventsFirst != 1 || h.EventsLast != 22 {
		t.Errorf("events after the restore: %d..%d, problem %q", h.EventsFirst, h.EventsLast, h.EventsProblem)
	}
}

func TestRestoreResetsMembership(t *testing.T) {
	snapshot := snapshotOf(t, 3)
	// Give the snapshot a membership of the old cluster.
	damaged := filepath.Join(t.TempDir(), "with-members.db")
	sm, _ := newTestStateMachine(t, 1000)
	applyPuts(t, sm, "k", 1, 3, 3, []byte("v"))
	err := sm.db.Update(func(tx *bbolt.Tx) error {
		if err := putJSON(tx.Bucket(membersBucket), idKey(42), member{ID: 42, Name: "gone", PeerAddr: "10.0.0.1:7401"}); err != nil {
			return err
		}
		putUint(tx.Bucket(removedBucket), idKey(43), 7)
		return tx.Bucket(metaBucket).Put(keyConfState, []byte{1, 2, 3})
	})
	if err != nil {
		t.Fatal(err)
	}
	writeSnapshotFile(t, sm, damaged)
	for _, path := range []string{snapshot, damaged} {
		dir := filepath.Join(t.TempDir(), "data")
		if err := Restore(restoreConfig(path, dir)); err != nil {
			t.Fatal(err)
		}
		db, err := bbolt.Open(filepath.Join(dir, "member", "state", "db"), 0o600, &bbolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		err = db.View(func(tx *bbolt.Tx) error {
			meta := tx.Bucket(metaBucket)
			if getUint(meta, keyAppliedIndex) != 0 || meta.Get(keyConfState) != nil || getUint(meta, keyRevision) != 3 {
				return fmt.Errorf("meta: applied %d, conf state %x, revision %d; want 0, none, 3",
					getUint(meta, keyAppliedIndex), meta.Get(keyConfState), getUint(meta, keyRevision))
			}
			for _, b := range [][]byte{membersBucket, removedBucket} {
				if k, _ := tx.Bucket(b).Cursor().First(); k != nil {
					return fmt.Errorf("bucket %s still holds %x", b, k)
				}
			}
			if n := tx.Bucket(eventsBucket).Stats().KeyN; n != 3 {
				return fmt.Errorf("events bucket holds %d batches, want 3", n)
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Errorf("restored %s: %v", filepath.Base(path), err)
		}
	}
}

func TestRestoreRefuses(t *testing.T) {
	good := snapshotOf(t, 5)
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(t *testing.T, data []byte) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "snap.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	withSum := func(data []byte) []byte {
		sum := sha256.Sum256(data)
		return append(append([]byte(nil), data...), sum[:]...)
	}
	// A valid bbolt database that is not catalogd's.
	foreign := func(t *testing.T) []byte {
		t.Helper()
		db, err := bbolt.Open(filepath.Join(t.TempDir(), "foreign.db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucket([]byte("other"))
			if err != nil {
				return err
			}
			return b.Put([]byte("a"), []byte("b"))
		})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := db.View(func(tx *bbolt.Tx) error { _, err := tx.WriteTo(&out); return err }); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}

	tests := []struct {
		name     string
		snapshot func(t *testing.T) string
		cfg      func(cfg *RestoreConfig)
		want     string
	}{
		{"flipped byte", func(t *testing.T) string {
			data := append([]byte(nil), raw...)
			data[len(data)/2] ^= 0x40
			return write(t, data)
		}, nil, "is truncated or corrupted: the sha256 of its first"},
		{"truncated", func(t *testing.T) string {
			return write(t, raw[:len(raw)-1000])
		}, nil, "is truncated or corrupted"},
		{"too short", func(t *testing.T) string {
			return write(t, raw[:20])
		}, nil, "is too short (20 bytes)"},
		{"not a database", func(t *testing.T) string {
			return write(t, withSum([]byte(strings.Repeat("not bbolt ", 1000))))
		}, nil, "does not hold a catalogd database"},
		{"not catalogd's database", func(t *testing.T) string {
			return write(t, withSum(foreign(t)))
		}, nil, `it has no "meta" bucket`},
		{"missing file", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "nothing.db")
		}, nil, "--snapshot"},
		{"no snapshot named", func(*testing.T) string { return "" }, nil, "--snapshot must name a snapshot file"},
		{"initial cluster without this member", func(*testing.T) string { return good }, func(cfg *RestoreConfig) {
			cfg.Name = "r9"
		}, `does not name this server (--name "r9")`},
		{"malformed initial cluster", func(*testing.T) string { return good }, func(cfg *RestoreConfig) {
			cfg.InitialCluster = "r1"
		}, "must be name=host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "data")
			cfg := restoreConfig(tt.snapshot(t), dir)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			err := Restore(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Restore: %v, want an error saying %q", err, tt.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("refused restore left %s behind (stat: %v)", dir, err)
			}
		})
	}

	t.Run("data dir not empty", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := Restore(restoreConfig(good, dir))
		if err == nil || !strings.Contains(err.Error(), "is not empty (it holds keep)") {
			t.Fatalf("Restore into a non-empty dir: %v", err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("refused restore changed the data dir: %v", entries)
		}
	})

	t.Run("empty data dir is kept on failure", func(t *testing.T) {
		dir := t.TempDir()
		data := append([]byte(nil), raw...)
		data[100] ^= 1
		if err := Restore(restoreConfig(write(t, data), dir)); err == nil {
			t.Fatal("Restore accepted a corrupted snapshot")
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) != 0 {
			t.Errorf("data dir after a refused restore: %v (%v), want it empty", entries, err)
		}
	})
}

func TestCheckRestored(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	rcfg := restoreConfig(snapshotOf(t, 2), dir)
	if err := Restore(rcfg); err != nil {
		t.Fatal(err)
	}
	base := DefaultConfig()
	base.DataDir, base.Name = dir, "r1"
	base.InitialCluster = "r3=127.0.0.1:7521,r1=127.0.0.1:7501,r2=127.0.0.1:7511" // the order does not matter
	tests := []struct {
		name   string
		change func(cfg *Config)
		want   string
	}{
		{"same flags", func(*Config) {}, ""},
		{"other name", func(cfg *Config) { cfg.Name = "r2" }, "was restored for --name r1 --initial-cluster r1=127.0.0.1:7501,"},
		{"other cluster", func(cfg *Config) { cfg.InitialCluster = "r1=127.0.0.1:7501" }, "start with those flags (got --name r1 --initial-cluster r1=127.0.0.1:7501)"},
		{"not restored", func(cfg *Config) { cfg.DataDir = t.TempDir() }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.change(&cfg)
			err := checkRestored(cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("checkRestored: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("checkRestored: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestInspectSnapshot(t *testing.T) {
	path := snapshotOf(t, 7)
	s, err := InspectSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Revision != 7 || s.Keys != 7 || s.Size != int64(len(raw)-sha256.Size) || fmt.Sprintf("%x", raw[len(raw)-sha256.Size:]) != s.SHA256 {
		t.Errorf("summary %+v", s)
	}
	raw[len(raw)-1] ^= 1
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectSnapshot(path); err == nil || !strings.Contains(err.Error(), "truncated or corrupted") {
		t.Errorf("InspectSnapshot of a corrupted file: %v", err)
	}
}
