package routing_test

import (
	"database/sql"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/routing"
)

// Rules of the fatigue tests.
func kCrit() routing.Rule {
	r := baseRule("k-crit")
	r.Name, r.Match.Flags = "Critical potassium", []string{"HH", "LL"}
	r.Body = "Bed {bed}: {test} {value} {units} ({flag}) {trend}"
	return r
}

func spo2Low(sustain *routing.Sustain) routing.Rule {
	r := baseRule("spo2-low")
	r.Name = "SpO2 below 88"
	r.Match = routing.Match{Codes: []routing.Code{{System: "LN", Code: "59408-5"}}, Below: f64(88), Units: "%"}
	r.Sustain, r.AutoResolve = sustain, &routing.AutoResolve{OnNormal: true}
	r.Body = "Bed {bed}: SpO2 {value}% {trend}"
	return r
}

func hrHigh() routing.Rule {
	r := baseRule("hr-high")
	r.Name, r.Priority = "Heart rate high", routing.PriorityMedium
	r.Match = routing.Match{Codes: []routing.Code{{System: "LN", Code: "8867-4"}}, Above: f64(130)}
	r.Body = "HR {value}"
	return r
}

func TestFatigueControls(t *testing.T) {
	cases := []struct {
		name   string
		opts   routing.Options
		rules  func() []routing.Rule
		script func(t *testing.T, h *hospital)
	}{
		{"dedup: one open alert per patient and rule; later matches update it with the newest value and a count",
			routing.Options{}, func() []routing.Rule { return []routing.Rule{kCrit()} },
			func(t *testing.T, h *hospital) {
				first := h.at(0).route(labK(6.9, "HH"))
				if len(first.Opened) != 1 {
					t.Fatalf("first: %+v", first)
				}
				id := first.Opened[0].ID
				second := h.at(time.Minute).route(labK(7.4, "HH"))
				third := h.at(2 * time.Minute).route(labK(7.1, "HH"))
				if len(second.Opened)+len(third.Opened) != 0 || !slices.Equal(append(second.Updated, third.Updated...), []string{id, id}) {
					t.Fatalf("repeats: %+v %+v, want both to update %s", second, third, id)
				}
				a := h.alert(id)
				if a.Updates != 2 || a.Body != "Bed B: Potassium 7.1 mmol/L (HH) ↓ from 7.4" || a.State != routing.StateOpen {
					t.Errorf("alert after dedup: updates %d body %q state %s", a.Updates, a.Body, a.State)
				}
			}},
		{"dedup by code: one alert per code of a multi-code rule",
			routing.Options{}, func() []routing.Rule {
				r := hrHigh()
				r.Match.Codes = append(r.Match.Codes, routing.Code{System: "LN", Code: "9279-1"})
				r.Dedup = &routing.Dedup{By: []string{"code"}}
				return []routing.Rule{r}
			},
			func(t *testing.T, h *hospital) {
				a := h.route(reading("8867-4", 150, "/min", 0))
				b := h.route(reading("9279-1", 150, "/min", 0))
				c := h.route(reading("8867-4", 155, "/min", time.Second))
				if len(a.Opened) != 1 || len(b.Opened) != 1 || len(c.Updated) != 1 || c.Updated[0] != a.Opened[0].ID {
					t.Fatalf("outcomes %+v %+v %+v", a, b, c)
				}
			}},
		{"sustain 60 s: a spike that recovers opens nothing; a run that lasts opens once",
			routing.Options{}, func() []routing.Rule { return []routing.Rule{spo2Low(&routing.Sustain{Seconds: 60})} },
			func(t *testing.T, h *hospital) {
				for _, r := range []struct {
					v  float64
					at time.Duration
				}{{85, 0}, {86, 30 * time.Second}} {
					if out := h.at(r.at).route(reading("59408-5", r.v, "%", r.at)); len(out.Opened) != 0 || out.Suppressed != 1 {
						t.Fatalf("reading %v: %+v, want held back", r.v, out)
					}
				}
				if n := h.count(`SELECT readings FROM rule_sustain WHERE rule_id = 'spo2-low'`); n != 2 {
					t.Fatalf("sustain run has %d readings, want 2", n)
				}
				out := h.at(45 * time.Second).route(reading("59408-5", 95, "%", 45*time.Second))
				if out.Suppressed != 1 || h.count(`SELECT COUNT(*) FROM rule_sustain`) != 0 {
					t.Fatalf("recovery: %+v, want the run ended and counted as suppressed", out)
				}
				var opened []*routing.Alert
				for _, s := range []time.Duration{100, 130, 160, 170} {
					at := s * time.Second
					opened = append(opened, h.at(at).route(reading("59408-5", 84, "%", at)).Opened...)
				}
				if len(opened) != 1 || h.count(`SELECT COUNT(*) FROM alerts`) != 1 {
					t.Fatalf("sustained run opened %d alerts (%d stored), want 1", len(opened), h.count(`SELECT COUNT(*) FROM alerts`))
				}
				if d := h.auditDetail("alert.opened", opened[0].ID); d["sustained_readings"] != float64(3) {
					t.Errorf("opened after %v readings, want 3 (100 s, 130 s, 160 s)", d["sustained_readings"])
				}
				if n := h.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'alert.suppressed' AND detail LIKE '%"reason":"sustain"%'`); n != 1 {
					t.Errorf("%d sustain suppressions audited, want 1 (the recovered spike)", n)
				}
			}},
		{"sustain N readings",
			routing.Options{}, func() []routing.Rule {
				r := hrHigh()
				r.Sustain = &routing.Sustain{Readings: 3}
				return []routing.Rule{r}
			},
			func(t *testing.T, h *hospital) {
				var opened int
				for i, v := range []float64{140, 150, 155} {
					out := h.route(reading("8867-4", v, "/min", time.Duration(i)*5*time.Second))
					opened += len(out.Opened)
					if i < 2 && opened != 0 {
						t.Fatalf("opened after %d readings", i+1)
					}
				}
				if opened != 1 {
					t.Fatalf("opened %d after 3 readings, want 1", opened)
				}
			}},
		{"sustain: a gap longer than max_gap_seconds restarts the run",
			routing.Options{}, func() []routing.Rule {
				return []routing.Rule{spo2Low(&routing.Sustain{Seconds: 60, MaxGapSeconds: 120})}
			},
			func(t *testing.T, h *hospital) {
				h.route(reading("59408-5", 85, "%", 0))
				out := h.at(10 * time.Minute).route(reading("59408-5", 85, "%", 10*time.Minute))
				if len(out.Opened) != 0 {
					t.Fatalf("two readings 10 minutes apart opened an alert: %+v", out)
				}
				if n := h.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'rule.sustain_started'`); n != 2 {
					t.Fatalf("%d runs started, want 2", n)
				}
			}},
		{"auto-resolve: a normal reading closes the open alert and cancels its timers",
			routing.Options{}, func() []routing.Rule { return []routing.Rule{spo2Low(nil)} },
			func(t *testing.T, h *hospital) {
				id := h.route(reading("59408-5", 84, "%", 0)).Opened[0].ID
				if _, err := h.d.ExecContext(h.ctx, `INSERT INTO escalation_timers (id, alert_id, step, due_at, state)
					VALUES ('tmr_1', $1, 0, $2, 'pending')`, id, t0.Add(time.Minute).UnixMicro()); err != nil {
					t.Fatal(err)
				}
				out := h.at(30 * time.Second).route(reading("59408-5", 97, "%", 30*time.Second))
				if len(out.Closed) != 1 || out.Closed[0].ID != id || out.Closed[0].Reason != routing.CloseNormal || out.Closed[0].AcceptedBy != "" {
					t.Fatalf("outcome %+v, want the alert closed as normal", out)
				}
				a := h.alert(id)
				if a.State != routing.StateClosed || a.CloseReason != routing.CloseNormal || a.ClosedAt == nil {
					t.Errorf("alert %+v", a)
				}
				if n := h.count(`SELECT COUNT(*) FROM escalation_timers WHERE state = 'cancelled'`); n != 1 {
					t.Errorf("%d cancelled timers, want 1", n)
				}
			}},
		{"auto-resolve of an accepted alert closes it with a notice, never silently",
			routing.Options{}, func() []routing.Rule { return []routing.Rule{spo2Low(nil)} },
			func(t *testing.T, h *hospital) {
				id := h.route(reading("59408-5", 84, "%", 0)).Opened[0].ID
				if err := routing.SetAlertState(h.ctx, h.d, id, routing.StateAccepted, 0, "rn1", t0.Add(10*time.Second)); err != nil {
					t.Fatal(err)
				}
				out := h.at(time.Minute).route(reading("59408-5", 96, "%", time.Minute))
				if len(out.Closed) != 1 || out.Closed[0].AcceptedBy != "rn1" || out.Closed[0].PreviousState != routing.StateAccepted {
					t.Fatalf("outcome %+v, want the accepted alert closed with rn1 to notify", out)
				}
				if d := h.auditDetail("alert.closed", id); d["notify_user_id"] != "rn1" || d["previous_state"] != "accepted" {
					t.Errorf("alert.closed detail %v", d)
				}
			}},
		{"dedup: a firing after the alert was accepted opens a new one; the next folds into that",
			routing.Options{}, func() []routing.Rule { return []routing.Rule{spo2Low(nil)} },
			func(t *testing.T, h *hospital) {
				id := h.route(reading("59408-5", 84, "%", 0)).Opened[0].ID
				if err := routing.SetAlertState(h.ctx, h.d, id, routing.StateAccepted, 0, "rn1", t0.Add(10*time.Second)); err != nil {
					t.Fatal(err)
				}
				out := h.at(time.Minute).route(reading("59408-5", 83, "%", time.Minute))
				if len(out.Opened) != 1 || len(out.Updated) != 0 {
					t.Fatalf("outcome %+v, want a new alert beside the accepted one", out)
				}
				again := h.at(2 * time.Minute).route(reading("59408-5", 82, "%", 2*time.Minute))
				if !slices.Equal(again.Updated, []string{out.Opened[0].ID}) {
					t.Fatalf("outcome %+v, want the new alert updated", again)
				}
			}},
		{"auto-resolve when the IHE alarm ends",
			routing.Options{}, func() []routing.Rule {
				r := baseRule("vent")
				r.Match = routing.Match{Events: []string{"alarm"}, Codes: []routing.Code{{System: "MDC", Code: "MDC_EVT_VENT_DISCONN"}}}
				r.AutoResolve = &routing.AutoResolve{OnAlarmEnd: true}
				r.Dedup = &routing.Dedup{By: []string{"alarm_id"}}
				return []routing.Rule{r}
			},
			func(t *testing.T, h *hospital) {
				id := h.route(alarmEvent("MDC_EVT_VENT_DISCONN", "PH", "SP", "start")).Opened[0].ID
				if out := h.route(alarmEvent("MDC_EVT_VENT_DISCONN", "PH", "SP", "continue")); !slices.Equal(out.Updated, []string{id}) {
					t.Fatalf("continue: %+v", out)
				}
				out := h.route(alarmEvent("MDC_EVT_VENT_DISCONN", "PH", "SP", "end"))
				if len(out.Closed) != 1 || out.Closed[0].Reason != routing.CloseAlarmEnd {
					t.Fatalf("end: %+v, want the alert closed", out)
				}
			}},
		{"rate limit: at most one alert per patient and rule per hour",
			routing.Options{}, func() []routing.Rule {
				r := spo2Low(nil)
				r.RateLimit = &routing.RateLimit{Max: 1, PerSeconds: 3600}
				return []routing.Rule{r}
			},
			func(t *testing.T, h *hospital) {
				h.route(reading("59408-5", 84, "%", 0))
				h.at(time.Minute).route(reading("59408-5", 97, "%", time.Minute)) // auto-resolved
				out := h.at(2 * time.Minute).route(reading("59408-5", 84, "%", 2*time.Minute))
				if len(out.Opened) != 0 || out.Suppressed != 1 {
					t.Fatalf("within the hour: %+v, want suppressed", out)
				}
				h.at(3 * time.Minute).route(reading("59408-5", 97, "%", 3*time.Minute))
				if out := h.at(61 * time.Minute).route(reading("59408-5", 84, "%", 61*time.Minute)); len(out.Opened) != 1 {
					t.Fatalf("after the hour: %+v, want a new alert", out)
				}
			}},
		{"quiet hours hold: a PL alert at 23:00 unit time waits until 07:00",
			routing.Options{}, func() []routing.Rule {
				r := hrHigh()
				r.Priority, r.QuietHours = routing.PriorityLow, &routing.QuietHours{From: "22:00", To: "07:00"}
				return []routing.Rule{r}
			},
			func(t *testing.T, h *hospital) {
				h.at(13 * time.Hour) // 23:00 in New York
				out := h.route(reading("8867-4", 140, "/min", 13*time.Hour))
				if len(out.Opened) != 0 || len(out.Held) != 1 {
					t.Fatalf("outcome %+v, want held", out)
				}
				a := h.alert(out.Held[0])
				if want := time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC); a.State != routing.StateHeld || a.ReleaseAt == nil || !a.ReleaseAt.Equal(want) {
					t.Fatalf("held alert %+v, want release at %v", a, want)
				}
				if more := h.route(reading("8867-4", 150, "/min", 13*time.Hour+time.Minute)); !slices.Equal(more.Updated, []string{a.ID}) {
					t.Fatalf("a repeat during quiet hours: %+v, want it folded into the held alert", more)
				}
				release := func(at time.Time) []*routing.Alert {
					var got []*routing.Alert
					err := h.d.InTx(h.ctx, func(tx *sql.Tx) error {
						var err error
						got, err = h.router.ReleaseHeld(h.ctx, tx, "", at)
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
					return got
				}
				if got := release(a.ReleaseAt.Add(-time.Second)); len(got) != 0 {
					t.Fatalf("released %d before 07:00", len(got))
				}
				got := release(*a.ReleaseAt)
				if len(got) != 1 || got[0].ID != a.ID || got[0].State != routing.StateOpen || got[0].Body != "HR 150" {
					t.Fatalf("released %+v, want the held alert, open, with the newest body", got)
				}
			}},
		{"quiet hours drop",
			routing.Options{}, func() []routing.Rule {
				r := hrHigh()
				r.Priority = routing.PriorityNone
				r.QuietHours = &routing.QuietHours{From: "22:00", To: "07:00", Action: routing.QuietDrop}
				return []routing.Rule{r}
			},
			func(t *testing.T, h *hospital) {
				out := h.at(14 * time.Hour).route(reading("8867-4", 140, "/min", 14*time.Hour))
				if len(out.Opened)+len(out.Held) != 0 || out.Suppressed != 1 || h.count(`SELECT COUNT(*) FROM alerts`) != 0 {
					t.Fatalf("outcome %+v, want dropped", out)
				}
				if n := h.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'alert.suppressed' AND object_id = 'hr-high'`); n != 1 {
					t.Fatalf("%d suppressions audited, want 1", n)
				}
				if out := h.at(15 * time.Minute).route(reading("8867-4", 140, "/min", 15*time.Minute)); len(out.Opened) != 1 {
					t.Fatalf("in daytime: %+v, want opened", out)
				}
			}},
		{"grouping: rules of one group fold into one alert per patient; a higher priority keeps its own",
			routing.Options{}, func() []routing.Rule {
				hr, rr, sp := hrHigh(), hrHigh(), spo2Low(nil)
				rr.ID, rr.Name = "rr-high", "Resp rate high"
				rr.Match.Codes, rr.Match.Above, rr.Body = []routing.Code{{System: "LN", Code: "9279-1"}}, f64(30), "RR {value}"
				g := &routing.Group{Name: "vitals", WindowSeconds: 300}
				hr.Group, rr.Group, sp.Group = g, g, g
				hr.AutoResolve = &routing.AutoResolve{OnNormal: true}
				rr.AutoResolve = &routing.AutoResolve{OnNormal: true}
				return []routing.Rule{hr, rr, sp}
			},
			func(t *testing.T, h *hospital) {
				first := h.route(reading("8867-4", 140, "/min", 0))
				id := first.Opened[0].ID
				second := h.at(time.Minute).route(reading("9279-1", 32, "/min", time.Minute))
				if len(second.Opened) != 0 || !slices.Equal(second.Updated, []string{id}) {
					t.Fatalf("second rule: %+v, want grouped into %s", second, id)
				}
				if a := h.alert(id); a.Body != "HR 140\nRR 32" || a.GroupName != "vitals" {
					t.Fatalf("grouped body %q", a.Body)
				}
				if ph := h.at(2 * time.Minute).route(reading("59408-5", 80, "%", 2*time.Minute)); len(ph.Opened) != 1 {
					t.Fatalf("PH SpO2 folded into a PM alert: %+v", ph)
				}
				h.at(3 * time.Minute).route(reading("8867-4", 80, "/min", 3*time.Minute))
				if a := h.alert(id); a.State != routing.StateOpen {
					t.Fatalf("one part normal closed the grouped alert")
				}
				if out := h.at(4 * time.Minute).route(reading("9279-1", 16, "/min", 4*time.Minute)); len(out.Closed) != 1 {
					t.Fatalf("last part normal: %+v, want the grouped alert closed", out)
				}
				if late := h.at(10 * time.Minute).route(reading("9279-1", 33, "/min", 10*time.Minute)); len(late.Opened) != 1 {
					t.Fatalf("outside the window: %+v, want a new alert", late)
				}
			}},
		{"transfer: retarget (default), keep and close",
			routing.Options{}, func() []routing.Rule {
				keep, closing := hrHigh(), spo2Low(nil)
				keep.OnTransfer, closing.OnTransfer = routing.OnTransferKeep, routing.OnTransferClose
				return []routing.Rule{kCrit(), keep, closing}
			},
			func(t *testing.T, h *hospital) {
				k := h.route(labK(6.9, "HH")).Opened[0]
				hr := h.route(reading("8867-4", 140, "/min", 0)).Opened[0]
				sp := h.route(reading("59408-5", 84, "%", 0)).Opened[0]
				out := h.at(time.Minute).route(adt(ingest.KindTransfer, "P1", ingest.Location{Unit: "ICU", Room: "2", Bed: "1"}, ingest.Visit{}))
				if len(out.Retargeted) != 1 || out.Retargeted[0].ID != k.ID || out.Retargeted[0].Unit != "ICU" ||
					out.Retargeted[0].LockText != "PH alert on ICU" {
					t.Fatalf("retargeted %+v, want the potassium alert in ICU", out.Retargeted)
				}
				if a := h.alert(hr.ID); a.Unit != "4W" || a.State != routing.StateOpen {
					t.Errorf("keep: %+v", a)
				}
				if a := h.alert(sp.ID); a.State != routing.StateClosed || a.CloseReason != routing.CloseTransfer {
					t.Errorf("close: %+v", a)
				}
				if next := h.route(labK(7.2, "HH")); !slices.Equal(next.Updated, []string{k.ID}) {
					t.Errorf("a later result: %+v, want it to update the retargeted alert", next)
				}
			}},
		{"discharge: keep (default) or close",
			routing.Options{}, func() []routing.Rule {
				closing := hrHigh()
				closing.OnDischarge = routing.OnDischargeClose
				return []routing.Rule{kCrit(), closing}
			},
			func(t *testing.T, h *hospital) {
				k := h.route(labK(6.9, "HH")).Opened[0]
				hr := h.route(reading("8867-4", 140, "/min", 0)).Opened[0]
				out := h.at(time.Minute).route(adt(ingest.KindDischarge, "P1", ingest.Location{}, ingest.Visit{}))
				if len(out.Closed) != 1 || out.Closed[0].ID != hr.ID || out.Closed[0].Reason != routing.CloseDischarge {
					t.Fatalf("closed %+v, want the heart-rate alert", out.Closed)
				}
				if a := h.alert(k.ID); a.State != routing.StateOpen {
					t.Errorf("the critical potassium of a discharged patient must still reach someone: %+v", a)
				}
			}},
		{"ADT rule: an admission notice to the charge nurse",
			routing.Options{}, func() []routing.Rule {
				r := baseRule("admit-notice")
				r.Name, r.Priority = "Admission to 4W", routing.PriorityLow
				r.Match = routing.Match{Events: []string{"adt.admit"}, Locations: []string{"4W"}}
				r.Target = routing.Target{Role: "CHARGE_RN"}
				r.Body = "{event} to {unit} room {room} bed {bed} (class {class})"
				return []routing.Rule{r}
			},
			func(t *testing.T, h *hospital) {
				out := h.route(adt(ingest.KindAdmit, "P2", ingest.Location{Unit: "4W", Room: "415", Bed: "A"}, ingest.Visit{Class: "I"}))
				if len(out.Opened) != 1 {
					t.Fatalf("admit: %+v", out)
				}
				a := out.Opened[0]
				if a.TargetKind != routing.TargetRole || a.TargetID != "CHARGE_RN" || a.Failsafe ||
					a.Body != "Admission to 4W room 415 bed A (class I)" || a.PatientID != "pt_P2" {
					t.Errorf("admit notice %+v body %q", a, a.Body)
				}
				if icu := h.route(adt(ingest.KindAdmit, "P3", ingest.Location{Unit: "ICU"}, ingest.Visit{})); len(icu.Opened) != 0 {
					t.Errorf("an ICU admission fired the 4W notice")
				}
			}},
		{"escalation speed per priority, overridden by the rule",
			routing.Options{DelayPercent: map[string]int{routing.PriorityHigh: 50, routing.PriorityMedium: 100}},
			func() []routing.Rule {
				slow := hrHigh()
				slow.Escalation = &routing.Escalation{DelayScale: 2}
				return []routing.Rule{kCrit(), slow}
			},
			func(t *testing.T, h *hospital) {
				k := h.route(labK(6.9, "HH")).Opened[0]
				hr := h.route(reading("8867-4", 140, "/min", 0)).Opened[0]
				if k.DelayPct != 50 || hr.DelayPct != 200 {
					t.Fatalf("delay_pct PH %d (want 50), rule override %d (want 200)", k.DelayPct, hr.DelayPct)
				}
				if got := h.alert(k.ID).DelayPct; got != 50 {
					t.Fatalf("stored delay_pct %d", got)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dbtest.Each(t, func(t *testing.T, d *db.DB) {
				h := newHospital(t, d, c.opts)
				h.put(c.rules()...)
				c.script(t, h)
				assertNoBlackHole(t, d, h.now)
			})
		})
	}
}

func TestMessagesHoldNoPHIInAudit(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		h := newHospital(t, d, routing.Options{})
		h.put(kCrit(), spo2Low(&routing.Sustain{Seconds: 60}))
		h.route(labK(6.9, "HH"))
		h.route(reading("59408-5", 85, "%", 0))
		h.at(time.Minute).route(reading("59408-5", 95, "%", time.Minute))
		dbtest.ChainAudit(t, d)
		rows, err := d.QueryContext(h.ctx, `SELECT detail FROM audit_log`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			for _, phi := range []string{"\"P1\"", "6.9", "Potassium", "412", "\"85", "95"} {
				if strings.Contains(s, phi) {
					t.Errorf("audit detail %s contains %q", s, phi)
				}
			}
		}
	})
}
