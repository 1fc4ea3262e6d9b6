package server

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// snapshotChunkSize is the size of the blob of each Snapshot message.
const snapshotChunkSize = 1 << 20

// Snapshot streams a consistent copy of this member's database: the first
// message carries the header (whose revision is the snapshot's) and the total
// size, the last the sha256 of every blob byte.
func (c *clusterService) Snapshot(_ *catalogpb.SnapshotRequest, stream grpc.ServerStreamingServer[catalogpb.SnapshotResponse]) error {
	ctx := stream.Context()
	spool, err := c.s.sm.spoolSnapshot()
	if err != nil {
		return toGRPCError(err)
	}
	defer spool.close()
	c.s.lg.Info("streaming database snapshot", "revision", spool.revision, "size", spool.size)
	err = spool.stream(ctx, c.s.header(spool.revision), stream.Send)
	if err != nil {
		c.s.lg.Warn("database snapshot not sent", "revision", spool.revision, "err", err)
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The client went away: say so rather than how Send noticed.
			err = ctxErr
		}
	}
	return toGRPCError(err)
}

// Hash digests this member's replicated state and checks its events history.
func (c *clusterService) Hash(context.Context, *catalogpb.HashRequest) (*catalogpb.HashResponse, error) {
	resp, err := c.s.sm.hashState()
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = c.s.header(resp.Revision)
	return resp, nil
}

// A snapshotSpool is a consistent copy of the database in an unlinked
// temporary file, ready to stream.
type snapshotSpool struct {
	f        *os.File
	revision int64
	size     int64
	sum      []byte
}

// spoolSnapshot copies the database, as one read transaction sees it, to a
// temporary file beside it. The read transaction lasts only as long as the
// local copy, not as long as a client takes to read the stream: an open read
// transaction keeps bbolt from growing its memory map, which a write that
// needs more room waits for, so a stalled client must not hold one.
func (sm *stateMachine) spoolSnapshot() (*snapshotSpool, error) {
	dir := filepath.Dir(sm.path)
	f, err := os.CreateTemp(dir, "backup-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create snapshot spool file in %s: %w", dir, err)
	}
	// Unlinked at once: the open file lives until closed, and a crash leaves
	// nothing behind.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("unlink snapshot spool file %s: %w", f.Name(), err)
	}
	spool := &snapshotSpool{f: f}
	h := sha256.New()
	err = sm.viewSnapshot(func(tx *bbolt.Tx) error {
		spool.revision = readRevision(tx)
		spool.size = tx.Size()
		n, err := tx.WriteTo(io.MultiWriter(f, h))
		if err != nil {
			return fmt.Errorf("copy database to spool file in %s: %w", dir, err)
		}
		if n != spool.size {
			return fmt.Errorf("copy database to spool file in %s: wrote %d bytes of %d", dir, n, spool.size)
		}
		return nil
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("rewind snapshot spool file: %w", err)
	}
	spool.sum = h.Sum(nil)
	return spool, nil
}

// viewSnapshot runs fn in a read transaction begun by beginSnapshot.
func (sm *stateMachine) viewSnapshot(fn func(tx *bbolt.Tx) error) error {
	tx, err := sm.beginSnapshot()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(tx)
}

// stream sends the spooled database in chunks of snapshotChunkSize until
// done, send fails or ctx ends.
func (s *snapshotSpool) stream(ctx context.Context, hdr *catalogpb.ResponseHeader, send func(*catalogpb.SnapshotResponse) error) error {
	buf := make([]byte, snapshotChunkSize)
	var sent int64
	first := true
	for first || sent < s.size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(s.f, buf[:min(int64(len(buf)), s.size-sent)])
		if err != nil {
			return fmt.Errorf("read snapshot spool file at offset %d of %d: %w", sent, s.size, err)
		}
		sent += int64(n)
		msg := &catalogpb.SnapshotResponse{Blob: buf[:n]}
		if first {
			msg.Header, msg.TotalSize = hdr, s.size
			first = false
		}
		if sent == s.size {
			msg.Sha256 = s.sum
		}
		if err := send(msg); err != nil {
			return fmt.Errorf("send snapshot chunk ending at byte %d of %d: %w", sent, s.size, err)
		}
	}
	return nil
}

func (s *snapshotSpool) close() { s.f.Close() }

// Record tags of the state hash: each record is a tag byte followed by
// length-prefixed fields, so no two different states hash the same bytes.
const (
	hashTagBucket    = 'b' // bucket start: name
	hashTagKeyValue  = 'k' // key, value
	hashTagBucketEnd = 'e' // end of the bucket last started
)

