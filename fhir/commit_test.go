package fhir

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func TestCommitterGroupsAndIsolatesFailures(t *testing.T) {
	var mu sync.Mutex
	var groups [][]string
	release := make(chan struct{})
	c := &committer{maxEntries: 100, commit: func(_ context.Context, group []*request) error {
		var names []string
		for _, r := range group {
			names = append(names, r.s.actorID)
		}
		mu.Lock()
		groups = append(groups, names)
		mu.Unlock()
		if names[0] == "first" {
			<-release // hold the slot while others queue
		}
		for _, r := range group {
			if r.s.via == "bad" {
				return errors.New("bad request")
			}
		}
		return nil
	}}
	req := func(name, via string) *request {
		return &request{s: sender{actorID: name, via: via}, entries: []*entry{{}}}
	}
	first := req("first", "rest")
	rest := []*request{req("a", "rest"), req("b", "bad"), req("c", "rest")}
	var wg sync.WaitGroup
	wg.Go(func() { c.submit(context.Background(), first) })
	for _, r := range rest {
		// Queued one by one while the first commit holds the only slot.
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			started := len(groups) > 0
			mu.Unlock()
			if started {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the first commit never started")
			}
			time.Sleep(time.Millisecond)
		}
		wg.Go(func() { c.submit(context.Background(), r) })
		for deadline := time.Now().Add(5 * time.Second); ; {
			c.mu.Lock()
			queued := slices.Contains(c.queue, r)
			c.mu.Unlock()
			if queued {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("request never queued")
			}
			time.Sleep(time.Millisecond)
		}
	}
	close(release)
	wg.Wait()
	// The three queued together share one transaction; it fails, so each
	// commits alone and only the bad one fails.
	want := [][]string{{"first"}, {"a", "b", "c"}, {"a"}, {"b"}, {"c"}}
	if len(groups) != len(want) {
		t.Fatalf("groups %v", groups)
	}
	for i := range want {
		if !slices.Equal(groups[i], want[i]) {
			t.Fatalf("groups %v, want %v", groups, want)
		}
	}
	if first.err != nil || rest[0].err != nil || rest[2].err != nil || rest[1].err == nil {
		t.Fatalf("errors: first %v, a %v, b %v, c %v", first.err, rest[0].err, rest[1].err, rest[2].err)
	}
}

func TestCommitterBoundsGroups(t *testing.T) {
	var sizes []int
	c := &committer{maxEntries: 3, commit: func(_ context.Context, group []*request) error {
		n := 0
		for _, r := range group {
			n += len(r.entries)
		}
		sizes = append(sizes, n)
		return nil
	}}
	var rs []*request
	for _, n := range []int{1, 2, 1, 5, 1} {
		rs = append(rs, &request{entries: make([]*entry, n)})
	}
	c.submit(context.Background(), rs...)
	if !slices.Equal(sizes, []int{3, 1, 5, 1}) {
		t.Fatalf("group sizes %v", sizes)
	}
}

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
		f.api.commits.submit(context.Background(), reqs...)
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
		f.api.commits.submit(context.Background(), twin...)
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
