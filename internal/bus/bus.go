// Package bus connects Clarion nodes through NATS: an in-process server with
// JetStream by default, an external cluster when a URL is configured. It
// carries wake-ups (a device's node learns it has new messages) and the
// alert lifecycle stream for outside consumers. It never carries PHI: the
// database is the source of truth, the bus only says "look".
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AlertStream is the JetStream stream of alert lifecycle events.
const AlertStream = "CLARION_ALERTS"

// Bus is a NATS connection, and the embedded server when there is one.
type Bus struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	srv *server.Server
	log *slog.Logger
}

// Start connects to url, or starts an in-process NATS server with JetStream
// stored in dataDir/nats when url is empty.
func Start(ctx context.Context, url, dataDir string, log *slog.Logger) (*Bus, error) {
	b := &Bus{log: log}
	opts := []nats.Option{nats.Name("clarion"), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond)}
	if url == "" {
		srv, err := server.NewServer(&server.Options{
			ServerName: "clarion-embedded", DontListen: true, JetStream: true,
			StoreDir: filepath.Join(dataDir, "nats"), NoSigs: true, NoLog: true,
		})
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			srv.Shutdown()
			return nil, errors.New("embedded nats: not ready after 10s")
		}
		b.srv = srv
		opts = append(opts, nats.InProcessServer(srv))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	b.nc = nc
	if b.js, err = jetstream.New(nc); err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = b.js.CreateOrUpdateStream(sctx, jetstream.StreamConfig{
		Name: AlertStream, Subjects: []string{"clarion.alerts.>"}, MaxAge: 7 * 24 * time.Hour, Storage: jetstream.FileStorage,
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("alert stream: %w", err)
	}
	return b, nil
}

func deviceSubject(id string) string { return "clarion.device." + id }

// WakeDevices tells each device's gateway to look for new messages. A lost
// wake-up only delays delivery until the gateway's periodic check.
func (b *Bus) WakeDevices(ids []string) {
	for _, id := range ids {
		if err := b.nc.Publish(deviceSubject(id), nil); err != nil {
			b.log.Warn("wake device", "device_id", id, "error", err)
		}
	}
}

// SubscribeDevice calls wake whenever the device is woken, on any node.
func (b *Bus) SubscribeDevice(id string, wake func()) (func(), error) {
	sub, err := b.nc.Subscribe(deviceSubject(id), func(*nats.Msg) { wake() })
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	// Make sure the server has the interest before the caller reads its
	// backlog, so a message committed right after is not missed.
	if err := b.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// AlertEvent is one alert lifecycle event on the stream: ids and codes only.
type AlertEvent struct {
	Type      string    `json:"type"` // "opened"
	AlertID   string    `json:"alert_id"`
	EventID   string    `json:"event_id"`
	RuleID    string    `json:"rule_id"`
	Priority  string    `json:"priority"`
	Unit      string    `json:"unit"`
	PatientID string    `json:"patient_id"` // opaque pseudonym
	At        time.Time `json:"at"`
}

// PublishAlert appends an alert lifecycle event to the stream.
func (b *Bus) PublishAlert(ctx context.Context, ev AlertEvent) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = b.js.Publish(ctx, "clarion.alerts."+ev.Type, data, jetstream.WithMsgID(ev.Type+"/"+ev.AlertID))
	return err
}

// Ready reports whether the connection is usable.
func (b *Bus) Ready() error {
	if b.nc == nil || !b.nc.IsConnected() {
		return errors.New("nats not connected")
	}
	return nil
}

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() {
	if b.nc != nil {
		_ = b.nc.Drain()
		deadline := time.Now().Add(5 * time.Second)
		for !b.nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}
