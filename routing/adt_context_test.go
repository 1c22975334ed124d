package routing_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/routing"
)

// keyPseudo is a readable pseudonymizer: pt_<patient key>.
type keyPseudo struct{}

func (keyPseudo) Pseudonym(prefix, value string) string { return prefix + "_" + value }

func adt(kind ingest.Kind, mrn string, loc ingest.Location, v ingest.Visit) *ingest.Event {
	return &ingest.Event{Kind: kind, Source: "ADT^GHH", SourceID: string(kind) + mrn, Trigger: "ADT",
		Patient: ingest.Patient{ID: mrn}, Location: loc, Visit: v}
}

func at(unit, bed string) ingest.Location { return ingest.Location{Unit: unit, Room: "1", Bed: bed} }

func routeAll(t *testing.T, d *db.DB, now time.Time, evs ...*ingest.Event) []routing.Outcome {
	t.Helper()
	router := routing.NewRouter(testKeys(t))
	var outs []routing.Outcome
	for i, ev := range evs {
		err := d.InTx(context.Background(), func(tx *sql.Tx) error {
			out, err := router.Route(context.Background(), tx, fmt.Sprintf("evt_%d", i), ev, keyPseudo{}, now)
			outs = append(outs, out)
			return err
		})
		if err != nil {
			t.Fatalf("route event %d (%s): %v", i, ev.Kind, err)
		}
		now = now.Add(time.Minute)
	}
	return outs
}

