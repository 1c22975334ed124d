package loop

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestEveryRunsOnEachTickUntilCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		runs := 0
		done := make(chan struct{})
		go func() { Every(ctx, 0, time.Second, func(context.Context) { runs++ }); close(done) }()
		time.Sleep(3500 * time.Millisecond)
		synctest.Wait()
		if runs != 3 {
			t.Fatalf("runs after 3.5 s with a 1 s fallback = %d, want 3", runs)
		}
		cancel()
		<-done
	})
}
