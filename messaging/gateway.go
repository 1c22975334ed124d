package messaging

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clarion-health/clarion/internal/groupcommit"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
)

// Subscriber delivers wake-ups for a device to whichever node holds its
// connection (NATS in production, across nodes).
type Subscriber interface {
	SubscribeDevice(deviceID string, wake func()) (unsubscribe func(), err error)
}

// Gateway holds devices' WebSocket connections. The database is the source
// of truth: on connect and on every wake-up the gateway sends what the
// device has not yet received, in sequence order, so nothing is lost across
// a dropped connection, a restart or a move to another node.
type Gateway struct {
	db        *db.DB
	engine    *Engine
	sub       Subscriber
	log       *slog.Logger
	heartbeat time.Duration
	// writeTimeout bounds every write to a device: one that stops reading
	// is disconnected (it resumes when it reconnects) instead of holding up
	// its goroutine; batch bounds the messages sent per wake-up, so a long
	// backlog is sent in slices between pings and other events.
	writeTimeout time.Duration
	batch        int
	// expiryCheck bounds the wait between two looks for expired messages a
	// device holds (the exact expiry is waited for too; this catches holds
	// released and clocks moved).
	expiryCheck time.Duration
	// sweep is how often the node looks at every connection regardless of
	// wake-ups, in case one was lost on the bus.
	sweep time.Duration
	// base ends every connection at shutdown: http.Server.Shutdown does not
	// touch hijacked (WebSocket) connections.
	base  context.Context
	stop  context.CancelFunc
	conns sync.WaitGroup
	live  atomic.Int64 // connections being served
	fetch *fetcher     // reads what the node's connections are owed (fetch.go)
	// fetchConn is the fetcher's connection, used by its goroutine only.
	fetchConn *fetchConn
	receipts  *groupcommit.Committer[*receipt] // delivered and read receipts (receipts.go)
}

// Connections returns how many device connections this node serves now.
func (g *Gateway) Connections() int { return int(g.live.Load()) }

// GatewayOption configures a Gateway.
type GatewayOption func(*Gateway)

// WithWriteTimeout bounds each write to a device (default 10 s).
func WithWriteTimeout(d time.Duration) GatewayOption { return func(g *Gateway) { g.writeTimeout = d } }

// WithBatch bounds the messages sent to one device per wake-up (default 256).
func WithBatch(n int) GatewayOption { return func(g *Gateway) { g.batch = max(n, 1) } }

// WithExpiryCheck bounds the wait between two looks for expired messages
// a connected device holds (default 1 min).
func WithExpiryCheck(d time.Duration) GatewayOption { return func(g *Gateway) { g.expiryCheck = d } }

// WithSweep sets how often every connection of the node is looked at
// regardless of wake-ups (default 5 s), in case one was lost on the bus.
func WithSweep(d time.Duration) GatewayOption {
	return func(g *Gateway) {
		if d > 0 {
			g.sweep = d
		}
	}
}

// NewGateway wires a gateway; heartbeat is the WebSocket ping interval.
func NewGateway(d *db.DB, e *Engine, sub Subscriber, log *slog.Logger, heartbeat time.Duration, opts ...GatewayOption) *Gateway {
	base, stop := context.WithCancel(context.Background())
	g := &Gateway{db: d, engine: e, sub: sub, log: log, heartbeat: heartbeat, writeTimeout: 10 * time.Second, batch: 256, expiryCheck: time.Minute, sweep: sweepEvery,
		base: base, stop: stop, fetch: newFetcher(), fetchConn: &fetchConn{db: d}}
	g.receipts = newReceipts(g)
	for _, o := range opts {
		o(g)
	}
	return g
}

// write sends one frame within the write timeout; a device that does not
// take it in time is disconnected (the library closes the connection).
func (g *Gateway) write(ctx context.Context, conn *websocket.Conn, v any) error {
	wctx, cancel := context.WithTimeout(ctx, g.writeTimeout)
	defer cancel()
	return wsjson.Write(wctx, conn, v)
}

// Shutdown closes every device connection (devices reconnect elsewhere and
// resume) and waits for their handlers to return.
func (g *Gateway) Shutdown() {
	g.stop()
	g.conns.Wait()
}

// Frame is what a device sends: an ack of every message up to Seq, a read
// receipt, a response, the confirmation that it deleted expired messages,
// or the confirmation that it wiped itself.
type Frame struct {
	Type       string   `json:"type"` // "ack", "read", "respond", "expire_confirmed", "wipe_confirmed"
	Seq        int64    `json:"seq,omitempty"`
	MessageID  string   `json:"message_id,omitempty"`
	Response   string   `json:"response,omitempty"`
	MessageIDs []string `json:"message_ids,omitempty"`
}

