// Package decode is Clarion's strict FHIR R4 intake: it decodes and
// validates JSON resources with github.com/google/fhir/go (required
// elements, value types, dates, references, code values) and maps the
// resources Clarion routes (Observation, Encounter, DiagnosticReport,
// CommunicationRequest) onto an ingest.Event. Every refusal is a list of
// Issues, each naming the element it is about, ready to become an
// OperationOutcome.
package decode

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"

	r4pb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
)

// Issue codes used by Clarion (a subset of the FHIR IssueType value set).
const (
	CodeInvalid      = "invalid"       // malformed content
	CodeStructure    = "structure"     // not JSON, or not a resource
	CodeRequired     = "required"      // a required element is missing
	CodeValue        = "value"         // an element's value is not allowed
	CodeNotSupported = "not-supported" // a valid request Clarion does not handle
	CodeBusinessRule = "business-rule" // valid FHIR that Clarion cannot route
	CodeProcessing   = "processing"    // processing failure
	CodeDuplicate    = "duplicate"     // conditional create matched several resources
	CodeSecurity     = "security"      // authentication
	CodeForbidden    = "forbidden"     // authorization (scope)
	CodeNotFound     = "not-found"
	CodeTooCostly    = "too-costly"
	CodeInformation  = "informational"
	CodeIncomplete   = "incomplete"
	CodeTransient    = "transient"
)

// Issue is one problem with an element of a request.
type Issue struct {
	Severity    string // fatal, error, warning, information
	Code        string // a FHIR IssueType code
	Diagnostics string // text for the sender; never logged
	Expression  string // FHIRPath of the element, e.g. "Observation.subject"
}

// Error is a refused request: the HTTP status FHIR REST prescribes and the
// issues that explain it.
type Error struct {
	Status int
	Issues []Issue
}

func (e *Error) Error() string {
	parts := make([]string, 0, len(e.Issues))
	for _, is := range e.Issues {
		parts = append(parts, is.Expression+": "+is.Code)
	}
	return fmt.Sprintf("fhir %d: %s", e.Status, strings.Join(parts, "; "))
}

// Errorf returns a one-issue Error.
func Errorf(status int, code, expression, format string, args ...any) *Error {
	return &Error{Status: status, Issues: []Issue{{Severity: "error", Code: code, Expression: expression,
		Diagnostics: fmt.Sprintf(format, args...)}}}
}

// Decoder decodes and validates R4 JSON. It is safe for concurrent use.
type Decoder struct {
	u *jsonformat.Unmarshaller
}

// NewDecoder returns a validating R4 decoder; dates without a zone are read
// in UTC.
func NewDecoder() (*Decoder, error) {
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		return nil, fmt.Errorf("fhir decoder: %w", err)
	}
	u.MaxNestingDepth = 64
	return &Decoder{u: u}, nil
}

// collector gathers the validator's findings with their element paths.
type collector struct {
	issues []Issue
}

func (c *collector) ReportValidationError(path string, err error) error {
	c.issues = append(c.issues, Issue{Severity: "error", Code: codeFor(err.Error()), Expression: elementPath(path, err.Error()),
		Diagnostics: err.Error()})
	return nil
}

var namedField = regexp.MustCompile(`(?:missing required field|unknown field):? "([A-Za-z0-9_]+)"`)

// elementPath names the element itself when the message is about a field
// of the element at path (a missing or unknown one).
func elementPath(path, msg string) string {
	if m := namedField.FindStringSubmatch(msg); m != nil && path != "" && !strings.HasSuffix(path, "."+m[1]) {
		return path + "." + m[1]
	}
	return path
}

func (c *collector) ReportValidationWarning(string, error) error { return nil }

func codeFor(msg string) string {
	if strings.Contains(msg, "missing required field") || strings.Contains(msg, "required") {
		return CodeRequired
	}
	return CodeValue
}

// Decode parses and validates one resource. A refusal is an *Error with
// status 400 naming each bad element.
func (d *Decoder) Decode(body []byte) (*r4pb.ContainedResource, error) {
	var c collector
	msg, err := d.u.UnmarshalWithErrorReporter(body, &c)
	if err != nil {
		return nil, &Error{Status: 400, Issues: unmarshalIssues(err)}
	}
	if len(c.issues) > 0 {
		return nil, &Error{Status: 400, Issues: c.issues}
	}
	res, ok := msg.(*r4pb.ContainedResource)
	if !ok || res.GetOneofResource() == nil {
		return nil, Errorf(400, CodeStructure, "", "the body is not a FHIR R4 resource")
	}
	return res, nil
}

// unmarshalIssues turns the decoder's errors (an UnmarshalError or a list of
// them, types internal to google/fhir) into issues: their exported Path and
// Details fields are read by reflection, so a new version of the library
// degrades to the error text rather than failing to build.
func unmarshalIssues(err error) []Issue {
	v := reflect.ValueOf(err)
	one := func(v reflect.Value) (Issue, bool) {
		for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
			if v.IsNil() {
				return Issue{}, false
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return Issue{}, false
		}
		field := func(name string) string {
			f := v.FieldByName(name)
			if f.IsValid() && f.Kind() == reflect.String {
				return f.String()
			}
			return ""
		}
		details, path, diag := field("Details"), field("Path"), field("Diagnostics")
		if details == "" {
			return Issue{}, false
		}
		code := CodeInvalid
		if details == "invalid JSON" {
			code = CodeStructure
		}
		text := details
		if diag != "" {
			text += ": " + diag
		}
		return Issue{Severity: "error", Code: code, Expression: elementPath(path, text), Diagnostics: text}, true
	}
	var out []Issue
	if v.Kind() == reflect.Slice {
		for i := 0; i < v.Len(); i++ {
			if is, ok := one(v.Index(i)); ok {
				out = append(out, is)
			}
		}
	} else if is, ok := one(v); ok {
		out = append(out, is)
	}
	if len(out) == 0 {
		out = append(out, Issue{Severity: "error", Code: CodeInvalid, Diagnostics: err.Error()})
	}
	return out
}
