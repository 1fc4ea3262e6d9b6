package lease

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestFollowerHoldsNoDeadlines(t *testing.T) {
	l := NewLessor()
	l.Grant(1, 10, t0)
	if _, err := l.Renew(1, t0); !errors.Is(err, ErrNotPrimary) {
		t.Errorf("Renew on a follower: %v, want ErrNotPrimary", err)
	}
	if _, _, err := l.Remaining(1, t0); !errors.Is(err, ErrNotPrimary) {
		t.Errorf("Remaining on a follower: %v, want ErrNotPrimary", err)
	}
	if got := l.Expired(at(time.Hour), 10); len(got) != 0 {
		t.Errorf("a follower found expired leases: %v", got)
	}
	if ttl, ok := l.TTL(1); !ok || ttl != 10 {
		t.Errorf("TTL(1) = %d, %v; a follower still knows the granted TTL", ttl, ok)
	}
}

func TestPromoteExtendsEveryLeaseByItsTTL(t *testing.T) {
	l := NewLessor()
	l.Promote(t0)
	l.Grant(1, 5, t0)
	l.Grant(2, 10, t0)
	// Lease 1 was last renewed at 4s, so it was due at 9s; the leader
	// fails over at 8s and the new one takes over at 11s.
	if _, err := l.Renew(1, at(4*time.Second)); err != nil {
		t.Fatal(err)
	}
	l.Demote()
	if _, err := l.Renew(1, at(9*time.Second)); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("Renew after Demote: %v, want ErrNotPrimary", err)
	}
	l.Promote(at(11 * time.Second))
	for id, ttl := range map[int64]time.Duration{1: 5 * time.Second, 2: 10 * time.Second} {
		rem, granted, err := l.Remaining(id, at(11*time.Second))
		if err != nil || rem != ttl || granted != int64(ttl/time.Second) {
			t.Errorf("lease %d after promote: remaining %v granted %d (%v), want %v", id, rem, granted, err, ttl)
		}
	}
	if got := l.Expired(at(16*time.Second-time.Nanosecond), 10); len(got) != 0 {
		t.Errorf("expired before the TTL counted from the promotion: %v", got)
	}
	if got := l.Expired(at(16*time.Second), 10); !slices.Equal(got, []int64{1}) {
		t.Errorf("at promotion+5s: expired %v, want [1]", got)
	}
	if got := l.Expired(at(21*time.Second), 10); !slices.Equal(got, []int64{2}) {
		t.Errorf("at promotion+10s: expired %v, want [2]", got)
	}
}

func TestRenewMovesTheDeadline(t *testing.T) {
	l := NewLessor()
	l.Promote(t0)
	l.Grant(7, 3, t0)
	for i := 1; i <= 5; i++ {
		ttl, err := l.Renew(7, at(time.Duration(i)*2*time.Second))
		if err != nil || ttl != 3 {
			t.Fatalf("renew %d: ttl %d, %v", i, ttl, err)
		}
	}
	// Last renewal at 10s: due at 13s.
	if got := l.Expired(at(13*time.Second-time.Millisecond), 1); len(got) != 0 {
		t.Fatalf("expired before its renewed deadline: %v", got)
	}
	rem, _, _ := l.Remaining(7, at(12*time.Second))
	if rem != time.Second {
		t.Errorf("remaining at 12s = %v, want 1s", rem)
	}
	if _, err := l.Renew(7, at(13*time.Second)); !errors.Is(err, ErrNotFound) {
		t.Errorf("renew at the deadline: %v, want ErrNotFound (an expired lease is not brought back)", err)
	}
	if _, err := l.Renew(99, t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("renew of an unknown lease: %v, want ErrNotFound", err)
	}
	if _, _, err := l.Remaining(99, t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("remaining of an unknown lease: %v, want ErrNotFound", err)
	}
}

