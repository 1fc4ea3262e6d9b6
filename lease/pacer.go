package lease

import "time"

// A Pacer spreads the leader's revokes of expired leases over time: at most
// rate per second on average, at most burst at once. A mass expiry (every
// client of a dead data center) then takes its turn in the log beside other
// writes instead of stalling it. Like the Lessor it takes the time from its
// caller. A Pacer is not safe for concurrent use.
type Pacer struct {
	rate   float64 // permits per second
	burst  float64
	tokens float64
	last   time.Time
}

// NewPacer returns a Pacer of rate permits per second (at least 1) holding
// at most burst (at least 1) at a time; it starts full.
func NewPacer(rate, burst int) *Pacer {
	rate, burst = max(rate, 1), max(burst, 1)
	return &Pacer{rate: float64(rate), burst: float64(burst), tokens: float64(burst)}
}

// Available returns how many permits may be spent at now.
func (p *Pacer) Available(now time.Time) int {
	if !p.last.IsZero() && now.After(p.last) {
		p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
	}
	if p.last.IsZero() || now.After(p.last) {
		p.last = now
	}
	return int(p.tokens)
}

// Spend uses n permits (as many as Available returned, or fewer).
func (p *Pacer) Spend(n int) {
	p.tokens = max(p.tokens-float64(n), 0)
}
