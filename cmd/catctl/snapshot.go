package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/bbolt"
)

// The buckets and keys of a catalogd database that `snapshot status` reads.
// They are the server's (server/state.go, registry/kv.go), repeated here
// because catctl may not import server-side packages.
var (
	snapshotMetaBucket  = []byte("meta")
	snapshotRevisionKey = []byte("revision")
	snapshotKVBucket    = []byte("kv")
)

// progressInterval is the shortest time between two progress bar updates.
const progressInterval = 100 * time.Millisecond

func newSnapshotCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("snapshot", "Save a backup of the cluster's data and inspect backup files")
	cmd.Long = "A snapshot file is a member's database followed by its 32-byte sha256; restore it\n" +
		"with `catalogd restore --snapshot FILE`."
	cmd.AddCommand(newSnapshotSaveCommand(a), newSnapshotStatusCommand(a))
	return cmd
}

func newSnapshotSaveCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent copy of one member's database to FILE",
		Long: "Streams a consistent copy of the database of one endpoint (the first that answers)\n" +
			"to FILE.part, verifies its checksum, and renames it to FILE. Progress is shown on\n" +
			"stderr. The transfer is bounded by --command-timeout only when that flag is given.",
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			if cmd.Flags().Changed("command-timeout") {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, a.commandTimeout)
				defer cancel()
			}

			path := args[0]
			part := path + ".part"
			f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return fmt.Errorf("snapshot save: %w", err)
			}
			start := time.Now()
			bar := &progressBar{w: a.stderr, start: start}
			info, err := c.Snapshot(ctx, f, bar.update)
			bar.finish()
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(part, path)
			}
			if err != nil {
				os.Remove(part)
				return fmt.Errorf("snapshot save %s: %w", path, err)
			}
			syncDir(filepath.Dir(path))
			elapsed := time.Since(start)

			if a.jsonOutput() {
				return a.printValueJSON(struct {
					File     string  `json:"file"`
					Endpoint string  `json:"endpoint"`
					Revision int64   `json:"revision"`
					Size     int64   `json:"size"`
					SHA256   string  `json:"sha256"`
					Seconds  float64 `json:"seconds"`
				}{path, info.Endpoint, info.Revision, info.Size, info.SHA256, elapsed.Seconds()})
			}
			fmt.Fprintf(a.stdout, "Snapshot saved to %s from %s: %s, revision %d, sha256 %s, in %.1f s (%s)\n",
				path, info.Endpoint, humanBytes(info.Size), info.Revision, info.SHA256, elapsed.Seconds(), rate(info.Size, elapsed))
			return nil
		},
	}
}

// syncDir makes a rename in dir durable; a failure only weakens that, so it
// is not reported.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// A progressBar prints a transfer's progress on one terminal line.
type progressBar struct {
	w       io.Writer
	start   time.Time
	last    time.Time
	printed bool
}

// update redraws the line with done of total bytes, at most every
// progressInterval, and always when the transfer is complete.
func (p *progressBar) update(done, total int64) {
	now := time.Now()
	if done < total && now.Sub(p.last) < progressInterval {
		return
	}
	p.last = now
	pct := 100.0
	if total > 0 {
		pct = float64(done) * 100 / float64(total)
	}
	fmt.Fprintf(p.w, "\r%s / %s  %3.0f%%  %s   ", humanBytes(done), humanBytes(total), pct, rate(done, now.Sub(p.start)))
	p.printed = true
}

// finish ends the progress line.
func (p *progressBar) finish() {
	if p.printed {
		fmt.Fprintln(p.w)
	}
}

// rate formats n bytes over d as a transfer rate.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "- MB/s"
	}
	return fmt.Sprintf("%.1f MB/s", float64(n)/1e6/d.Seconds())
}

// A snapshotStatus describes a snapshot file.
type snapshotStatus struct {
	SHA256   string `json:"sha256"`
	Revision int64  `json:"revision"`
	Keys     int64  `json:"keys"`
	Size     int64  `json:"size"`
}

func newSnapshotStatusCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status FILE",
		Short: "Verify a snapshot file and show its revision, keys and size",
		Long: "Verifies the checksum that ends FILE, then reads the database it holds (read-only)\n" +
			"and prints its sha256, revision, number of keys and size (without the checksum).",
		Args: exactArgs("FILE"),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := readSnapshotStatus(args[0])
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printValueJSON(st)
			}
			tw := a.newTable()
			fmt.Fprintln(tw, "SHA256\tREVISION\tKEYS\tSIZE")
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", st.SHA256, st.Revision, st.Keys, humanBytes(st.Size))
			return tw.Flush()
		},
	}
}

// readSnapshotStatus verifies the snapshot file at path and reads its database.
func readSnapshotStatus(path string) (snapshotStatus, error) {
	sum, size, err := verifySnapshotFile(path)
	if err != nil {
		return snapshotStatus{}, err
	}
	st := snapshotStatus{SHA256: hex.EncodeToString(sum), Size: size}
	// bbolt ignores the checksum after the database's last page.
	db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return snapshotStatus{}, fmt.Errorf("%s does not hold a catalogd database: %w", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(snapshotMetaBucket)
		if meta == nil {
			return fmt.Errorf("%s does not hold a catalogd database: it has no %q bucket", path, snapshotMetaBucket)
		}
		if v := meta.Get(snapshotRevisionKey); len(v) == 8 {
			st.Revision = int64(binary.BigEndian.Uint64(v))
		}
		if kv := tx.Bucket(snapshotKVBucket); kv != nil {
			c := kv.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				st.Keys++
			}
		}
		return nil
	})
	return st, err
}

// verifySnapshotFile checks the sha256 that ends the snapshot file at path
// and returns it with the size of the database before it.
func verifySnapshotFile(path string) ([]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if fi.IsDir() {
		return nil, 0, fmt.Errorf("%s is a directory, want a snapshot file", path)
	}
	size := fi.Size() - sha256.Size
	if size <= 0 {
		return nil, 0, fmt.Errorf("%s is too short (%d bytes) to be a snapshot file: a database followed by its %d-byte sha256",
			path, fi.Size(), sha256.Size)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, f, size); err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	}
	want := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, want); err != nil {
		return nil, 0, fmt.Errorf("read the checksum of %s: %w", path, err)
	}
	got := h.Sum(nil)
	if !bytes.Equal(got, want) {
		return nil, 0, fmt.Errorf("%s is truncated or corrupted: the sha256 of its first %d bytes is %x, but its last %d bytes say %x",
			path, size, got, sha256.Size, want)
	}
	return got, size, nil
}

// printValueJSON writes v, a plain Go value, as indented JSON.
func (a *app) printValueJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %T as JSON: %w", v, err)
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", b)
	return err
}
