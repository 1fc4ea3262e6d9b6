package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/registry"
)

// snapshotChecksumSize is the length of the sha256 that ends a snapshot file.
const snapshotChecksumSize = sha256.Size

// restoredMarker is the file, under DataDir/member, that records for which
// member and cluster Restore prepared a data dir.
const restoredMarker = "restored.json"

// A RestoreConfig says which snapshot file to restore and for which member of
// which new cluster. Name, InitialCluster and PeerAddr mean what the server's
// flags of the same names mean, and the member must be started with the same.
type RestoreConfig struct {
	// SnapshotPath is a snapshot file: the database followed by its sha256
	// (what `catctl snapshot save` writes).
	SnapshotPath string
	// DataDir is the new member's data dir; it must not exist or be empty.
	DataDir        string
	Name           string
	InitialCluster string
	PeerAddr       string
	Logger         *slog.Logger
}

// A SnapshotSummary describes the database of a snapshot file.
type SnapshotSummary struct {
	// Size is the size of the database in bytes (without the checksum).
	Size int64
	// SHA256 is the database's checksum, hex-encoded.
	SHA256          string
	Revision        int64
	CompactRevision int64
	// Keys is the number of config keys.
	Keys int
}

// restoreMarker is the content of restoredMarker.
type restoreMarker struct {
	Name           string `json:"name"`
	InitialCluster string `json:"initial_cluster"`
	Revision       int64  `json:"revision"`
	SHA256         string `json:"sha256"`
}

// InspectSnapshot verifies the checksum of the snapshot file at path and
// describes the database it holds. It opens the file read-only, in place.
func InspectSnapshot(path string) (SnapshotSummary, error) {
	sum, err := readSnapshot(path, io.Discard)
	if err != nil {
		return SnapshotSummary{}, err
	}
	db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return SnapshotSummary{}, fmt.Errorf("snapshot %s does not hold a catalogd database: %w", path, err)
	}
	defer db.Close()
	var summary SnapshotSummary
	err = db.View(func(tx *bbolt.Tx) error {
		var err error
		summary, err = summarize(path, tx, sum)
		return err
	})
	return summary, err
}

// Restore prepares cfg.DataDir for a member of a new cluster whose state is
// the snapshot at cfg.SnapshotPath. It refuses a file that is truncated,
// corrupted or not a catalogd database, a data dir that is not empty, and an
// --initial-cluster that does not name the member.
//
// The database keeps the snapshot's revision, history and data; its applied
// index is set to 0 and its membership cleared, so that the member, started
// with the same --name, --initial-cluster and --data-dir, bootstraps a new
// raft log whose membership entries record the new members. Every member of
// the new cluster restores the same snapshot with its own --name.
func Restore(cfg RestoreConfig) error {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if cfg.SnapshotPath == "" {
		return errors.New("--snapshot must name a snapshot file")
	}
	scfg := DefaultConfig()
	scfg.Name, scfg.DataDir, scfg.InitialCluster = cfg.Name, cfg.DataDir, cfg.InitialCluster
	if cfg.PeerAddr != "" {
		scfg.PeerAddr = cfg.PeerAddr
	}
	if err := scfg.Validate(); err != nil {
		return err
	}
	initialCluster, err := canonicalInitialCluster(scfg)
	if err != nil {
		return err
	}
	if err := checkEmptyDir(cfg.DataDir); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.SnapshotPath); err != nil {
		return fmt.Errorf("--snapshot: %w", err)
	}

	createdDataDir := false
	if _, err := os.Stat(cfg.DataDir); errors.Is(err, os.ErrNotExist) {
		createdDataDir = true
	}
	memberDir := filepath.Join(cfg.DataDir, "member")
	stateDir := filepath.Join(memberDir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", stateDir, err)
	}
	summary, err := restoreInto(cfg.SnapshotPath, stateDir)
	if err == nil {
		err = writeFileAtomic(filepath.Join(memberDir, restoredMarker), mustJSON(restoreMarker{
			Name: cfg.Name, InitialCluster: initialCluster, Revision: summary.Revision, SHA256: summary.SHA256,
		}))
	}
	if err != nil {
		// Leave the data dir as it was, so that the restore can be retried.
		if createdDataDir {
			os.RemoveAll(cfg.DataDir)
		} else {
			os.RemoveAll(memberDir)
		}
		return err
	}
	lg.Info("restored snapshot", "snapshot", cfg.SnapshotPath, "data_dir", cfg.DataDir, "name", cfg.Name,
		"initial_cluster", initialCluster, "revision", summary.Revision, "keys", summary.Keys,
		"size", summary.Size, "sha256", summary.SHA256)
	return nil
}

