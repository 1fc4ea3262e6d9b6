package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/consensus"
)

// Membership changes run on the leader: the one place that knows which
// members answer and whether a change is still pending. Any other member
// forwards the request there.
const (
	// maxLearners bounds the learners at a time (etcd's default): each one
	// costs the leader a snapshot and a log stream.
	maxLearners = 1
	// learnerMaxLag is how many entries a learner may trail the leader by and
	// still count as caught up (for promotion).
	learnerMaxLag = 1000
	// autoPromoteInterval is how often the leader looks for caught-up learners.
	autoPromoteInterval = 500 * time.Millisecond
	// forwardedKey marks a request a member forwarded to the leader, so that
	// it is never forwarded again (a leader change mid-way gets NO_LEADER and
	// the client retries).
	forwardedKey = "catalogd-forwarded"
	// joinTimeout bounds how long a joining server keeps asking to be added.
	joinTimeout = 30 * time.Second
)

// Membership errors; errorTable maps them to codes and reasons.
var (
	errMemberNotFound   = errors.New("server: member not found")
	errMemberExists     = errors.New("server: member already exists")
	errMemberNotLearner = errors.New("server: member is not a learner")
	errLearnerNotReady  = errors.New("server: learner has not caught up with the leader")
	errUnhealthyCluster = errors.New("server: the change would leave the cluster without a healthy quorum")
	errChangeInProgress = errors.New("server: another membership change is in progress")
	errTooManyLearners  = errors.New("server: too many learners")
	errInvalidMember    = errors.New("server: invalid member")
)

var memberNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (c *clusterService) MemberList(ctx context.Context, req *catalogpb.MemberListRequest) (*catalogpb.MemberListResponse, error) {
	if !req.GetSerializable() {
		if err := c.s.linearize(ctx); err != nil {
			return nil, toGRPCError(err)
		}
	}
	st, err := c.s.status(ctx)
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &catalogpb.MemberListResponse{Header: st.Header, Members: st.Members}, nil
}

func (c *clusterService) MemberAdd(ctx context.Context, req *catalogpb.MemberAddRequest) (*catalogpb.MemberAddResponse, error) {
	if err := validateMemberAdd(req); err != nil {
		return nil, toGRPCError(err)
	}
	if leader, fctx, err := c.s.forward(ctx); err != nil || leader != nil {
		if err != nil {
			return nil, toGRPCError(err)
		}
		return leader.MemberAdd(fctx, req)
	}
	resp, err := c.s.memberAdd(ctx, req)
	return resp, toGRPCError(err)
}

func (c *clusterService) MemberRemove(ctx context.Context, req *catalogpb.MemberRemoveRequest) (*catalogpb.MemberRemoveResponse, error) {
	if leader, fctx, err := c.s.forward(ctx); err != nil || leader != nil {
		if err != nil {
			return nil, toGRPCError(err)
		}
		return leader.MemberRemove(fctx, req)
	}
	if req.GetId() == c.s.id && c.s.isLeader() {
		// The leader hands over first: the others then need no election
		// once it is gone.
		if err := c.s.handOver(ctx, 0); err != nil {
			return nil, toGRPCError(err)
		}
		// Ask the new leader, even if this request was forwarded here.
		return c.MemberRemove(metadata.NewIncomingContext(ctx, metadata.MD{}), req)
	}
	members, err := c.s.memberRemove(ctx, req.GetId())
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &catalogpb.MemberRemoveResponse{Header: c.s.header(c.s.sm.Revision()), Members: members}, nil
}

func (c *clusterService) MemberPromote(ctx context.Context, req *catalogpb.MemberPromoteRequest) (*catalogpb.MemberPromoteResponse, error) {
	if leader, fctx, err := c.s.forward(ctx); err != nil || leader != nil {
		if err != nil {
			return nil, toGRPCError(err)
		}
		return leader.MemberPromote(fctx, req)
	}
	members, err := c.s.memberPromote(ctx, req.GetId())
	if err != nil {
		return nil, toGRPCError(err)
	}
	return &catalogpb.MemberPromoteResponse{Header: c.s.header(c.s.sm.Revision()), Members: members}, nil
}

