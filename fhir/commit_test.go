package fhir

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// prepared decodes and prepares one resource for a request.
func (f *fixture) prepared(body []byte, ifNoneExist string) *entry {
	f.t.Helper()
	res, err := f.api.dec.Decode(body)
	if err != nil {
		f.t.Fatalf("decode: %v", err)
	}
	e := &entry{path: decode.TypeOf(res), raw: body, res: res, ifNoneExist: ifNoneExist}
	if derr := f.api.prepare(e); derr != nil {
		f.t.Fatalf("prepare: %v", derr)
	}
	return e
}

func TestGroupCommitOneBadRequestAmongGood(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		a, b := f.token("rpm1", writeScopes), f.token("rpm2", writeScopes)
		body := fixtureFile(t, "heart-rate-rpm.json")
		// Two resources with one identifier: a conditional create on it is 412.
		if r := f.do("POST", "/fhir/Observation", a, body); r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		corrected := []byte(strings.Replace(string(body), `"final"`, `"corrected"`, 1))
		if r := f.do("POST", "/fhir/Observation", b, corrected); r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		kicks := f.kicks.Load()
		s := sender{source: "fhir:rpm1", actorID: "rpm1", role: "integration", via: "rest"}
		crit := "identifier=urn:oid:1.3.6.1.4.1.99999.1|rpm-hr-0001"
		reqs := []*request{
			{s: s, entries: []*entry{f.prepared([]byte(observationJSON(500)), "")}},
			{s: s, entries: []*entry{f.prepared(body, crit)}},                       // matches several: 412
			{s: s, entries: []*entry{f.prepared([]byte(observationJSON(0)), "")}},   // same patient and code, older: stale
			{s: s, entries: []*entry{f.prepared([]byte(observationJSON(500)), "")}}, // a repeat of the first
			{s: s, entries: []*entry{f.prepared([]byte(observationJSON(1)), "")}},
		}
		for i, err := range f.api.commits.Submit(context.Background(), reqs...) {
			reqs[i].err = err
		}
		var derr *decode.Error
		if !errors.As(reqs[1].err, &derr) || derr.Status != http.StatusPreconditionFailed {
			t.Fatalf("the bad request: %v", reqs[1].err)
		}
		var statuses []int
		for i, r := range reqs {
			if i == 1 {
				continue
			}
			if r.err != nil || len(r.outs) != 1 {
				t.Fatalf("request %d: %v %v", i, r.err, r.outs)
			}
			statuses = append(statuses, r.outs[0].status)
		}
		if !slices.Equal(statuses, []int{201, 201, 200, 201}) || reqs[3].outs[0].id != reqs[0].outs[0].id {
			t.Fatalf("statuses %v (repeat %s of %s)", statuses, reqs[3].outs[0].id, reqs[0].outs[0].id)
		}
		if reqs[2].outs[0].eventID != "" {
			t.Fatal("the stale reading was routed")
		}
		if n := len(f.events()); n != 4 || f.kicks.Load() <= kicks {
			t.Fatalf("%d events (want 2 + 2), kicks %d → %d", n, kicks, f.kicks.Load())
		}
		acts := f.auditActions()
		if count(acts, "ingest.accepted") != 2+3 || count(acts, "ingest.duplicate") != 1 ||
			count(acts, "ingest.stale_reading") != 1 || count(acts, "ingest.conditional_match") != 0 {
			t.Fatalf("audit %v", acts)
		}

		// A group that commits whole: a repeat of a resource created
		// earlier in the same transaction is answered with it, event
		// included; a conditional create matching it too.
		twin := []*request{
			{s: s, entries: []*entry{f.prepared([]byte(observationJSON(7)), "")}},
			{s: s, entries: []*entry{f.prepared([]byte(observationJSON(7)), "")}},
			{s: s, entries: []*entry{f.prepared([]byte(observationJSON(8)),
				"identifier=urn:oid:1.3.6.1.4.1.99999.1|bench-7")}},
		}
		for i, err := range f.api.commits.Submit(context.Background(), twin...) {
			twin[i].err = err
		}
		first := twin[0].outs[0]
		for i, r := range twin[1:] {
			if r.err != nil || r.outs[0].status != 200 || r.outs[0].id != first.id || r.outs[0].eventID != first.eventID ||
				first.eventID == "" {
				t.Fatalf("answer %d: %v %+v, first %+v", i+1, r.err, r.outs, first)
			}
		}
		var corr string
		if acts := f.auditActions(); count(acts, "ingest.conditional_match") != 1 {
			t.Fatalf("audit %v", acts)
		}
		if err := d.QueryRow(`SELECT correlation_id FROM audit_log WHERE action = 'ingest.conditional_match'`).
			Scan(&corr); err != nil || corr != first.eventID {
			t.Fatalf("match audited with %q (%v), want %s", corr, err, first.eventID)
		}
	})
}
