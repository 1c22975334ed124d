package routing_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/routing"
)

func compiler(tb testing.TB) *routing.Compiler {
	tb.Helper()
	c, err := routing.NewCompiler()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// baseRule is a valid rule on potassium; cases change what they test.
func baseRule(id string) routing.Rule {
	return routing.Rule{ID: id, Name: "Rule " + id, Enabled: true, Priority: routing.PriorityHigh,
		Match:  routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}}},
		Target: routing.Target{Role: "RN"}, PolicyID: "nursing",
		LockText: "{priority} alert on {unit}", Body: "{test} {value}"}
}

func ruleset(tb testing.TB, rules ...routing.Rule) *routing.Ruleset {
	tb.Helper()
	c := compiler(tb)
	var list []*routing.CompiledRule
	for _, r := range rules {
		cr, err := c.Compile(r, 1)
		if err != nil {
			tb.Fatalf("compile %s: %v", r.ID, err)
		}
		list = append(list, cr)
	}
	return routing.NewRuleset(list)
}

func vital(code string, v float64, units string, flags ...string) ingest.Observation {
	return ingest.Observation{Code: code, System: "LN", Display: code, ValueType: "NM", Value: fmt.Sprint(v),
		Numeric: f64(v), Units: units, Flags: flags}
}

func resultEvent(o ...ingest.Observation) *ingest.Event {
	return &ingest.Event{Kind: ingest.KindResult, Source: "LAB", SourceID: "1", Patient: ingest.Patient{ID: "P1"}, Observations: o}
}

func alarmEvent(source, priority, typ, phase string) *ingest.Event {
	return &ingest.Event{Kind: ingest.KindAlarm, Source: "MON", SourceID: "1", Patient: ingest.Patient{ID: "P1"},
		Alarm: &ingest.Alarm{ID: "A1", Source: source, Priority: priority, Type: typ, Phase: phase, State: "active"}}
}

