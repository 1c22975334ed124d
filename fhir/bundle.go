package fhir

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	r4pb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/fhir/outbound"
	"github.com/clarion-health/clarion/internal/auth"
)

// postBase is POST [base]: a Bundle of type transaction (one database
// transaction: every entry is created or none is) or batch (each entry on
// its own, with its own status in the response).
func (a *API) postBase(c *gin.Context) {
	ctx := c.Request.Context()
	s := senderOf(c, "batch")
	body, derr := readBody(c)
	if derr != nil {
		a.fail(c, derr)
		return
	}
	res, raws, err := a.decodeBundle(body)
	if err != nil {
		derr := asError(err)
		a.reject(ctx, s, body, derr)
		a.fail(c, derr)
		return
	}
	b := res.GetBundle()
	if b == nil {
		derr := decode.Errorf(http.StatusUnprocessableEntity, decode.CodeNotSupported, decode.TypeOf(res),
			"POST [base] takes a Bundle of type transaction or batch; POST a %s to [base]/%s", decode.TypeOf(res), decode.TypeOf(res))
		a.reject(ctx, s, body, derr)
		a.fail(c, derr)
		return
	}
	transaction := false
	switch b.GetType().GetValue() {
	case cpb.BundleTypeCode_TRANSACTION:
		transaction, s.via = true, "transaction"
	case cpb.BundleTypeCode_BATCH:
	default:
		derr := decode.Errorf(http.StatusUnprocessableEntity, decode.CodeNotSupported, "Bundle.type",
			"Clarion processes Bundles of type transaction or batch, not %s", strings.ToLower(b.GetType().GetValue().String()))
		a.reject(ctx, s, body, derr)
		a.fail(c, derr)
		return
	}
	entries := make([]*entry, len(b.GetEntry()))
	errs := make([]*decode.Error, len(b.GetEntry()))
	scopes := auth.ScopesFrom(c)
	for i, be := range b.GetEntry() {
		var raw []byte
		if i < len(raws) {
			raw = raws[i]
		}
		entries[i], errs[i] = a.bundleEntry(i, be, raw, scopes)
		if errs[i] == nil {
			errs[i] = a.prepare(entries[i])
		}
	}
	now := a.now()
	if transaction {
		for _, e := range errs {
			if e != nil {
				a.reject(ctx, s, body, e)
				a.fail(c, e)
				return
			}
		}
		outs, err := a.commit(ctx, s, entries)
		if err != nil {
			if derr := asDecodeError(err); derr != nil {
				a.reject(ctx, s, body, derr)
			}
			a.failOr(c, err)
			return
		}
		resp := make([]outbound.Entry, len(outs))
		for i, o := range outs {
			resp[i] = outbound.Entry{Status: statusText(o.status), Location: o.location(a.baseURL(c)), LastModified: o.at}
		}
		a.write(c, http.StatusOK, outbound.Marshal(outbound.ResponseBundle(true, resp, now)))
		return
	}
	// Each entry on its own, all submitted together: they share a
	// transaction unless one fails, and then each commits alone.
	reqs := make([]*request, len(entries))
	var valid []*request
	for i, e := range entries {
		if errs[i] == nil {
			reqs[i] = &request{s: s, entries: []*entry{e}}
			valid = append(valid, reqs[i])
		}
	}
	for i, err := range a.commits.Submit(ctx, valid...) {
		valid[i].err = err
	}
	resp := make([]outbound.Entry, len(entries))
	for i, e := range entries {
		if errs[i] != nil {
			a.reject(ctx, s, entryRaw(e), errs[i])
			resp[i] = failedEntry(errs[i])
			continue
		}
		if err := reqs[i].err; err != nil {
			derr := asDecodeError(err)
			if derr == nil {
				a.internal(c, err) // the database is failing: stop, the client retries the batch
				return
			}
			a.reject(ctx, s, e.raw, derr)
			resp[i] = failedEntry(derr)
			continue
		}
		o := reqs[i].outs[0]
		resp[i] = outbound.Entry{Status: statusText(o.status), Location: o.location(a.baseURL(c)), LastModified: o.at}
	}
	a.write(c, http.StatusOK, outbound.Marshal(outbound.ResponseBundle(false, resp, now)))
}

func entryRaw(e *entry) []byte {
	if e == nil {
		return nil
	}
	return e.raw
}

func failedEntry(derr *decode.Error) outbound.Entry {
	return outbound.Entry{Status: statusText(derr.Status), Outcome: outbound.Marshal(outbound.OperationOutcome(derr.Issues...))}
}

func asDecodeError(err error) *decode.Error {
	if derr, ok := err.(*decode.Error); ok {
		return derr
	}
	return nil
}

// bundleEntry checks one entry of a transaction or batch: a POST of a
// type Clarion creates, to that type's URL, allowed by the caller's scopes.
func (a *API) bundleEntry(i int, be *r4pb.Bundle_Entry, raw []byte, scopes auth.Scopes) (*entry, *decode.Error) {
	path := fmt.Sprintf("Bundle.entry[%d]", i)
	e := &entry{path: path + ".resource", raw: raw, res: be.GetResource()}
	req := be.GetRequest()
	if req == nil {
		return e, decode.Errorf(http.StatusBadRequest, decode.CodeRequired, path+".request", "a transaction or batch entry needs a request")
	}
	if m := req.GetMethod().GetValue(); m != cpb.HTTPVerbCode_POST {
		return e, decode.Errorf(http.StatusMethodNotAllowed, decode.CodeNotSupported, path+".request.method",
			"Clarion accepts POST (create) entries only, not %s", m)
	}
	if be.GetResource() == nil {
		return e, decode.Errorf(http.StatusBadRequest, decode.CodeRequired, path+".resource", "a POST entry needs a resource")
	}
	typ := decode.TypeOf(be.GetResource())
	if _, ok := outbound.Lookup(typ); !ok || !creatable(typ) {
		return e, decode.Errorf(http.StatusUnprocessableEntity, decode.CodeNotSupported, path+".resource",
			"Clarion creates Observation, Encounter, DiagnosticReport and CommunicationRequest, not %s", typ)
	}
	url, _, _ := strings.Cut(req.GetUrl().GetValue(), "?")
	if url = strings.TrimRight(url, "/"); url[strings.LastIndex(url, "/")+1:] != typ {
		return e, decode.Errorf(http.StatusBadRequest, decode.CodeInvalid, path+".request.url",
			"the request url must be %s for a %s", typ, typ)
	}
	if !scopes.Allows(typ, auth.AccessCreate) {
		return e, decode.Errorf(http.StatusForbidden, decode.CodeForbidden, path,
			"creating %s needs scope system/%s.write (or .c)", typ, typ)
	}
	e.ifNoneExist = req.GetIfNoneExist().GetValue()
	return e, nil
}

func creatable(typ string) bool {
	s, ok := outbound.Lookup(typ)
	return ok && s.Create
}