// Expire tells a device to delete messages it holds: they expired and no
// legal hold keeps them. The device answers with "expire_confirmed".
type Expire struct {
	Type       string   `json:"type"` // "expire"
	MessageIDs []string `json:"message_ids"`
}

// Hello is the first frame the server sends.
type Hello struct {
	Type     string `json:"type"` // "hello"
	DeviceID string `json:"device_id"`
	After    int64  `json:"after"`
}

// Wipe tells a device to delete every message and key it holds, then send
// a "wipe_confirmed" frame.
type Wipe struct {
	Type   string `json:"type"` // "wipe"
	Reason string `json:"reason"`
}

// Reply answers a device frame that changed something or failed.
type Reply struct {
	Type            string `json:"type"` // "responded" or "error"
	MessageID       string `json:"message_id,omitempty"`
	AlertState      string `json:"alert_state,omitempty"`
	Accepts         int    `json:"accepts,omitempty"`          // distinct users who accepted so far
	AcceptsRequired int    `json:"accepts_required,omitempty"` // accepts that close the alert
	Error           string `json:"error,omitempty"`
}

// Stream is the GET /v1/devices/stream handler. The device may pass
// ?after=SEQ, the last sequence it holds; by default the server resumes
// after the last one the device acknowledged.
func (g *Gateway) Stream(c *gin.Context) {
	p := auth.From(c)
	ctx := c.Request.Context()
	dev, err := GetDevice(ctx, g.db, p.Subject)
	if err != nil || p.Kind != auth.KindDevice {
		c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"error": "not a device credential"})
		return
	}
	if dev.State == DeviceWiped {
		c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"error": "device wiped"})
		return
	}
	after := dev.AckedSeq
	if s := c.Query("after"); s != "" {
		if after, err = strconv.ParseInt(s, 10, 64); err != nil || after < 0 {
			c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "after must be a non-negative integer"})
			return
		}
	}
	if g.base.Err() != nil {
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, gin.H{"error": "shutting down"})
		return
	}
	g.conns.Add(1)
	defer g.conns.Done()
	conn, err := websocket.Accept(c.Writer, c.Request, nil)
	if err != nil {
		return // Accept has answered the client
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-g.base.Done():
			conn.Close(websocket.StatusGoingAway, "server shutting down")
			cancel()
		case <-ctx.Done():
		}
	}()
	g.serve(ctx, conn, dev.ID, after)
}

func (g *Gateway) serve(parent context.Context, conn *websocket.Conn, deviceID string, after int64) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	g.live.Add(1)
	defer g.live.Add(-1)
	// The node's fetcher reads what this connection is owed, for all
	// connections woken together in one query, and hands it over here.
	c := &gconn{deviceID: deviceID, notify: make(chan struct{}, 1), fetched: after}
	g.fetch.once.Do(func() { go g.runFetcher(g.base) })
	g.fetch.add(c)
	defer g.fetch.remove(c)
	// Subscribe before the first read of the backlog, so a message
	// committed in between still wakes this connection.
	unsub, err := g.sub.SubscribeDevice(deviceID, func() { g.fetch.wake(deviceID) })
	if err != nil {
		g.log.Error("gateway subscribe", "device_id", deviceID, "error", err)
		conn.Close(websocket.StatusInternalError, "subscribe failed")
		return
	}
	defer unsub()
	if err := g.write(ctx, conn, Hello{Type: "hello", DeviceID: deviceID, After: after}); err != nil {
		return
	}
	g.log.Info("device connected", "device_id", deviceID, "after", after)
	go g.readLoop(ctx, cancel, conn, deviceID)

	// cursor: the last sequence the device holds (what it said at connect,
	// then what was sent); held messages up to it are checked for expiry.
	cursor, wipeSent := after, false
	ping := time.NewTicker(g.heartbeat)
	defer ping.Stop()
	expiry := time.NewTimer(0) // first check at connect
	defer expiry.Stop()
	var nextExpiry time.Time // when expiry is set to fire
	g.fetch.wakeConn(c)
	for {
		select {
		case <-ctx.Done():
			g.log.Info("device disconnected", "device_id", deviceID)
			return
		case <-ping.C:
			pctx, pcancel := context.WithTimeout(ctx, g.heartbeat)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				return
			}
		case <-expiry.C:
			next, err := g.sendExpired(ctx, conn, deviceID, cursor)
			if err != nil {
				if ctx.Err() == nil {
					g.log.Warn("gateway expiry", "device_id", deviceID, "error", err)
				}
				if errors.Is(err, errWrite) {
					return
				}
			}
			nextExpiry = next
			wait := g.expiryCheck
			if !next.IsZero() {
				wait = min(max(next.Sub(g.engine.now()), 0), wait)
			}
			expiry.Reset(wait)
		case <-c.notify:
			msgs, wipe := c.drain()
			// A device whose wipe was requested gets nothing more, only the
			// order to wipe itself.
			if wipe != nil {
				if !wipeSent {
					if err := g.write(ctx, conn, Wipe{Type: "wipe", Reason: *wipe}); err != nil {
						return
					}
					wipeSent = true
				}
				g.fetch.written(c)
				continue
			}
			earliest := time.Time{}
			for _, m := range msgs {
				if m.Seq <= cursor {
					continue // the device has it
				}
				if err := g.write(ctx, conn, m); err != nil {
					return
				}
				cursor = m.Seq
				if !m.expiresAt.IsZero() && (earliest.IsZero() || m.expiresAt.Before(earliest)) {
					earliest = m.expiresAt
				}
			}
			// More waiting (a backlog is handed over a slice at a time) is
			// fetched now, after whatever else was waiting here.
			g.fetch.written(c)
			if !earliest.IsZero() && (nextExpiry.IsZero() || earliest.Before(nextExpiry)) {
				nextExpiry = earliest
				expiry.Reset(min(max(earliest.Sub(g.engine.now()), 0), g.expiryCheck))
			}
		}
	}
}