func TestExpiredComesOutOncePerRevokeSoonestFirst(t *testing.T) {
	l := NewLessor()
	l.Promote(t0)
	// Granted at different times: deadlines 10s, 11s, ... 29s for ids 20..1.
	for i := range 20 {
		l.Grant(int64(20-i), 10, at(time.Duration(i)*time.Second))
	}
	got := l.Expired(at(time.Hour), 5)
	if want := []int64{20, 19, 18, 17, 16}; !slices.Equal(got, want) {
		t.Fatalf("first batch %v, want %v", got, want)
	}
	// Marked as being revoked: not returned again, not renewable.
	if _, err := l.Renew(20, at(time.Hour)); !errors.Is(err, ErrNotFound) {
		t.Errorf("renew of a lease being revoked: %v", err)
	}
	got = l.Expired(at(time.Hour), 5)
	if want := []int64{15, 14, 13, 12, 11}; !slices.Equal(got, want) {
		t.Fatalf("second batch %v, want %v", got, want)
	}
	// The revoke of 20 applied; the revoke of 19 failed and is retried later.
	l.Revoke(20)
	l.RetryLater(19, at(time.Hour+time.Second))
	if _, err := l.Renew(19, at(time.Hour)); !errors.Is(err, ErrNotFound) {
		t.Errorf("renew of an expired lease waiting for its retry: %v", err)
	}
	if rem, _, err := l.Remaining(19, at(time.Hour)); err != nil || rem != 0 {
		t.Errorf("remaining of an expired lease: %v %v, want 0", rem, err)
	}
	got = l.Expired(at(time.Hour), 100)
	if want := []int64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}; !slices.Equal(got, want) {
		t.Fatalf("rest %v, want %v", got, want)
	}
	if got := l.Expired(at(time.Hour+time.Second), 100); !slices.Equal(got, []int64{19}) {
		t.Errorf("after the retry delay: %v, want [19]", got)
	}
	if l.Len() != 19 {
		t.Errorf("Len = %d, want 19 (only 20 was revoked)", l.Len())
	}
	// A new leader starts the clock of leases being revoked afresh.
	l.Demote()
	l.RetryLater(18, t0) // not primary: ignored
	l.Promote(at(2 * time.Hour))
	if got := l.Expired(at(2*time.Hour+9*time.Second), 100); len(got) != 0 {
		t.Errorf("expired right after promotion: %v", got)
	}
	if got := l.Expired(at(2*time.Hour+10*time.Second), 100); len(got) != 19 {
		t.Errorf("after one TTL: %d expired, want 19", len(got))
	}
}

func TestEqualDeadlinesComeOutByID(t *testing.T) {
	l := NewLessor()
	for _, id := range []int64{5, 3, 9, 1} {
		l.Grant(id, 1, t0)
	}
	l.Promote(t0)
	if got := l.Expired(at(time.Second), 10); !slices.Equal(got, []int64{1, 3, 5, 9}) {
		t.Errorf("expired %v, want [1 3 5 9]", got)
	}
}

func TestResetKeepsThePrimarysDeadlines(t *testing.T) {
	l := NewLessor()
	l.Promote(t0)
	l.Grant(1, 10, t0)
	l.Grant(2, 10, t0)
	l.Grant(3, 1, t0)
	if got := l.Expired(at(time.Second), 10); !slices.Equal(got, []int64{3}) {
		t.Fatalf("expired %v", got)
	}
	// The store now holds 1 (kept), 3 (being revoked) and 4 (new); 2 is gone.
	l.Reset(at(5*time.Second), []Lease{{ID: 1, TTLSeconds: 10}, {ID: 3, TTLSeconds: 1}, {ID: 4, TTLSeconds: 10}})
	if _, _, err := l.Remaining(2, at(5*time.Second)); !errors.Is(err, ErrNotFound) {
		t.Errorf("lease 2 survived the reset: %v", err)
	}
	if rem, _, _ := l.Remaining(1, at(5*time.Second)); rem != 5*time.Second {
		t.Errorf("lease 1 remaining %v, want its old deadline (5s left)", rem)
	}
	if rem, _, _ := l.Remaining(4, at(5*time.Second)); rem != 10*time.Second {
		t.Errorf("lease 4 remaining %v, want a full TTL", rem)
	}
	if got := l.Expired(at(time.Hour), 10); !slices.Equal(got, []int64{1, 4}) {
		t.Errorf("expired %v, want [1 4] (3 is already being revoked)", got)
	}
}

