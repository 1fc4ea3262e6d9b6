package main

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// The fake's membership is its status's member list: changes show in both.

// memberByID returns the index of member id in f.status.Members, or -1.
func (f *fakeServer) memberByID(id uint64) int {
	return slices.IndexFunc(f.status.Members, func(m *catalogpb.Member) bool { return m.Id == id })
}

func (f *fakeServer) members() []*catalogpb.Member {
	out := make([]*catalogpb.Member, len(f.status.Members))
	for i, m := range f.status.Members {
		out[i] = proto.CloneOf(m)
	}
	return out
}

func (f *fakeServer) MemberList(context.Context, *catalogpb.MemberListRequest) (*catalogpb.MemberListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &catalogpb.MemberListResponse{Header: f.header(), Members: f.members()}, nil
}

func (f *fakeServer) MemberAdd(_ context.Context, req *catalogpb.MemberAddRequest) (*catalogpb.MemberAddResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.status.Members {
		if m.Name == req.Name || m.PeerAddr == req.PeerAddr {
			return nil, reasonError(codes.AlreadyExists, catalogpb.ErrorReason_MEMBER_EXISTS,
				"member %x already has name %q or peer address %q", m.Id, req.Name, req.PeerAddr)
		}
	}
	m := &catalogpb.Member{Id: 0xc3, Name: req.Name, PeerAddr: req.PeerAddr, IsLearner: req.IsLearner}
	f.status.Members = append(f.status.Members, m)
	return &catalogpb.MemberAddResponse{Header: f.header(), Member: proto.CloneOf(m), Members: f.members()}, nil
}

func (f *fakeServer) MemberRemove(_ context.Context, req *catalogpb.MemberRemoveRequest) (*catalogpb.MemberRemoveResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.memberByID(req.Id)
	if i < 0 {
		return nil, reasonError(codes.NotFound, catalogpb.ErrorReason_MEMBER_NOT_FOUND, "member %x is not in the cluster", req.Id)
	}
	f.status.Members = slices.Delete(f.status.Members, i, i+1)
	return &catalogpb.MemberRemoveResponse{Header: f.header(), Members: f.members()}, nil
}

func (f *fakeServer) MemberPromote(_ context.Context, req *catalogpb.MemberPromoteRequest) (*catalogpb.MemberPromoteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.memberByID(req.Id)
	if i < 0 {
		return nil, reasonError(codes.NotFound, catalogpb.ErrorReason_MEMBER_NOT_FOUND, "member %x is not in the cluster", req.Id)
	}
	if !f.status.Members[i].IsLearner {
		return nil, reasonError(codes.FailedPrecondition, catalogpb.ErrorReason_MEMBER_NOT_LEARNER, "member %x is already a voter", req.Id)
	}
	f.status.Members[i].IsLearner = false
	return &catalogpb.MemberPromoteResponse{Header: f.header(), Members: f.members()}, nil
}

func (f *fakeServer) MoveLeader(_ context.Context, req *catalogpb.MoveLeaderRequest) (*catalogpb.MoveLeaderResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.memberByID(req.TargetId)
	if i < 0 {
		return nil, reasonError(codes.NotFound, catalogpb.ErrorReason_MEMBER_NOT_FOUND, "member %x is not in the cluster", req.TargetId)
	}
	for _, m := range f.status.Members {
		m.IsLeader = m.Id == req.TargetId
	}
	f.status.Leader = req.TargetId
	return &catalogpb.MoveLeaderResponse{Header: f.header()}, nil
}

func (f *fakeServer) memberSnapshot() []*catalogpb.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.members()
}

func TestMemberList(t *testing.T) {
	f := startFake(t, memberStatus("n1", 0xa1))
	r := catctl(t, nil, "--endpoints", f.addr, "member", "list")
	if r.code != exitOK {
		t.Fatalf("member list: %+v", r)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`ID\s+NAME\s+PEER ADDR\s+CLIENT ADDR\s+LEADER\s+LEARNER\s+HEALTHY\n`),
		regexp.MustCompile(`a1\s+n1\s+10.0.0.1:7401\s+10.0.0.1:7400\s+true\s+false\s+true\n`),
		regexp.MustCompile(`b2\s+n2\s+10.0.0.2:7401\s+10.0.0.2:7400\s+false\s+true\s+false\n`),
	} {
		if !want.MatchString(r.stdout) {
			t.Errorf("output does not match %s:\n%s", want, r.stdout)
		}
	}

	r = catctl(t, nil, "--endpoints", f.addr, "-o", "json", "member", "list")
	var got struct {
		Header struct {
			MemberID string `json:"memberId"`
		}
		Members []struct {
			ID        string `json:"id"`
			Name      string
			IsLearner bool `json:"isLearner"`
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
		t.Fatalf("member list -o json: %+v (%v)", r, err)
	}
	if len(got.Members) != 2 || got.Members[0].ID != "161" || got.Members[1].Name != "n2" || !got.Members[1].IsLearner {
		t.Errorf("decoded %+v", got)
	}
}

