package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/bus"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/internal/pipeline"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/messaging/deviceclient"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

// runLoadtest is `clarion loadtest`: it measures, in process and on
// loopback only, (a) the time from an alert opening to its receipt on a
// device, with N connected devices and alerts opened at a fixed rate, and
// (b) escalation timer lateness with many timers pending. It works in a
// throw-away store: a temporary SQLite directory, or a fresh schema of the
// PostgreSQL database given (dropped afterwards).
func runLoadtest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("loadtest", stderr)
	dbURL := fs.String("database-url", "", "postgres:// URL to test on PostgreSQL (a schema is created and dropped); empty: SQLite in a temporary directory")
	mode := fs.String("mode", "both", "delivery, timers or both")
	devices := fs.Int("devices", 1000, "connected devices (delivery)")
	rate := fs.Int("rate", 500, "alerts opened per second (delivery)")
	duration := fs.Duration("duration", 10*time.Second, "how long alerts are opened (delivery)")
	pending := fs.Int("timers", 100000, "pending escalation timers (timers)")
	firing := fs.Int("firing", 5000, "of which fire during the test, spread over --timer-window (timers)")
	window := fs.Duration("timer-window", 10*time.Second, "the span over which the firing timers are due (timers)")
	lanes := fs.Int("routing-lanes", 2, "routing lanes of the pipeline worker on PostgreSQL (delivery; SQLite: 1)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (for go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *devices < 1 || *devices > 5000:
		return errors.New("loadtest: --devices must be 1 to 5000")
	case *rate < 1 || *rate > 5000:
		return errors.New("loadtest: --rate must be 1 to 5000")
	case *duration <= 0 || *duration > time.Minute:
		return errors.New("loadtest: --duration must be at most 1m")
	case *pending < 1 || *pending > 1000000 || *firing < 1 || *firing > *pending || *firing > 50000:
		return errors.New("loadtest: --timers must be 1 to 1000000, --firing 1 to min(--timers, 50000)")
	case *window <= 0 || *window > time.Minute:
		return errors.New("loadtest: --timer-window must be at most 1m")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // bounded whatever happens
	defer cancel()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *mode == "delivery" || *mode == "both" {
		if err := loadDelivery(ctx, *dbURL, *devices, *rate, *lanes, *duration, stdout, stderr); err != nil {
			return fmt.Errorf("loadtest delivery: %w", err)
		}
	}
	if *mode == "timers" || *mode == "both" {
		if err := loadTimers(ctx, *dbURL, *pending, *firing, *window, stdout, stderr); err != nil {
			return fmt.Errorf("loadtest timers: %w", err)
		}
	}
	return nil
}

// loadStore is a throw-away store with the keys and bus of one node.
type loadStore struct {
	db   *db.DB
	keys *atrest.Keyring
	bus  *bus.Bus
	done func()
}

func openLoadStore(ctx context.Context, dbURL string) (*loadStore, error) {
	dir, err := os.MkdirTemp("", "clarion-loadtest-")
	if err != nil {
		return nil, err
	}
	cleanup := []func(){func() { os.RemoveAll(dir) }}
	done := func() {
		for _, f := range slices.Backward(cleanup) {
			f()
		}
	}
	u := dbURL
	if dbURL != "" {
		schema := "loadtest_" + strings.ToLower(ids.Secret(8))
		schema = strings.Map(func(r rune) rune {
			if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
				return r
			}
			return '_'
		}, schema)
		admin, err := sql.Open("pgx", dbURL)
		if err != nil {
			done()
			return nil, err
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
			done()
			return nil, err
		}
		cleanup = append(cleanup, func() {
			if c, err := sql.Open("pgx", dbURL); err == nil {
				_, _ = c.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
				c.Close()
			}
		})
		pu, err := url.Parse(dbURL)
		if err != nil {
			done()
			return nil, err
		}
		q := pu.Query()
		q.Set("search_path", schema)
		pu.RawQuery = q.Encode()
		u = pu.String()
	}
	s := &loadStore{}
	if s.db, err = db.Open(ctx, u, dir); err != nil {
		done()
		return nil, err
	}
	cleanup = append(cleanup, func() { s.db.Close() })
	if err := s.db.Migrate(ctx); err != nil {
		done()
		return nil, err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if s.keys, err = atrest.Parse("lt:" + base64.StdEncoding.EncodeToString(key)); err != nil {
		done()
		return nil, err
	}
	if s.bus, err = bus.Start(ctx, "", dir, slog.New(slog.DiscardHandler)); err != nil {
		done()
		return nil, err
	}
	cleanup = append(cleanup, s.bus.Close)
	s.done = done
	return s, nil
}