func (c *clusterService) MoveLeader(ctx context.Context, req *catalogpb.MoveLeaderRequest) (*catalogpb.MoveLeaderResponse, error) {
	if leader, fctx, err := c.s.forward(ctx); err != nil || leader != nil {
		if err != nil {
			return nil, toGRPCError(err)
		}
		return leader.MoveLeader(fctx, req)
	}
	if err := c.s.handOver(ctx, req.GetTargetId()); err != nil {
		return nil, toGRPCError(err)
	}
	return &catalogpb.MoveLeaderResponse{Header: c.s.header(c.s.sm.Revision())}, nil
}

func validateMemberAdd(req *catalogpb.MemberAddRequest) error {
	if !memberNameRE.MatchString(req.GetName()) {
		return fmt.Errorf("%w: name %q must be 1..63 letters, digits, '.', '_' or '-', starting with a letter or digit", errInvalidMember, req.GetName())
	}
	host, port, err := net.SplitHostPort(req.GetPeerAddr())
	if err != nil || port == "" {
		return fmt.Errorf("%w: peer address %q must be host:port", errInvalidMember, req.GetPeerAddr())
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%w: peer address %q is not reachable by other members: give the address they should dial", errInvalidMember, req.GetPeerAddr())
	}
	return nil
}

func (s *Server) isLeader() bool { return s.node.Leader() == s.id }

// forward returns a client of the leader and the context to call it with
// when this member is not the leader, or nil when it is.
func (s *Server) forward(ctx context.Context) (catalogpb.ClusterClient, context.Context, error) {
	if s.isLeader() {
		return nil, nil, nil
	}
	conn, fctx, _, err := s.leaderConn(ctx)
	if err != nil {
		return nil, nil, err
	}
	return catalogpb.NewClusterClient(conn), fctx, nil
}

// clientConns caches gRPC connections to other members' client addresses.
type clientConns struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (c *clientConns) get(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[addr]; ok {
		return conn, nil
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	if c.conns == nil {
		c.conns = make(map[string]*grpc.ClientConn)
	}
	c.conns[addr] = conn
	return conn, nil
}

func (c *clientConns) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, conn := range c.conns {
		conn.Close()
		delete(c.conns, addr)
	}
}

// health is the leader's view of the voters: how many there are and how many
// answered within the last election timeout (the leader counts itself).
type health struct {
	st       raft.Status
	voters   int
	healthy  int
	learners int
}

func (s *Server) health() health {
	// A new leader learns which voters answer from their answers to its
	// first appends: until each voter answered, or an election timeout of
	// its term passed, its view says too little (a leader just handed
	// leadership over asks at once). Wait for it.
	settled := s.node.LeaderSince().Add(s.cfg.ElectionTimeout())
	for {
		h := s.healthNow()
		if h.healthy == h.voters || !time.Now().Before(settled) {
			return h
		}
		time.Sleep(s.cfg.TickInterval / 4)
	}
}

func (s *Server) healthNow() health {
	h := health{st: s.node.Status().Status}
	for id, pr := range h.st.Progress {
		if pr.IsLearner {
			h.learners++
			continue
		}
		h.voters++
		if id == s.id || pr.RecentActive {
			h.healthy++
		}
	}
	return h
}

func quorum(voters int) int { return voters/2 + 1 }

// checkQuorum refuses a change after which fewer healthy voters than a
// quorum would remain. healthyDelta and votersDelta describe the change.
func (h health) checkQuorum(what string, votersDelta, healthyDelta int) error {
	v, ok := h.voters+votersDelta, h.healthy+healthyDelta
	if v < 1 {
		return fmt.Errorf("%w: %s would leave no voter", errUnhealthyCluster, what)
	}
	if ok < quorum(v) {
		return fmt.Errorf("%w: %s would leave %d healthy of %d voters, below the quorum of %d; bring the unhealthy members back first",
			errUnhealthyCluster, what, ok, v, quorum(v))
	}
	return nil
}

