package fhir

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// corpusDir is the shared FHIR corpus (public examples from the R4
// specification and US Core), read in place, never copied here.
const corpusDir = "../../shared/corpus/fhir"

// corpusOutcome is the expected answer to POSTing a corpus file to
// [base]/<resourceType> (a Bundle to [base]): a status and, for a refusal,
// the first OperationOutcome issue code.
type corpusOutcome struct {
	status int
	code   string
	why    string
}

var (
	created       = corpusOutcome{status: 201}
	notServed     = corpusOutcome{404, "not-supported", "Clarion does not take this resource type"}
	readOnly      = corpusOutcome{405, "not-supported", "Clarion serves this type but does not accept it"}
	notTxOrBatch  = corpusOutcome{422, "not-supported", "only transaction and batch Bundles are processed"}
	notRouted     = corpusOutcome{422, "business-rule", "valid FHIR that Clarion cannot route"}
	noLocation    = corpusOutcome{422, "required", "an in-progress encounter without a current location"}
	unroutedEntry = corpusOutcome{422, "not-supported", "the transaction's entries are Patients, PUTs, DELETEs and GETs"}
)

var corpus = map[string]corpusOutcome{
	"r4-spec_bundle-example.json":                             notTxOrBatch, // searchset
	"r4-spec_bundle-references.json":                          notTxOrBatch, // collection
	"r4-spec_bundle-response.json":                            notTxOrBatch, // transaction-response
	"r4-spec_bundle-search-warning.json":                      notTxOrBatch, // searchset
	"r4-spec_bundle-transaction.json":                         unroutedEntry,
	"r4-spec_careteam-example.json":                           notServed,
	"r4-spec_communication-example.json":                      readOnly,
	"r4-spec_communicationrequest-example.json":               created, // ITI-84 without a reason: code MACM/ITI-84
	"r4-spec_detectedissue-example-lab.json":                  notServed,
	"r4-spec_device-example.json":                             notServed,
	"r4-spec_devicemetric-example.json":                       notServed,
	"r4-spec_diagnosticreport-example-f001-bloodexam.json":    notTxOrBatch, // collection Bundles
	"r4-spec_diagnosticreport-example-f202-bloodculture.json": notTxOrBatch,
	"r4-spec_diagnosticreport-example-ghp.json":               notTxOrBatch,
	"r4-spec_diagnosticreport-example-lipids.json":            notTxOrBatch,
	"r4-spec_encounter-example-emerg.json":                    created, // admit; unit from the display
	"r4-spec_encounter-example-f001-heart.json":               created, // finished: discharge
	"r4-spec_encounter-example-f002-lung.json":                created,
	"r4-spec_encounter-example-f003-abscess.json":             created,
	"r4-spec_encounter-example-f201-20130404.json":            created,
	"r4-spec_encounter-example-f202-20130128.json":            created,
	"r4-spec_encounter-example-f203-20130311.json":            created,
	"r4-spec_encounter-example-home.json":                     created,
	"r4-spec_encounter-example-xcda.json":                     created,
	"r4-spec_encounter-example.json":                          noLocation,
	"r4-spec_flag-example-encounter.json":                     readOnly,
	"r4-spec_flag-example.json":                               readOnly,
	"r4-spec_messageheader-example.json":                      notServed,
	"r4-spec_observation-example-bgpanel.json":                notRouted, // a panel of references, no value
	"r4-spec_observation-example-bloodpressure-cancel.json":   notRouted, // status cancelled
	"r4-spec_observation-example-bloodpressure-dar.json":      created,
	"r4-spec_observation-example-bloodpressure.json":          created,
	"r4-spec_observation-example-bmi.json":                    created,
	"r4-spec_observation-example-body-height.json":            created,
	"r4-spec_observation-example-body-temperature.json":       created,
	"r4-spec_observation-example-f001-glucose.json":           created,
	"r4-spec_observation-example-f002-excess.json":            created,
	"r4-spec_observation-example-f003-co2.json":               created,
	"r4-spec_observation-example-f004-erythrocyte.json":       created,
	"r4-spec_observation-example-f005-hemoglobin.json":        created,
	"r4-spec_observation-example-f202-temperature.json":       notRouted, // entered-in-error
	"r4-spec_observation-example-f203-bicarbonate.json":       created,
	"r4-spec_observation-example-f204-creatinine.json":        notRouted, // no LOINC coding
	"r4-spec_observation-example-f205-egfr.json":              created,
	"r4-spec_observation-example-f206-staphylococcus.json":    created,
	"r4-spec_observation-example-glasgow.json":                created,
	"r4-spec_observation-example-heart-rate.json":             created,
	"r4-spec_observation-example-map-sitting.json":            created,
	"r4-spec_observation-example-mbp.json":                    created,
	"r4-spec_observation-example-respiratory-rate.json":       created,
	"r4-spec_observation-example-sample-data.json":            notRouted, // MDC code and SampledData only
	"r4-spec_observation-example-satO2.json":                  created,
	"r4-spec_observation-example-unsat.json":                  notRouted, // cancelled
	"r4-spec_observation-example-vitals-panel.json":           notRouted, // hasMember only
	"r4-spec_observation-example.json":                        created,
	"r4-spec_patient-example-f001-pieter.json":                notServed,
	"r4-spec_patient-example-ihe-pcd.json":                    notServed,
	"r4-spec_patient-example.json":                            notServed,
	"r4-spec_practitioner-example.json":                       notServed,
	"r4-spec_practitionerrole-example.json":                   notServed,
	"r4-spec_provenance-example.json":                         notServed,
	"r4-spec_schedule-example.json":                           notServed,
	"r4-spec_slot-example.json":                               notServed,
	"r4-spec_subscription-example.json":                       notServed,
	"r4-spec_task-example1.json":                              notServed,
	"us-core_Observation-average-blood-pressure.json":         created,
	"us-core_blood-pressure.json":                             created,
	"us-core_encounter-1036.json":                             created,
	"us-core_encounter-example-1.json":                        created,
	"us-core_heart-rate-rhythm.json":                          created,
	"us-core_heart-rate.json":                                 created,
	"us-core_observation-cbc-leukocytes.json":                 created,
	"us-core_observation-satO2-fiO2.json":                     created,
	"us-core_observation-serum-potassium.json":                created,
	"us-core_oxygen-saturation.json":                          created,
	"us-core_respiratory-rate.json":                           created,
	"us-core_temperature.json":                                created,
}

func TestCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Skipf("no corpus at %s", corpusDir)
	}
	seen := map[string]bool{}
	for _, file := range files {
		name := filepath.Base(file)
		seen[name] = true
		if _, ok := corpus[name]; !ok {
			t.Errorf("%s: not in the table: add its expected outcome", name)
		}
	}
	var missing []string
	for name := range corpus {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("in the table but not in the corpus: %v", missing)
	}
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		for _, file := range files {
			name := filepath.Base(file)
			want := corpus[name]
			t.Run(name, func(t *testing.T) {
				body, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				var head struct {
					ResourceType string `json:"resourceType"`
				}
				if err := json.Unmarshal(body, &head); err != nil {
					t.Fatal(err)
				}
				path := "/fhir/" + head.ResourceType
				if head.ResourceType == "Bundle" {
					path = "/fhir"
				}
				// Each file comes from its own sender, so no two examples
				// sharing an identifier answer as duplicates of each other.
				tok := f.token("corpus-"+name, writeScopes)
				r := f.do("POST", path, tok, body)
				if r.status != want.status {
					t.Fatalf("status %d, want %d (%s): %s", r.status, want.status, want.why, r.body)
				}
				roundTrip(t, r.body)
				if want.code != "" {
					if codes := r.issueCodes(t); codes[0] != want.code {
						t.Fatalf("issue code %v, want %s: %s", codes, want.code, r.body)
					}
				}
			})
		}
	})
}
