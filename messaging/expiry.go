package messaging

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Expiry is how long a message lives, by alert priority. After it the
// gateway no longer sends the message, devices are told to delete it and
// the retention job empties its sealed forms, unless a legal hold covers it.
type Expiry map[string]time.Duration

// DefaultExpiry: PH 24 h, PM 12 h, PL and PN 4 h.
func DefaultExpiry() Expiry {
	return Expiry{"PH": 24 * time.Hour, "PM": 12 * time.Hour, "PL": 4 * time.Hour, "PN": 4 * time.Hour}
}

// For returns the lifetime of a message of priority; a priority the table
// does not name gets the longest lifetime in it (never the shortest: an
// unknown priority must not vanish early).
func (x Expiry) For(priority string) time.Duration {
	if d, ok := x[priority]; ok {
		return d
	}
	var longest time.Duration
	for _, d := range x {
		longest = max(longest, d)
	}
	if longest == 0 {
		return 24 * time.Hour
	}
	return longest
}

// String is the ParseExpiry form, priorities in order.
func (x Expiry) String() string {
	keys := make([]string, 0, len(x))
	for k := range x {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + x[k].String()
	}
	return strings.Join(parts, ",")
}

// ParseExpiry reads "PH=24h,PM=12h,PL=4h,PN=4h" over DefaultExpiry: a
// priority not named keeps its default.
func ParseExpiry(spec string) (Expiry, error) {
	x := DefaultExpiry()
	if strings.TrimSpace(spec) == "" {
		return x, nil
	}
	for _, part := range strings.Split(spec, ",") {
		prio, dur, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || prio == "" {
			return nil, &InvalidError{"message_expiry", fmt.Sprintf("%q: want PRIORITY=DURATION", part)}
		}
		d, err := time.ParseDuration(dur)
		if err != nil || d < time.Minute {
			return nil, &InvalidError{"message_expiry." + prio, fmt.Sprintf("%q: want a duration of at least 1m", dur)}
		}
		x[prio] = d
	}
	return x, nil
}
