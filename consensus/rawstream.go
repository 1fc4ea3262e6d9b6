package consensus

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/catalogd/catalogd/api/catalogpb"
	"go.etcd.io/raft/v3/raftpb"
)

// Raft messages travel on a plain TCP stream per peer, on the peer port
// beside the gRPC server that carries snapshots: a gRPC stream costs two
// goroutine hand-offs and HTTP/2 framing per message on each side, which
// on a busy member was about as much CPU as raft, the WAL and apply
// together. The stream is one way, sender to receiver:
//
//	sender:   streamMagic, frame(RaftBatch envelope: cluster, from, to),
//	          then frame(RaftBatch with messages)...
//	receiver: frame(google.rpc.Status): OK once the envelope is accepted,
//	          or the refusal; later at most one more, the reason it ends
//	          the stream, before it closes.
//
// A frame is a 4-byte big-endian length and that many bytes, at most
// MaxMessageSize.
const streamMagic = "CATRAFT1"

// frameHeader is the length prefix of a frame.
const frameHeader = 4

// errFrameTooLarge means a frame announced more than MaxMessageSize bytes.
var errFrameTooLarge = errors.New("frame larger than the transport carries")

func writeFrame(w *bufio.Writer, b []byte) error {
	var h [frameHeader]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(b)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// readFrame reads one frame into buf (grown as needed) and returns it.
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return buf, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > MaxMessageSize {
		return buf, fmt.Errorf("%w: %d bytes, at most %d", errFrameTooLarge, n, MaxMessageSize)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	return buf, err
}

// Serve serves the peer port: raft streams (they start with streamMagic)
// here, every other connection to s, the peer gRPC server (snapshots), which
// must have been created with ServerOptions and Registered. It returns when
// s stops (s.Stop closes ln), with s.Serve's error; the raft streams it
// received end then too, as they do when the transport stops.
func (t *GRPCTransport) Serve(ln net.Listener, s *grpc.Server) error {
	ctx, cancel := context.WithCancel(t.ctx)
	defer cancel()
	grpcLn := &chanListener{Listener: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				grpcLn.fail(err)
				return
			}
			go t.sniff(ctx, c, grpcLn)
		}
	}()
	return s.Serve(grpcLn)
}

// sniffTimeout bounds the wait for a new connection's first bytes.
const sniffTimeout = 10 * time.Second

// sniff hands c to the raft stream or to the gRPC server, by its first bytes.
func (t *GRPCTransport) sniff(ctx context.Context, c net.Conn, grpcLn *chanListener) {
	br := bufio.NewReaderSize(c, 64<<10)
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	head, err := br.Peek(len(streamMagic))
	_ = c.SetReadDeadline(time.Time{})
	if err == nil && string(head) == streamMagic {
		_, _ = br.Discard(len(streamMagic))
		t.serveStream(ctx, c, br)
		return
	}
	if err != nil && len(head) == 0 {
		c.Close()
		return
	}
	// gRPC's connection starts with the HTTP/2 preface: give it what was
	// read so far, then the rest.
	grpcLn.hand(&peekedConn{Conn: c, r: br})
}

// serveStream receives one peer's raft stream (streamMagic read) and
// delivers its messages to the Handler, in order, until the stream ends or
// ctx (Serve's) is cancelled.
func (t *GRPCTransport) serveStream(ctx context.Context, c net.Conn, br *bufio.Reader) {
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopClosing := context.AfterFunc(ctx, func() { c.Close() })
	defer stopClosing()
	bw := bufio.NewWriter(c)
	answer := func(err error) {
		st := status.Convert(err)
		b, merr := proto.Marshal(st.Proto())
		if merr != nil {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(t.writeTimeout))
		if writeFrame(bw, b) == nil {
			_ = bw.Flush()
		}
	}
	buf, err := readFrame(br, nil)
	if err != nil {
		return
	}
	var env catalogpb.RaftBatch
	if err := proto.Unmarshal(buf, &env); err != nil {
		answer(status.Errorf(codes.InvalidArgument, "raft stream envelope is not a RaftBatch: %v", err))
		return
	}
	if err := t.checkEnvelope(env.GetClusterId(), env.GetFrom(), env.GetTo()); err != nil {
		answer(err)
		return
	}
	answer(nil)
	var batch catalogpb.RaftBatch
	var m raftpb.Message
	for {
		if buf, err = readFrame(br, buf); err != nil {
			if errors.Is(err, errFrameTooLarge) {
				answer(status.Errorf(codes.ResourceExhausted, "raft batch from member %s: %v", fmtID(env.GetFrom()), err))
			}
			return
		}
		batch.Reset()
		if err := proto.Unmarshal(buf, &batch); err != nil {
			answer(status.Errorf(codes.InvalidArgument, "raft batch from member %s is not a RaftBatch: %v", fmtID(env.GetFrom()), err))
			return
		}
		t.batchesReceived.Add(1)
		for i, raw := range batch.GetMsgs() {
			m = raftpb.Message{}
			if err := m.Unmarshal(raw); err != nil {
				answer(status.Errorf(codes.InvalidArgument,
					"message %d of batch from member %s is not a raft message: %v", i, fmtID(env.GetFrom()), err))
				return
			}
			if err := t.process(ctx, m); err != nil {
				answer(err)
				return
			}
		}
	}
}

// A chanListener is the gRPC server's listener: the connections sniff
// handed over.
type chanListener struct {
	net.Listener // the peer port's listener: Addr, and Close
	conns        chan net.Conn
	once         sync.Once
	done         chan struct{}
	err          error
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// hand gives c to the gRPC server, or closes it if the listener is closed.
func (l *chanListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// fail ends Accept with err (the peer port's listener failed or closed).
func (l *chanListener) fail(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

func (l *chanListener) Close() error {
	l.fail(net.ErrClosed)
	return l.Listener.Close()
}

// A peekedConn reads first what sniff buffered.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// openStream dials the peer's raft stream and sends the envelope.
func (p *peer) openStream(ctx context.Context) (net.Conn, *bufio.Writer, error) {
	d := net.Dialer{
		Timeout: p.t.cfg.DialTimeout,
		// A peer that vanished (host gone, cable cut) is noticed within
		// seconds even while there is nothing to send.
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: peerKeepaliveTime, Interval: peerKeepaliveTimeout, Count: 1},
	}
	c, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, nil, err
	}
	env, err := proto.Marshal(&catalogpb.RaftBatch{ClusterId: p.t.cfg.ClusterID, From: p.t.cfg.ID, To: p.id})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	bw := bufio.NewWriterSize(c, 64<<10)
	_ = c.SetWriteDeadline(time.Now().Add(p.t.writeTimeout))
	_, err = bw.WriteString(streamMagic)
	if err == nil {
		err = writeFrame(bw, env)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("send raft stream envelope: %w", err)
	}
	return c, bw, nil
}

// readAnswers reads what the receiver says on c: an accepted envelope, then
// the reason it ends the stream, as an error (status codes as gRPC's).
func readAnswers(c net.Conn) error {
	br := bufio.NewReader(c)
	var buf []byte
	for {
		var err error
		if buf, err = readFrame(br, buf); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("peer closed the raft stream")
			}
			return err
		}
		var st spb.Status
		if err := proto.Unmarshal(buf, &st); err != nil {
			return fmt.Errorf("undecodable answer on the raft stream: %w", err)
		}
		if st.GetCode() != int32(codes.OK) {
			return status.ErrorProto(&st)
		}
	}
}