// restoreInto writes the snapshot's database, made ready for a new cluster,
// to stateDir/db.
func restoreInto(snapshotPath, stateDir string) (SnapshotSummary, error) {
	tmp := filepath.Join(stateDir, "db.restore.tmp")
	defer os.Remove(tmp)
	sum, err := extractSnapshot(snapshotPath, tmp)
	if err != nil {
		return SnapshotSummary{}, err
	}
	var summary SnapshotSummary
	err = withSnapshotDB(snapshotPath, tmp, func(tx *bbolt.Tx) error {
		if err := checkDB(snapshotPath, tx); err != nil {
			return err
		}
		var err error
		if summary, err = summarize(snapshotPath, tx, sum); err != nil {
			return err
		}
		return resetMembership(tx)
	})
	if err != nil {
		return SnapshotSummary{}, err
	}
	if err := fsyncPath(tmp); err != nil {
		return SnapshotSummary{}, err
	}
	if err := os.Rename(tmp, filepath.Join(stateDir, "db")); err != nil {
		return SnapshotSummary{}, fmt.Errorf("move restored database into place: %w", err)
	}
	if err := fsyncPath(stateDir); err != nil {
		return SnapshotSummary{}, err
	}
	return summary, nil
}

// extractSnapshot copies the database of the snapshot file at path to dst,
// synced, checking the sha256 that ends the file.
func extractSnapshot(path, dst string) ([]byte, error) {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", dst, err)
	}
	sum, err := readSnapshot(path, out)
	if err != nil {
		out.Close()
		return nil, err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return nil, fmt.Errorf("sync %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", dst, err)
	}
	return sum, nil
}

// readSnapshot copies the database of the snapshot file at path to w and
// returns its sha256 once it has checked it against the one ending the file.
func readSnapshot(path string, w io.Writer) ([]byte, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open snapshot: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat snapshot: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("snapshot %s is a directory, want a snapshot file", path)
	}
	size := st.Size() - snapshotChecksumSize
	if size <= 0 {
		return nil, fmt.Errorf("snapshot %s is too short (%d bytes): a snapshot file is a database followed by its %d-byte sha256",
			path, st.Size(), snapshotChecksumSize)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(w, h), src, size); err != nil {
		return nil, fmt.Errorf("read snapshot %s: %w", path, err)
	}
	want := make([]byte, snapshotChecksumSize)
	if _, err := io.ReadFull(src, want); err != nil {
		return nil, fmt.Errorf("read checksum of snapshot %s: %w", path, err)
	}
	got := h.Sum(nil)
	if !bytes.Equal(got, want) {
		return nil, fmt.Errorf("snapshot %s is truncated or corrupted: the sha256 of its first %d bytes is %x, but its last %d bytes say %x",
			path, size, got, snapshotChecksumSize, want)
	}
	return got, nil
}