func TestEvaluate(t *testing.T) {
	in4W := routing.PatientView{Location: ingest.Location{Unit: "4W", Room: "412", Bed: "B"}, Class: "I", Known: true}
	inICU := routing.PatientView{Location: ingest.Location{Unit: "ICU", Room: "2", Bed: "1"}, Class: "I", Known: true}
	outpatient := routing.PatientView{Location: ingest.Location{Unit: "CLINIC"}, Class: "O", Known: true}
	now := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	with := func(id string, f func(r *routing.Rule)) routing.Rule {
		r := baseRule(id)
		f(&r)
		return r
	}
	rules := []routing.Rule{
		with("code-any-system", func(r *routing.Rule) { r.Match.Codes = []routing.Code{{Code: "8867-4"}} }),
		with("k-flags", func(r *routing.Rule) { r.Match.Flags = []string{"HH", "LL"} }),
		with("k-above-mmol", func(r *routing.Rule) { r.Match.Above, r.Match.Units = f64(6.0), "mmol/L" }),
		with("k-below", func(r *routing.Rule) { r.Match.Below = f64(2.8) }),
		with("k-in-icu", func(r *routing.Rule) { r.Match.Above, r.Match.Locations = f64(6.0), []string{"ICU"} }),
		with("k-in-412b", func(r *routing.Rule) { r.Match.Above, r.Match.Locations = f64(6.0), []string{"4W/412/B"} }),
		with("k-inpatient", func(r *routing.Rule) { r.Match.Above, r.Match.PatientClass = f64(6.0), []string{"I"} }),
		with("cel-spo2-icu", func(r *routing.Rule) {
			r.Match.Codes = []routing.Code{{System: "LN", Code: "59408-5"}}
			r.When = `obs.numeric < 88.0 && patient.unit == "ICU"`
		}),
		with("cel-no-code-any-hh", func(r *routing.Rule) {
			r.Match.Codes = nil
			r.When = `"HH" in obs.flags && obs.system == "LN"`
		}),
		with("cel-event-level", func(r *routing.Rule) {
			r.Match.Codes = nil
			r.When = `event.observations.exists(o, o.code == "2823-3") && event.observations.exists(o, o.code == "2160-0" && has(o.numeric) && o.numeric > 2)`
		}),
		with("cel-and-shorthand", func(r *routing.Rule) {
			r.Match.Above = f64(6.0)
			r.When = `obs.units == "mmol/L"` // both must hold
		}),
		with("cel-night", func(r *routing.Rule) {
			r.Match.Codes = []routing.Code{{Code: "8867-4"}}
			r.When = `now.getHours("UTC") < 6 && obs.numeric > 120`
		}),
		with("cel-text-breaks", func(r *routing.Rule) {
			r.Match.Codes = []routing.Code{{Code: "TXT"}}
			r.When = `obs.numeric > 1` // no has(): a text value has no numeric
		}),
		with("adt-admit", func(r *routing.Rule) {
			r.Match = routing.Match{Events: []string{"adt.admit"}, Locations: []string{"4W"}}
			r.Target, r.Priority = routing.Target{Role: "CHARGE_RN"}, routing.PriorityLow
		}),
		with("alarm-vent-ph", func(r *routing.Rule) {
			r.Match = routing.Match{Events: []string{"alarm"}, Codes: []routing.Code{{System: "MDC", Code: "MDC_EVT_VENT_DISCONN"}},
				AlarmPriority: []string{"PH"}}
		}),
		with("alarm-any-technical", func(r *routing.Rule) {
			r.Match = routing.Match{Events: []string{"alarm"}, AlarmType: []string{"ST"}}
		}),
		with("cel-alarm", func(r *routing.Rule) {
			r.Match = routing.Match{Events: []string{"alarm"}}
			r.When = `alarm.source.startsWith("MDC_EVT_VENT") && alarm.type == "SP"`
		}),
	}
	rs := ruleset(t, rules...)
	type want struct {
		fired, normal []string
		errs          []string
	}
	cases := []struct {
		name string
		ev   *ingest.Event
		pv   routing.PatientView
		want want
	}{
		{"flag HH fires flags rule, code-only CEL rule, shorthand+CEL", resultEvent(vital("2823-3", 6.9, "mmol/L", "HH")), in4W,
			want{fired: []string{"cel-and-shorthand", "cel-no-code-any-hh", "k-above-mmol", "k-flags", "k-inpatient", "k-in-412b"},
				normal: []string{"k-below"}}},
		{"value above in other units: only unit-less thresholds", resultEvent(vital("2823-3", 6.9, "mEq/L")), inICU,
			want{fired: []string{"k-in-icu", "k-inpatient"}, normal: []string{"cel-and-shorthand", "k-below", "k-flags"}}},
		{"normal value is a normal hit for every potassium rule", resultEvent(vital("2823-3", 4.1, "mmol/L")), in4W,
			want{normal: []string{"cel-and-shorthand", "k-above-mmol", "k-below", "k-flags", "k-inpatient", "k-in-412b"}}},
		{"below threshold", resultEvent(vital("2823-3", 2.1, "mmol/L")), outpatient,
			want{fired: []string{"k-below"}, normal: []string{"cel-and-shorthand", "k-above-mmol", "k-flags"}}},
		{"system mismatch never matches a rule naming its system", resultEvent(ingest.Observation{Code: "2823-3", System: "99LOCAL",
			Value: "7", Numeric: f64(7), Units: "mmol/L", Flags: []string{"HH"}}), in4W, want{}},
		{"rule without system matches any system", resultEvent(ingest.Observation{Code: "8867-4", System: "99X", Value: "80",
			Numeric: f64(80)}), in4W, want{fired: []string{"code-any-system"}, normal: []string{"cel-night"}}},
		{"CEL with location: SpO2 86 in ICU", resultEvent(vital("59408-5", 86, "%")), inICU, want{fired: []string{"cel-spo2-icu"}}},
		{"CEL with location: SpO2 86 in 4W is normal for it", resultEvent(vital("59408-5", 86, "%")), in4W,
			want{normal: []string{"cel-spo2-icu"}}},
		{"CEL over the whole event", resultEvent(vital("2823-3", 4.0, "mmol/L"), vital("2160-0", 3.1, "mg/dL")), outpatient,
			want{fired: []string{"cel-event-level"}, normal: []string{"cel-and-shorthand", "k-above-mmol", "k-below", "k-flags"}}},
		{"CEL with now: night tachycardia", resultEvent(vital("8867-4", 130, "/min")), in4W,
			want{fired: []string{"cel-night", "code-any-system"}}},
		{"CEL runtime error counts as no match", resultEvent(ingest.Observation{Code: "TXT", System: "LN", Value: "see note"}), in4W,
			want{errs: []string{"cel-text-breaks"}}},
		{"ADT admit to 4W fires the admit notice", &ingest.Event{Kind: ingest.KindAdmit, Patient: ingest.Patient{ID: "P1"}}, in4W,
			want{fired: []string{"adt-admit"}}},
		{"ADT admit elsewhere does not", &ingest.Event{Kind: ingest.KindAdmit, Patient: ingest.Patient{ID: "P1"}}, inICU, want{}},
		{"ADT transfer is another event type", &ingest.Event{Kind: ingest.KindTransfer, Patient: ingest.Patient{ID: "P1"}}, in4W, want{}},
		{"alarm: priority and type shorthands and CEL", alarmEvent("MDC_EVT_VENT_DISCONN", "PH", "SP", "start"), inICU,
			want{fired: []string{"alarm-vent-ph", "cel-alarm"}}},
		{"alarm: PM is not PH", alarmEvent("MDC_EVT_VENT_DISCONN", "PM", "ST", "start"), inICU,
			want{fired: []string{"alarm-any-technical"}}}, // a PM alarm says nothing about the PH rule: not "normal"
		{"alarm that ended fires nothing", alarmEvent("MDC_EVT_VENT_DISCONN", "PH", "SP", "end"), inICU, want{}},
		{"alarm rules ignore results", resultEvent(ingest.Observation{Code: "MDC_EVT_VENT_DISCONN", System: "MDC", Flags: []string{"PH"}}),
			inICU, want{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hits, errs := rs.Evaluate(c.ev, c.pv, now)
			var fired, normal, errIDs []string
			for _, h := range hits {
				if h.Normal {
					normal = append(normal, h.Rule.Rule.ID)
				} else {
					fired = append(fired, h.Rule.Rule.ID)
				}
			}
			for _, e := range errs {
				errIDs = append(errIDs, e.RuleID)
			}
			slices.Sort(fired)
			slices.Sort(normal)
			w := c.want
			slices.Sort(w.fired)
			slices.Sort(w.normal)
			if !slices.Equal(fired, w.fired) || !slices.Equal(normal, w.normal) || !slices.Equal(errIDs, w.errs) {
				t.Errorf("fired %v normal %v errors %v\nwant fired %v normal %v errors %v", fired, normal, errIDs, w.fired, w.normal, w.errs)
			}
		})
	}
}