const loadPolicy = "loadtest"

// seedLoad makes n units U0..Un-1, each with one RN (user u<i>, one device)
// on shift around now, a failsafe user "sup" with one device, the policy
// RN (delay) → sup, and a rule paging critical potassium. It returns each
// device's identity (server to be filled in), by user.
func seedLoad(ctx context.Context, s *loadStore, n int, delay time.Duration, now time.Time) (map[string]*deviceclient.Identity, error) {
	by := oncall.Actor{Type: audit.ActorSystem, ID: "loadtest", Role: "admin"}
	idents := map[string]*deviceclient.Identity{}
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		users := []string{"sup"}
		for i := range n {
			unit, user := fmt.Sprintf("U%d", i), fmt.Sprintf("u%d", i)
			if err := oncall.PutUnit(ctx, tx, by, oncall.Unit{ID: unit, Name: unit, TimeZone: "UTC"}); err != nil {
				return err
			}
			if err := oncall.PutUser(ctx, tx, by, oncall.User{ID: user, Name: user}); err != nil {
				return err
			}
			if _, err := oncall.AddShift(ctx, tx, by, oncall.Shift{UnitID: unit, Role: "RN", UserID: user,
				Start: now.Add(-time.Hour), End: now.Add(12 * time.Hour)}); err != nil {
				return err
			}
			users = append(users, user)
		}
		if err := oncall.PutUser(ctx, tx, by, oncall.User{ID: "sup", Name: "sup"}); err != nil {
			return err
		}
		for _, u := range users {
			priv, pub, err := messaging.GenerateKey(messaging.SuiteX25519)
			if err != nil {
				return err
			}
			dev, err := messaging.RegisterDevice(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "loadtest"},
				messaging.Device{UserID: u, Name: "load", Suite: messaging.SuiteX25519, PublicKey: pub}, now)
			if err != nil {
				return err
			}
			tok, err := auth.Issue(ctx, tx, auth.KindDevice, dev.ID, auth.RoleDevice, now)
			if err != nil {
				return err
			}
			idents[u] = &deviceclient.Identity{DeviceID: dev.ID, UserID: u, Token: tok, Suite: messaging.SuiteX25519, PrivateKey: priv}
		}
		if err := oncall.PutPolicy(ctx, tx, by, oncall.Policy{ID: loadPolicy, Name: "Load", Steps: []oncall.Step{
			{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: int(delay / time.Second)},
			{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}},
		}}); err != nil {
			return err
		}
		return routing.PutRule(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "loadtest"}, routing.Rule{
			ID: "k", Name: "Critical potassium", Enabled: true, Priority: routing.PriorityHigh,
			Match:      routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}}, Flags: []string{"HH"}},
			TargetRole: "RN", PolicyID: loadPolicy, LockText: "{priority} alert on {unit}",
			Body: "Room {room} bed {bed}: critical {test} {value} {units} ({flag})"}, now)
	})
	return idents, err
}

// admitLoad admits patients P<i> to unit U<i mod units>, 200 per transaction.
func admitLoad(ctx context.Context, s *loadStore, router *routing.Router, patients, units int, now time.Time) error {
	for lo := 0; lo < patients; lo += 200 {
		err := s.db.InTx(ctx, func(tx *sql.Tx) error {
			for i := lo; i < min(lo+200, patients); i++ {
				ev := &ingest.Event{Kind: ingest.KindAdmit, Source: "ADT^LOAD", SourceID: fmt.Sprintf("A%d", i), Trigger: "ADT^A01",
					OccurredAt: now, Patient: ingest.Patient{ID: fmt.Sprintf("P%d", i), Authority: "LOAD"},
					Location: ingest.Location{Unit: fmt.Sprintf("U%d", i%units), Room: "1", Bed: "1"}}
				if _, err := router.Route(ctx, tx, ids.New("evt"), ev, s.keys, now); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("admit: %w", err)
		}
	}
	return nil
}

// openLoadAlert routes a critical potassium for patient i and starts its
// escalation, in one transaction, then wakes the devices: what the
// pipeline does with one event.
func openLoadAlert(ctx context.Context, s *loadStore, router *routing.Router, engine *messaging.Engine, i int, now time.Time) (string, error) {
	k := 6.9
	ev := &ingest.Event{Kind: ingest.KindResult, Source: "LAB^LOAD", SourceID: fmt.Sprintf("R%d", i), Trigger: "ORU^R01",
		OccurredAt: now, Patient: ingest.Patient{ID: fmt.Sprintf("P%d", i), Authority: "LOAD"},
		Observations: []ingest.Observation{{Code: "2823-3", System: "LN", Display: "Potassium", ValueType: "NM", Value: "6.9",
			Numeric: &k, Units: "mmol/L", Flags: []string{"HH"}}}}
	var wake []string
	var alertID string
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		out, err := router.Route(ctx, tx, ids.New("evt"), ev, s.keys, now)
		if err != nil {
			return err
		}
		if len(out.Opened) != 1 {
			return fmt.Errorf("patient %d: %d alerts opened", i, len(out.Opened))
		}
		alertID = out.Opened[0].ID
		wake, err = engine.Start(ctx, tx, out.Opened[0], now)
		return err
	})
	if err != nil {
		return "", err
	}
	s.bus.WakeDevices(wake)
	return alertID, nil
}

