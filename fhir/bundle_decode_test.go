package fhir

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func TestParallelBundleDecodeKeepsOrderAndErrors(t *testing.T) {
	f := newFixture(t, dbtest.SQLite(t))
	good := transactionJSON(0, 9)
	res, raws, ok := f.api.decodeSplit(good)
	if !ok {
		t.Fatal("a good Bundle did not take the parallel path")
	}
	whole, err := f.api.dec.Decode(good)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(res, whole) {
		t.Fatal("the parallel decoding differs from the whole one")
	}
	for i, raw := range raws {
		if string(compact(raw)) != string(compact([]byte(observationJSON(i)))) {
			t.Fatalf("entry %d raw is not its resource: %s", i, raw)
		}
	}

	// Entries 2 and 6 have no status: the refusal names both as decoding the
	// whole Bundle always did.
	bad := strings.Replace(string(good), `"value":"bench-2"}],
"status":"final",`, `"value":"bench-2"}],`, 1)
	bad = strings.Replace(bad, `"value":"bench-6"}],
"status":"final",`, `"value":"bench-6"}],`, 1)
	if bad == string(good) {
		t.Fatal("fixture edit failed")
	}
	if _, _, ok := f.api.decodeSplit([]byte(bad)); ok {
		t.Fatal("a bad Bundle decoded")
	}
	_, _, err = f.api.decodeBundle([]byte(bad))
	_, wantErr := f.api.dec.Decode([]byte(bad))
	var got, want *decode.Error
	if !errors.As(err, &got) || !errors.As(wantErr, &want) {
		t.Fatalf("errors %v, %v", err, wantErr)
	}
	var exprs []string
	for _, is := range got.Issues {
		exprs = append(exprs, is.Expression)
	}
	if !slices.Equal(got.Issues, want.Issues) || len(exprs) < 2 || !strings.Contains(strings.Join(exprs, " "), "entry[2]") ||
		!strings.Contains(strings.Join(exprs, " "), "entry[6]") {
		t.Fatalf("issues %v, want %v", got.Issues, want.Issues)
	}
	// Over HTTP a transaction with them fails whole, naming both.
	tok := f.token("rpm1", writeScopes)
	r := f.do("POST", "/fhir", tok, []byte(bad))
	if r.status != http.StatusBadRequest || len(f.events()) != 0 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := f.do("POST", "/fhir", tok, good); r.status != 200 || len(f.events()) != 9 {
		t.Fatalf("%d %s", r.status, r.body)
	}
}
