package hl7

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// handle runs one message through the intake without a network.
func handle(t *testing.T, in *Intake, payload []byte) []string {
	t.Helper()
	var codes []string
	for _, r := range in.HandleMLLP(context.Background(), payload, Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}}) {
		codes = append(codes, mustParse(t, r).Get("MSA-1"))
	}
	return codes
}

func newTestIntake(t *testing.T, d *db.DB, clk *clock, opts ...IntakeOption) (*Intake, *ingest.Store) {
	store := ingest.NewStore(testKeys(t), d.SkipLocked())
	return NewIntake(d, store, slog.New(slog.DiscardHandler), clk.Now, nil, nil, opts...), store
}

// alarms returns the synthetic alarm events, oldest first.
func alarms(t *testing.T, d *db.DB, store *ingest.Store) []ingest.Event {
	t.Helper()
	var out []ingest.Event
	err := d.InTx(context.Background(), func(tx *sql.Tx) error {
		for {
			st, err := store.ClaimNext(context.Background(), tx, ingest.AllParts())
			if err != nil || st == nil {
				return err
			}
			if st.Event.Kind == ingest.KindAlarm {
				out = append(out, st.Event)
			}
			if err := store.SetState(context.Background(), tx, st.ID, ingest.StateProcessed, time.Now()); err != nil {
				return err
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWatchdog(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		clk := newClock()
		store := ingest.NewStore(testKeys(t), d.SkipLocked())
		kicks := 0
		w, err := NewWatchdog(d, store, slog.New(slog.DiscardHandler), clk.Now, func() { kicks++ },
			WatchedReporter{Reporter: "MON_GW", Interval: time.Minute, Unit: "ICU"})
		if err != nil {
			t.Fatal(err)
		}
		in := NewIntake(d, store, slog.New(slog.DiscardHandler), clk.Now, nil, nil, WithWatchdogs(w))
		// A watchdog committed through the intake, as the mapped R40 will be.
		watchdog := func(ctrl string) {
			t.Helper()
			it := &item{at: clk.Now(), source: "MON_GW^ICU", controlID: ctrl, outcome: Accepted,
				ev: &ingest.Event{Kind: ingest.KindWatchdog, Source: "MON_GW^ICU", SourceID: ctrl, Trigger: "ORU^R40",
					Alarm: &ingest.Alarm{Reporter: "MON_GW"}}}
			in.submit(ctx, it)
			if it.err != nil {
				t.Fatal(it.err)
			}
		}
		check := func(wantRaised, wantEnded int) {
			t.Helper()
			r, e, err := w.Check(ctx, clk.Now())
			if err != nil || r != wantRaised || e != wantEnded {
				t.Fatalf("Check at %v = %d raised, %d ended, %v; want %d, %d", clk.Now(), r, e, err, wantRaised, wantEnded)
			}
		}

		check(0, 0) // first check starts the clock for a reporter never heard from
		clk.Advance(30 * time.Second)
		watchdog("W1")
		clk.Advance(50 * time.Second)
		check(0, 0) // 50 s of silence: fine
		clk.Advance(20 * time.Second)
		check(1, 0) // 70 s: alarm
		clk.Advance(time.Minute)
		check(0, 0) // still silent: fires once per outage
		watchdog("W2")
		check(0, 1) // resumed: the alarm ends
		check(0, 0)
		clk.Advance(2 * time.Minute)
		check(1, 0) // a second outage raises a second alarm

		got := alarms(t, d, store)
		if len(got) != 3 {
			t.Fatalf("alarm events = %d, want 3 (start, end, start)", len(got))
		}
		for i, want := range []string{"start", "end", "start"} {
			a := got[i].Alarm
			if a == nil || a.Phase != want || a.Source != AlarmWatchdogLost || a.Priority != "PM" || a.Type != "ST" ||
				a.Reporter != "MON_GW" || got[i].Location.Unit != "ICU" || got[i].Source != WatchdogSource {
				t.Errorf("alarm %d = %+v %+v", i, got[i], a)
			}
		}
		if got[0].Alarm.ID != got[1].Alarm.ID || got[0].Alarm.ID == got[2].Alarm.ID {
			t.Error("start and end must share an alarm id; a new outage gets a new one")
		}
		if kicks != 3 {
			t.Errorf("router kicked %d times, want 3", kicks)
		}
		var lost, resumed int
		dbtest.ChainAudit(t, d)
		d.QueryRow(`SELECT COUNT(*) FROM audit_log WHERE action = 'ingest.watchdog_lost'`).Scan(&lost)
		d.QueryRow(`SELECT COUNT(*) FROM audit_log WHERE action = 'ingest.watchdog_resumed'`).Scan(&resumed)
		if lost != 2 || resumed != 1 {
			t.Errorf("audited lost %d, resumed %d", lost, resumed)
		}
		if _, err := audit.Verify(ctx, d); err != nil {
			t.Error(err)
		}
	})
}

func TestWatchdogConfig(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []WatchedReporter
		bad  bool
	}{
		{"empty", "", nil, false},
		{"one", "MON=60s", []WatchedReporter{{Reporter: "MON", Interval: time.Minute}}, false},
		{"two with unit", "MON=60s@ICU, PUMP=2m", []WatchedReporter{{"MON", time.Minute, "ICU"}, {"PUMP", 2 * time.Minute, ""}}, false},
		{"no interval", "MON", nil, true},
		{"bad interval", "MON=soon", nil, true},
		{"zero interval", "MON=0s", nil, true},
		{"no name", "=60s", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseWatchedReporters(tc.in)
			if (err != nil) != tc.bad {
				t.Fatalf("err = %v", err)
			}
			if !tc.bad && len(got) != len(tc.want) {
				t.Fatalf("got %+v", got)
			}
			for i := range tc.want {
				if got[i] != tc.want[i] {
					t.Errorf("got %+v, want %+v", got[i], tc.want[i])
				}
			}
		})
	}
	d := dbtest.SQLite(t)
	if _, err := NewWatchdog(d, nil, slog.Default(), time.Now, nil, WatchedReporter{Reporter: "A", Interval: time.Second},
		WatchedReporter{Reporter: "A", Interval: time.Second}); err == nil {
		t.Error("duplicate reporter accepted")
	}
}

func TestRetentionAndAPI(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		clk := newClock()
		in, store := newTestIntake(t, d, clk)
		handle(t, in, adt("OLD"))
		handle(t, in, []byte("junk"))
		clk.Advance(29 * 24 * time.Hour)
		if got := handle(t, in, adt("NEW")); len(got) != 1 || got[0] != "AA" {
			t.Fatalf("ack %v", got)
		}

		tokens := map[string]string{}
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			for _, role := range []string{auth.RoleAnalyst, auth.RoleAdmin, auth.RoleClinician} {
				tok, err := auth.Issue(ctx, tx, auth.KindUser, "u-"+role, role, clk.Now())
				if err != nil {
					return err
				}
				tokens[role] = tok
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		gin.SetMode(gin.TestMode)
		r := gin.New()
		NewAPI(d, store, slog.New(slog.DiscardHandler), clk.Now).RegisterRoutes(r.Group("/", auth.Middleware(d)))
		get := func(role, path string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			if role != "" {
				req.Header.Set("Authorization", "Bearer "+tokens[role])
			}
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			return w
		}
		list := func(query string) []ingest.MessageInfo {
			t.Helper()
			w := get(auth.RoleAnalyst, "/v1/hl7/messages"+query)
			if w.Code != http.StatusOK {
				t.Fatalf("list%s: %d %s", query, w.Code, w.Body)
			}
			var body struct{ Messages []ingest.MessageInfo }
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			return body.Messages
		}

		all := list("")
		if len(all) != 3 || all[0].ControlID != "NEW" || all[2].ControlID != "OLD" {
			t.Fatalf("list = %+v", all)
		}
		if bytes.Contains(mustJSON(t, all), []byte("MRN1")) {
			t.Error("listing holds PHI")
		}
		if rej := list("?state=rejected"); len(rej) != 1 || rej[0].AckCode != "AR" || rej[0].ErrorCode != 100 || !rej[0].RawKept {
			t.Errorf("rejected = %+v", rej)
		}
		if p := list("?state=pending&limit=1"); len(p) != 1 || p[0].ControlID != "NEW" {
			t.Errorf("pending, limit 1 = %+v", p)
		}
		for _, q := range []string{"?state=bogus", "?limit=0", "?limit=x", "?limit=501"} {
			if w := get(auth.RoleAnalyst, "/v1/hl7/messages"+q); w.Code != http.StatusUnprocessableEntity {
				t.Errorf("%s: %d", q, w.Code)
			}
		}

		newID := all[0].ID
		if w := get(auth.RoleAnalyst, "/v1/hl7/messages/"+newID+"/raw"); w.Code != http.StatusOK ||
			!bytes.Equal(w.Body.Bytes(), adt("NEW")) {
			t.Errorf("raw: %d %q", w.Code, w.Body)
		}
		if w := get(auth.RoleAdmin, "/v1/hl7/messages/"+all[1].ID+"/raw"); w.Code != http.StatusOK || w.Body.String() != "junk" {
			t.Errorf("rejected raw: %d %q", w.Code, w.Body)
		}
		for role, want := range map[string]int{auth.RoleClinician: http.StatusForbidden, "": http.StatusUnauthorized} {
			if w := get(role, "/v1/hl7/messages/"+newID+"/raw"); w.Code != want {
				t.Errorf("role %q: %d, want %d", role, w.Code, want)
			}
		}
		if w := get(auth.RoleAnalyst, "/v1/hl7/messages/evt_nope/raw"); w.Code != http.StatusNotFound {
			t.Errorf("unknown id: %d", w.Code)
		}

		// Day 31: the two first messages' raw forms go, the third stays.
		ret := &Retention{DB: d, Store: store, Log: slog.New(slog.DiscardHandler), Now: clk.Now}
		clk.Advance(2 * 24 * time.Hour)
		p, err := ret.PurgeOnce(ctx, clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		if p.Events != 1 || p.Rejected != 1 || p.DedupKeys != 2 {
			t.Errorf("purged %+v", p)
		}
		if p, _ := ret.PurgeOnce(ctx, clk.Now()); p != (Purged{}) {
			t.Errorf("second purge %+v", p)
		}
		if w := get(auth.RoleAnalyst, "/v1/hl7/messages/"+all[2].ID+"/raw"); w.Code != http.StatusGone {
			t.Errorf("purged raw: %d", w.Code)
		}
		if w := get(auth.RoleAnalyst, "/v1/hl7/messages/"+newID+"/raw"); w.Code != http.StatusOK {
			t.Errorf("kept raw: %d", w.Code)
		}
		if all := list(""); len(all) != 3 || all[2].RawKept || !all[0].RawKept {
			t.Errorf("after purge: %+v", all)
		}

		var views, purges int
		dbtest.ChainAudit(t, d)
		d.QueryRow(`SELECT COUNT(*) FROM audit_log WHERE action = 'hl7.raw_viewed'`).Scan(&views)
		d.QueryRow(`SELECT COUNT(*) FROM audit_log WHERE action = 'ingest.raw_purged'`).Scan(&purges)
		if views != 3 || purges != 1 {
			t.Errorf("audited views %d, purges %d; want 3, 1", views, purges)
		}
		var who string
		d.QueryRow(`SELECT actor_id FROM audit_log WHERE action = 'hl7.raw_viewed' ORDER BY seq LIMIT 1`).Scan(&who)
		if who != "u-analyst" {
			t.Errorf("view audited as %q", who)
		}
		if _, err := audit.Verify(ctx, d); err != nil {
			t.Error(err)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
