// Package groupcommit lets concurrent writers share transactions: the
// items submitted while a commit is in flight are committed together by
// the next one (group commit), so that many writers pay one round trip
// and one WAL flush instead of one each.
package groupcommit

import (
	"context"
	"sync"
)

// Committer groups the items waiting at one moment into one commit. Up to
// Parallel commits are in flight at once. A submitter that finds a slot
// free commits the head of the queue itself (its own items included, up to
// Max by Weight), wakes the other submitters of that group, and, if items
// queued meanwhile, hands the slot to a goroutine that goes on committing
// until the queue is empty. Under light load an item is committed alone,
// on its own goroutine; under load the queue grows while the slots are
// busy, and groups grow with it. When a group's commit fails, each of its
// items is committed again on its own, so one bad item fails alone.
type Committer[T any] struct {
	Max      int              // the most a group weighs; a heavier item commits alone
	Weight   func(item T) int // nil: every item weighs 1
	Parallel int              // commits in flight at once; 0 means 1
	Commit   func(ctx context.Context, group []T) error

	mu    sync.Mutex
	queue []*waiter[T]
	busy  int // slots taken
}

type waiter[T any] struct {
	item T
	err  error
	done chan struct{}
}

// Submit commits items, in order, alone or with others, and returns once
// each has committed or failed: the error of each, nil when committed.
// The commit serves other submitters too, so ctx's cancellation does not
// reach it.
func (c *Committer[T]) Submit(ctx context.Context, items ...T) []error {
	ws := make([]*waiter[T], len(items))
	for i, it := range items {
		ws[i] = &waiter[T]{item: it, done: make(chan struct{})}
	}
	c.mu.Lock()
	c.queue = append(c.queue, ws...)
	start := c.busy < max(c.Parallel, 1)
	if start {
		c.busy++
	}
	c.mu.Unlock()
	if start {
		ctx := context.WithoutCancel(ctx)
		if c.step(ctx) {
			go c.run(ctx)
		}
	}
	errs := make([]error, len(ws))
	for i, w := range ws {
		<-w.done
		errs[i] = w.err
	}
	return errs
}

// run commits groups until the queue is empty.
func (c *Committer[T]) run(ctx context.Context) {
	for c.step(ctx) {
	}
}

// step commits the head of the queue and reports whether items are still
// waiting (the slot stays taken) or not (the slot is freed).
func (c *Committer[T]) step(ctx context.Context) bool {
	c.mu.Lock()
	n, weight := 0, 0
	for n < len(c.queue) && (n == 0 || weight+c.weigh(c.queue[n].item) <= c.Max) {
		weight += c.weigh(c.queue[n].item)
		n++
	}
	group := c.queue[:n:n]
	c.queue = append([]*waiter[T](nil), c.queue[n:]...)
	c.mu.Unlock()

	if len(group) > 0 {
		items := make([]T, len(group))
		for i, w := range group {
			items[i] = w.item
		}
		if err := c.Commit(ctx, items); err != nil {
			if len(group) == 1 {
				group[0].err = err
			} else {
				for _, w := range group {
					w.err = c.Commit(ctx, []T{w.item})
				}
			}
		}
		for _, w := range group {
			close(w.done)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		c.busy--
		return false
	}
	return true
}

func (c *Committer[T]) weigh(item T) int {
	if c.Weight == nil {
		return 1
	}
	return c.Weight(item)
}

// Busy reports whether a commit is in flight or queued items wait.
func (c *Committer[T]) Busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.busy > 0
}

// Queued is how many items wait for a slot.
func (c *Committer[T]) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}
