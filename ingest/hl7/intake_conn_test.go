package hl7

import (
	"bytes"
	"crypto/tls"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// adtFrom is an ADT^A01 from sender ("APP|FAC") with MSH-15/MSH-16.
func adtFrom(sender, ctrl, accept, app string) []byte {
	return msg(`MSH|^~\&|`+sender+`|CLARION|GHH|20240101120000||ADT^A01|`+ctrl+`|P|2.5|||`+accept+`|`+app,
		"PID|1||MRN1^^^GHH||X", "PV1|1|I|4W^1^A")
}

func adt(ctrl string) []byte { return adtFrom("EPIC|GHH", ctrl, "", "") }

// noPID maps to an error in the content (AE/CE).
func noPID(ctrl, accept string) []byte {
	return msg(`MSH|^~\&|EPIC|GHH|CLARION|GHH|20240101120000||ADT^A01|`+ctrl+`|P|2.5|||`+accept, "PV1|1|I|4W^1^A")
}

// unsupported is a message type Clarion does not take (AR/CR 200).
func unsupported(ctrl, accept string) []byte {
	return msg(`MSH|^~\&|EPIC|GHH|CLARION|GHH|20240101120000||QRY^A19|`+ctrl+`|P|2.5|||`+accept, "QRD|1")
}

func framed(payloads ...[]byte) []byte {
	var b bytes.Buffer
	for _, p := range payloads {
		WriteFrame(&b, p)
	}
	return b.Bytes()
}

// step writes to the connection and reads the replies it expects. A want
// is "CODE CONTROLID [ERRCODE [SEG^SEQ^FIELD]]": "-" for an empty MSA-2,
// "*" for any ERR code.
type step struct {
	advance time.Duration // clock moved before sending
	send    []byte        // written as is (use framed)
	dribble bool          // written one byte at a time
	want    []string
}

type connCase struct {
	name     string
	server   func(s *Server, p *pki)
	opts     func(t *testing.T) []IntakeOption
	setup    func(t *testing.T, e *intakeEnv)
	client   func(p *pki) *tls.Config // nil: plain TCP
	steps    []step
	closed   bool // the server closes the connection after the steps
	events   int  // rows in events afterwards
	rejected int  // rows in rejected_messages afterwards
}

func senders(t *testing.T, b ...SenderBinding) []IntakeOption {
	s, err := NewSenders(b...)
	if err != nil {
		t.Fatal(err)
	}
	return []IntakeOption{WithSenders(s)}
}

func mtls(s *Server, p *pki) {
	cfg, err := LoadTLSConfig(p.files(p.dir))
	if err != nil {
		panic(err)
	}
	s.TLSConfig = cfg
}

func clientCert(cn string) func(p *pki) *tls.Config {
	return func(p *pki) *tls.Config {
		c := p.issue(cn, false)
		return p.clientConfig(&c)
	}
}

var connCases = []connCase{
	{name: "original AA", steps: []step{{send: framed(adt("C1")), want: []string{"AA C1"}}}, events: 1},
	{name: "original AE content error with ERR", steps: []step{{send: framed(noPID("C1", "")), want: []string{"AE C1 *"}}},
		rejected: 1},
	{name: "original AR unsupported type", steps: []step{{send: framed(unsupported("C1", "")), want: []string{"AR C1 200"}}},
		rejected: 1},
	{name: "AR for unparseable payload", steps: []step{{send: framed([]byte("not hl7")), want: []string{"AR - 100 MSH^1^"}}},
		rejected: 1},
	{name: "AR for empty frame", steps: []step{{send: framed(nil), want: []string{"AR - 100 MSH^1^"}}}, rejected: 1},
	{name: "several messages on one connection", steps: []step{
		{send: framed(adt("C1")), want: []string{"AA C1"}},
		{send: framed(adt("C2")), want: []string{"AA C2"}},
		{send: framed(adt("C3")), want: []string{"AA C3"}},
	}, events: 3},
	{name: "pipelined frames answered in order", steps: []step{{
		send: framed(adt("C1"), adt("C2"), []byte("garbage"), adt("C3"), unsupported("C4", "")),
		want: []string{"AA C1", "AA C2", "AR - 100", "AA C3", "AR C4 200"}}}, events: 3, rejected: 2},
	{name: "garbage before and between frames skipped", steps: []step{{
		send: append(append([]byte("GET / HTTP/1.0\r\n\r\n"), framed(adt("C1"))...), append([]byte("\x00\r\nnoise"), framed(adt("C2"))...)...),
		want: []string{"AA C1", "AA C2"}}}, events: 2},
	{name: "partial reads: frame dribbled byte by byte", steps: []step{{send: framed(adt("C1")), dribble: true,
		want: []string{"AA C1"}}}, events: 1},
	{name: "oversize frame closes the connection",
		server: func(s *Server, _ *pki) { s.MaxFrame = 64 },
		steps:  []step{{send: framed(adt("C1"))}}, closed: true},
	{name: "frame never closed: dropped at idle timeout",
		server: func(s *Server, _ *pki) { s.IdleTimeout = 200 * time.Millisecond },
		steps:  []step{{send: []byte("\x0bMSH|^~\\&|EPIC|GHH")}}, closed: true},
	{name: "idle connection closed",
		server: func(s *Server, _ *pki) { s.IdleTimeout = 200 * time.Millisecond },
		steps:  []step{{send: framed(adt("C1")), want: []string{"AA C1"}}}, closed: true, events: 1},
	{name: "duplicate inside the window gets the first answer, stored once", steps: []step{
		{send: framed(adt("C1")), want: []string{"AA C1"}},
		{advance: 23 * time.Hour, send: framed(adt("C1")), want: []string{"AA C1"}},
	}, events: 1},
	{name: "duplicate in the same pipelined burst stored once", steps: []step{
		{send: framed(adt("C1"), adt("C1")), want: []string{"AA C1", "AA C1"}},
	}, events: 1},
	{name: "reused control id after the window is a new message", steps: []step{
		{send: framed(adt("C1")), want: []string{"AA C1"}},
		{advance: 25 * time.Hour, send: framed(adt("C1")), want: []string{"AA C1"}},
	}, events: 2},
	{name: "configured dedup window",
		opts: func(*testing.T) []IntakeOption { return []IntakeOption{WithDedupWindow(time.Hour)} },
		steps: []step{
			{send: framed(adt("C1")), want: []string{"AA C1"}},
			{advance: 30 * time.Minute, send: framed(adt("C1")), want: []string{"AA C1"}},
			{advance: 2 * time.Hour, send: framed(adt("C1")), want: []string{"AA C1"}},
		}, events: 2},
	{name: "same control id from another sender is not a duplicate", steps: []step{
		{send: framed(adt("C1"), adtFrom("LAB|GHH", "C1", "", "")), want: []string{"AA C1", "AA C1"}},
	}, events: 2},
	{name: "enhanced AL/NE: accept ACK CA only", steps: []step{{send: framed(adtFrom("EPIC|GHH", "C1", "AL", "NE")),
		want: []string{"CA C1"}}}, events: 1},
	{name: "enhanced AL/AL: CA then application AA", steps: []step{{send: framed(adtFrom("EPIC|GHH", "C1", "AL", "AL")),
		want: []string{"CA C1", "AA C1"}}}, events: 1},
	{name: "enhanced NE/AL: application AA only", steps: []step{{send: framed(adtFrom("EPIC|GHH", "C1", "NE", "AL")),
		want: []string{"AA C1"}}}, events: 1},
	{name: "enhanced ER on success: no reply, connection stays usable", steps: []step{
		{send: framed(adtFrom("EPIC|GHH", "C1", "ER", "NE"), adt("C2")), want: []string{"AA C2"}},
	}, events: 2},
	{name: "enhanced SU on error: no reply", steps: []step{
		{send: framed(noPID("C1", "SU"), adt("C2")), want: []string{"AA C2"}},
	}, events: 1, rejected: 1},
	{name: "enhanced CE for a content error", steps: []step{{send: framed(noPID("C1", "AL")), want: []string{"CE C1 *"}}},
		rejected: 1},
	{name: "enhanced CR for an unsupported type", steps: []step{{send: framed(unsupported("C1", "AL")),
		want: []string{"CR C1 200"}}}, rejected: 1},
	{name: "enhanced duplicate gets CA again", steps: []step{
		{send: framed(adtFrom("EPIC|GHH", "C1", "AL", "NE")), want: []string{"CA C1"}},
		{send: framed(adtFrom("EPIC|GHH", "C1", "AL", "NE")), want: []string{"CA C1"}},
	}, events: 1},
	{name: "an ACK from the sender is not answered", steps: []step{
		{send: framed(msg(`MSH|^~\&|EPIC|GHH|CLARION|GHH|20240101120000||ACK^A01|A9|P|2.5`, "MSA|AA|X1"), adt("C2")),
			want: []string{"AA C2"}},
	}, events: 1},
	{name: "AE with ERR 207 on a storage failure",
		setup: func(t *testing.T, e *intakeEnv) { mustExec(t, e.db, `DROP TABLE events`) },
		steps: []step{{send: framed(adt("C1")), want: []string{"AE C1 207"}}}, events: -1},
	{name: "CE with ERR 207 on a storage failure",
		setup: func(t *testing.T, e *intakeEnv) { mustExec(t, e.db, `DROP TABLE ingest_dedup`) },
		steps: []step{{send: framed(adtFrom("EPIC|GHH", "C1", "AL", "AL")), want: []string{"CE C1 207"}}}},
	{name: "address-bound sender sends as itself",
		opts: func(t *testing.T) []IntakeOption {
			return senders(t, SenderBinding{Identity: "epic", Address: "127.0.0.1", Allow: []string{"EPIC^GHH"}})
		},
		steps: []step{{send: framed(adt("C1")), want: []string{"AA C1"}}}, events: 1},
	{name: "wrong-sender MSH-3 gets AR 207 and is kept as rejected",
		opts: func(t *testing.T) []IntakeOption {
			return senders(t, SenderBinding{Identity: "lab", Address: "127.0.0.0/8", Allow: []string{"LAB^GHH"}})
		},
		steps: []step{{send: framed(adt("C1"), adtFrom("LAB|GHH", "C2", "", "")),
			want: []string{"AR C1 207 MSH^1^3", "AA C2"}}}, events: 1, rejected: 1},
	{name: "wrong sender in enhanced mode gets CR 207",
		opts: func(t *testing.T) []IntakeOption {
			return senders(t, SenderBinding{Identity: "lab", Address: "127.0.0.1", Allow: []string{"LAB^GHH"}})
		},
		steps:    []step{{send: framed(adtFrom("EPIC|GHH", "C1", "AL", "AL")), want: []string{"CR C1 207 MSH^1^3"}}},
		rejected: 1},
	{name: "peer bound to no identity gets AR 207",
		opts: func(t *testing.T) []IntakeOption {
			return senders(t, SenderBinding{Identity: "far", Address: "10.9.9.9", Allow: []string{"EPIC^GHH"}})
		},
		steps: []step{{send: framed(adt("C1")), want: []string{"AR C1 207"}}}, rejected: 1},
	{name: "any facility wildcard",
		opts: func(t *testing.T) []IntakeOption {
			return senders(t, SenderBinding{Identity: "epic", Address: "127.0.0.1", Allow: []string{"EPIC^*"}})
		},
		steps:  []step{{send: framed(adt("C1"), adtFrom("EPIC|OTHER", "C2", "", "")), want: []string{"AA C1", "AA C2"}}},
		events: 2},
	{name: "TLS without client certificates", server: func(s *Server, p *pki) {
		mtls(s, p)
		s.TLSConfig.ClientAuth = tls.NoClientCert
	}, client: func(p *pki) *tls.Config { return p.clientConfig(nil) },
		steps: []step{{send: framed(adt("C1")), want: []string{"AA C1"}}}, events: 1},
	{name: "mTLS required: no client certificate, connection closed", server: mtls,
		client: func(p *pki) *tls.Config { return p.clientConfig(nil) },
		steps:  []step{{send: framed(adt("C1"))}}, closed: true},
	{name: "mTLS: plain TCP client closed", server: mtls, steps: []step{{send: framed(adt("C1"))}}, closed: true},
	{name: "mTLS: certificate CN bound to the sender", server: mtls, client: clientCert("epic-gw"),
		opts: func(t *testing.T) []IntakeOption {
			return senders(t, SenderBinding{Identity: "epic", ClientCert: "epic-gw", Allow: []string{"EPIC^GHH"}})
		},
		steps: []step{{send: framed(adt("C1")), want: []string{"AA C1"}}}, events: 1},
	{name: "mTLS: certificate bound to another sender gets AR 207", server: mtls, client: clientCert("lab-gw"),
		opts: func(t *testing.T) []IntakeOption {
			return senders(t,
				SenderBinding{Identity: "epic", ClientCert: "epic-gw", Allow: []string{"EPIC^GHH"}},
				SenderBinding{Identity: "lab", ClientCert: "lab-gw", Allow: []string{"LAB^GHH"}})
		},
		steps: []step{{send: framed(adt("C1")), want: []string{"AR C1 207 MSH^1^3"}}}, rejected: 1},
}

func mustExec(t *testing.T, d *db.DB, q string) {
	t.Helper()
	if _, err := d.Exec(q); err != nil {
		t.Fatal(err)
	}
}

func TestListenerConnectionsAndACKs(t *testing.T) {
	if len(connCases) < 25 {
		t.Fatalf("only %d cases", len(connCases))
	}
	for _, tc := range connCases {
		t.Run(tc.name, func(t *testing.T) {
			dbtest.Each(t, func(t *testing.T, d *db.DB) { runConnCase(t, d, tc) })
		})
	}
}

func runConnCase(t *testing.T, d *db.DB, tc connCase) {
	p := newPKI(t)
	var opts []IntakeOption
	if tc.opts != nil {
		opts = tc.opts(t)
	}
	e := newIntakeEnv(t, d, func(s *Server) {
		if tc.server != nil {
			tc.server(s, p)
		}
	}, opts...)
	if tc.setup != nil {
		tc.setup(t, e)
	}
	var cfg *tls.Config
	if tc.client != nil {
		cfg = tc.client(p)
	}
	c := e.dial(t, cfg)
	for i, st := range tc.steps {
		e.clock.Advance(st.advance)
		if st.dribble {
			for _, b := range st.send {
				c.write([]byte{b})
			}
		} else if _, err := c.nc.Write(st.send); err != nil && !tc.closed {
			t.Fatalf("step %d: write: %v", i, err)
		}
		for j, want := range st.want {
			reply, err := c.reply()
			if err != nil {
				t.Fatalf("step %d reply %d: %v (want %s)", i, j, err, want)
			}
			checkReply(t, reply, want)
		}
	}
	if tc.closed && !c.closedByServer() {
		t.Error("connection not closed by the server")
	}
	if tc.events >= 0 {
		if n := e.count(t, "events"); n != tc.events {
			t.Errorf("events = %d, want %d", n, tc.events)
		}
	}
	if n := e.count(t, "rejected_messages"); n != tc.rejected {
		t.Errorf("rejected messages = %d, want %d", n, tc.rejected)
	}
	if tc.events >= 0 {
		e.verifyAudit(t)
	}
}

func checkReply(t *testing.T, reply []byte, want string) {
	t.Helper()
	m := mustParse(t, reply)
	f := strings.Fields(want)
	ctrl := f[1]
	if ctrl == "-" {
		ctrl = ""
	}
	if m.Get("MSA-1") != f[0] || m.Get("MSA-2") != ctrl {
		t.Errorf("MSA = %s|%s, want %s", m.Get("MSA-1"), m.Get("MSA-2"), want)
	}
	if m.Get("MSH-9.1") != "ACK" || m.Get("MSH-10") == "" {
		t.Errorf("reply MSH-9/MSH-10 = %q/%q", m.Get("MSH-9"), m.Get("MSH-10"))
	}
	switch {
	case len(f) < 3:
		if _, ok := m.Segment("ERR", 1); ok {
			t.Errorf("unexpected ERR in %s reply: %q", want, reply)
		}
	case f[2] == "*":
		if m.Get("ERR-3.1") == "" {
			t.Errorf("no ERR code in %q", reply)
		}
	default:
		if got := m.Get("ERR-3.1"); got != f[2] {
			t.Errorf("ERR-3.1 = %q, want %s", got, f[2])
		}
		if code, _ := strconv.Atoi(f[2]); m.Get("ERR-3.3") != "HL70357" || m.Get("ERR-3.2") != CodeText(code) {
			t.Errorf("ERR-3 = %q", m.Get("ERR-3"))
		}
	}
	if len(f) >= 4 {
		loc := m.Get("ERR-2.1") + "^" + m.Get("ERR-2.2") + "^" + m.Get("ERR-2.3")
		if loc != f[3] {
			t.Errorf("ERR-2 = %q, want %s", loc, f[3])
		}
	}
}
