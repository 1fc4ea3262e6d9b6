package framework

import (
	"slices"
	"testing"
)

func TestFaultTable(t *testing.T) {
	const n = 3
	ids := []uint64{0xa, 0xb, 0xc}
	setup := func() *faultTable {
		f := newFaultTable()
		for i, id := range ids {
			f.register(i, id)
		}
		return f
	}
	// dropped lists the directed links f drops, as member numbers.
	dropped := func(f *faultTable) [][2]int {
		var links [][2]int
		for i := range n {
			for j := range n {
				if i != j && f.drops(ids[i], ids[j]) {
					links = append(links, [2]int{i, j})
				}
			}
		}
		return links
	}
	for _, tc := range []struct {
		name  string
		apply func(f *faultTable)
		want  [][2]int
	}{
		{"nothing cut", func(*faultTable) {}, nil},
		{"cut drops both directions", func(f *faultTable) { f.cutLink(0, 2) }, [][2]int{{0, 2}, {2, 0}}},
		{"cutOneWay drops one direction", func(f *faultTable) { f.cutOneWay(2, 0) }, [][2]int{{2, 0}}},
		{"isolate cuts every link of the member", func(f *faultTable) { f.isolate(1, n) }, [][2]int{{0, 1}, {1, 0}, {1, 2}, {2, 1}}},
		{"heal restores everything", func(f *faultTable) { f.isolate(1, n); f.cutLink(0, 2); f.heal() }, nil},
		{"healMember leaves other links cut", func(f *faultTable) { f.isolate(1, n); f.cutLink(0, 2); f.healMember(1) }, [][2]int{{0, 2}, {2, 0}}},
		{"restore brings saved links back", func(f *faultTable) {
			f.cutLink(0, 1)
			saved := f.links(0)
			f.isolate(0, n)
			f.healMember(0)
			f.restore(saved)
		}, [][2]int{{0, 1}, {1, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup()
			tc.apply(f)
			if got := dropped(f); !slices.Equal(got, tc.want) {
				t.Errorf("dropped links %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("unknown ids are never dropped", func(t *testing.T) {
		f := setup()
		f.isolate(0, n)
		if f.drops(0xa, 0xdead) || f.drops(0xdead, 0xa) {
			t.Error("a message from or to an unregistered member was dropped; members not launched yet must not be affected")
		}
	})
}