func TestEvaluateFirstFiringObservationWins(t *testing.T) {
	r := baseRule("k")
	r.Match.Flags = []string{"HH"}
	rs := ruleset(t, r)
	ev := resultEvent(vital("2823-3", 4.0, "mmol/L"), vital("2823-3", 7.0, "mmol/L", "HH"), vital("2823-3", 7.5, "mmol/L", "HH"))
	hits, _ := rs.Evaluate(ev, routing.PatientView{}, time.Now())
	if len(hits) != 1 || hits[0].Normal || hits[0].Obs != &ev.Observations[1] {
		t.Fatalf("hits = %+v, want one firing hit on the second observation", hits)
	}
}

func TestCELCostLimit(t *testing.T) {
	r := baseRule("heavy")
	r.Match.Codes = nil
	r.When = `event.observations.all(a, event.observations.all(b, event.observations.all(c, a.code != "" || b.code != "" || c.code != "")))`
	rs := ruleset(t, r)
	var obs []ingest.Observation
	for i := range 40 {
		obs = append(obs, vital(fmt.Sprint(i), 1, ""))
	}
	hits, errs := rs.Evaluate(resultEvent(obs...), routing.PatientView{}, time.Now())
	if len(hits) != 0 || len(errs) == 0 || errs[0].RuleID != "heavy" {
		t.Fatalf("hits %v errs %v, want the cost limit to stop the rule", hits, errs)
	}
}

func TestCompileRejectsBadConditions(t *testing.T) {
	c := compiler(t)
	cases := []struct{ name, when, wantReason string }{
		{"syntax error", `obs.numeric <`, "Syntax error"},
		{"unknown field", `obs.numerc < 88`, "unknown field obs.numerc"},
		{"unknown patient field", `patient.mrn == "1"`, "unknown field patient.mrn"},
		{"not a boolean", `obs.numeric + 1`, "must be a boolean"},
		{"unknown variable", `pt.unit == "ICU"`, "undeclared reference"},
		{"unknown function", `obs.value.shout()`, "undeclared reference to 'shout'"},
		{"too long", strings.Repeat("true && ", 600) + "true", "longer than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := baseRule("x")
			r.When = tc.when
			_, err := c.Compile(r, 1)
			var ire *routing.InvalidRuleError
			if !errors.As(err, &ire) || ire.Field != "when" || !strings.Contains(ire.Reason, tc.wantReason) {
				t.Fatalf("Compile(when=%q) = %v, want a `when` error containing %q", tc.when, err, tc.wantReason)
			}
		})
	}
}

