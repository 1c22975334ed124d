// Package deviceclient is the reference device: it enrols a key pair, keeps
// its identity in a file only its owner can read, receives sealed messages
// over the WebSocket stream, decrypts and checks them, and sends receipts
// and answers. `clarion device` and the end-to-end tests use it.
package deviceclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/clarion-health/clarion/messaging"
)

// Identity is what a device keeps: its credential and private key.
type Identity struct {
	Server     string `json:"server"` // http://host:port
	DeviceID   string `json:"device_id"`
	UserID     string `json:"user_id"`
	Token      string `json:"token"`
	Suite      string `json:"suite"`
	PrivateKey []byte `json:"private_key"`
	LastSeq    int64  `json:"last_seq"` // the last message sequence this device holds
	// Held lists the messages this device holds; the server's "expire"
	// frames remove them.
	Held []string `json:"held,omitempty"`
	// PreviousKeys open messages sealed before the last key rotation that
	// the device has not received yet.
	PreviousKeys []OldKey `json:"previous_keys,omitempty"`
}

// OldKey is a private key retired by rotation.
type OldKey struct {
	Suite      string `json:"suite"`
	PrivateKey []byte `json:"private_key"`
}

// Load reads an identity file.
func Load(path string) (*Identity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	return &id, nil
}

// Save writes the identity atomically with mode 0600: it holds the
// private key.
func (id *Identity) Save(path string) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".identity-*")
	if err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save identity: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save identity: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save identity: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// Register makes a key pair and enrols it for userID with a user's (or an
// admin's) token.
func Register(ctx context.Context, server, token, userID, name, suite string) (*Identity, error) {
	if suite == "" {
		suite = messaging.SuiteX25519
	}
	priv, pub, err := messaging.GenerateKey(suite)
	if err != nil {
		return nil, err
	}
	return enrol(ctx, server, "/v1/devices", token, map[string]any{"user_id": userID, "name": name}, suite, priv, pub)
}

// RegisterWithCode enrols with a one-time enrolment code instead of a token:
// the code names the user.
func RegisterWithCode(ctx context.Context, server, code, name, suite string) (*Identity, error) {
	if suite == "" {
		suite = messaging.SuiteX25519
	}
	priv, pub, err := messaging.GenerateKey(suite)
	if err != nil {
		return nil, err
	}
	return enrol(ctx, server, "/v1/devices/enrol", "", map[string]any{"code": code, "name": name}, suite, priv, pub)
}

