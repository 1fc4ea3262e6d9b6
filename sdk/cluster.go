package sdk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// ErrSnapshotCorrupted means a snapshot stream did not arrive whole: it
// ended early, carried more than announced, or its bytes do not match the
// server's checksum.
var ErrSnapshotCorrupted = errors.New("sdk: snapshot corrupted in transfer")

// MemberList returns the members of the cluster, as the leader knows them.
// It is retried while servers are unavailable.
func (c *Client) MemberList(ctx context.Context) (*catalogpb.MemberListResponse, error) {
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.MemberListResponse, error) {
		return c.cluster.MemberList(ctx, &catalogpb.MemberListRequest{})
	})
}

// MemberAdd adds a member named name whose raft address is peerAddr
// (host:port), as a learner (non-voting until promoted) or as a voter. The
// response holds the id the cluster gave it and the new membership. Like
// every write, it is retried only when the cluster had no leader.
func (c *Client) MemberAdd(ctx context.Context, name, peerAddr string, learner bool) (*catalogpb.MemberAddResponse, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: member name must not be empty", ErrInvalidArgument)
	}
	if host, port, err := net.SplitHostPort(peerAddr); err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("%w: peer address %q must be host:port (for example 10.0.0.4:7401)", ErrInvalidArgument, peerAddr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("%w: peer address %q: port must be a number in 1..65535, got %q", ErrInvalidArgument, peerAddr, port)
	}
	req := &catalogpb.MemberAddRequest{Name: name, PeerAddr: peerAddr, IsLearner: learner}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.MemberAddResponse, error) {
		return c.cluster.MemberAdd(ctx, req)
	})
}

// MemberRemove removes the member id from the cluster. It is retried only
// when the cluster had no leader.
func (c *Client) MemberRemove(ctx context.Context, id uint64) (*catalogpb.MemberRemoveResponse, error) {
	if err := checkMemberID(id); err != nil {
		return nil, err
	}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.MemberRemoveResponse, error) {
		return c.cluster.MemberRemove(ctx, &catalogpb.MemberRemoveRequest{Id: id})
	})
}

// MemberPromote makes the learner id a voter; it fails with
// ErrLearnerNotReady until the learner has caught up. It is retried only
// when the cluster had no leader.
func (c *Client) MemberPromote(ctx context.Context, id uint64) (*catalogpb.MemberPromoteResponse, error) {
	if err := checkMemberID(id); err != nil {
		return nil, err
	}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.MemberPromoteResponse, error) {
		return c.cluster.MemberPromote(ctx, &catalogpb.MemberPromoteRequest{Id: id})
	})
}

// MoveLeader hands leadership to the voter targetID. It is retried only when
// the cluster had no leader.
func (c *Client) MoveLeader(ctx context.Context, targetID uint64) (*catalogpb.MoveLeaderResponse, error) {
	if err := checkMemberID(targetID); err != nil {
		return nil, err
	}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.MoveLeaderResponse, error) {
		return c.cluster.MoveLeader(ctx, &catalogpb.MoveLeaderRequest{TargetId: targetID})
	})
}

func checkMemberID(id uint64) error {
	if id == 0 {
		return fmt.Errorf("%w: member id must not be 0", ErrInvalidArgument)
	}
	return nil
}

// HashOf returns the digest of the state of the server at endpoint
// (host:port), for comparing members: members that applied the same index
// must have the same hash, and EventsProblem empty.
func (c *Client) HashOf(ctx context.Context, endpoint string) (*catalogpb.HashResponse, error) {
	return callEndpoint(ctx, c, endpoint, func(ctx context.Context, cluster catalogpb.ClusterClient) (*catalogpb.HashResponse, error) {
		return cluster.Hash(ctx, &catalogpb.HashRequest{})
	})
}

// SnapshotInfo describes a snapshot written by Snapshot.
type SnapshotInfo struct {
	// Revision is the store's revision in the snapshot.
	Revision int64
	// Size is the size of the database in bytes, without the checksum.
	Size int64
	// SHA256 is the hex-encoded sha256 of the database.
	SHA256 string
	// Endpoint is the address of the server that sent the snapshot.
	Endpoint string
}