func TestMemberChanges(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// want matches stdout; check looks at the fake's members afterwards.
		want  string
		check func(ms []*catalogpb.Member) bool
	}{
		{"add voter", []string{"member", "add", "n3", "--peer-addr", "10.0.0.3:7401"},
			`Member c3 added to the cluster as a voter: n3 \(10.0.0.3:7401\)\n\nID\s+NAME.*\n(.*\n){2}c3\s+n3\s+10.0.0.3:7401\s+false\s+false\s+false\n`,
			func(ms []*catalogpb.Member) bool { return len(ms) == 3 && ms[2].Name == "n3" && !ms[2].IsLearner }},
		{"add learner", []string{"member", "add", "n3", "--peer-addr", "10.0.0.3:7401", "--learner"},
			`Member c3 added to the cluster as a learner: n3`,
			func(ms []*catalogpb.Member) bool { return len(ms) == 3 && ms[2].IsLearner }},
		{"remove by id", []string{"member", "remove", "b2"}, `Member b2 \(n2\) removed from the cluster\n`,
			func(ms []*catalogpb.Member) bool { return len(ms) == 1 && ms[0].Id == 0xa1 }},
		{"remove by 0x id", []string{"member", "remove", "0xB2"}, `Member b2 \(n2\) removed`,
			func(ms []*catalogpb.Member) bool { return len(ms) == 1 }},
		{"remove by name", []string{"member", "remove", "n2"}, `Member b2 \(n2\) removed`,
			func(ms []*catalogpb.Member) bool { return len(ms) == 1 && ms[0].Id == 0xa1 }},
		{"promote", []string{"member", "promote", "n2"}, `Member b2 \(n2\) promoted to voter\n`,
			func(ms []*catalogpb.Member) bool { return !ms[1].IsLearner }},
		{"move leader", []string{"member", "move-leader", "b2"}, `^Leadership moved to member b2 \(n2\)\n$`,
			func(ms []*catalogpb.Member) bool { return ms[1].IsLeader && !ms[0].IsLeader }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, memberStatus("n1", 0xa1))
			r := catctl(t, nil, append([]string{"--endpoints", f.addr}, tt.args...)...)
			if r.code != exitOK {
				t.Fatalf("catctl %v: %+v", tt.args, r)
			}
			if !regexp.MustCompile(tt.want).MatchString(r.stdout) {
				t.Errorf("output does not match %s:\n%s", tt.want, r.stdout)
			}
			if ms := f.memberSnapshot(); !tt.check(ms) {
				t.Errorf("members afterwards: %v", ms)
			}
		})
	}
}

func TestMemberChangeJSON(t *testing.T) {
	f := startFake(t, memberStatus("n1", 0xa1))
	r := catctl(t, nil, "--endpoints", f.addr, "-o", "json", "member", "add", "n3", "--peer-addr", "10.0.0.3:7401", "--learner")
	var got struct {
		Member struct {
			ID        string `json:"id"`
			IsLearner bool   `json:"isLearner"`
		}
		Members []json.RawMessage
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
		t.Fatalf("member add -o json: %+v (%v)", r, err)
	}
	if got.Member.ID != "195" || !got.Member.IsLearner || len(got.Members) != 3 {
		t.Errorf("decoded %+v", got)
	}
}

func TestMemberErrors(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(f *fakeServer)
		args   []string
		code   int
		stderr string
	}{
		{"unknown id", nil, []string{"member", "remove", "ff"}, exitError,
			`no member has id ff or name "ff" (members: a1 (n1), b2 (n2))`},
		{"unknown name", nil, []string{"member", "promote", "n9"}, exitError,
			`no member is named "n9" (members: a1 (n1), b2 (n2))`},
		{"name that is another member's id", func(f *fakeServer) { f.status.Members[0].Name = "b2" }, []string{"member", "remove", "b2"}, exitError,
			`"b2" is the name of member a1 and the id of member b2 (n2): give the id of the one you mean`},
		{"refused by the server", nil, []string{"member", "promote", "a1"}, exitError,
			"promote member a1 (n1): member a1 is already a voter"},
		{"member exists", nil, []string{"member", "add", "n2", "--peer-addr", "10.0.0.9:7401"}, exitError,
			`member b2 already has name "n2"`},
		{"add without peer address", nil, []string{"member", "add", "n3"}, exitError,
			"--peer-addr HOST:PORT is required"},
		{"bad peer address", nil, []string{"member", "add", "n3", "--peer-addr", "10.0.0.3"}, exitError,
			`peer address "10.0.0.3" must be host:port`},
		{"missing id", nil, []string{"member", "remove"}, exitError,
			"takes 1 argument (ID), got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, memberStatus("n1", 0xa1))
			if tt.setup != nil {
				tt.setup(f)
			}
			r := catctl(t, nil, append([]string{"--endpoints", f.addr}, tt.args...)...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("catctl %v: exit %d, stderr %q; want exit %d and %q", tt.args, r.code, r.stderr, tt.code, tt.stderr)
			}
		})
	}

	t.Run("no server", func(t *testing.T) {
		r := catctl(t, nil, "--endpoints", deadEndpoint(t), "--command-timeout", "1s", "member", "list")
		if r.code != exitUnavailable {
			t.Errorf("member list without a server: exit %d, want %d; stderr %q", r.code, exitUnavailable, r.stderr)
		}
	})
}
