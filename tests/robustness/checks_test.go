package robustness

import (
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"

	"github.com/catalogd/catalogd/api/catalogpb"
)

func TestCheckAcknowledged(t *testing.T) {
	put1 := op(0, 0, 10, putIn("a", "c0-1"), wrote(1))
	put2 := op(0, 11, 20, putIn("a", "c0-2"), wrote(2))
	tests := []struct {
		name  string
		ops   []porcupine.Operation
		final map[string]output
		want  []string // substrings of the problems, in order; none for a clean run
	}{
		{
			name:  "final value is the last acknowledged write",
			ops:   []porcupine.Operation{put1, put2},
			final: map[string]output{"a": read("c0-2", 2, 2)},
		},
		{
			name: "final value is a later write of unknown outcome",
			ops: []porcupine.Operation{put1, put2,
				op(1, 15, never, putIn("a", "c1-1"), unknown)},
			final: map[string]output{"a": read("c1-1", 3, 3)},
		},
		{
			name:  "final value is older than the last acknowledged write",
			ops:   []porcupine.Operation{put1, put2},
			final: map[string]output{"a": read("c0-1", 1, 2)},
			want:  []string{"lost write: key a ends with c0-1 at mod revision 1, older than acknowledged put(a, c0-2) at revision 2"},
		},
		{
			name:  "key absent although no delete followed the last acknowledged put",
			ops:   []porcupine.Operation{put1, put2},
			final: map[string]output{"a": readAbsent(2)},
			want:  []string{"lost write: key a is absent at the end"},
		},
		{
			name: "key absent after a delete of unknown outcome",
			ops: []porcupine.Operation{put1, put2,
				op(1, 15, never, deleteIn("a"), unknown)},
			final: map[string]output{"a": readAbsent(3)},
		},
		{
			name:  "final value written by nobody",
			ops:   []porcupine.Operation{put1},
			final: map[string]output{"a": read("c9-9", 5, 5)},
			want:  []string{"which no acknowledged or possibly applied write wrote"},
		},
		{
			name:  "final value of a write the server refused",
			ops:   []porcupine.Operation{put1, op(1, 11, 20, putIn("a", "c1-1"), notApplied)},
			final: map[string]output{"a": read("c1-1", 2, 2)},
			want:  []string{"which no acknowledged or possibly applied write wrote"},
		},
		{
			name: "two acknowledged writes with one revision",
			ops: []porcupine.Operation{put1,
				op(1, 11, 20, putIn("b", "c1-1"), wrote(1))},
			final: map[string]output{"a": read("c0-1", 1, 1), "b": read("c1-1", 1, 1)},
			want:  []string{"two acknowledged writes produced revision 1"},
		},
		{
			name:  "final read older than an acknowledged write",
			ops:   []porcupine.Operation{put1, put2},
			final: map[string]output{"a": read("c0-2", 2, 1)},
			want:  []string{"final read of a answered at revision 1, before acknowledged put(a, c0-2) at revision 2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkAcknowledged(tt.ops, tt.final)
			if len(got) != len(tt.want) {
				t.Fatalf("problems = %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for k, w := range tt.want {
				if !strings.Contains(got[k], w) {
					t.Errorf("problem %d = %q, want it to contain %q", k, got[k], w)
				}
			}
		})
	}
}

func TestCheckHashes(t *testing.T) {
	hash := func(member int, cluster uint64, rev int64, digest string, problem string) memberHash {
		return memberHash{member: member, addr: "m", resp: &catalogpb.HashResponse{
			Header: &catalogpb.ResponseHeader{ClusterId: cluster}, AppliedIndex: 9, Revision: rev, Hash: []byte(digest), EventsProblem: problem,
		}}
	}
	tests := []struct {
		name  string
		round []memberHash
		want  []string
	}{
		{"agree", []memberHash{hash(0, 7, 5, "x", ""), hash(1, 7, 5, "x", ""), hash(2, 7, 5, "x", "")}, nil},
		{"hash differs", []memberHash{hash(0, 7, 5, "x", ""), hash(1, 7, 5, "y", "")}, []string{"members diverged at applied index 9"}},
		{"revision differs", []memberHash{hash(0, 7, 5, "x", ""), hash(1, 7, 6, "x", "")}, []string{"members diverged"}},
		{"events problem", []memberHash{hash(0, 7, 5, "x", "gap at 3")}, []string{"problem in its events history: gap at 3"}},
		{"other cluster", []memberHash{hash(0, 8, 5, "x", "")}, []string{"answers for cluster 8, not 7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkHashes(tt.round, 7)
			if len(got) != len(tt.want) {
				t.Fatalf("problems = %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for k, w := range tt.want {
				if !strings.Contains(got[k], w) {
					t.Errorf("problem %d = %q, want it to contain %q", k, got[k], w)
				}
			}
		})
	}
}
