package deviceclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/messaging/deviceclient"
)

// fakeServer speaks the stream protocol: it greets each device, sends the
// frames the test queues for it, and records the device's acks.
type fakeServer struct {
	mu     sync.Mutex
	frames map[string]chan any // by device token
	acks   map[string][]int64
}

func (s *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok := r.Header.Get("Authorization")[len("Bearer "):]
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer ws.CloseNow()
	ctx := r.Context()
	if err := wsjson.Write(ctx, ws, messaging.Hello{Type: "hello", DeviceID: tok}); err != nil {
		return
	}
	go func() {
		for {
			var f messaging.Frame
			if err := wsjson.Read(ctx, ws, &f); err != nil {
				return
			}
			if f.Type == "ack" {
				s.mu.Lock()
				s.acks[tok] = append(s.acks[tok], f.Seq)
				s.mu.Unlock()
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-s.queue(tok):
			if err := wsjson.Write(ctx, ws, f); err != nil {
				return
			}
		}
	}
}

func (s *fakeServer) queue(tok string) chan any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frames[tok] == nil {
		s.frames[tok] = make(chan any, 16)
	}
	return s.frames[tok]
}

func (s *fakeServer) acked(tok string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.acks[tok]...)
}

// sealFor builds the envelope the server would send dev for a message.
func sealFor(t *testing.T, suite string, pub []byte, deviceID, messageID, alertID string, seq int64, body string) messaging.Envelope {
	t.Helper()
	plain, _ := json.Marshal(messaging.Plain{MessageID: messageID, DeviceID: deviceID, AlertID: alertID, Priority: "PH",
		Title: "PH alert on 4W", Body: body, Unit: "4W", SentAt: time.Now().UTC()})
	sealed, err := messaging.Seal(suite, pub, messaging.MessageInfo(messageID, deviceID), plain)
	if err != nil {
		t.Fatal(err)
	}
	return messaging.Envelope{Type: "message", Seq: seq, MessageID: messageID, AlertID: alertID, Priority: "PH",
		LockText: "PH alert on 4W", Sealed: sealed, SentAt: time.Now().UTC()}
}