// routeInSession routes evs in one transaction, through one routing
// session that prefetched their patients' contexts and alerts, as the pipeline
// routes a batch. Before the commit, it checks that the session's view of
// each patient's context is what the database holds.
func routeInSession(t *testing.T, d *db.DB, now time.Time, evs ...*ingest.Event) {
	t.Helper()
	router := routing.NewRouter(testKeys(t))
	ctx := context.Background()
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		sess := router.Session(tx)
		var patients []string
		for _, ev := range evs {
			patients = append(patients, routing.PatientID(keyPseudo{}, ev.Patient))
		}
		if err := sess.Prefetch(ctx, patients); err != nil {
			return err
		}
		p := d.PipeIn(tx)
		sess.QueueActive(p, patients) // their answers are checked (export_test.go)
		if err := p.Flush(ctx); err != nil {
			return err
		}
		for i, ev := range evs {
			if _, err := sess.Route(ctx, fmt.Sprintf("evt_%d", i), ev, keyPseudo{}, now); err != nil {
				return fmt.Errorf("route event %d (%s): %w", i, ev.Kind, err)
			}
			now = now.Add(time.Minute)
		}
		for _, id := range patients {
			held, heldOK, err := sess.ContextOf(ctx, id)
			if err != nil {
				return err
			}
			stored, storedOK, err := routing.GetContext(ctx, tx, id)
			if err != nil {
				return err
			}
			if held != stored || heldOK != storedOK {
				t.Errorf("session holds %+v (%v) for %s, the database %+v (%v)", held, heldOK, id, stored, storedOK)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func contextOf(t *testing.T, d *db.DB, mrn string) (routing.Context, bool) {
	t.Helper()
	c, ok, err := routing.GetContext(context.Background(), d, "pt_"+mrn)
	if err != nil {
		t.Fatal(err)
	}
	return c, ok
}

func TestRouterADTContext(t *testing.T) {
	visit := ingest.Visit{Class: "I", Attending: "D1", Number: "V1"}
	tests := []struct {
		name   string
		events []*ingest.Event
		mrn    string
		want   routing.Context // PatientID and UpdatedAt are not compared
		absent bool
	}{
		{"A04 register sets location and visit", []*ingest.Event{
			adt(ingest.KindRegister, "P1", at("ED", "3"), ingest.Visit{Class: "E", Number: "V9"}),
		}, "P1", routing.Context{Location: at("ED", "3"), Visit: ingest.Visit{Class: "E", Number: "V9"}, Admitted: true}, false},
		{"A04 without location keeps the known one", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindRegister, "P1", ingest.Location{}, ingest.Visit{}),
		}, "P1", routing.Context{Location: at("4W", "1"), Visit: visit, Admitted: true}, false},
		{"A08 update changes only what it says", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindUpdate, "P1", ingest.Location{}, ingest.Visit{Attending: "D2"}),
		}, "P1", routing.Context{Location: at("4W", "1"), Visit: ingest.Visit{Class: "I", Attending: "D2", Number: "V1"},
			Admitted: true}, false},
		{"A08 update with a location moves without a transfer history", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindUpdate, "P1", at("4W", "2"), ingest.Visit{}),
		}, "P1", routing.Context{Location: at("4W", "2"), Visit: visit, Admitted: true}, false},
		{"A08 for an unknown patient without location is not admitted", []*ingest.Event{
			adt(ingest.KindUpdate, "P1", ingest.Location{}, ingest.Visit{Class: "O"}),
		}, "P1", routing.Context{Visit: ingest.Visit{Class: "O"}}, false},
		{"A02 transfer remembers where the patient was", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindTransfer, "P1", at("ICU", "7"), ingest.Visit{}),
		}, "P1", routing.Context{Location: at("ICU", "7"), Previous: at("4W", "1"), Visit: visit, Admitted: true}, false},
		{"A12 cancel transfer goes back to the previous location", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindTransfer, "P1", at("ICU", "7"), ingest.Visit{}),
			adt(ingest.KindCancelTransfer, "P1", at("ICU", "7"), ingest.Visit{}), // PV1-3 as some senders fill it
		}, "P1", routing.Context{Location: at("4W", "1"), Visit: visit, Admitted: true}, false},
		{"A12 twice does not bounce back", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindTransfer, "P1", at("ICU", "7"), ingest.Visit{}),
			adt(ingest.KindCancelTransfer, "P1", ingest.Location{}, ingest.Visit{}),
			adt(ingest.KindCancelTransfer, "P1", ingest.Location{}, ingest.Visit{}),
		}, "P1", routing.Context{Location: at("4W", "1"), Visit: visit, Admitted: true}, false},
		{"A12 without history uses the message's location", []*ingest.Event{
			adt(ingest.KindCancelTransfer, "P1", at("5E", "2"), ingest.Visit{}),
		}, "P1", routing.Context{Location: at("5E", "2")}, false},
		{"A11 cancel admit: no longer admitted", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindCancelAdmit, "P1", ingest.Location{}, ingest.Visit{}),
		}, "P1", routing.Context{Location: at("4W", "1"), Visit: visit}, false},
		{"A13 cancel discharge: admitted again where they were", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindDischarge, "P1", ingest.Location{}, ingest.Visit{}),
			adt(ingest.KindCancelDischarge, "P1", ingest.Location{}, ingest.Visit{}),
		}, "P1", routing.Context{Location: at("4W", "1"), Visit: visit, Admitted: true}, false},
		{"A13 with a location", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindDischarge, "P1", ingest.Location{}, ingest.Visit{}),
			adt(ingest.KindCancelDischarge, "P1", at("4W", "5"), ingest.Visit{}),
		}, "P1", routing.Context{Location: at("4W", "5"), Visit: visit, Admitted: true}, false},
		{"A03 discharge keeps the last location", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindDischarge, "P1", ingest.Location{}, ingest.Visit{}),
		}, "P1", routing.Context{Location: at("4W", "1"), Visit: visit}, false},
		{"A01 readmission starts a new visit", []*ingest.Event{
			adt(ingest.KindAdmit, "P1", at("4W", "1"), visit),
			adt(ingest.KindDischarge, "P1", ingest.Location{}, ingest.Visit{}),
			adt(ingest.KindAdmit, "P1", at("5E", "2"), ingest.Visit{Class: "I", Number: "V2"}),
		}, "P1", routing.Context{Location: at("5E", "2"), Visit: ingest.Visit{Class: "I", Number: "V2"}, Admitted: true}, false},
	}
	// Each case is routed an event per transaction, and as a batch: one
	// transaction, one session holding the prefetched contexts.
	route := map[string]func(*testing.T, *db.DB, time.Time, ...*ingest.Event){
		"each":  func(t *testing.T, d *db.DB, now time.Time, evs ...*ingest.Event) { routeAll(t, d, now, evs...) },
		"batch": routeInSession,
	}
	for _, tc := range tests {
		for _, mode := range []string{"each", "batch"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				dbtest.Each(t, func(t *testing.T, d *db.DB) {
					route[mode](t, d, time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC), tc.events...)
					c, ok := contextOf(t, d, tc.mrn)
					if ok == tc.absent {
						t.Fatalf("context present = %v, want %v", ok, !tc.absent)
					}
					c.PatientID, c.UpdatedAt = "", time.Time{}
					if c != tc.want {
						t.Errorf("context = %+v\nwant      %+v", c, tc.want)
					}
					if n := countRows(t, d, `SELECT COUNT(*) FROM audit_log WHERE action = 'patient.context_updated'`); n != len(tc.events) {
						t.Errorf("%d context audit records, want %d", n, len(tc.events))
					}
				})
			})
		}
	}
}

