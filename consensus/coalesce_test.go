package consensus

import (
	"bytes"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// app returns a MsgApp from 1 to `to` in term 2 that appends entries
// first..last (term 2) after (prev, prevTerm), with commit.
func app(to, prev, prevTerm, first, last, commit uint64) raftpb.Message {
	m := raftpb.Message{Type: raftpb.MsgApp, From: 1, To: to, Term: 2, Index: prev, LogTerm: prevTerm, Commit: commit}
	for i := first; i <= last && first != 0; i++ {
		m.Entries = append(m.Entries, raftpb.Entry{Term: 2, Index: i, Data: []byte{byte(i)}})
	}
	return m
}

func entryIndexes(m raftpb.Message) []uint64 {
	var idx []uint64
	for _, e := range m.Entries {
		idx = append(idx, e.Index)
	}
	return idx
}

func TestCoalesceAppendsMergesContiguousAppendsPerPeer(t *testing.T) {
	msgs := []raftpb.Message{
		app(2, 10, 2, 0, 0, 9),    // commit-only append to 2
		app(3, 10, 2, 0, 0, 9),    // and to 3
		app(2, 10, 2, 11, 12, 10), // entries 11-12 to 2
		app(3, 10, 2, 11, 12, 10),
		app(2, 12, 2, 13, 13, 10),
		app(3, 12, 2, 13, 13, 10),
	}
	out := coalesceAppends(msgs)
	if len(out) != 2 {
		t.Fatalf("got %d messages, want one append per peer: %v", len(out), out)
	}
	for i, to := range []uint64{2, 3} {
		m := out[i]
		if m.To != to || m.Type != raftpb.MsgApp || m.Index != 10 || m.LogTerm != 2 || m.Term != 2 {
			t.Fatalf("message %d = %+v, want an append to %d after (10, term 2)", i, m, to)
		}
		if got := entryIndexes(m); len(got) != 3 || got[0] != 11 || got[2] != 13 {
			t.Fatalf("append to %d carries entries %v, want 11..13", to, got)
		}
		if m.Commit != 10 {
			t.Fatalf("append to %d has commit %d, want the latest, 10", to, m.Commit)
		}
	}
}

func TestCoalesceAppendsKeepsWhatCannotBeMerged(t *testing.T) {
	heartbeat := raftpb.Message{Type: raftpb.MsgHeartbeat, From: 1, To: 2, Term: 2}
	otherTerm := app(2, 12, 2, 13, 13, 10)
	otherTerm.Term = 3
	big := func(prev, idx uint64) raftpb.Message {
		m := app(2, prev, 2, idx, idx, 1)
		m.Entries[0].Data = bytes.Repeat([]byte{1}, coalesceMaxBytes*2/3)
		return m
	}
	tests := []struct {
		name string
		msgs []raftpb.Message
	}{
		{"gap", []raftpb.Message{app(2, 10, 2, 11, 12, 9), app(2, 13, 2, 14, 14, 9)}},
		{"previous term does not match", []raftpb.Message{app(2, 10, 2, 11, 12, 9), app(2, 12, 1, 13, 13, 9)}},
		{"another message in between", []raftpb.Message{app(2, 10, 2, 11, 12, 9), heartbeat, app(2, 12, 2, 13, 13, 9)}},
		{"leader term differs", []raftpb.Message{app(2, 10, 2, 11, 12, 9), otherTerm}},
		{"over the size bound", []raftpb.Message{big(10, 11), big(11, 12)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := coalesceAppends(tc.msgs)
			if len(out) != len(tc.msgs) {
				t.Fatalf("got %d messages, want all %d kept apart", len(out), len(tc.msgs))
			}
			for i := range out {
				if out[i].Type != tc.msgs[i].Type || out[i].Index != tc.msgs[i].Index || len(out[i].Entries) != len(tc.msgs[i].Entries) {
					t.Fatalf("message %d changed: got %+v, want %+v", i, out[i], tc.msgs[i])
				}
			}
		})
	}
}

// The entries belong to raft: merging must not write into their arrays.
func TestCoalesceAppendsDoesNotWriteIntoRaftsSlices(t *testing.T) {
	first := app(2, 10, 2, 11, 12, 9)
	backing := make([]raftpb.Entry, 2, 8)
	copy(backing, first.Entries)
	first.Entries = backing
	out := coalesceAppends([]raftpb.Message{first, app(2, 12, 2, 13, 14, 9)})
	if len(out) != 1 || len(out[0].Entries) != 4 {
		t.Fatalf("got %d messages (%v), want one with 4 entries", len(out), out)
	}
	if spare := backing[:3][2]; spare.Index != 0 {
		t.Fatalf("the first append's spare capacity was written: %+v", spare)
	}
}