func TestClientOpensOnlyItsOwnAndRejectsForgeries(t *testing.T) {
	srv := &fakeServer{frames: map[string]chan any{}, acks: map[string][]int64{}}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type dev struct {
		id   *deviceclient.Identity
		pub  []byte
		conn *deviceclient.Conn
	}
	devs := map[string]*dev{}
	for _, d := range []struct{ id, user, suite string }{
		{"dev_ana", "ana", messaging.SuiteX25519},
		{"dev_ben", "ben", messaging.SuiteXWing},
	} {
		priv, pub, err := messaging.GenerateKey(d.suite)
		if err != nil {
			t.Fatal(err)
		}
		id := &deviceclient.Identity{Server: hs.URL, DeviceID: d.id, UserID: d.user, Token: d.id, Suite: d.suite, PrivateKey: priv}
		conn, err := deviceclient.Dial(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		devs[d.user] = &dev{id: id, pub: pub, conn: conn}
	}
	ana, ben := devs["ana"], devs["ben"]
	anaMsg := sealFor(t, ana.id.Suite, ana.pub, "dev_ana", "msg_1", "alr_1", 1, "Room 412: K 6.9")
	benMsg := sealFor(t, ben.id.Suite, ben.pub, "dev_ben", "msg_2", "alr_1", 1, "Room 412: K 6.9 (charge)")
	tampered := sealFor(t, ana.id.Suite, ana.pub, "dev_ana", "msg_3", "alr_2", 2, "x")
	tampered.Sealed = append([]byte(nil), tampered.Sealed...)
	tampered.Sealed[len(tampered.Sealed)-5] ^= 0x40
	moved := sealFor(t, ana.id.Suite, ana.pub, "dev_ana", "msg_4", "alr_2", 3, "y")
	moved.MessageID = "msg_5" // a ciphertext moved to another message id
	wrongAlert := sealFor(t, ana.id.Suite, ana.pub, "dev_ana", "msg_6", "alr_3", 4, "z")
	wrongAlert.AlertID = "alr_9" // the envelope lies about the alert
	next := sealFor(t, ana.id.Suite, ana.pub, "dev_ana", "msg_7", "alr_4", 5, "next")

	cases := []struct {
		name    string
		to      *dev
		env     messaging.Envelope
		wantErr error // nil: accepted
		anyErr  bool  // some error (decryption) without a sentinel
	}{
		{name: "ana opens hers", to: ana, env: anaMsg},
		{name: "ben opens his (post-quantum suite)", to: ben, env: benMsg},
		{name: "ben cannot open ana's", to: ben, env: func() messaging.Envelope { e := anaMsg; e.Seq = 2; return e }(), anyErr: true},
		{name: "ana cannot open ben's", to: ana, env: func() messaging.Envelope { e := benMsg; e.Seq = 2; return e }(), anyErr: true},
		{name: "tampered ciphertext", to: ana, env: tampered, anyErr: true},
		{name: "ciphertext moved to another message", to: ana, env: moved, anyErr: true},
		{name: "envelope names another alert", to: ana, env: wrongAlert, wantErr: deviceclient.ErrMismatch},
		{name: "a later message", to: ana, env: next},
		{name: "replay of an old message", to: ana, env: anaMsg, wantErr: deviceclient.ErrReplay},
		{name: "replay with its sequence bumped", to: ana, env: func() messaging.Envelope { e := anaMsg; e.Seq = 9; return e }(), wantErr: deviceclient.ErrReplay},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv.queue(tc.to.id.Token) <- tc.env
			rec, err := tc.to.conn.Next(ctx)
			switch {
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("Next = %v, want %v", err, tc.wantErr)
			case tc.anyErr && err == nil:
				t.Fatalf("Next accepted %+v", rec.Plain)
			case tc.wantErr == nil && !tc.anyErr && err != nil:
				t.Fatalf("Next: %v", err)
			case err == nil && (rec.Plain.MessageID != tc.env.MessageID || rec.Plain.DeviceID != tc.to.id.DeviceID):
				t.Fatalf("opened %+v for envelope %s", rec.Plain, tc.env.MessageID)
			}
		})
	}
	// Only what was accepted was acknowledged.
	waitAcks := func(tok string, want []int64) {
		t.Helper()
		for {
			got := srv.acked(tok)
			if len(got) == len(want) {
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%s acked %v, want %v", tok, got, want)
					}
				}
				return
			}
			if len(got) > len(want) || ctx.Err() != nil {
				t.Fatalf("%s acked %v, want %v", tok, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcks("dev_ana", []int64{1, 5})
	waitAcks("dev_ben", []int64{1})
}

func TestClientDeletesExpiredAndObeysWipe(t *testing.T) {
	srv := &fakeServer{frames: map[string]chan any{}, acks: map[string][]int64{}}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	priv, pub, err := messaging.GenerateKey(messaging.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	id := &deviceclient.Identity{Server: hs.URL, DeviceID: "dev_c", Token: "dev_c", Suite: messaging.SuiteX25519, PrivateKey: priv}
	conn, err := deviceclient.Dial(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var expired []string
	conn.OnExpire(func(ids []string) { expired = append(expired, ids...) })
	for i, m := range []string{"msg_a", "msg_b"} {
		srv.queue("dev_c") <- sealFor(t, id.Suite, pub, "dev_c", m, "alr_1", int64(i+1), "b")
		if _, err := conn.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	srv.queue("dev_c") <- messaging.Expire{Type: "expire", MessageIDs: []string{"msg_a", "msg_unknown"}}
	srv.queue("dev_c") <- messaging.Wipe{Type: "wipe", Reason: "lost"}
	if _, err := conn.Next(ctx); !errors.Is(err, deviceclient.ErrWiped) {
		t.Fatalf("want a wipe order, got %v", err)
	}
	if len(id.Held) != 1 || id.Held[0] != "msg_b" || len(expired) != 2 {
		t.Fatalf("held %v after expiring %v", id.Held, expired)
	}
}
