package fhir

import (
	"context"
	"sync"
)

// maxGroupEntries bounds the entries one group commit holds (a request
// larger than that, a big transaction Bundle, commits alone).
const maxGroupEntries = 1000

// parallelCommits is how many group transactions a node keeps in flight
// at once on PostgreSQL.
const parallelCommits = 2

// committer groups the create requests waiting at one moment into one
// transaction (group commit), as the HL7 intake does with messages. Up to
// parallel transactions are in flight at once. A request that finds a
// slot free commits the head of the queue itself (its own request
// included, up to maxEntries entries), wakes the other requests of that
// group, and, if requests queued meanwhile, hands the slot to a goroutine
// that goes on committing until the queue is empty. Under light load a
// request is committed alone; under load the queue grows while the slots
// are busy, and groups grow with it. Every request is still answered only
// after the commit that holds it, and when a group's transaction fails
// each of its requests is committed again on its own, so one bad request
// (a conditional create matching several resources, say) fails alone.
type committer struct {
	maxEntries int
	parallel   int // 0 means 1
	commit     func(ctx context.Context, group []*request) error

	mu    sync.Mutex
	queue []*request
	busy  int // slots taken
}

// submit commits rs, in order, alone or with others, and returns once
// each has committed (its outs set) or failed (its err set).
func (c *committer) submit(ctx context.Context, rs ...*request) {
	for _, r := range rs {
		r.done = make(chan struct{})
	}
	c.mu.Lock()
	c.queue = append(c.queue, rs...)
	start := c.busy < max(c.parallel, 1)
	if start {
		c.busy++
	}
	c.mu.Unlock()
	if start {
		// A commit serves several requests: none of them may cancel it.
		if c.step(context.WithoutCancel(ctx)) {
			go c.run(context.WithoutCancel(ctx))
		}
	}
	for _, r := range rs {
		<-r.done
	}
}

// run commits groups until the queue is empty.
func (c *committer) run(ctx context.Context) {
	for c.step(ctx) {
	}
}

// step commits the head of the queue and reports whether requests are
// still waiting (the slot stays taken) or not (the slot is freed).
func (c *committer) step(ctx context.Context) bool {
	c.mu.Lock()
	n, entries := 0, 0
	for n < len(c.queue) && (n == 0 || entries+len(c.queue[n].entries) <= c.maxEntries) {
		entries += len(c.queue[n].entries)
		n++
	}
	group := c.queue[:n:n]
	c.queue = append([]*request(nil), c.queue[n:]...)
	c.mu.Unlock()

	if len(group) > 0 {
		if err := c.commit(ctx, group); err != nil {
			if len(group) == 1 {
				group[0].err = err
			} else {
				for _, r := range group {
					r.err = c.commit(ctx, []*request{r})
				}
			}
		}
		for _, r := range group {
			close(r.done)
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
