package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clarion-health/clarion/messaging"
)

// messagingFlags are serve's messaging options: the escrow key and message
// expiry by priority.
type messagingFlags struct {
	escrowPublicKey string
	expiry          string
	retentionEvery  time.Duration
}

func (m *messagingFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.escrowPublicKey, "escrow-public-key", os.Getenv("CLARION_ESCROW_PUBLIC_KEY"),
		"file with the escrow public key (clarion escrow keygen); each message body is also sealed to it (env CLARION_ESCROW_PUBLIC_KEY)")
	fs.StringVar(&m.expiry, "message-expiry", os.Getenv("CLARION_MESSAGE_EXPIRY"),
		"message lifetime by priority, over the defaults "+messaging.DefaultExpiry().String()+" (env CLARION_MESSAGE_EXPIRY)")
	fs.DurationVar(&m.retentionEvery, "retention-every", time.Minute, "how often expired messages are purged")
}

// engineOptions loads the escrow key and expiry table, says at startup
// which proof of sending is kept, and registers the timer-lateness
// histogram.
func (m *messagingFlags) engineOptions(log *slog.Logger, reg prometheus.Registerer) ([]messaging.Option, error) {
	expiry, err := messaging.ParseExpiry(m.expiry)
	if err != nil {
		return nil, fmt.Errorf("--message-expiry: %w", err)
	}
	lateness := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "clarion_escalation_timer_lateness_seconds",
		Help:    "From an escalation timer's due time to the commit that fired it.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}})
	if reg != nil {
		if err := reg.Register(lateness); err != nil {
			return nil, err
		}
	}
	opts := []messaging.Option{messaging.WithExpiry(expiry),
		messaging.WithTimerLateness(func(d time.Duration) { lateness.Observe(d.Seconds()) })}
	if m.escrowPublicKey == "" {
		log.Warn("no escrow key configured: only a keyed digest of each message is kept; what was sent can be checked against a claimed text but not recovered",
			"message_expiry", expiry.String())
		return opts, nil
	}
	key, err := loadEscrowPublicKey(m.escrowPublicKey)
	if err != nil {
		return nil, fmt.Errorf("--escrow-public-key: %w", err)
	}
	log.Info("escrow key configured: each message body is also sealed to it", "escrow_key_id", key.KeyID,
		"suite", key.Suite, "message_expiry", expiry.String())
	return append(opts, messaging.WithEscrow(key)), nil
}