func TestRouterSwap(t *testing.T) {
	tests := []struct {
		name         string
		toA, toB     ingest.Location
		wantA, wantB ingest.Location
	}{
		{"as the message says", at("4W", "2"), at("4W", "1"), at("4W", "2"), at("4W", "1")},
		{"empty PV1-3 takes the other's bed", ingest.Location{}, ingest.Location{}, at("4W", "2"), at("4W", "1")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dbtest.Each(t, func(t *testing.T, d *db.DB) {
				swap := adt(ingest.KindSwap, "A", tc.toA, ingest.Visit{})
				swap.Other = &ingest.Swapped{Patient: ingest.Patient{ID: "B"}, Location: tc.toB}
				routeAll(t, d, time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC),
					adt(ingest.KindAdmit, "A", at("4W", "1"), ingest.Visit{}),
					adt(ingest.KindAdmit, "B", at("4W", "2"), ingest.Visit{}),
					swap)
				a, _ := contextOf(t, d, "A")
				b, _ := contextOf(t, d, "B")
				if a.Location != tc.wantA || b.Location != tc.wantB || !a.Admitted || !b.Admitted {
					t.Errorf("after swap A=%+v B=%+v, want A at %+v, B at %+v", a, b, tc.wantA, tc.wantB)
				}
				if a.Previous != at("4W", "1") || b.Previous != at("4W", "2") {
					t.Errorf("previous A=%+v B=%+v", a.Previous, b.Previous)
				}
				dbtest.ChainAudit(t, d)
				rows, err := d.QueryContext(context.Background(),
					`SELECT object_id, detail FROM audit_log WHERE action = 'patient.context_updated' ORDER BY seq`)
				if err != nil {
					t.Fatal(err)
				}
				defer rows.Close()
				var got []string
				for rows.Next() {
					var id, detail string
					if err := rows.Scan(&id, &detail); err != nil {
						t.Fatal(err)
					}
					got = append(got, id)
					if strings.Contains(detail, "adt.swap") && !strings.Contains(detail, "swapped_with") {
						t.Errorf("swap audit %s without swapped_with", detail)
					}
				}
				if want := []string{"pt_A", "pt_B", "pt_A", "pt_B"}; !slices.Equal(got, want) {
					t.Errorf("audited patients %v, want %v", got, want)
				}
			})
		})
	}
}

