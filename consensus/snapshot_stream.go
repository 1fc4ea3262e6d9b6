package consensus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

const (
	// snapshotChunkSize is how much of the database one SnapshotChunk carries.
	snapshotChunkSize = 1 << 20
	// snapshotAckTimeout bounds the wait, after the last chunk, for the peer
	// to store the database and step the MsgSnap. Without it a peer that
	// vanished then would leave raft waiting for the snapshot's outcome
	// forever; it is generous because the peer may still be writing data
	// buffered in flow-control windows.
	snapshotAckTimeout = 30 * time.Second
)

// A snapshot travels on its own Raft.Snapshot stream, never on the peer's
// message stream, so that a database of gigabytes does not hold up heartbeats
// and appends queued behind it:
//
//	chunk 1:    cluster_id, from, to, message (the marshalled MsgSnap), total_size
//	chunks 2..: data, up to snapshotChunkSize each
//	last chunk: last=true, sha256 of all data
//
// The receiver hands the data to Handler.ReceiveSnapshotDB as it arrives, and
// checks size and checksum before the reader reaches EOF: a truncated or
// corrupted stream makes the reader return an error instead, so the Handler
// never mistakes a partial database for a complete one.

// sendSnapshot streams the MsgSnap m with its database to the peer and tells
// raft how that ended.
func (p *peer) sendSnapshot(m raftpb.Message) {
	defer p.wg.Done()
	var index uint64
	if m.Snapshot != nil {
		index = m.Snapshot.Metadata.Index
	}
	sent, err := p.streamSnapshot(m)
	if p.t.ctx.Err() != nil {
		// The transport is stopping, and so is raft: nobody needs the report.
		return
	}
	if err != nil {
		p.logger.Warn("sending snapshot failed", "index", index, "sent_bytes", sent, "err", err)
		p.t.cfg.Handler.ReportSnapshot(p.id, raft.SnapshotFailure)
		return
	}
	p.logger.Info("sent snapshot", "index", index, "bytes", sent)
	p.t.cfg.Handler.ReportSnapshot(p.id, raft.SnapshotFinish)
}

// streamSnapshot sends m and its database and waits for the peer to confirm
// it stored them. It returns how many database bytes were sent.
func (p *peer) streamSnapshot(m raftpb.Message) (int64, error) {
	if p.conn == nil {
		return 0, p.connErr
	}
	m, db, size, err := p.t.cfg.Handler.OpenSnapshotDB(m)
	if err != nil {
		return 0, fmt.Errorf("open snapshot database: %w", err)
	}
	defer db.Close()
	msg, err := m.Marshal()
	if err != nil {
		return 0, fmt.Errorf("marshal MsgSnap: %w", err)
	}

	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	stream, err := openWithin(ctx, cancel, p.t.cfg.DialTimeout, p.client.Snapshot)
	if err != nil {
		return 0, fmt.Errorf("open snapshot stream: %w", err)
	}
	w := newWatchdog(cancel)
	defer w.stop()
	send := func(c *catalogpb.SnapshotChunk) error {
		c.ClusterId, c.From, c.To = p.t.cfg.ClusterID, p.t.cfg.ID, p.id
		if err := w.run(p.t.writeTimeout, func() error { return stream.Send(c) }); err != nil {
			return snapshotStreamError(stream, err)
		}
		return nil
	}

	if err := send(&catalogpb.SnapshotChunk{Message: msg, TotalSize: size}); err != nil {
		return 0, err
	}
	sum := sha256.New()
	buf := make([]byte, snapshotChunkSize)
	var sent int64
	for {
		n, readErr := io.ReadFull(db, buf)
		if n > 0 {
			sum.Write(buf[:n])
			sent += int64(n)
			if err := send(&catalogpb.SnapshotChunk{Data: buf[:n]}); err != nil {
				return sent, err
			}
		}
		if errors.Is(readErr, io.EOF) || errors.Is(readErr, io.ErrUnexpectedEOF) {
			break
		}
		if readErr != nil {
			return sent, fmt.Errorf("read snapshot database: %w", readErr)
		}
	}
	if sent != size {
		return sent, fmt.Errorf("snapshot database has %d bytes, but OpenSnapshotDB said %d", sent, size)
	}
	if err := send(&catalogpb.SnapshotChunk{Last: true, Sha256: sum.Sum(nil)}); err != nil {
		return sent, err
	}
	ackTimer := time.AfterFunc(snapshotAckTimeout, cancel)
	defer ackTimer.Stop()
	ack, err := stream.CloseAndRecv()
	if err != nil {
		if !ackTimer.Stop() {
			return sent, fmt.Errorf("peer did not confirm the snapshot within %v: %w", snapshotAckTimeout, err)
		}
		return sent, fmt.Errorf("peer did not store the snapshot: %w", err)
	}
	if ack.GetReceived() != uint64(sent) {
		return sent, fmt.Errorf("peer acknowledged %d of %d snapshot bytes", ack.GetReceived(), sent)
	}
	return sent, nil
}

// snapshotStreamError returns why a write on the snapshot stream failed: the
// peer's status when it ended the stream, else err.
func snapshotStreamError(stream grpc.ClientStreamingClient[catalogpb.SnapshotChunk, catalogpb.SnapshotAck], err error) error {
	if errors.Is(err, io.EOF) {
		if _, recvErr := stream.CloseAndRecv(); recvErr != nil {
			return fmt.Errorf("peer refused the snapshot: %w", recvErr)
		}
	}
	return fmt.Errorf("send snapshot chunk: %w", err)
}