// pendingChange refuses a change while one proposed by an earlier leader is
// not applied yet (raft would drop the new one).
func (s *Server) pendingChange() error {
	if s.node.PendingConfChange() {
		return fmt.Errorf("%w: an earlier change is not applied yet; retry shortly", errChangeInProgress)
	}
	return nil
}

// proposeConfChange replicates cc and waits for it to apply.
func (s *Server) proposeConfChange(ctx context.Context, cc raftpb.ConfChange) error {
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	_, err := s.node.ProposeConfChange(ctx, cc)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w: the change was not applied within the request's deadline (another change may have been pending); check the member list",
			errChangeInProgress)
	}
	return err
}

func (s *Server) memberAdd(ctx context.Context, req *catalogpb.MemberAddRequest) (*catalogpb.MemberAddResponse, error) {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	members, err := s.sm.members()
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if m.Name != req.GetName() && m.PeerAddr != req.GetPeerAddr() {
			continue
		}
		if m.Name == req.GetName() && m.PeerAddr == req.GetPeerAddr() && m.ClientAddr == "" {
			// A member added (by catctl member add, or by a joining server
			// that crashed before it started) and never started: the server
			// joining as it gets that member.
			return s.memberAddResponse(ctx, m.ID)
		}
		return nil, fmt.Errorf("%w: member %x is already named %q with peer address %s; names and peer addresses must be unique (remove it first to replace it)",
			errMemberExists, m.ID, m.Name, m.PeerAddr)
	}
	if err := s.pendingChange(); err != nil {
		return nil, err
	}
	h := s.health()
	typ := raftpb.ConfChangeAddNode
	if req.GetIsLearner() {
		typ = raftpb.ConfChangeAddLearnerNode
		if h.learners >= maxLearners {
			return nil, fmt.Errorf("%w: the cluster has %d learner(s), at most %d at a time; promote or remove it first", errTooManyLearners, h.learners, maxLearners)
		}
	} else if err := h.checkQuorum(fmt.Sprintf("adding voter %q (not running yet)", req.GetName()), 1, 0); err != nil {
		return nil, err
	}
	id := s.newMemberID(req.GetName(), req.GetPeerAddr(), members)
	pctx, _ := json.Marshal(consensus.Peer{ID: id, Name: req.GetName(), Addr: req.GetPeerAddr()})
	if err := s.proposeConfChange(ctx, raftpb.ConfChange{Type: typ, NodeID: id, Context: pctx}); err != nil {
		return nil, err
	}
	s.lg.Info("member added", "id", fmt.Sprintf("%x", id), "name", req.GetName(), "peer", req.GetPeerAddr(), "learner", req.GetIsLearner())
	return s.memberAddResponse(ctx, id)
}

func (s *Server) memberAddResponse(ctx context.Context, id uint64) (*catalogpb.MemberAddResponse, error) {
	st, err := s.status(ctx)
	if err != nil {
		return nil, err
	}
	resp := &catalogpb.MemberAddResponse{Header: st.Header, Members: st.Members}
	for _, m := range st.Members {
		if m.Id == id {
			resp.Member = m
		}
	}
	if resp.Member == nil {
		return nil, fmt.Errorf("member %x was added but is missing from the member list", id)
	}
	return resp, nil
}

