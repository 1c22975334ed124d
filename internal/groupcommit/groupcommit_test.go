package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// waitUntil polls cond for up to five seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Items queued while a commit is in flight are grouped; a failed group is
// retried item by item so only the bad item fails.
func TestGroupsAndIsolatesFailures(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var groups [][]string
	c := &Committer[string]{Max: 4, Commit: func(_ context.Context, group []string) error {
		mu.Lock()
		first := len(groups) == 0
		groups = append(groups, slices.Clone(group))
		mu.Unlock()
		if first {
			<-release // hold the only slot so the others queue up
		}
		if slices.Contains(group, "BAD") {
			return errors.New("poisoned")
		}
		return nil
	}}
	items := []string{"FIRST"}
	for i := range 9 {
		items = append(items, fmt.Sprint("M", i))
	}
	items[5] = "BAD"
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = c.Submit(context.Background(), items[0])[0] })
	waitUntil(t, "the first commit", c.Busy)
	for i := 1; i < len(items); i++ {
		wg.Go(func() { errs[i] = c.Submit(context.Background(), items[i])[0] })
		waitUntil(t, "item "+items[i]+" queued", func() bool { return c.Queued() == i })
	}
	close(release)
	wg.Wait()

	for i, it := range items {
		if (it == "BAD") != (errs[i] != nil) {
			t.Errorf("%s: err %v", it, errs[i])
		}
	}
	if len(groups[0]) != 1 || !slices.Equal(groups[1], items[1:5]) {
		t.Errorf("groups = %v, want the first alone, then the next 4 grouped in order", groups)
	}
	for _, g := range groups {
		if len(g) > 4 {
			t.Errorf("group over Max: %v", g)
		}
	}
	// Submitters are woken before their slot is freed: idle soon after.
	waitUntil(t, "the committer idle", func() bool { return !c.Busy() && c.Queued() == 0 })
}

// A group weighs at most Max; a heavier item commits alone.
func TestBoundsGroupsByWeight(t *testing.T) {
	var sizes []int
	c := &Committer[int]{Max: 3, Weight: func(n int) int { return n }, Commit: func(_ context.Context, group []int) error {
		total := 0
		for _, n := range group {
			total += n
		}
		sizes = append(sizes, total)
		return nil
	}}
	if errs := c.Submit(context.Background(), 1, 2, 1, 5, 1); slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
		t.Fatal(errs)
	}
	if !slices.Equal(sizes, []int{3, 1, 5, 1}) {
		t.Fatalf("group weights %v, want [3 1 5 1]", sizes)
	}
}

// With Parallel set, commits run side by side: a second starts while the
// first is still in flight.
func TestRunsCommitsInParallel(t *testing.T) {
	inFlight := make(chan struct{}, 2)
	both := make(chan struct{})
	var once sync.Once
	c := &Committer[string]{Max: 1, Parallel: 2, Commit: func(context.Context, []string) error {
		inFlight <- struct{}{}
		if len(inFlight) == 2 {
			once.Do(func() { close(both) })
		}
		select {
		case <-both:
		case <-time.After(10 * time.Second):
			return errors.New("the other commit never started")
		}
		<-inFlight
		return nil
	}}
	var wg sync.WaitGroup
	for _, it := range []string{"A", "B", "C"} {
		wg.Go(func() {
			if err := c.Submit(context.Background(), it)[0]; err != nil {
				t.Errorf("%s: %v", it, err)
			}
		})
	}
	wg.Wait()
	// Submitters are woken before their slot is freed: idle soon after.
	waitUntil(t, "the committer idle", func() bool { return !c.Busy() && c.Queued() == 0 })
}

// A submitter's cancelled context does not cancel the commit it runs for
// others.
func TestCommitIgnoresCancellation(t *testing.T) {
	c := &Committer[string]{Max: 8, Commit: func(ctx context.Context, _ []string) error { return ctx.Err() }}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Submit(ctx, "x")[0]; err != nil {
		t.Fatalf("commit saw the submitter's cancellation: %v", err)
	}
}
