package bus

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

// EnvNATS switches on the tests against an external NATS server.
const EnvNATS = "CLARION_TEST_NATS_URL"

func testBuses(t *testing.T) map[string]*Bus {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	out := map[string]*Bus{}
	b, err := Start(context.Background(), "", t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	out["embedded"] = b
	if url := os.Getenv(EnvNATS); url != "" {
		x, err := Start(context.Background(), url, "", log)
		if err != nil {
			t.Fatalf("external NATS at %s unreachable: %v", EnvNATS, err)
		}
		t.Cleanup(x.Close)
		out["external"] = x
	}
	return out
}

func TestWakeReachesSubscriber(t *testing.T) {
	for name, b := range testBuses(t) {
		t.Run(name, func(t *testing.T) {
			if err := b.Ready(); err != nil {
				t.Fatal(err)
			}
			woke := make(chan struct{}, 1)
			unsub, err := b.SubscribeDevice("dev_x_"+name, func() { woke <- struct{}{} })
			if err != nil {
				t.Fatal(err)
			}
			defer unsub()
			b.WakeDevices([]string{"dev_x_" + name})
			select {
			case <-woke:
			case <-time.After(10 * time.Second):
				t.Fatal("no wake-up within 10s")
			}
			if err := b.PublishAlert(context.Background(), AlertEvent{Type: "opened", AlertID: "alr_test_" + name}); err != nil {
				t.Fatalf("publish to stream: %v", err)
			}
		})
	}
}