func TestRouterMerge(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
		putRules(t, d, now, potassiumRule())
		k := func(mrn string, v float64) *ingest.Event {
			ev := labResult("r"+mrn, ingest.Observation{Code: "2823-3", System: "LN", Display: "Potassium",
				Value: "x", Numeric: f64(v), Units: "mmol/L", Flags: []string{"HH"}})
			ev.Patient = ingest.Patient{ID: mrn}
			return ev
		}
		merge := func(survivor, prior string, loc ingest.Location) *ingest.Event {
			ev := adt(ingest.KindMerge, survivor, loc, ingest.Visit{})
			ev.PriorPatient = &ingest.Patient{ID: prior}
			return ev
		}
		outs := routeAll(t, d, now,
			adt(ingest.KindAdmit, "OLD", at("ICU", "4"), ingest.Visit{Number: "V1"}), // 0
			k("OLD", 6.9),                          // 1: opens an alert for OLD
			k("DUP", 7.0),                          // 2: DUP has its own open alert on the same rule
			k("OTHER", 7.2),                        // 3: someone else's
			merge("NEW", "OLD", ingest.Location{}), // 4
			k("NEW", 7.1),                          // 5: updates the moved alert
			merge("NEW", "DUP", ingest.Location{}), // 6: conflict: both stay open
			merge("NEW", "NEW", at("4W", "9")),     // 7: the same identity: nothing to do
		)
		moved := outs[1].Opened[0]
		if len(outs[5].Opened) != 0 || !slices.Equal(outs[5].Updated, []string{moved.ID}) {
			t.Fatalf("result after merge: %+v, want it to update %s", outs[5], moved.ID)
		}
		if _, ok := contextOf(t, d, "OLD"); ok {
			t.Error("prior patient's context still present")
		}
		c, ok := contextOf(t, d, "NEW")
		if !ok || c.Location != at("ICU", "4") || !c.Admitted || c.Visit.Number != "V1" {
			t.Errorf("survivor context = %+v (ok %v), want the prior one's", c, ok)
		}
		a, err := routing.GetAlert(ctx, d, nil, moved.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		if a.PatientID != "pt_NEW" || a.DedupKey != "pt_NEW|k-crit" || a.State != routing.StateOpen || a.Updates != 1 {
			t.Errorf("moved alert = %+v", a)
		}
		dup, err := routing.GetAlert(ctx, d, nil, outs[2].Opened[0].ID, "")
		if err != nil {
			t.Fatal(err)
		}
		if dup.PatientID != "pt_NEW" || dup.DedupKey != "pt_DUP|k-crit" || dup.State != routing.StateOpen {
			t.Errorf("conflicting alert = %+v, want moved to pt_NEW keeping its dedup key", dup)
		}
		other, err := routing.GetAlert(ctx, d, nil, outs[3].Opened[0].ID, "")
		if err != nil || other.PatientID != "pt_OTHER" {
			t.Errorf("unrelated alert = %+v, %v", other, err)
		}
		if n := countRows(t, d, `SELECT COUNT(*) FROM audit_log WHERE action = 'patient.merged'`); n != 2 {
			t.Errorf("%d patient.merged records, want 2", n)
		}
		if n := countRows(t, d, `SELECT COUNT(*) FROM audit_log WHERE action = 'alert.patient_merged'`); n != 2 {
			t.Errorf("%d alert.patient_merged records, want 2", n)
		}
		if n, err := audit.Verify(ctx, d); err != nil {
			t.Fatalf("audit.Verify after %d: %v", n, err)
		}
	})
}

func TestRouterMergeUsesNewerContext(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		merge := adt(ingest.KindMerge, "NEW", ingest.Location{}, ingest.Visit{})
		merge.PriorPatient = &ingest.Patient{ID: "OLD"}
		routeAll(t, d, time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC),
			adt(ingest.KindAdmit, "NEW", at("4W", "1"), ingest.Visit{}),
			adt(ingest.KindAdmit, "OLD", at("ICU", "2"), ingest.Visit{}), // later: wins
			merge)
		if c, _ := contextOf(t, d, "NEW"); c.Location != at("ICU", "2") {
			t.Errorf("survivor at %+v, want the newer ICU context", c.Location)
		}
	})
}

