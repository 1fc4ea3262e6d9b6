package consensus

import "go.etcd.io/raft/v3/raftpb"

// coalesceAppends merges each MsgApp into the previous message to the same
// peer when that is a MsgApp of the same term whose entries it continues:
// the follower then appends, syncs and answers once, as if the leader had
// sent one larger append (raft sends one per proposal step, and a commit
// advance adds one with no entries). Other messages keep their order. A
// merged append stays under coalesceMaxBytes of entry data, so a follower
// catching up still gets its backlog in raft's MaxSizePerMsg pieces.
func coalesceAppends(msgs []raftpb.Message) []raftpb.Message {
	apps := 0
	for i := range msgs {
		if msgs[i].Type == raftpb.MsgApp {
			apps++
		}
	}
	if apps < 2 {
		return msgs
	}
	out := make([]raftpb.Message, 0, len(msgs))
	last := make(map[uint64]int, 2) // peer -> index in out of its last message
	size := make([]int, 0, len(msgs))
	for _, m := range msgs {
		n := entriesBytes(m.Entries)
		if i, ok := last[m.To]; ok && m.Type == raftpb.MsgApp && out[i].Type == raftpb.MsgApp &&
			size[i]+n <= coalesceMaxBytes && continues(out[i], m) {
			prev := &out[i]
			ents := make([]raftpb.Entry, 0, len(prev.Entries)+len(m.Entries))
			prev.Entries = append(append(ents, prev.Entries...), m.Entries...)
			prev.Commit = max(prev.Commit, m.Commit)
			size[i] += n
			continue
		}
		last[m.To] = len(out)
		out = append(out, m)
		size = append(size, n)
	}
	return out
}

// coalesceMaxBytes bounds the entry data of a merged append.
const coalesceMaxBytes = 1 << 20

func entriesBytes(ents []raftpb.Entry) int {
	n := 0
	for i := range ents {
		n += ents[i].Size()
	}
	return n
}

// continues reports whether append b starts right after append a ends, in
// the same term: a+b is then one valid append.
func continues(a, b raftpb.Message) bool {
	if a.Term != b.Term || a.From != b.From {
		return false
	}
	end, endTerm := a.Index, a.LogTerm
	if n := len(a.Entries); n > 0 {
		end, endTerm = a.Entries[n-1].Index, a.Entries[n-1].Term
	}
	return b.Index == end && b.LogTerm == endTerm
}