// withSnapshotDB opens the database at db, extracted from the snapshot file
// at snapshotPath, and runs fn in a write transaction.
func withSnapshotDB(snapshotPath, db string, fn func(tx *bbolt.Tx) error) error {
	bdb, err := bbolt.Open(db, 0o600, &bbolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if err != nil {
		return fmt.Errorf("snapshot %s does not hold a catalogd database: %w", snapshotPath, err)
	}
	if err := bdb.Update(fn); err != nil {
		bdb.Close()
		return err
	}
	if err := bdb.Close(); err != nil {
		return fmt.Errorf("close database of snapshot %s: %w", snapshotPath, err)
	}
	return nil
}

// checkDB runs bbolt's consistency check and looks for catalogd's buckets.
func checkDB(snapshotPath string, tx *bbolt.Tx) error {
	var problems []string
	for err := range tx.Check() {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		if len(problems) > 3 {
			problems = append(problems[:3], fmt.Sprintf("and %d more", len(problems)-3))
		}
		return fmt.Errorf("snapshot %s holds a damaged database: %s", snapshotPath, strings.Join(problems, "; "))
	}
	return nil
}

// summarize describes the database of tx, which must be catalogd's.
func summarize(snapshotPath string, tx *bbolt.Tx, sum []byte) (SnapshotSummary, error) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return SnapshotSummary{}, fmt.Errorf("snapshot %s does not hold a catalogd database: it has no %q bucket", snapshotPath, metaBucket)
	}
	return SnapshotSummary{
		Size:            tx.Size(),
		SHA256:          hex.EncodeToString(sum),
		Revision:        int64(getUint(meta, keyRevision)),
		CompactRevision: int64(getUint(meta, keyCompactRevison)),
		Keys:            registry.Count(tx),
	}, nil
}

// resetMembership makes the database that of a member that applied no raft
// entry and knows no member: the new cluster's log records them again.
func resetMembership(tx *bbolt.Tx) error {
	meta := tx.Bucket(metaBucket)
	putUint(meta, keyAppliedIndex, 0)
	if err := meta.Delete(keyConfState); err != nil {
		return fmt.Errorf("clear conf state: %w", err)
	}
	for _, name := range [][]byte{membersBucket, removedBucket} {
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return fmt.Errorf("clear bucket %q: %w", name, err)
			}
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %q: %w", name, err)
		}
	}
	return nil
}

// checkRestored is called when a member starts with no raft log: if Restore
// prepared its data dir, the member must be started as Restore was told.
func checkRestored(cfg Config) error {
	path := filepath.Join(cfg.DataDir, "member", restoredMarker)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read restore marker: %w", err)
	}
	var m restoreMarker
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("restore marker %s is not valid JSON: %w", path, err)
	}
	initialCluster, err := canonicalInitialCluster(cfg)
	if err != nil {
		return err
	}
	if m.Name != cfg.Name || m.InitialCluster != initialCluster {
		return fmt.Errorf("--data-dir %s was restored for --name %s --initial-cluster %s; start with those flags (got --name %s --initial-cluster %s)",
			cfg.DataDir, m.Name, m.InitialCluster, cfg.Name, initialCluster)
	}
	return nil
}

// canonicalInitialCluster returns the members cfg starts a cluster with as an
// --initial-cluster value, sorted by name, with the default (this member
// alone at --peer-addr) spelled out.
func canonicalInitialCluster(cfg Config) (string, error) {
	peers, err := cfg.members()
	if err != nil {
		return "", err
	}
	parts := make([]string, len(peers))
	for i, p := range peers {
		parts[i] = p.Name + "=" + p.Addr
	}
	slices.Sort(parts)
	return strings.Join(parts, ","), nil
}

// checkEmptyDir refuses a data dir that holds anything.
func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("--data-dir %s is not empty (it holds %s): restore into a new or empty directory",
			dir, entries[0].Name())
	}
	return nil
}

// writeFileAtomic writes data to path through a synced temporary file and a rename.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return fsyncPath(filepath.Dir(path))
}

// fsyncPath syncs a file or directory, so that a rename into it survives a crash.
func fsyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s to sync: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("server: encode %T as JSON: %v", v, err))
	}
	return append(b, '\n')
}