// A bed swap and a merge routed in one prefetched session leave the
// session's view of every patient as the database has it (routeInSession
// checks), and the survivor where the newer context put it.
func TestRouterSwapAndMergeInOneSession(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		swap := adt(ingest.KindSwap, "A", ingest.Location{}, ingest.Visit{})
		swap.Other = &ingest.Swapped{Patient: ingest.Patient{ID: "B"}}
		merge := adt(ingest.KindMerge, "NEW", ingest.Location{}, ingest.Visit{})
		merge.PriorPatient = &ingest.Patient{ID: "OLD"}
		routeInSession(t, d, time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC),
			adt(ingest.KindAdmit, "A", at("4W", "1"), ingest.Visit{}),
			adt(ingest.KindAdmit, "B", at("4W", "2"), ingest.Visit{}),
			swap,
			adt(ingest.KindAdmit, "NEW", at("4W", "3"), ingest.Visit{}),
			adt(ingest.KindAdmit, "OLD", at("ICU", "2"), ingest.Visit{}),
			merge)
		if a, _ := contextOf(t, d, "A"); a.Location != at("4W", "2") {
			t.Errorf("A at %+v after the swap, want 4W-2", a.Location)
		}
		if c, _ := contextOf(t, d, "NEW"); c.Location != at("ICU", "2") {
			t.Errorf("survivor at %+v, want the newer ICU context", c.Location)
		}
		if _, ok := contextOf(t, d, "OLD"); ok {
			t.Error("the merged-away identity still has a context")
		}
	})
}

func TestRouterAlarmAndWatchdog(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
		putRules(t, d, now, routing.Rule{
			ID: "disconn", Name: "Sensor disconnected", Enabled: true,
			Match:    routing.Match{Codes: []routing.Code{{System: "MDC", Code: "MDC_EVT_SENSOR_DISCONN"}}, Flags: []string{"PH", "PM", "PL"}},
			Priority: routing.PriorityMedium, TargetRole: "nurse", PolicyID: "pol-1",
			LockText: "{priority} {rule} on {unit}", Body: "{test} ({flag}) in {unit} bed {bed}",
		})
		alarm := func(phase, priority string) *ingest.Event {
			return &ingest.Event{Kind: ingest.KindAlarm, Source: "MON^ICU", SourceID: "al-" + phase, Trigger: "ORU^R40",
				Patient: ingest.Patient{ID: "P1"}, Location: at("ICU", "4"),
				Observations: []ingest.Observation{{Code: "MDC_EVT_SENSOR_DISCONN", System: "MDC", Value: "CO2 sensor unplugged"}},
				Alarm: &ingest.Alarm{ID: "0^x", Source: "MDC_EVT_SENSOR_DISCONN", Phase: phase, State: "active",
					Priority: priority, Type: "ST"}}
		}
		watchdog := &ingest.Event{Kind: ingest.KindWatchdog, Source: "MON^ICU", SourceID: "wd", Trigger: "ORU^R40",
			Alarm: &ingest.Alarm{Source: "MDC_EVT_ACTIVE", Reporter: "MON"}}
		outs := routeAll(t, d, now,
			alarm("end", "PL"),      // 0: an ending alarm opens nothing
			alarm("start", "PN"),    // 1: priority not matched
			alarm("start", "PL"),    // 2: opens
			alarm("continue", "PL"), // 3: updates
			watchdog,                // 4: nothing
		)
		if len(outs[0].Opened)+len(outs[1].Opened) != 0 {
			t.Errorf("end or PN alarm opened alerts: %+v %+v", outs[0], outs[1])
		}
		if len(outs[2].Opened) != 1 {
			t.Fatalf("alarm opened %d alerts, want 1", len(outs[2].Opened))
		}
		a := outs[2].Opened[0]
		if want := "CO2 sensor unplugged (PL) in ICU bed 4"; a.Body != want || a.Unit != "ICU" {
			t.Errorf("alarm alert body %q unit %q, want %q", a.Body, a.Unit, want)
		}
		if !slices.Equal(outs[3].Updated, []string{a.ID}) {
			t.Errorf("continue phase: %+v, want it to update %s", outs[3], a.ID)
		}
		if outs[4].PatientID != "" || len(outs[4].Opened)+len(outs[4].Updated) != 0 {
			t.Errorf("watchdog outcome %+v, want nothing", outs[4])
		}
	})
}
