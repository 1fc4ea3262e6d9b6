package registry_test

import (
	"testing"

	"go.etcd.io/bbolt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/registry"
)

func rangeShard(id, start, end string, replicas ...string) *catalogpb.Shard {
	return &catalogpb.Shard{Id: id, StartKey: []byte(start), EndKey: []byte(end), Replicas: replicas}
}

func slotShard(id string, ranges ...[2]int32) *catalogpb.Shard {
	sh := &catalogpb.Shard{Id: id, Replicas: []string{"r-" + id}}
	for _, r := range ranges {
		sh.Slots = append(sh.Slots, &catalogpb.SlotRange{From: r[0], To: r[1]})
	}
	return sh
}

func (s *regStore) getShardMap(service string) (*catalogpb.ShardMap, error) {
	var m *catalogpb.ShardMap
	var err error
	s.view(func(tx *bbolt.Tx) error {
		var resp *catalogpb.GetShardMapResponse
		resp, err = registry.GetShardMap(tx, &catalogpb.GetShardMapRequest{Service: service})
		if err == nil {
			m = resp.Map
		}
		return nil
	})
	return m, err
}

func TestSetShardMapCompareAndSwap(t *testing.T) {
	s := newRegStore(t)
	_, _, err := s.setShardMap(&catalogpb.ShardMap{Service: "kv"}, 0)
	wantErr(t, err, registry.ErrServiceNotFound, "\"kv\"")
	_, err = s.getShardMap("kv")
	wantErr(t, err, registry.ErrServiceNotFound)

	s.putService(&catalogpb.Service{Name: "kv"})
	m, err := s.getShardMap("kv")
	if err != nil || m.Epoch != 0 || m.Service != "kv" || len(m.Shards) != 0 {
		t.Fatalf("map of a service without one = %v, %v; want empty at epoch 0", m, err)
	}

	before, rev := s.dump(), s.rev
	_, _, err = s.setShardMap(&catalogpb.ShardMap{Service: "kv"}, 1)
	wantErr(t, err, registry.ErrEpochMismatch, "at epoch 0", "expected_epoch is 1")
	s.unchanged(before, rev)

	v1 := &catalogpb.ShardMap{Service: "kv", Epoch: 77, ModRevision: 5, Shards: []*catalogpb.Shard{
		rangeShard("s1", "", "m", "a", "b"), rangeShard("s2", "m", "", "b", "c"),
	}}
	resp, evs, err := s.setShardMap(v1, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs, "PUT shard_map kv")
	created := s.rev
	if got := resp.Map; got.Epoch != 1 || got.ModRevision != created || len(got.Shards) != 2 || got.Shards[1].Replicas[0] != "b" {
		t.Fatalf("first map = %v, want epoch 1 (the given epoch is ignored) at revision %d", got, created)
	}
	if ev := evs[0]; ev.Kv.CreateRevision != created || ev.Kv.Version != 1 || ev.PrevShardMap != nil || ev.PrevKv != nil {
		t.Errorf("create event = %v", ev)
	}
	protoEqual(t, "event map", evs[0].ShardMap, resp.Map)
	stored, _ := s.getShardMap("kv")
	protoEqual(t, "stored map", stored, resp.Map)

	v2 := &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s1", "", "", "c", "a")}}
	resp, evs, err = s.setShardMap(v2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Map.Epoch != 2 || resp.Map.ModRevision != s.rev {
		t.Errorf("second map = %v, want epoch 2", resp.Map)
	}
	if ev := evs[0]; ev.Kv.CreateRevision != created || ev.Kv.Version != 2 || ev.PrevShardMap.GetEpoch() != 1 || ev.PrevKv.GetModRevision() != created {
		t.Errorf("update event = %v, want create revision %d kept and the epoch 1 map as previous", ev, created)
	}

	// A writer that read epoch 1 lost the race.
	before, rev = s.dump(), s.rev
	_, _, err = s.setShardMap(v1, 1)
	wantErr(t, err, registry.ErrEpochMismatch, "at epoch 2", "expected_epoch is 1")
	_, _, err = s.setShardMap(v1, 0)
	wantErr(t, err, registry.ErrEpochMismatch, "at epoch 2", "expected_epoch is 0")
	s.unchanged(before, rev)

	// Slot maps.
	s.putService(&catalogpb.Service{Name: "cache"})
	resp, _, err = s.setShardMap(&catalogpb.ShardMap{Service: "cache", TotalSlots: 16, Shards: []*catalogpb.Shard{
		slotShard("a", [2]int32{0, 7}), slotShard("b", [2]int32{8, 11}, [2]int32{12, 15}),
	}}, 0)
	if err != nil || resp.Map.Epoch != 1 {
		t.Fatalf("slot map: %v, %v", resp, err)
	}
}

func TestSetShardMapValidation(t *testing.T) {
	s := newRegStore(t)
	s.putService(&catalogpb.Service{Name: "kv"})
	before, rev := s.dump(), s.rev
	cases := []struct {
		name     string
		m        *catalogpb.ShardMap
		expected int64
		want     []string
	}{
		{"no map", nil, 0, []string{"map is missing"}},
		{"bad service", &catalogpb.ShardMap{Service: "KV"}, 0, []string{"map.service"}},
		{"negative expected epoch", &catalogpb.ShardMap{Service: "kv"}, -1, []string{"expected_epoch"}},
		{"duplicate shard ids", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s", "a", "b"), rangeShard("s", "c", "d")}}, 0,
			[]string{"map.shards[0] and map.shards[1]", "same id \"s\""}},
		{"bad shard id", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("a b", "", "")}}, 0, []string{"map.shards[0].id"}},
		{"empty shard id", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("", "", "")}}, 0, []string{"map.shards[0].id", "1..128"}},
		{"start not before end", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s", "m", "a")}}, 0,
			[]string{"map.shards[0]", "start_key < end_key"}},
		{"overlapping ranges", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s1", "a", "m"), rangeShard("s2", "k", "z")}}, 0,
			[]string{"\"s1\"", "\"s2\"", "overlap"}},
		{"overlap given out of order", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s1", "k", "z"), rangeShard("s2", "a", "l")}}, 0,
			[]string{"overlap"}},
		{"open end overlaps", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s1", "a", ""), rangeShard("s2", "q", "r")}}, 0,
			[]string{"\"s1\"", "end)", "overlap"}},
		{"two whole-space shards", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s1", "", ""), rangeShard("s2", "", "")}}, 0,
			[]string{"overlap"}},
		{"slots without total_slots", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{slotShard("s", [2]int32{0, 1})}}, 0,
			[]string{"map.shards[0] has slots but map.total_slots is 0"}},
		{"range and slots", &catalogpb.ShardMap{Service: "kv", TotalSlots: 8, Shards: []*catalogpb.Shard{{Id: "s", StartKey: []byte("a"), Slots: []*catalogpb.SlotRange{{From: 0, To: 1}}}}}, 0,
			[]string{"map.shards[0]", "either a key range or slots, not both"}},
		{"slot shard without slots", &catalogpb.ShardMap{Service: "kv", TotalSlots: 8, Shards: []*catalogpb.Shard{{Id: "s"}}}, 0,
			[]string{"map.shards[0] holds no slots"}},
		{"slot beyond total", &catalogpb.ShardMap{Service: "kv", TotalSlots: 8, Shards: []*catalogpb.Shard{slotShard("s", [2]int32{4, 8})}}, 0,
			[]string{"map.shards[0].slots[0]", "to <= 7", "[4, 8]"}},
		{"negative slot", &catalogpb.ShardMap{Service: "kv", TotalSlots: 8, Shards: []*catalogpb.Shard{slotShard("s", [2]int32{-1, 2})}}, 0,
			[]string{"map.shards[0].slots[0]"}},
		{"slot range reversed", &catalogpb.ShardMap{Service: "kv", TotalSlots: 8, Shards: []*catalogpb.Shard{slotShard("s", [2]int32{5, 2})}}, 0,
			[]string{"from <= to"}},
		{"slots overlap across shards", &catalogpb.ShardMap{Service: "kv", TotalSlots: 8, Shards: []*catalogpb.Shard{slotShard("a", [2]int32{0, 4}), slotShard("b", [2]int32{4, 7})}}, 0,
			[]string{"[0, 4] of shard \"a\"", "[4, 7] of shard \"b\"", "overlap"}},
		{"slots overlap within a shard", &catalogpb.ShardMap{Service: "kv", TotalSlots: 8, Shards: []*catalogpb.Shard{slotShard("a", [2]int32{0, 4}, [2]int32{2, 3})}}, 0,
			[]string{"overlap"}},
		{"total slots too big", &catalogpb.ShardMap{Service: "kv", TotalSlots: 1<<20 + 1}, 0, []string{"map.total_slots", "0..1048576"}},
		{"duplicate replica", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s", "", "", "a", "b", "a")}}, 0,
			[]string{"map.shards[0].replicas[0] and [2]", "\"a\""}},
		{"bad replica id", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s", "", "", "a/b")}}, 0,
			[]string{"map.shards[0].replicas[0]"}},
		{"nil shard", &catalogpb.ShardMap{Service: "kv", Shards: []*catalogpb.Shard{nil}}, 0, []string{"map.shards[0] is missing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			_, err = s.apply(func(tx *bbolt.Tx, rev int64) ([]*catalogpb.Event, error) {
				_, evs, err := registry.ApplySetShardMap(tx, rev, &catalogpb.SetShardMapRequest{Map: tc.m, ExpectedEpoch: tc.expected})
				return evs, err
			})
			wantErr(t, err, registry.ErrInvalidArgument, tc.want...)
		})
	}
	s.unchanged(before, rev)

	// Adjacent ranges and slots touch without overlapping.
	for _, m := range []*catalogpb.ShardMap{
		{Service: "kv", Shards: []*catalogpb.Shard{rangeShard("s2", "m", ""), rangeShard("s1", "", "m")}},
		{Service: "kv", TotalSlots: 4, Shards: []*catalogpb.Shard{slotShard("a", [2]int32{3, 3}), slotShard("b", [2]int32{0, 2})}},
		{Service: "kv"},
	} {
		cur, _ := s.getShardMap("kv")
		if _, _, err := s.setShardMap(m, cur.Epoch); err != nil {
			t.Errorf("valid map %v refused: %v", m, err)
		}
	}
}