func percentiles(ds []time.Duration) (p50, p99, maxD time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func loadDelivery(ctx context.Context, dbURL string, devices, rate, lanes int, duration time.Duration, stdout, stderr io.Writer) error {
	s, err := openLoadStore(ctx, dbURL)
	if err != nil {
		return err
	}
	defer s.done()
	// Warnings (a batch rolled back, a slow device) are printed: they
	// explain a tail.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	now := time.Now()
	total := rate * int(duration/time.Second)
	if total == 0 {
		total = rate * int(duration) / int(time.Second)
	}
	idents, err := seedLoad(ctx, s, devices, time.Hour, now)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	router := routing.NewRouterWithOptions(s.keys, routing.Options{Dialect: s.db.Dialect})
	if err := admitLoad(ctx, s, router, total, devices, now); err != nil {
		return err
	}
	engine := messaging.NewEngine(s.db, s.keys, s.bus, log, time.Now)
	gw := messaging.NewGateway(s.db, engine, s.bus, log, 20*time.Second)
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	messaging.NewAPI(s.db, engine, gw).RegisterRoutes(r.Group("/", auth.Middleware(s.db)))
	srv := httptest.NewServer(r) // 127.0.0.1 only
	defer srv.Close()
	defer gw.Shutdown()

	// A serving node's background work runs alongside: the pipeline worker
	// routes committed events in batches and starts their escalations, and
	// the audit chainer links the records every transaction leaves pending.
	store := ingest.NewStore(s.keys, s.db.SkipLocked())
	committed := &commitClock{next: s.bus, at: map[string]time.Time{}}
	worker := pipeline.New(s.db, store, router, engine, s.keys, s.bus, committed, log, time.Now)
	worker.SetLanes(lanes)
	wctx, stopWork := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer func() { stopWork(); bg.Wait() }()
	bg.Go(func() { worker.Run(wctx, 500*time.Millisecond) })
	bg.Go(func() { (&audit.Chainer{DB: s.db, Log: log}).Run(wctx, 20*time.Millisecond) })

	type receipt struct {
		alertID string
		at      time.Time
	}
	var mu sync.Mutex
	var got []receipt
	var received atomic.Int64
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for u, id := range idents {
		if u == "sup" {
			continue
		}
		id.Server = srv.URL
		conn, err := deviceclient.Dial(dctx, id)
		if err != nil {
			return fmt.Errorf("connect %s: %w", u, err)
		}
		wg.Go(func() {
			defer conn.Close()
			for {
				rec, err := conn.Next(dctx)
				if err != nil {
					return
				}
				at := time.Now()
				mu.Lock()
				got = append(got, receipt{rec.Envelope.AlertID, at})
				mu.Unlock()
				received.Add(1)
			}
		})
	}
	fmt.Fprintf(stderr, "loadtest: %d devices connected on %s; %d results arriving at %d/s\n", devices, s.db.Dialect, total, rate)

	// A fixed schedule of results. Each is committed as the intake does
	// (the event and its audit record in one transaction; those arriving
	// together share it), then the worker is kicked. Latency runs from the
	// result's scheduled arrival to its receipt on the device, so a backlog
	// anywhere (intake, routing, delivery) counts against it.
	start := time.Now().Add(100 * time.Millisecond)
	due := make(map[string]time.Time, total) // event id → scheduled arrival
	evIDs := make([]string, total)
	for i := range total {
		evIDs[i] = ids.New("evt")
		due[evIDs[i]] = start.Add(time.Duration(i) * time.Second / time.Duration(rate))
	}
	arrivals := make(chan int, total)
	var failed atomic.Int64
	var gen sync.WaitGroup
	gen.Go(func() {
		defer close(arrivals)
		for i := range total {
			if wait := time.Until(due[evIDs[i]]); wait > 0 {
				time.Sleep(wait)
			}
			arrivals <- i
		}
	})
	for range 2 { // two commits in flight, as the intake allows
		gen.Go(func() {
			for i := range arrivals {
				batch := []int{i}
			more:
				for len(batch) < 64 {
					select {
					case j, ok := <-arrivals:
						if !ok {
							break more
						}
						batch = append(batch, j)
					default:
						break more
					}
				}
				if err := commitLoadResults(ctx, s, store, evIDs, batch); err != nil {
					if failed.Add(int64(len(batch))) == int64(len(batch)) {
						fmt.Fprintf(stderr, "loadtest: commit result: %v\n", err)
					}
					continue
				}
				worker.Kick()
			}
		})
	}
	gen.Wait()
	committedIn := time.Since(start)
	deadline := time.Now().Add(60 * time.Second)
	for received.Load() < int64(total)-failed.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	wg.Wait()
	// Which event opened each alert, and when: the latency runs from that
	// event's scheduled arrival (end to end), and from the alert's opening
	// (the routing transaction's time, just before its commit).
	type opening struct {
		eventID string
		at      time.Time
	}
	openings := map[string]opening{}
	rows, err := s.db.QueryContext(ctx, `SELECT id, event_id, created_at FROM alerts`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var a, e string
		var at int64
		if err := rows.Scan(&a, &e, &at); err != nil {
			rows.Close()
			return err
		}
		openings[a] = opening{e, time.UnixMicro(at)}
	}
	rows.Close()
	mu.Lock()
	defer mu.Unlock()
	var lat, fromOpen, fromCommit []time.Duration
	var last time.Time
	committed.mu.Lock()
	defer committed.mu.Unlock()
	for _, r := range got {
		o := openings[r.alertID]
		if at, ok := due[o.eventID]; ok {
			lat = append(lat, r.at.Sub(at))
			fromOpen = append(fromOpen, r.at.Sub(o.at))
			if c, ok := committed.at[r.alertID]; ok {
				fromCommit = append(fromCommit, r.at.Sub(c))
			}
			if r.at.After(last) {
				last = r.at
			}
		}
	}
	p50, p99, mx := percentiles(lat)
	o50, o99, _ := percentiles(fromOpen)
	c50, c99, _ := percentiles(fromCommit)
	deliveredIn := last.Sub(start)
	fmt.Fprintf(stdout, "delivery %s: %d devices, %d alerts at %d/s (arrived in %.2fs; delivered in %.2fs, %.0f/s achieved), %d received, %d failed: result arrival -> device receipt p50 %s, p99 %s, max %s; alert opening -> device receipt p50 %s, p99 %s; commit -> device receipt p50 %s, p99 %s\n",
		s.db.Dialect, devices, total, rate, committedIn.Seconds(), deliveredIn.Seconds(), float64(len(lat))/deliveredIn.Seconds(),
		len(lat), failed.Load(), ms(p50), ms(p99), ms(mx), ms(o50), ms(o99), ms(c50), ms(c99))
	return nil
}

// commitClock notes when the worker published each opened alert: just
// after its routing transaction committed. With it the load test splits
// an alert's latency into routing (opening to commit) and delivery.
type commitClock struct {
	next pipeline.Publisher
	mu   sync.Mutex
	at   map[string]time.Time // alert id → commit seen
}

func (c *commitClock) PublishAlert(ctx context.Context, ev bus.AlertEvent) error {
	if ev.Type == "opened" {
		now := time.Now()
		c.mu.Lock()
		c.at[ev.AlertID] = now
		c.mu.Unlock()
	}
	return c.next.PublishAlert(ctx, ev)
}

// commitLoadResults commits results batch (indexes into evIDs) as pending
// events with their audit records, in one transaction, as the intake does.
func commitLoadResults(ctx context.Context, s *loadStore, store *ingest.Store, evIDs []string, batch []int) error {
	now := time.Now()
	evs := make([]ingest.NewEvent, len(batch))
	entries := make([]audit.Entry, len(batch))
	for n, i := range batch {
		k := 6.9
		evs[n] = ingest.NewEvent{ID: evIDs[i], At: now, Event: &ingest.Event{Kind: ingest.KindResult, Source: "LAB^LOAD",
			SourceID: fmt.Sprintf("R%d", i), Trigger: "ORU^R01", OccurredAt: now,
			Patient: ingest.Patient{ID: fmt.Sprintf("P%d", i), Authority: "LOAD"},
			Observations: []ingest.Observation{{Code: "2823-3", System: "LN", Display: "Potassium", ValueType: "NM",
				Value: "6.9", Numeric: &k, Units: "mmol/L", Flags: []string{"HH"}}}}}
		entries[n] = audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "LAB^LOAD", Action: "ingest.accepted",
			ObjectType: "event", ObjectID: evIDs[i], CorrelationID: evIDs[i],
			Detail: map[string]any{"trigger": "ORU^R01", "kind": string(ingest.KindResult)}}
	}
	return s.db.InPipe(ctx, func(p *db.Pipe) error {
		if err := store.QueueEvents(p, evs, "AA"); err != nil {
			return err
		}
		return audit.QueueBatch(p, entries)
	})
}

