// Package benchstat holds the small statistics the benchmarks report.
package benchstat

import (
	"slices"
	"time"
)

// Median returns the middle of ds (the mean of the two middle ones for an even
// count; 0 when empty): one sample slowed by the host's load moves it less than
// the mean. ds is not changed.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
