package fhir

import (
	"bytes"
	"encoding/json"
	"runtime"
	"sync"

	r4pb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
)

// minParallelEntries is the size from which a Bundle's entries are
// decoded side by side.
const minParallelEntries = 4

// decodeBundle decodes and validates a POST [base] body, strictly, and
// returns it with each entry's resource as posted (nil where it has none).
// Strict decoding is most of the CPU a Bundle costs, and one Bundle
// decodes on one core: so a Bundle of several entries is split, its
// entries' resources are decoded on up to GOMAXPROCS goroutines and its
// shell (the Bundle without them) on its own, and the decoded resources
// are put back in their entries, in order. Should anything fail (or the
// body be anything but a well-formed Bundle with object entries), the body
// is decoded whole, as it always was, so that a refusal names exactly the
// elements it always named.
func (a *API) decodeBundle(body []byte) (*r4pb.ContainedResource, []json.RawMessage, error) {
	if res, raws, ok := a.decodeSplit(body); ok {
		return res, raws, nil
	}
	res, err := a.dec.Decode(body)
	if err != nil {
		return nil, nil, err
	}
	var loose struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	_ = json.Unmarshal(body, &loose) // the strict decoder accepted it
	raws := make([]json.RawMessage, len(loose.Entry))
	for i, e := range loose.Entry {
		raws[i] = e.Resource
	}
	return res, raws, nil
}

// decodeSplit is decodeBundle's parallel path; ok is false when it does
// not apply or anything fails.
func (a *API) decodeSplit(body []byte) (*r4pb.ContainedResource, []json.RawMessage, bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || string(top["resourceType"]) != `"Bundle"` {
		return nil, nil, false
	}
	var entries []map[string]json.RawMessage
	if json.Unmarshal(top["entry"], &entries) != nil || len(entries) < minParallelEntries {
		return nil, nil, false
	}
	raws := make([]json.RawMessage, len(entries))
	for i, e := range entries {
		if e == nil {
			return nil, nil, false
		}
		r, ok := e["resource"]
		if !ok {
			continue
		}
		if r = bytes.TrimSpace(r); len(r) == 0 || r[0] != '{' {
			return nil, nil, false
		}
		raws[i] = r
		delete(e, "resource")
	}
	shellEntries, err := json.Marshal(entries)
	if err != nil {
		return nil, nil, false
	}
	top["entry"] = shellEntries
	shellBody, err := json.Marshal(top)
	if err != nil {
		return nil, nil, false
	}

	resources := make([]*r4pb.ContainedResource, len(raws))
	failed := make([]bool, len(raws))
	var shell *r4pb.ContainedResource
	var shellErr error
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(raws)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res, err := a.dec.Decode(raws[i])
				resources[i], failed[i] = res, err != nil
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		shell, shellErr = a.dec.Decode(shellBody)
	}()
	for i, r := range raws {
		if r != nil {
			next <- i
		}
	}
	close(next)
	wg.Wait()
	if shellErr != nil {
		return nil, nil, false
	}
	b := shell.GetBundle()
	if b == nil || len(b.GetEntry()) != len(raws) {
		return nil, nil, false
	}
	for i, be := range b.GetEntry() {
		if failed[i] || be.GetResource() != nil {
			return nil, nil, false
		}
		be.Resource = resources[i]
	}
	return shell, raws, true
}