// newMemberID gives an added member an id of its own: from its name, peer
// address and the time, so that a server added back after its removal is a
// new member (raft must never mistake it for the removed one). Its low 16
// bits must differ from every member's (request ids carry them).
func (s *Server) newMemberID(name, peerAddr string, members []member) uint64 {
	removed, _ := s.sm.RemovedMembers()
	taken := map[uint64]bool{}
	for _, m := range members {
		taken[m.ID&0xffff] = true
	}
	for salt := time.Now().UnixNano(); ; salt++ {
		h := fnv.New64a()
		fmt.Fprintf(h, "catalogd-member\x00%s\x00%s\x00%d", name, peerAddr, salt)
		id := h.Sum64()
		clash := id == 0 || taken[id&0xffff]
		for _, r := range removed {
			clash = clash || r == id
		}
		if !clash {
			return id
		}
	}
}

func (s *Server) memberByID(id uint64) (member, error) {
	members, err := s.sm.members()
	if err != nil {
		return member{}, err
	}
	for _, m := range members {
		if m.ID == id {
			return m, nil
		}
	}
	return member{}, fmt.Errorf("%w: %x is not a member (see catctl member list)", errMemberNotFound, id)
}

func (s *Server) memberRemove(ctx context.Context, id uint64) ([]*catalogpb.Member, error) {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	m, err := s.memberByID(id)
	if err != nil {
		return nil, err
	}
	if err := s.pendingChange(); err != nil {
		return nil, err
	}
	h := s.health()
	if pr, ok := h.st.Progress[id]; ok && !pr.IsLearner {
		healthyDelta := 0
		if id == s.id || pr.RecentActive {
			healthyDelta = -1
		}
		if err := h.checkQuorum(fmt.Sprintf("removing member %x (%s)", id, m.Name), -1, healthyDelta); err != nil {
			return nil, err
		}
	}
	if err := s.proposeConfChange(ctx, raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: id}); err != nil {
		return nil, err
	}
	s.lg.Info("member removed", "id", fmt.Sprintf("%x", id), "name", m.Name)
	st, err := s.status(ctx)
	if err != nil {
		return nil, err
	}
	return st.Members, nil
}

func (s *Server) memberPromote(ctx context.Context, id uint64) ([]*catalogpb.Member, error) {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	m, err := s.memberByID(id)
	if err != nil {
		return nil, err
	}
	h := s.health()
	pr, ok := h.st.Progress[id]
	if !ok || !pr.IsLearner {
		return nil, fmt.Errorf("%w: member %x (%s) is already a voter", errMemberNotLearner, id, m.Name)
	}
	if err := learnerReady(h.st, pr); err != nil {
		return nil, fmt.Errorf("%w: learner %x (%s) %v", errLearnerNotReady, id, m.Name, err)
	}
	if err := s.pendingChange(); err != nil {
		return nil, err
	}
	if err := h.checkQuorum(fmt.Sprintf("promoting learner %x (%s)", id, m.Name), 1, 1); err != nil {
		return nil, err
	}
	pctx, _ := json.Marshal(consensus.Peer{ID: id, Name: m.Name, Addr: m.PeerAddr})
	if err := s.proposeConfChange(ctx, raftpb.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: id, Context: pctx}); err != nil {
		return nil, err
	}
	s.lg.Info("learner promoted to voter", "id", fmt.Sprintf("%x", id), "name", m.Name)
	st, err := s.status(ctx)
	if err != nil {
		return nil, err
	}
	return st.Members, nil
}

// learnerReady says why a learner cannot be promoted yet, or nil.
func learnerReady(st raft.Status, pr tracker.Progress) error {
	if !pr.RecentActive {
		return errors.New("has not answered the leader recently")
	}
	if pr.State != tracker.StateReplicate {
		return fmt.Errorf("is still being caught up (%s)", pr.State)
	}
	leaderMatch := st.Progress[st.ID].Match
	if pr.Match+learnerMaxLag < leaderMatch {
		return fmt.Errorf("holds %d of %d entries (more than %d behind)", pr.Match, leaderMatch, learnerMaxLag)
	}
	return nil
}