func loadTimers(ctx context.Context, dbURL string, pending, firing int, window time.Duration, stdout, stderr io.Writer) error {
	s, err := openLoadStore(ctx, dbURL)
	if err != nil {
		return err
	}
	defer s.done()
	log := slog.New(slog.DiscardHandler)
	now := time.Now()
	const units = 100
	if _, err := seedLoad(ctx, s, units, time.Hour, now); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	router := routing.NewRouterWithOptions(s.keys, routing.Options{Dialect: s.db.Dialect})
	if err := admitLoad(ctx, s, router, firing, units, now); err != nil {
		return err
	}
	opener := messaging.NewEngine(s.db, s.keys, s.bus, log, time.Now)
	alertIDs := make([]string, 0, firing)
	for i := range firing {
		id, err := openLoadAlert(ctx, s, router, opener, i, now)
		if err != nil {
			return err
		}
		alertIDs = append(alertIDs, id)
	}
	// The rest of the pending timers: due in a day, for alerts that do not
	// exist (they never fire here); inserted 500 per statement.
	far := now.Add(24 * time.Hour).UnixMicro()
	for lo := firing; lo < pending; lo += 500 {
		var b strings.Builder
		b.WriteString(`INSERT INTO escalation_timers (id, alert_id, step, due_at, state) VALUES `)
		for i := lo; i < min(lo+500, pending); i++ {
			if i > lo {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "('tmr_f%d', 'alr_f%d', 0, %d, 'pending')", i, i, far+int64(i))
		}
		if _, err := s.db.ExecContext(ctx, b.String()); err != nil {
			return fmt.Errorf("filler timers: %w", err)
		}
	}
	// Statistics, as a live database has them (a fresh PostgreSQL table has
	// none until autovacuum runs).
	if _, err := s.db.ExecContext(ctx, `ANALYZE`); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	// The firing timers: due evenly over the window, from 2 s from now.
	start := time.Now().Add(2 * time.Second)
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		for i, id := range alertIDs {
			due := start.Add(time.Duration(i) * window / time.Duration(firing))
			if _, err := tx.ExecContext(ctx, `UPDATE escalation_timers SET due_at = $1 WHERE alert_id = $2 AND state = 'pending'`,
				due.UnixMicro(), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Setting them took a while (seconds on PostgreSQL): move them all, in
	// one statement, to start 2 s from now, so none is overdue to begin with.
	setAt := time.Now()
	shift := time.Until(start) * -1
	shift += 2 * time.Second
	if _, err := s.db.ExecContext(ctx, `UPDATE escalation_timers SET due_at = due_at + $1 WHERE state = 'pending' AND due_at < $2`,
		shift.Microseconds(), far); err != nil {
		return err
	}
	start = start.Add(shift)
	fmt.Fprintf(stderr, "loadtest: timers set in %s, shifted in %s; first due in %s\n", setAt.Sub(start.Add(-shift).Add(-2*time.Second)).Round(time.Millisecond),
		time.Since(setAt).Round(time.Millisecond), time.Until(start).Round(time.Millisecond))
	var count int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM escalation_timers WHERE state = 'pending'`).Scan(&count); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "loadtest: %d pending timers on %s, %d due over %s\n", count, s.db.Dialect, firing, window)
	var mu sync.Mutex
	var late []time.Duration
	engine := messaging.NewEngine(s.db, s.keys, s.bus, log, time.Now,
		messaging.WithTimerLateness(func(d time.Duration) { mu.Lock(); late = append(late, d); mu.Unlock() }))
	tctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { engine.RunTimers(tctx, 100*time.Millisecond); close(done) }()
	deadline := start.Add(window + 60*time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(late)
		mu.Unlock()
		if n >= firing {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	p50, p99, mx := percentiles(late)
	fmt.Fprintf(stdout, "timers %s: %d pending, %d fired of %d due over %s (each escalating to a device): lateness p50 %s, p99 %s, max %s\n",
		s.db.Dialect, count, len(late), firing, window, ms(p50), ms(p99), ms(mx))
	return nil
}
