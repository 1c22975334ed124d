package routing_test

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/routing"
)

type replayReading struct {
	at    time.Duration
	code  string
	value float64
}

func readReplay(t *testing.T, path string) []replayReading {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []replayReading
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, "seconds,") || line == "" {
			continue
		}
		parts := strings.Split(line, ",")
		sec, err1 := strconv.Atoi(parts[0])
		v, err2 := strconv.ParseFloat(parts[2], 64)
		if len(parts) != 3 || err1 != nil || err2 != nil {
			t.Fatalf("%s:%d: bad line %q", path, n, line)
		}
		out = append(out, replayReading{time.Duration(sec) * time.Second, parts[1], v})
	}
	return out
}

// TestReplayVitals replays 40 minutes of noisy SpO2 and heart-rate
// readings (testdata/replay/vitals-spo2-hr.csv, whose header says what a
// clinician wants) through the sustained-condition rules: the spikes that
// recover within the window page nobody, and exactly the three real
// episodes open an alert each.
func TestReplayVitals(t *testing.T) {
	stream := readReplay(t, "testdata/replay/vitals-spo2-hr.csv")
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		h := newHospital(t, d, routing.Options{})
		spo2 := spo2Low(&routing.Sustain{Seconds: 60, MaxGapSeconds: 120})
		hr := hrHigh()
		hr.Sustain, hr.AutoResolve = &routing.Sustain{Readings: 3}, &routing.AutoResolve{OnNormal: true}
		h.put(spo2, hr)
		type opened struct {
			rule string
			at   time.Duration
		}
		var got []opened
		var closed []time.Duration
		suppressed, updates := 0, 0
		units := map[string]string{"59408-5": "%", "8867-4": "/min"}
		for _, r := range stream {
			out := h.at(r.at).route(reading(r.code, r.value, units[r.code], r.at))
			for _, a := range out.Opened {
				got = append(got, opened{a.RuleID, r.at})
			}
			for range out.Closed {
				closed = append(closed, r.at)
			}
			suppressed += out.Suppressed
			updates += len(out.Updated)
		}
		want := []opened{{"spo2-low", 1260 * time.Second}, {"hr-high", 1635 * time.Second}, {"spo2-low", 2160 * time.Second}}
		if len(got) != 3 {
			t.Fatalf("%d alerts opened %v, want exactly 3: %v", len(got), got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("alert %d: %v, want %v", i, got[i], want[i])
			}
		}
		if wantClosed := []time.Duration{1455 * time.Second, 1815 * time.Second}; len(closed) != 2 || closed[0] != wantClosed[0] || closed[1] != wantClosed[1] {
			t.Errorf("auto-resolved at %v, want %v", closed, wantClosed)
		}
		// 6 spikes held back (4 SpO2, 2 heart rate), each counted per reading
		// while pending plus once when it recovered.
		spikes := h.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'alert.suppressed' AND detail LIKE '%"reason":"sustain"%'`)
		if spikes != 6 {
			t.Errorf("%d recovered spikes audited, want 6", spikes)
		}
		if n := h.count(`SELECT COUNT(*) FROM alerts WHERE state = 'open'`); n != 1 {
			t.Errorf("%d alerts open at the end, want 1 (the second desaturation)", n)
		}
		s, err := routing.Stats(h.ctx, d, "spo2-low", t0, t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if s.Opened != 2 || s.AutoResolved != 1 || s.Suppressed[routing.ReasonSustain] != 4 || s.Deduplicated != updates-countHR(t, h) {
			t.Errorf("spo2 stats %+v (updates seen %d)", s, updates)
		}
		t.Logf("replayed %d readings: %d alerts, %d updates, %d firings held back by sustain", len(stream), len(got), updates, suppressed)
		assertNoBlackHole(t, d, h.now)
	})
}

func countHR(t *testing.T, h *hospital) int {
	return h.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'alert.updated' AND detail LIKE '%"rule_id":"hr-high"%'`)
}