func enrol(ctx context.Context, server, path, token string, fields map[string]any, suite string, priv, pub []byte) (*Identity, error) {
	fields["suite"], fields["public_key"] = suite, pub
	body, _ := json.Marshal(fields)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(server, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("enrol: %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	var out struct {
		Device messaging.Device `json:"device"`
		Token  string           `json:"token"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	return &Identity{Server: server, DeviceID: out.Device.ID, UserID: out.Device.UserID, Token: out.Token,
		Suite: suite, PrivateKey: priv}, nil
}

// Received is a message as the device shows it.
type Received struct {
	Envelope messaging.Envelope
	Plain    messaging.Plain
}

// Errors a device raises about what it receives.
var (
	ErrReplay   = errors.New("message replayed: sequence or message already seen")
	ErrMismatch = errors.New("sealed body does not belong to this envelope")
	// ErrWiped means the server ordered this device to delete its messages
	// and keys; the caller does so, then calls ConfirmWipe.
	ErrWiped = errors.New("device wipe ordered")
)

// Conn is a live stream.
type Conn struct {
	id       *Identity
	ws       *websocket.Conn
	replies  chan messaging.Reply
	lastSeq  int64
	onExpire func(messageIDs []string)
}

// OnExpire sets what to do, besides forgetting them, with messages the
// server says expired (Next deletes them from Identity.Held, confirms,
// then calls fn). Call it before Next.
func (c *Conn) OnExpire(fn func(messageIDs []string)) { c.onExpire = fn }

// Dial opens the stream, resuming after the identity's LastSeq.
func Dial(ctx context.Context, id *Identity) (*Conn, error) {
	u, err := url.Parse(strings.TrimRight(id.Server, "/") + "/v1/devices/stream")
	if err != nil {
		return nil, err
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	u.RawQuery = "after=" + strconv.FormatInt(id.LastSeq, 10)
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + id.Token}},
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("connect: %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	ws.SetReadLimit(1 << 20)
	var hello messaging.Hello
	if err := wsjson.Read(ctx, ws, &hello); err != nil || hello.Type != "hello" {
		ws.CloseNow()
		return nil, fmt.Errorf("connect: no hello: %v", err)
	}
	return &Conn{id: id, ws: ws, replies: make(chan messaging.Reply, 16), lastSeq: id.LastSeq}, nil
}

// Next waits for the next message, checks and decrypts it, and acknowledges
// its delivery. A replayed or tampered message is reported as an error and
// not acknowledged.
func (c *Conn) Next(ctx context.Context) (Received, error) {
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			return Received{}, err
		}
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(data, &head); err != nil {
			return Received{}, fmt.Errorf("bad frame: %w", err)
		}
		if head.Type == "wipe" {
			return Received{}, ErrWiped
		}
		if head.Type == "expire" {
			var ex messaging.Expire
			if err := json.Unmarshal(data, &ex); err != nil {
				return Received{}, fmt.Errorf("bad expire frame: %w", err)
			}
			c.id.Held = slices.DeleteFunc(c.id.Held, func(m string) bool { return slices.Contains(ex.MessageIDs, m) })
			if err := wsjson.Write(ctx, c.ws, messaging.Frame{Type: "expire_confirmed", MessageIDs: ex.MessageIDs}); err != nil {
				return Received{}, err
			}
			if c.onExpire != nil {
				c.onExpire(ex.MessageIDs)
			}
			continue
		}
		if head.Type != "message" {
			var r messaging.Reply
			if json.Unmarshal(data, &r) == nil {
				select {
				case c.replies <- r:
				default:
				}
			}
			continue
		}
		var env messaging.Envelope
		if err := json.Unmarshal(data, &env); err != nil {
			return Received{}, fmt.Errorf("bad message frame: %w", err)
		}
		rec, err := c.open(env)
		if err != nil {
			return rec, err
		}
		c.lastSeq = env.Seq
		c.id.LastSeq = env.Seq
		c.id.Held = append(c.id.Held, env.MessageID)
		if err := wsjson.Write(ctx, c.ws, messaging.Frame{Type: "ack", Seq: env.Seq}); err != nil {
			return rec, err
		}
		return rec, nil
	}
}

func (c *Conn) open(env messaging.Envelope) (Received, error) {
	rec := Received{Envelope: env}
	if env.Seq <= c.lastSeq {
		return rec, fmt.Errorf("seq %d: %w", env.Seq, ErrReplay)
	}
	if slices.Contains(c.id.Held, env.MessageID) {
		return rec, fmt.Errorf("message %s: %w", env.MessageID, ErrReplay)
	}
	info := messaging.MessageInfo(env.MessageID, c.id.DeviceID)
	plain, err := messaging.Open(c.id.Suite, c.id.PrivateKey, info, env.Sealed)
	for _, old := range c.id.PreviousKeys {
		if err == nil {
			break
		}
		plain, err = messaging.Open(old.Suite, old.PrivateKey, info, env.Sealed)
	}
	if err != nil {
		return rec, fmt.Errorf("message %s: cannot decrypt: %w", env.MessageID, err)
	}
	if err := json.Unmarshal(plain, &rec.Plain); err != nil {
		return rec, fmt.Errorf("message %s: %w", env.MessageID, err)
	}
	if rec.Plain.MessageID != env.MessageID || rec.Plain.DeviceID != c.id.DeviceID || rec.Plain.AlertID != env.AlertID {
		return rec, ErrMismatch
	}
	return rec, nil
}

// MarkRead sends a read receipt.
func (c *Conn) MarkRead(ctx context.Context, messageID string) error {
	return wsjson.Write(ctx, c.ws, messaging.Frame{Type: "read", MessageID: messageID})
}

// Respond sends accept or decline. The server's answer arrives on Replies
// while Next is being called.
func (c *Conn) Respond(ctx context.Context, messageID, response string) error {
	return wsjson.Write(ctx, c.ws, messaging.Frame{Type: "respond", MessageID: messageID, Response: response})
}

// Replies carries the server's answers to responses.
func (c *Conn) Replies() <-chan messaging.Reply { return c.replies }

// ConfirmWipe tells the server this device has deleted its messages and
// keys; the server then revokes its credential.
func (c *Conn) ConfirmWipe(ctx context.Context) error {
	return wsjson.Write(ctx, c.ws, messaging.Frame{Type: "wipe_confirmed"})
}

// Close ends the stream.
func (c *Conn) Close() error { return c.ws.Close(websocket.StatusNormalClosure, "bye") }

// RespondHTTP answers a message over plain HTTPS, for scripts.
func RespondHTTP(ctx context.Context, id *Identity, messageID, response string) (string, error) {
	body, _ := json.Marshal(map[string]string{"response": response})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		strings.TrimRight(id.Server, "/")+"/v1/messages/"+url.PathEscape(messageID)+"/response", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+id.Token)
	req.Header.Set("Content-Type", "application/json")
	cl := &http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		AlertState string `json:"alert_state"`
		Error      string `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("respond: %s: %s", resp.Status, out.Error)
	}
	return out.AlertState, nil
}

// RotateKey makes a new key pair, registers it, and keeps the old private key
// to open messages sealed before the rotation.
func RotateKey(ctx context.Context, id *Identity, suite string) error {
	if suite == "" {
		suite = id.Suite
	}
	priv, pub, err := messaging.GenerateKey(suite)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"suite": suite, "public_key": pub})
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimRight(id.Server, "/")+"/v1/devices/me/key", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+id.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("rotate key: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("rotate key: %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	id.PreviousKeys = append([]OldKey{{Suite: id.Suite, PrivateKey: id.PrivateKey}}, id.PreviousKeys...)
	if len(id.PreviousKeys) > 3 {
		id.PreviousKeys = id.PreviousKeys[:3]
	}
	id.Suite, id.PrivateKey = suite, priv
	return nil
}

// Drop ends the connection abruptly, as a lost network would: no close
// handshake, nothing flushed.
func (c *Conn) Drop() error { return c.ws.CloseNow() }