var errWrite = errors.New("write to device failed")

// sendExpired tells the device to delete the expired, unheld messages it
// holds (up to upTo) and returns when the next one it holds expires (zero
// when none will).
func (g *Gateway) sendExpired(ctx context.Context, conn *websocket.Conn, deviceID string, upTo int64) (time.Time, error) {
	now := g.engine.now()
	ids, err := ExpiredOnDevice(ctx, g.db, deviceID, upTo, now, 500)
	if err != nil {
		return time.Time{}, err
	}
	if len(ids) > 0 {
		if err := g.write(ctx, conn, Expire{Type: "expire", MessageIDs: ids}); err != nil {
			return time.Time{}, fmt.Errorf("%w: %w", errWrite, err)
		}
	}
	next, ok, err := NextExpiry(ctx, g.db, deviceID, upTo, now)
	if err != nil || !ok {
		return time.Time{}, err
	}
	return next, nil
}

func (g *Gateway) readLoop(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn, deviceID string) {
	defer cancel()
	for {
		var f Frame
		if err := wsjson.Read(ctx, conn, &f); err != nil {
			return
		}
		var err error
		switch f.Type {
		case "ack", "read", "wipe_confirmed":
			// Receipts check the device within their transaction.
		default:
			err = requireActive(ctx, g.db, deviceID)
		}
		switch {
		case err != nil:
		case f.Type == "ack":
			err = g.record(ctx, &receipt{deviceID: deviceID, seq: f.Seq})
		case f.Type == "read":
			err = g.record(ctx, &receipt{deviceID: deviceID, messageID: f.MessageID})
		case f.Type == "wipe_confirmed":
			now := g.engine.now()
			if err = g.db.InTx(ctx, func(tx *sql.Tx) error { return ConfirmWipe(ctx, tx, deviceID, now) }); err == nil {
				g.log.Info("device wiped", "device_id", deviceID)
				conn.Close(websocket.StatusNormalClosure, "wiped")
				return
			}
		case f.Type == "respond":
			var ans Answer
			if ans, err = g.engine.RespondCount(ctx, deviceID, f.MessageID, f.Response); err == nil {
				err = g.write(ctx, conn, Reply{Type: "responded", MessageID: f.MessageID, AlertState: ans.AlertState,
					Accepts: ans.Accepts, AcceptsRequired: ans.AcceptsRequired})
			}
		case f.Type == "expire_confirmed":
			if len(f.MessageIDs) > 1000 {
				err = &InvalidError{"message_ids", "at most 1000 per frame"}
			} else {
				_, err = g.engine.ConfirmDeleted(ctx, deviceID, f.MessageIDs)
			}
		default:
			err = &InvalidError{"type", "must be ack, read, respond, expire_confirmed or wipe_confirmed"}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var inv *InvalidError
			msg := "internal error"
			switch {
			case errors.As(err, &inv):
				msg = inv.Error()
			case errors.Is(err, ErrNotYours), errors.Is(err, ErrDeviceRevoked):
				msg = err.Error()
			default:
				g.log.Error("device frame", "device_id", deviceID, "type", f.Type, "error", err)
			}
			if werr := g.write(ctx, conn, Reply{Type: "error", MessageID: f.MessageID, Error: msg}); werr != nil {
				return
			}
		}
	}
}
