package auth

import (
	"testing"
	"time"
)

func TestUseLogThrottlesPerPrincipal(t *testing.T) {
	u := newUseLog(15 * time.Minute)
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	ana := Principal{Kind: KindUser, Subject: "ana", Role: RoleClinician}
	dev := Principal{Kind: KindDevice, Subject: "dev_1", Role: RoleDevice}
	cases := []struct {
		name string
		p    Principal
		at   time.Time
		want bool
	}{
		{"first use is recorded", ana, t0, true},
		{"again within the window is not", ana, t0.Add(14 * time.Minute), false},
		{"another principal is", dev, t0.Add(time.Minute), true},
		{"after the window it is again", ana, t0.Add(15 * time.Minute), true},
	}
	for _, c := range cases {
		if got := u.due(c.p, c.at); got != c.want {
			t.Errorf("%s: due = %v, want %v", c.name, got, c.want)
		}
	}
}