// autoPromote promotes caught-up learners while this member leads.
func (s *Server) autoPromote() {
	t := time.NewTicker(autoPromoteInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopc:
			return
		case <-t.C:
		}
		if !s.isLeader() {
			continue
		}
		st := s.node.Status().Status
		for id, pr := range st.Progress {
			if !pr.IsLearner || learnerReady(st, pr) != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
			if _, err := s.memberPromote(ctx, id); err != nil {
				s.lg.Warn("automatic promotion of learner failed", "id", fmt.Sprintf("%x", id), "err", err)
			}
			cancel()
		}
	}
}

// handOver moves leadership from this member (the leader) to target, or to
// the most caught-up healthy voter when target is 0.
func (s *Server) handOver(ctx context.Context, target uint64) error {
	if target == s.id {
		return nil
	}
	if target != 0 {
		h := s.health()
		pr, ok := h.st.Progress[target]
		if !ok {
			return fmt.Errorf("%w: %x is not a member (see catctl member list)", errMemberNotFound, target)
		}
		if pr.IsLearner {
			return fmt.Errorf("%w: %x is a learner; only voters can lead", errInvalidMember, target)
		}
		if !pr.RecentActive {
			return fmt.Errorf("%w: %x has not answered the leader recently", errUnhealthyCluster, target)
		}
	}
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	if err := s.node.TransferLeadershipTo(ctx, target); err != nil {
		return fmt.Errorf("%w: %v", consensus.ErrTimeout, err)
	}
	return nil
}

// joinInfo is what a server started with --join learned when it was added;
// it is kept in the data dir, so that a restart uses the same identity.
type joinInfo struct {
	MemberID  uint64           `json:"member_id"`
	ClusterID uint64           `json:"cluster_id"`
	Members   []consensus.Peer `json:"members"`
}

func joinInfoPath(dataDir string) string { return filepath.Join(dataDir, "member", "join.json") }

func readJoinInfo(dataDir string) (*joinInfo, error) {
	raw, err := os.ReadFile(joinInfoPath(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var info joinInfo
	if err := json.Unmarshal(raw, &info); err != nil || info.MemberID == 0 {
		return nil, fmt.Errorf("%s is damaged (%v): empty the data dir and join again", joinInfoPath(dataDir), err)
	}
	return &info, nil
}

func writeJoinInfo(dataDir string, info *joinInfo) error {
	path := joinInfoPath(dataDir)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(info, "", "  ")
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// joinCluster asks the member at cfg.Join to add this server as a learner.
func joinCluster(ctx context.Context, cfg Config, lg *slog.Logger) (*joinInfo, error) {
	conn, err := grpc.NewClient(cfg.Join, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("--join %s: %w", cfg.Join, err)
	}
	defer conn.Close()
	client := catalogpb.NewClusterClient(conn)
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	req := &catalogpb.MemberAddRequest{Name: cfg.Name, PeerAddr: cfg.PeerAddr, IsLearner: true}
	var lastErr error
	for {
		actx, acancel := context.WithTimeout(ctx, cfg.RequestTimeout)
		resp, err := client.MemberAdd(actx, req)
		acancel()
		if err == nil {
			info := &joinInfo{MemberID: resp.GetMember().GetId(), ClusterID: resp.GetHeader().GetClusterId()}
			for _, m := range resp.GetMembers() {
				info.Members = append(info.Members, consensus.Peer{ID: m.GetId(), Name: m.GetName(), Addr: m.GetPeerAddr()})
			}
			lg.Info("added to the cluster as a learner", "via", cfg.Join, "id", fmt.Sprintf("%x", info.MemberID), "cluster", fmt.Sprintf("%x", info.ClusterID))
			return info, nil
		}
		lastErr = err
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
		default:
			return nil, fmt.Errorf("--join %s: the cluster refused to add %q: %s", cfg.Join, cfg.Name, status.Convert(err).Message())
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("--join %s: not added within %v: %v", cfg.Join, joinTimeout, lastErr)
		case <-time.After(300 * time.Millisecond):
		}
	}
}
