package messaging_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/routing"
)

func (f *fixture) setAcceptsRequired(n int) {
	f.t.Helper()
	err := f.d.InTx(f.ctx, func(tx *sql.Tx) error {
		return messaging.SetPolicyAcceptsRequired(f.ctx, tx, audit.Entry{ActorType: "user", ActorID: "root", ActorRole: "admin"},
			policyID, n, f.now)
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) respond(user, messageID, response string) messaging.Answer {
	f.t.Helper()
	ans, err := f.engine.RespondCount(f.ctx, f.devs[user].id, messageID, response)
	if err != nil {
		f.t.Fatalf("%s %s: %v", user, response, err)
	}
	return ans
}

func TestTwoAcceptsRequired(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		f.setAcceptsRequired(2)
		a := f.openAlert("MRN1")
		f.setAcceptsRequired(3) // a later change does not touch the open alert
		rnMsg := f.onlyMessage("rn", a.ID, 0)
		f.waker.take()

		// The first accept is counted; the RN was the only one paged, so the
		// escalation goes on at once for the second.
		if got := f.respond("rn", rnMsg.MessageID, messaging.ResponseAccept); got != (messaging.Answer{AlertState: routing.StateOpen, Accepts: 1, AcceptsRequired: 2}) {
			t.Fatalf("first accept: %+v", got)
		}
		f.wantAlert(a.ID, routing.StateOpen, 1)
		f.wantWoken("charge")
		chargeMsg := f.onlyMessage("charge", a.ID, 1)
		f.wantTimers(a.ID, "0:cancelled", "1:pending")
		if recs := f.auditRecords("alert.accept_recorded", a.ID); len(recs) != 1 || recs[0]["accepts"] != 1.0 {
			t.Fatalf("accept_recorded: %v", recs)
		}
		// The same user accepting again does not count twice.
		if got := f.respond("rn", rnMsg.MessageID, messaging.ResponseAccept); got.Accepts != 1 || got.AlertState != routing.StateOpen {
			t.Fatalf("repeated accept: %+v", got)
		}
		// The second user's accept closes it and cancels its timers in the
		// same transaction.
		if got := f.respond("charge", chargeMsg.MessageID, messaging.ResponseAccept); got != (messaging.Answer{AlertState: routing.StateAccepted, Accepts: 2, AcceptsRequired: 2}) {
			t.Fatalf("second accept: %+v", got)
		}
		f.wantAlert(a.ID, routing.StateAccepted, 1)
		f.wantTimers(a.ID, "0:cancelled", "1:cancelled")
		if recs := f.auditRecords("alert.accepted", a.ID); len(recs) != 1 || recs[0]["accepts"] != 2.0 {
			t.Fatalf("alert.accepted: %v", recs)
		}
		f.now = t0.Add(time.Hour)
		f.fireDue(0)
		f.noMessages("sup")
	})
}

func TestMultiAcceptEscalatesOnTimeout(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		f.setAcceptsRequired(3)
		a := f.openAlert("MRN1")
		f.waker.take()
		// Nobody answers: the timers escalate as for one accept.
		f.now = t0.Add(stepDelay)
		f.fireDue(1)
		chargeMsg := f.onlyMessage("charge", a.ID, 1)
		// Charge accepts (1 of 3); the RN, paged at step 0, has not answered
		// but is not at the current step: escalate at once to the failsafe.
		f.respond("charge", chargeMsg.MessageID, messaging.ResponseAccept)
		f.wantAlert(a.ID, routing.StateOpen, 2)
		supMsg := f.onlyMessage("sup", a.ID, 2)
		f.respond("sup", supMsg.MessageID, messaging.ResponseAccept) // 2 of 3
		// Past the failsafe nobody is left who has not accepted: the RN's
		// late accept is the third.
		rnMsg := f.messages("rn")[0]
		if got := f.respond("rn", rnMsg.MessageID, messaging.ResponseAccept); got.AlertState != routing.StateAccepted || got.Accepts != 3 {
			t.Fatalf("third accept: %+v", got)
		}
	})
}

func TestSetAcceptsRequiredValidation(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		cases := []struct {
			name   string
			policy string
			n      int
			ok     bool
		}{
			{"one", policyID, 1, true},
			{"five", policyID, 5, true},
			{"zero", policyID, 0, false},
			{"too many", policyID, messaging.MaxAcceptsRequired + 1, false},
			{"unknown policy", "nope", 2, false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := d.InTx(f.ctx, func(tx *sql.Tx) error {
					return messaging.SetPolicyAcceptsRequired(f.ctx, tx, audit.Entry{ActorType: "user", ActorID: "root"}, tc.policy, tc.n, f.now)
				})
				if (err == nil) != tc.ok {
					t.Fatalf("SetPolicyAcceptsRequired(%s, %d) = %v, want ok %v", tc.policy, tc.n, err, tc.ok)
				}
			})
		}
		if n, err := messaging.PolicyAcceptsRequired(f.ctx, d, policyID); err != nil || n != 5 {
			t.Fatalf("accepts required = %d, %v", n, err)
		}
	})
}

// An alert routing moved to another unit is paged from its first step
// again (Restart), sparing whoever accepted it already; a new alert
// (Start) pages its first step whoever holds it.
func TestRestartSparesAcceptedUsers(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		f.setAcceptsRequired(2)
		a := f.openAlert("MRN1")
		rnMsg := f.onlyMessage("rn", a.ID, 0)
		f.respond("rn", rnMsg.MessageID, messaging.ResponseAccept) // 1 of 2: charge is paged
		f.onlyMessage("charge", a.ID, 1)
		f.waker.take()

		f.now = f.now.Add(time.Minute)
		err := d.InTx(f.ctx, func(tx *sql.Tx) error {
			moved, err := routing.GetAlert(f.ctx, tx, f.keys, a.ID, "")
			if err != nil {
				return err
			}
			moved.Step = 0 // as routing's retarget leaves it
			_, err = f.engine.Restart(f.ctx, tx, moved, f.now)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		// The RN's step is skipped (the RN accepted): charge is paged again.
		if n := len(f.messages("rn")); n != 1 {
			t.Fatalf("rn holds %d messages after the restart, want 1", n)
		}
		if envs := f.messages("charge"); len(envs) != 2 {
			t.Fatalf("charge holds %d messages after the restart, want 2", len(envs))
		}
		f.wantAlert(a.ID, routing.StateOpen, 1)
		if recs := f.auditRecords("escalation.step_already_accepted", a.ID); len(recs) != 1 {
			t.Fatalf("step_already_accepted: %v", recs)
		}
	})
}