func TestValidateFatigueControls(t *testing.T) {
	cases := []struct {
		name      string
		mutate    func(r *routing.Rule)
		wantField string
	}{
		{"valid sustain", func(r *routing.Rule) { r.Sustain = &routing.Sustain{Seconds: 60} }, ""},
		{"empty sustain", func(r *routing.Rule) { r.Sustain = &routing.Sustain{} }, "sustain"},
		{"sustain without codes", func(r *routing.Rule) {
			r.Match.Codes, r.When, r.Sustain = nil, "true", &routing.Sustain{Readings: 3}
		}, "sustain"},
		{"auto-resolve on normal without codes", func(r *routing.Rule) {
			r.Match.Codes, r.When, r.AutoResolve = nil, "true", &routing.AutoResolve{OnNormal: true}
		}, "auto_resolve.on_normal"},
		{"auto-resolve on alarm end without alarms", func(r *routing.Rule) { r.AutoResolve = &routing.AutoResolve{OnAlarmEnd: true} }, ""},
		{"auto-resolve on alarm end, results only", func(r *routing.Rule) {
			r.Match.Events, r.AutoResolve = []string{"result"}, &routing.AutoResolve{OnAlarmEnd: true}
		}, "auto_resolve.on_alarm_end"},
		{"rate limit zero", func(r *routing.Rule) { r.RateLimit = &routing.RateLimit{Max: 0, PerSeconds: 60} }, "rate_limit.max"},
		{"quiet hours on PH", func(r *routing.Rule) { r.QuietHours = &routing.QuietHours{From: "22:00", To: "07:00"} }, "quiet_hours"},
		{"quiet hours bad clock", func(r *routing.Rule) {
			r.Priority, r.QuietHours = routing.PriorityLow, &routing.QuietHours{From: "22h", To: "07:00"}
		}, "quiet_hours.from"},
		{"quiet hours bad action", func(r *routing.Rule) {
			r.Priority, r.QuietHours = routing.PriorityLow, &routing.QuietHours{From: "22:00", To: "07:00", Action: "mute"}
		}, "quiet_hours.action"},
		{"group bad name", func(r *routing.Rule) { r.Group = &routing.Group{Name: "Vitals!", WindowSeconds: 60} }, "group.name"},
		{"dedup unknown field", func(r *routing.Rule) { r.Dedup = &routing.Dedup{By: []string{"mrn"}} }, "dedup.by[0]"},
		{"escalation too fast", func(r *routing.Rule) { r.Escalation = &routing.Escalation{DelayScale: 0.01} }, "escalation.delay_scale"},
		{"on_transfer unknown", func(r *routing.Rule) { r.OnTransfer = "page-everyone" }, "on_transfer"},
		{"on_discharge unknown", func(r *routing.Rule) { r.OnDischarge = "retarget" }, "on_discharge"},
		{"unknown event kind", func(r *routing.Rule) { r.Match.Events = []string{"order"} }, "match.events"},
		{"codes on an ADT-only rule", func(r *routing.Rule) { r.Match.Events = []string{"adt.admit"} }, "match.codes"},
		{"bad location", func(r *routing.Rule) { r.Match.Locations = []string{"4W//B"} }, "match.locations[0]"},
		{"alarm priority without alarms", func(r *routing.Rule) {
			r.Match.Events, r.Match.AlarmPriority = []string{"result"}, []string{"PH"}
		}, "match.events"},
		{"thresholds the wrong way round", func(r *routing.Rule) { r.Match.Above, r.Match.Below = f64(2), f64(6) }, "match.above"},
		{"id with a bar", func(r *routing.Rule) { r.ID = "a|b" }, "id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := baseRule("k")
			c.mutate(&r)
			err := r.Validate()
			if c.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var re routing.RuleErrors
			if !errors.As(err, &re) {
				t.Fatalf("Validate() = %v, want RuleErrors", err)
			}
			if !slices.ContainsFunc(re, func(e *routing.InvalidRuleError) bool { return e.Field == c.wantField }) {
				t.Fatalf("Validate() = %v, want a problem on %q", err, c.wantField)
			}
		})
	}
}