// Snapshot receives a MsgSnap and its database: it streams the database into
// Handler.ReceiveSnapshotDB, verifying it on the way, then steps the MsgSnap
// into raft with Handler.Process.
func (s *raftServer) Snapshot(stream grpc.ClientStreamingServer[catalogpb.SnapshotChunk, catalogpb.SnapshotAck]) error {
	ctx, cancel := s.t.incomingContext(stream.Context())
	defer cancel()
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return status.Error(codes.InvalidArgument, "snapshot stream ended before its first chunk")
		}
		return err
	}
	if err := s.t.checkEnvelope(first.GetClusterId(), first.GetFrom(), first.GetTo()); err != nil {
		return err
	}
	var m raftpb.Message
	if err := m.Unmarshal(first.GetMessage()); err != nil {
		return status.Errorf(codes.InvalidArgument, "first snapshot chunk must carry a marshalled raft MsgSnap: %v", err)
	}
	if m.Type != raftpb.MsgSnap || m.Snapshot == nil {
		return status.Errorf(codes.InvalidArgument,
			"first snapshot chunk must carry a MsgSnap with a snapshot, got %s", m.Type)
	}
	if first.GetTotalSize() < 0 {
		return status.Errorf(codes.InvalidArgument, "snapshot total_size must be >= 0, got %d", first.GetTotalSize())
	}

	received, err := s.t.receiveSnapshot(ctx, stream, first, m)
	if err != nil {
		s.t.logger.Warn("receiving snapshot failed", "from", fmtID(m.From),
			"index", m.Snapshot.Metadata.Index, "err", err)
		return err
	}
	if err := s.t.process(ctx, m); err != nil {
		return err
	}
	s.t.logger.Info("received snapshot", "from", fmtID(m.From),
		"index", m.Snapshot.Metadata.Index, "bytes", received)
	return stream.SendAndClose(&catalogpb.SnapshotAck{Received: uint64(received)})
}

// errReceiverReturned makes writes fail once ReceiveSnapshotDB has returned.
var errReceiverReturned = errors.New("snapshot receiver returned before the end of the data")

// receiveSnapshot pipes the snapshot's data into Handler.ReceiveSnapshotDB and
// returns how many bytes it stored. Its errors are gRPC statuses.
func (t *GRPCTransport) receiveSnapshot(ctx context.Context,
	stream grpc.ClientStreamingServer[catalogpb.SnapshotChunk, catalogpb.SnapshotAck],
	first *catalogpb.SnapshotChunk, m raftpb.Message) (int64, error) {
	if !t.enterHandler() {
		return 0, status.Errorf(codes.Unavailable, "member %s is stopping", fmtID(t.cfg.ID))
	}
	pr, pw := io.Pipe()
	storedC := make(chan error, 1)
	go func() {
		defer t.exitHandler()
		err := t.cfg.Handler.ReceiveSnapshotDB(m, pr)
		_ = pr.CloseWithError(errReceiverReturned)
		storedC <- err
	}()

	// Cancellation must also unblock the Handler's reads and our writes.
	stopWatching := context.AfterFunc(ctx, func() { _ = pw.CloseWithError(ctx.Err()) })
	n, copyErr := t.copySnapshotData(stream, first, pw)
	stopWatching()
	// On success this is a plain close: the reader's EOF says the data is
	// complete and verified. Otherwise the reader gets copyErr.
	_ = pw.CloseWithError(copyErr)
	storeErr := <-storedC

	var st interface{ GRPCStatus() *status.Status }
	switch {
	case ctx.Err() != nil:
		return n, status.FromContextError(ctx.Err()).Err()
	case copyErr != nil && errors.As(copyErr, &st):
		return n, copyErr // the stream was bad
	case storeErr != nil:
		return n, status.Errorf(codes.Internal, "member %s cannot store snapshot database: %v", fmtID(t.cfg.ID), storeErr)
	case copyErr != nil:
		return n, status.Errorf(codes.Internal, "member %s stored only %d of %d snapshot bytes: %v",
			fmtID(t.cfg.ID), n, first.GetTotalSize(), copyErr)
	}
	return n, nil
}

// copySnapshotData writes the data of first and the chunks after it to w,
// checking their size against total_size and their checksum against the last
// chunk's sha256. Problems with the stream are returned as gRPC statuses; a
// failed write to w is not.
func (t *GRPCTransport) copySnapshotData(stream grpc.ClientStreamingServer[catalogpb.SnapshotChunk, catalogpb.SnapshotAck],
	first *catalogpb.SnapshotChunk, w io.Writer) (int64, error) {
	total := first.GetTotalSize()
	sum := sha256.New()
	var n int64
	for c := first; ; {
		if data := c.GetData(); len(data) > 0 {
			if n+int64(len(data)) > total {
				return n, status.Errorf(codes.DataLoss, "snapshot data exceeds its total_size of %d bytes", total)
			}
			sum.Write(data)
			if _, err := w.Write(data); err != nil {
				return n, fmt.Errorf("hand snapshot data to the receiver: %w", err)
			}
			n += int64(len(data))
		}
		if c.GetLast() {
			if n != total {
				return n, status.Errorf(codes.DataLoss, "snapshot stream ended after %d of %d bytes", n, total)
			}
			if got := sum.Sum(nil); !bytes.Equal(got, c.GetSha256()) {
				return n, status.Errorf(codes.DataLoss,
					"snapshot checksum mismatch: data has sha256 %x, sender sent %x", got, c.GetSha256())
			}
			return n, nil
		}
		var err error
		if c, err = stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return n, status.Errorf(codes.DataLoss,
					"snapshot stream ended after %d of %d bytes without a last chunk", n, total)
			}
			return n, err
		}
		if err := t.checkEnvelope(c.GetClusterId(), c.GetFrom(), c.GetTo()); err != nil {
			return n, err
		}
	}
}
