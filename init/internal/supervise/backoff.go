package supervise

import "time"

// Backoff spaces restarts of a crashing program: Min after the first crash, doubling up
// to Max; a run that lasted at least Stable resets it to Min.
type Backoff struct {
	Min, Max, Stable time.Duration

	cur time.Duration
}

// DefaultBackoff restarts machined after 250 ms, then 0.5 s, 1 s, … up to 30 s, and
// forgets the crashes once machined stayed up for a minute.
func DefaultBackoff() Backoff {
	return Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second, Stable: time.Minute}
}

// Next returns the delay before the next start, given how long the last run lasted.
func (b *Backoff) Next(ran time.Duration) time.Duration {
	if b.cur == 0 || ran >= b.Stable {
		b.cur = b.Min
		return b.cur
	}
	b.cur *= 2
	if b.cur > b.Max {
		b.cur = b.Max
	}
	return b.cur
}
