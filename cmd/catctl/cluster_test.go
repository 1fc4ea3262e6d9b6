package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/catalogd/catalogd/api/catalogpb"
)

func testMembers() []*catalogpb.Member {
	return []*catalogpb.Member{
		{Id: 0xa1, Name: "n1", PeerAddr: "10.0.0.1:7401", ClientAddr: "10.0.0.1:7400", IsLeader: true, Healthy: true},
		{Id: 0xb2, Name: "n2", PeerAddr: "10.0.0.2:7401", ClientAddr: "10.0.0.2:7400", Healthy: false, IsLearner: true},
	}
}

func memberStatus(name string, id uint64) *catalogpb.StatusResponse {
	return &catalogpb.StatusResponse{
		Header: &catalogpb.ResponseHeader{ClusterId: 9, MemberId: id, Revision: 42, RaftTerm: 3},
		Name:   name, Leader: 0xa1, Term: 3, CommitIndex: 100, AppliedIndex: 99, Revision: 42,
		DbSize: 2_500_000, Members: testMembers(),
	}
}

func TestClusterStatus(t *testing.T) {
	leader := startFake(t, memberStatus("n1", 0xa1))
	follower := startFake(t, memberStatus("n2", 0xb2))
	// The follower's view differs, so the test sees whose member list is shown.
	follower.status.Members = follower.status.Members[1:]

	t.Run("table", func(t *testing.T) {
		r := catctl(t, nil, "--endpoints", follower.addr+","+leader.addr, "cluster", "status")
		if r.code != exitOK {
			t.Fatalf("cluster status: %+v, want exit 0", r)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`ENDPOINT\s+NAME\s+ID\s+IS LEADER\s+TERM\s+RAFT INDEX\s+APPLIED\s+REVISION\s+DB SIZE\s+MEMBERS\n`),
			regexp.MustCompile(regexp.QuoteMeta(follower.addr) + `\s+n2\s+b2\s+false\s+3\s+100\s+99\s+42\s+2.5 MB\s+1\n`),
			regexp.MustCompile(regexp.QuoteMeta(leader.addr) + `\s+n1\s+a1\s+true\s+3\s+100\s+99\s+42\s+2.5 MB\s+2\n`),
			regexp.MustCompile(`Members as seen by n1 \(` + regexp.QuoteMeta(leader.addr) + `\):\n`),
			regexp.MustCompile(`ID\s+NAME\s+PEER ADDR\s+CLIENT ADDR\s+LEADER\s+LEARNER\s+HEALTHY\n`),
			regexp.MustCompile(`a1\s+n1\s+10.0.0.1:7401\s+10.0.0.1:7400\s+true\s+false\s+true\n`),
			regexp.MustCompile(`b2\s+n2\s+10.0.0.2:7401\s+10.0.0.2:7400\s+false\s+true\s+false\n`),
		} {
			if !want.MatchString(r.stdout) {
				t.Errorf("output does not match %s:\n%s", want, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "ERROR") {
			t.Errorf("output has an ERROR column though every endpoint answered:\n%s", r.stdout)
		}
	})

	t.Run("unreachable endpoint is shown with its error", func(t *testing.T) {
		dead := deadEndpoint(t)
		r := catctl(t, nil, "--endpoints", dead+","+follower.addr, "--command-timeout", "2s", "cluster", "status")
		if r.code != exitError {
			t.Errorf("exit code %d, want %d when some endpoints did not answer", r.code, exitError)
		}
		if !regexp.MustCompile(`MEMBERS\s+ERROR\n`).MatchString(r.stdout) ||
			!regexp.MustCompile(regexp.QuoteMeta(dead)+`(\s+-){9}\s+.*connection refused`).MatchString(r.stdout) {
			t.Errorf("output does not show the dead endpoint's error:\n%s", r.stdout)
		}
		if !strings.Contains(r.stdout, "Members as seen by n2") {
			t.Errorf("without the leader, members should come from the first answer:\n%s", r.stdout)
		}
		if !strings.Contains(r.stderr, "1 of 2 endpoints did not answer") {
			t.Errorf("stderr = %q, want the number of endpoints that did not answer", r.stderr)
		}
	})

	t.Run("no endpoint answers", func(t *testing.T) {
		stopping := startFake(t, nil)
		r := catctl(t, nil, "--endpoints", stopping.addr, "cluster", "status")
		if r.code != exitUnavailable || !strings.Contains(r.stderr, "server is stopping") {
			t.Errorf("cluster status of a stopping server: %+v, want exit %d and its message", r, exitUnavailable)
		}
	})

	t.Run("json", func(t *testing.T) {
		r := catctl(t, nil, "--endpoints", leader.addr+","+follower.addr, "-o", "json", "cluster", "status")
		var got []struct {
			Endpoint string
			Status   struct {
				Name    string
				Leader  string
				Members []struct{ Name string }
			}
			Error string
		}
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
			t.Fatalf("cluster status -o json: %+v (%v)", r, err)
		}
		if len(got) != 2 || got[0].Endpoint != leader.addr || got[0].Status.Name != "n1" || got[0].Status.Leader != "161" ||
			len(got[0].Status.Members) != 2 || got[1].Status.Name != "n2" || got[1].Error != "" {
			t.Errorf("decoded %+v, want n1 (leader 161, 2 members) then n2", got)
		}
	})
}