func TestQuietWindow(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		from, to  string
		local     time.Time
		wantQuiet bool
		wantEnd   time.Time
	}{
		{"inside, before midnight", "22:00", "07:00", time.Date(2026, 3, 1, 23, 0, 0, 0, ny), true, time.Date(2026, 3, 2, 7, 0, 0, 0, ny)},
		{"inside, after midnight", "22:00", "07:00", time.Date(2026, 3, 2, 3, 0, 0, 0, ny), true, time.Date(2026, 3, 2, 7, 0, 0, 0, ny)},
		{"at the end is outside", "22:00", "07:00", time.Date(2026, 3, 2, 7, 0, 0, 0, ny), false, time.Time{}},
		{"daytime", "22:00", "07:00", time.Date(2026, 3, 2, 12, 0, 0, 0, ny), false, time.Time{}},
		{"same-day window", "12:00", "14:00", time.Date(2026, 3, 2, 13, 59, 0, 0, ny), true, time.Date(2026, 3, 2, 14, 0, 0, 0, ny)},
		{"across the spring-forward night: ends at 07:00 EDT", "22:00", "07:00", time.Date(2026, 3, 7, 23, 30, 0, 0, ny), true,
			time.Date(2026, 3, 8, 7, 0, 0, 0, ny)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			end, quiet, err := routing.QuietWindow(c.from, c.to, c.local)
			if err != nil || quiet != c.wantQuiet || (quiet && !end.Equal(c.wantEnd)) {
				t.Fatalf("QuietWindow = %v %v %v, want %v %v", end, quiet, err, c.wantEnd, c.wantQuiet)
			}
		})
	}
	if got := time.Date(2026, 3, 8, 7, 0, 0, 0, ny).Sub(time.Date(2026, 3, 7, 23, 30, 0, 0, ny)); got != 6*time.Hour+30*time.Minute {
		t.Fatalf("spring-forward night is %v long, want 6h30", got)
	}
}

func TestTrend(t *testing.T) {
	cases := []struct {
		name string
		cur  float64
		prev *float64
		want string
	}{
		{"up", 6.9, f64(5.9), "↑ from 5.9"},
		{"down", 5.1, f64(6.2), "↓ from 6.2"},
		{"same", 6, f64(6), "= 6 before"},
		{"no previous", 6, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := routing.Trend(c.cur, c.prev); got != c.want {
				t.Fatalf("Trend = %q, want %q", got, c.want)
			}
		})
	}
}

// Concerns tells routing when no rule can act on an event, so that it
// reads and writes nothing for it.
func TestConcerns(t *testing.T) {
	k := baseRule("k")
	trend := baseRule("hr-trend")
	trend.Match.Codes, trend.Body = []routing.Code{{Code: "8867-4"}}, "HR {value} {trend}"
	anyResult := baseRule("any-result")
	anyResult.Match.Codes, anyResult.When = nil, `obs.code == "1920-8"`
	alarm := baseRule("vfib")
	alarm.Match.Codes = []routing.Code{{System: "MDC", Code: "MDC_EVT_ECG_V_FIB"}}
	cases := []struct {
		name  string
		rules []routing.Rule
		ev    *ingest.Event
		want  bool
	}{
		{"no rules", nil, resultEvent(vital("2823-3", 6.9, "mmol/L")), false},
		{"a rule on its code", []routing.Rule{k}, resultEvent(vital("2823-3", 6.9, "mmol/L")), true},
		{"one of several codes", []routing.Rule{k}, resultEvent(vital("1920-8", 30, "U/L"), vital("2823-3", 4, "mmol/L")), true},
		{"no rule on its codes", []routing.Rule{k, alarm}, resultEvent(vital("1920-8", 30, "U/L")), false},
		{"a trend kept for its code", []routing.Rule{trend}, resultEvent(vital("8867-4", 80, "/min")), true},
		{"a rule without codes", []routing.Rule{anyResult}, resultEvent(vital("718-7", 12, "g/dL")), true},
		{"an alarm a rule names", []routing.Rule{alarm}, alarmEvent("MDC_EVT_ECG_V_FIB", "PH", "SA", "start"), true},
		{"an alarm no rule names", []routing.Rule{k, alarm}, alarmEvent("MDC_EVT_LO_BATT", "PL", "ST", "start"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ruleset(t, c.rules...).Concerns(c.ev); got != c.want {
				t.Fatalf("Concerns = %v, want %v", got, c.want)
			}
		})
	}
}
