// Package loop runs a periodic job until its context ends: the one ticker
// loop the background workers share.
package loop

import (
	"context"
	"time"
)

// Every calls fn each `every` (fallback when every is not positive) until
// ctx ends. fn is not called at start: callers that need a first run do it
// themselves.
func Every(ctx context.Context, every, fallback time.Duration, fn func(ctx context.Context)) {
	if every <= 0 {
		every = fallback
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}