// hashState digests, in one read transaction, every bucket but the member's
// own bookkeeping ("meta"), and checks the events history. The events bucket
// is hashed only over the history every member keeps with this member's
// --event-history (the newest eventHistory revisions): older batches that a
// member has not trimmed yet, because one apply trims at most
// maxCompactPerApply of them and members batch entries differently, would
// otherwise make equal states hash apart.
func (sm *stateMachine) hashState() (*catalogpb.HashResponse, error) {
	resp := &catalogpb.HashResponse{}
	err := sm.view(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		if meta == nil {
			return fmt.Errorf("database %s has no %q bucket", sm.path, metaBucket)
		}
		resp.AppliedIndex = getUint(meta, keyAppliedIndex)
		resp.Revision = int64(getUint(meta, keyRevision))
		compact := int64(getUint(meta, keyCompactRevison))
		keepFrom := max(1, resp.Revision-sm.eventHistory+1)

		h := &stateHasher{h: sha256.New()}
		err := tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			if string(name) == string(metaBucket) {
				return nil
			}
			var skip func(k []byte) bool
			if string(name) == string(eventsBucket) {
				skip = func(k []byte) bool { return len(k) == 8 && int64(binary.BigEndian.Uint64(k)) < keepFrom }
			}
			return h.bucket(name, b, skip)
		})
		if err != nil {
			return err
		}
		resp.Hash = h.h.Sum(nil)
		resp.Keys = h.keys

		hist := checkEvents(tx.Bucket(eventsBucket), resp.Revision, compact)
		resp.EventsFirst, resp.EventsLast, resp.EventsCount, resp.EventsProblem = hist.first, hist.last, hist.count, hist.problem
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hash state: %w", err)
	}
	return resp, nil
}

// A stateHasher feeds buckets to a hash as tagged, length-prefixed records.
type stateHasher struct {
	h    hash.Hash
	keys int64
	lenb [8]byte
}

func (s *stateHasher) field(b []byte) {
	binary.BigEndian.PutUint64(s.lenb[:], uint64(len(b)))
	s.h.Write(s.lenb[:])
	s.h.Write(b)
}

// bucket hashes b and, depth first in key order, its nested buckets; skip,
// if set, leaves out the top-level keys it returns true for.
func (s *stateHasher) bucket(name []byte, b *bbolt.Bucket, skip func(k []byte) bool) error {
	s.h.Write([]byte{hashTagBucket})
	s.field(name)
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			nested := b.Bucket(k)
			if nested == nil {
				return fmt.Errorf("bucket %q: key %x has no value and is no bucket", name, k)
			}
			if err := s.bucket(k, nested, nil); err != nil {
				return fmt.Errorf("in bucket %q: %w", name, err)
			}
			continue
		}
		if skip != nil && skip(k) {
			continue
		}
		s.h.Write([]byte{hashTagKeyValue})
		s.field(k)
		s.field(v)
		s.keys++
	}
	s.h.Write([]byte{hashTagBucketEnd})
	return nil
}

// eventsHistory is what checkEvents found in the events bucket.
type eventsHistory struct {
	first, last, count int64
	// problem is empty when the history keeps the invariant of trimHistory.
	problem string
}

// checkEvents checks the events bucket against the invariant Apply and
// trimHistory keep: one batch per revision, stored under its own revision,
// from compact+1 to rev with no hole (empty when rev == compact, which only
// a store that never wrote has).
func checkEvents(b *bbolt.Bucket, rev, compact int64) eventsHistory {
	var hist eventsHistory
	if b == nil {
		hist.problem = fmt.Sprintf("the %q bucket does not exist", eventsBucket)
		return hist
	}
	var problems []string
	report := func(format string, args ...any) {
		// The first few say what is wrong; a long list says nothing more.
		if len(problems) < 3 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	var batch catalogpb.EventBatch
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			report("key %x is not an 8-byte revision", k)
			continue
		}
		r := int64(binary.BigEndian.Uint64(k))
		batch.Reset()
		if err := proto.Unmarshal(v, &batch); err != nil {
			report("batch at revision %d does not decode: %v", r, err)
		} else if batch.Revision != r {
			report("batch stored under revision %d says revision %d", r, batch.Revision)
		}
		if hist.count == 0 {
			hist.first = r
		} else if r != hist.last+1 {
			report("revisions %d..%d are missing", hist.last+1, r-1)
		}
		hist.last = r
		hist.count++
	}
	switch {
	case rev < compact:
		report("compact revision %d is above the revision %d", compact, rev)
	case rev == compact && hist.count > 0:
		report("history holds revisions %d..%d although revision %d is compacted", hist.first, hist.last, compact)
	case rev > compact && hist.count == 0:
		report("history is empty, want revisions %d..%d", compact+1, rev)
	case rev > compact:
		if hist.first != compact+1 {
			report("history starts at revision %d, want %d (compact revision + 1)", hist.first, compact+1)
		}
		if hist.last != rev {
			report("history ends at revision %d, want the store's revision %d", hist.last, rev)
		}
	}
	hist.problem = strings.Join(problems, "; ")
	return hist
}