// TestManyLeases checks order and bookkeeping at the scale the leader holds
// (100k leases, renewed in random order, expired in bounded batches).
func TestManyLeases(t *testing.T) {
	const n = 100_000
	l := NewLessor()
	l.Promote(t0)
	r := rand.New(rand.NewPCG(1, 2))
	for id := int64(1); id <= n; id++ {
		l.Grant(id, 10, t0)
	}
	renewedAt := make(map[int64]time.Duration, n)
	for id := int64(1); id <= n; id++ {
		d := time.Duration(r.Int64N(int64(5 * time.Second)))
		if _, err := l.Renew(id, at(d)); err != nil {
			t.Fatal(err)
		}
		renewedAt[id] = d
	}
	var out []int64
	for {
		batch := l.Expired(at(time.Hour), 1000)
		if len(batch) == 0 {
			break
		}
		if len(batch) > 1000 {
			t.Fatalf("batch of %d, max 1000", len(batch))
		}
		out = append(out, batch...)
	}
	if len(out) != n {
		t.Fatalf("%d expired, want %d", len(out), n)
	}
	for i := 1; i < len(out); i++ {
		a, b := renewedAt[out[i-1]], renewedAt[out[i]]
		if a > b || (a == b && out[i-1] > out[i]) {
			t.Fatalf("out of order at %d: lease %d (renewed %v) before %d (renewed %v)", i, out[i-1], a, out[i], b)
		}
	}
}

func TestPacer(t *testing.T) {
	p := NewPacer(100, 10)
	if n := p.Available(t0); n != 10 {
		t.Fatalf("a new pacer has %d permits, want its burst of 10", n)
	}
	p.Spend(10)
	if n := p.Available(t0); n != 0 {
		t.Fatalf("%d permits after spending all", n)
	}
	if n := p.Available(at(50 * time.Millisecond)); n != 5 {
		t.Errorf("after 50ms at 100/s: %d permits, want 5", n)
	}
	p.Spend(2)
	if n := p.Available(at(50 * time.Millisecond)); n != 3 {
		t.Errorf("after spending 2 of 5: %d", n)
	}
	if n := p.Available(at(time.Minute)); n != 10 {
		t.Errorf("after a long idle time: %d permits, want the burst of 10", n)
	}
	// A clock that goes backwards adds nothing.
	p.Spend(10)
	if n := p.Available(at(time.Second)); n != 0 {
		t.Errorf("time went backwards and gave %d permits", n)
	}
	// Over 10 seconds at most rate*10 + burst permits are handed out.
	p = NewPacer(100, 10)
	total := 0
	for ms := 0; ms <= 10_000; ms += 7 {
		n := p.Available(at(time.Duration(ms) * time.Millisecond))
		p.Spend(n)
		total += n
	}
	if total < 990 || total > 1010 {
		t.Errorf("10s at 100/s with burst 10 handed out %d permits", total)
	}
}

func BenchmarkRenew(b *testing.B) {
	const n = 100_000
	l := NewLessor()
	l.Promote(t0)
	for id := int64(1); id <= n; id++ {
		l.Grant(id, 10, t0)
	}
	now := t0
	b.ResetTimer()
	for i := range b.N {
		now = now.Add(time.Microsecond)
		if _, err := l.Renew(int64(i%n)+1, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExpire100k(b *testing.B) {
	const n = 100_000
	for range b.N {
		b.StopTimer()
		l := NewLessor()
		l.Promote(t0)
		for id := int64(1); id <= n; id++ {
			l.Grant(id, 10, t0.Add(time.Duration(id)))
		}
		b.StartTimer()
		for len(l.Expired(at(time.Hour), 1000)) > 0 {
		}
	}
}