// Snapshot writes a consistent copy of one server's database to w, followed
// by its 32-byte sha256: the snapshot file format that `catalogd restore`
// reads. progress, if not nil, is called after each chunk with the bytes
// received and the database's size. The checksum is verified: a stream that
// ends early or does not match it fails with ErrSnapshotCorrupted, and w then
// holds no trailer.
//
// Opening the stream is retried while servers are unavailable; once bytes
// were written to w it is not. Only ctx bounds the transfer
// (Config.RequestTimeout does not), since a large database takes a while.
func (c *Client) Snapshot(ctx context.Context, w io.Writer, progress func(done, total int64)) (SnapshotInfo, error) {
	open, err := c.openSnapshot(ctx)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer open.cancel()
	stream, first, from := open.stream, open.first, open.from
	if first.GetHeader() == nil || first.TotalSize <= 0 {
		return SnapshotInfo{}, fmt.Errorf("%w: the first message from %s has no header or size (total size %d)",
			ErrSnapshotCorrupted, from, first.TotalSize)
	}
	info := SnapshotInfo{Revision: first.Header.Revision, Size: first.TotalSize}
	h := sha256.New()
	out := io.MultiWriter(w, h)
	var done int64
	var serverSum []byte
	for msg := first; ; {
		// gRPC may hand out messages it buffered after ctx ended.
		if err := ctx.Err(); err != nil {
			return SnapshotInfo{}, fmt.Errorf("snapshot from %s stopped after %d of %d bytes: %w", from, done, info.Size, err)
		}
		if done+int64(len(msg.Blob)) > info.Size {
			return SnapshotInfo{}, fmt.Errorf("%w: %s sent more than the %d bytes it announced", ErrSnapshotCorrupted, from, info.Size)
		}
		if _, err := out.Write(msg.Blob); err != nil {
			return SnapshotInfo{}, fmt.Errorf("write snapshot: %w", err)
		}
		done += int64(len(msg.Blob))
		if progress != nil {
			progress(done, info.Size)
		}
		if msg.Sha256 != nil {
			serverSum = msg.Sha256
			break
		}
		msg, err = stream.Recv()
		if err == io.EOF {
			return SnapshotInfo{}, fmt.Errorf("%w: the stream from %s ended after %d of %d bytes without its checksum",
				ErrSnapshotCorrupted, from, done, info.Size)
		}
		if err != nil {
			return SnapshotInfo{}, fmt.Errorf("snapshot from %s failed after %d of %d bytes: %w", from, done, info.Size, toError(err))
		}
	}
	// The checksum ends the stream; reading on sees the server's status.
	if extra, err := stream.Recv(); err != io.EOF {
		if err == nil {
			return SnapshotInfo{}, fmt.Errorf("%w: %s sent %d more bytes after the checksum", ErrSnapshotCorrupted, from, len(extra.Blob))
		}
		return SnapshotInfo{}, fmt.Errorf("snapshot from %s failed after its checksum: %w", from, toError(err))
	}
	if done != info.Size {
		return SnapshotInfo{}, fmt.Errorf("%w: received %d of the %d bytes %s announced", ErrSnapshotCorrupted, done, info.Size, from)
	}
	sum := h.Sum(nil)
	if !bytes.Equal(sum, serverSum) {
		return SnapshotInfo{}, fmt.Errorf("%w: the %d bytes received have sha256 %x, %s says %x",
			ErrSnapshotCorrupted, done, sum, from, serverSum)
	}
	if _, err := w.Write(sum); err != nil {
		return SnapshotInfo{}, fmt.Errorf("write snapshot checksum: %w", err)
	}
	info.SHA256 = hex.EncodeToString(sum)
	info.Endpoint = from
	return info, nil
}

// An openStream is a Snapshot stream whose first message was received.
type openStream struct {
	stream grpc.ServerStreamingClient[catalogpb.SnapshotResponse]
	first  *catalogpb.SnapshotResponse
	// from is the address of the server that answers.
	from string
	// cancel ends the stream.
	cancel context.CancelFunc
}

// openSnapshot starts a Snapshot stream and reads its first message,
// retrying as a read while nothing has been received.
func (c *Client) openSnapshot(ctx context.Context) (openStream, error) {
	for try := 0; ; try++ {
		attemptCtx, cancel := context.WithCancel(ctx)
		stream, err := c.cluster.Snapshot(attemptCtx, &catalogpb.SnapshotRequest{})
		var first *catalogpb.SnapshotResponse
		if err == nil {
			first, err = stream.Recv()
		}
		if err == nil {
			from := "the server"
			if p, ok := peer.FromContext(stream.Context()); ok && p.Addr != nil {
				from = p.Addr.String()
			}
			return openStream{stream: stream, first: first, from: from, cancel: cancel}, nil
		}
		cancel()
		if err == io.EOF {
			return openStream{}, fmt.Errorf("%w: the snapshot stream ended before its first message", ErrSnapshotCorrupted)
		}
		err = toError(err)
		if try >= c.maxRetries || ctx.Err() != nil || !retryable(retryReads, err, false) {
			return openStream{}, fmt.Errorf("snapshot: %w", err)
		}
		if ctxErr := c.sleep(ctx, c.backoff(try)); ctxErr != nil {
			return openStream{}, fmt.Errorf("%w while waiting to retry after: %w", ctxErr, err)
		}
	}
}
