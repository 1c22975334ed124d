package hl7

import (
	"errors"
	"strings"
	"time"
)

var errDTM = errors.New("hl7: invalid date/time")

// ParseDTM parses an HL7 DTM/TS value: YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ].
// Without an offset the time is taken as UTC. Missing parts default to the
// start of the period.
func ParseDTM(s string) (time.Time, error) {
	body, loc := s, time.UTC
	if i := strings.IndexAny(s, "+-"); i >= 0 {
		body = s[:i]
		z := s[i:]
		if len(z) != 5 || !digits(z[1:]) {
			return time.Time{}, errDTM
		}
		hh, mm := atoi(z[1:3]), atoi(z[3:5])
		if hh > 23 || mm > 59 {
			return time.Time{}, errDTM
		}
		off := (hh*60 + mm) * 60
		if z[0] == '-' {
			off = -off
		}
		loc = time.FixedZone("", off)
	}
	frac := ""
	if i := strings.IndexByte(body, '.'); i >= 0 {
		body, frac = body[:i], body[i+1:]
		if len(body) != 14 || len(frac) == 0 || len(frac) > 9 || !digits(frac) {
			return time.Time{}, errDTM
		}
	}
	switch len(body) {
	case 4, 6, 8, 10, 12, 14:
	default:
		return time.Time{}, errDTM
	}
	if !digits(body) {
		return time.Time{}, errDTM
	}
	part := func(from, def int) int {
		if len(body) < from+2 {
			return def
		}
		return atoi(body[from : from+2])
	}
	year, month, day := atoi(body[:4]), part(4, 1), part(6, 1)
	hour, minute, sec := part(8, 0), part(10, 0), part(12, 0)
	nsec := 0
	if frac != "" {
		nsec = atoi(frac)
		for range 9 - len(frac) {
			nsec *= 10
		}
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, loc)
	// time.Date normalizes out-of-range parts (month 13); reject instead.
	if t.Month() != time.Month(month) || t.Day() != day || t.Hour() != hour ||
		t.Minute() != minute || t.Second() != sec {
		return time.Time{}, errDTM
	}
	return t, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// atoi of a short all-digit string (checked by the caller).
func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}
