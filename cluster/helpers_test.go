package cluster

import (
	"slices"
	"time"
)

// durationStats returns the median and maximum of ds.
func durationStats(ds []time.Duration) (median, maximum time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}
