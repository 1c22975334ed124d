package hl7

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/internal/loop"
)

// AlarmWatchdogLost is Alarm.Source of the technical alarm Clarion raises
// when a supervised reporter falls silent. It is a Clarion code, not an
// MDC term: the loss is detected by Clarion, not reported by a device, and
// routing rules match it by this text.
const AlarmWatchdogLost = "CLARION_EVT_WATCHDOG_LOST"

// WatchdogSource is the Source of the synthetic alarm events.
const WatchdogSource = "CLARION^WATCHDOG"

// WatchdogRecorder notes, in the intake's transaction, that a reporter's
// watchdog message was committed.
type WatchdogRecorder interface {
	Seen(q ingest.Queue, reporter string, at time.Time)
}

// WatchedReporter is an alarm reporter (by MSH-3) that must send a
// watchdog at least every Interval.
type WatchedReporter struct {
	Reporter string        `json:"reporter" yaml:"reporter"`
	Interval time.Duration `json:"interval" yaml:"interval"`
	Unit     string        `json:"unit,omitempty" yaml:"unit,omitempty"` // point of care the alarm routes to
}

// Watchdog supervises reporters: a reporter silent for longer than its
// interval raises one technical alarm (a KindAlarm event through the event
// store, so the normal pipeline routes it), and the next watchdog after
// that ends it. Several nodes may run it: each check is one transaction on
// the reporter's row.
type Watchdog struct {
	db        *db.DB
	store     *ingest.Store
	log       *slog.Logger
	now       func() time.Time
	onAlarm   func() // wakes the router after an alarm event commits
	reporters map[string]WatchedReporter
	order     []string
}

var _ WatchdogRecorder = (*Watchdog)(nil)

// NewWatchdog validates the reporters. onAlarm may be nil.
func NewWatchdog(d *db.DB, store *ingest.Store, log *slog.Logger, now func() time.Time, onAlarm func(),
	reporters ...WatchedReporter) (*Watchdog, error) {
	if onAlarm == nil {
		onAlarm = func() {}
	}
	w := &Watchdog{db: d, store: store, log: log, now: now, onAlarm: onAlarm, reporters: map[string]WatchedReporter{}}
	for i, r := range reporters {
		switch {
		case r.Reporter == "":
			return nil, &ConfigError{Field: fmt.Sprintf("watchdogs[%d].reporter", i), Reason: "is required"}
		case r.Interval <= 0:
			return nil, &ConfigError{Field: fmt.Sprintf("watchdogs[%d].interval", i), Reason: "must be positive"}
		case w.reporters[r.Reporter].Reporter != "":
			return nil, &ConfigError{Field: fmt.Sprintf("watchdogs[%d].reporter", i), Reason: "is listed twice"}
		}
		w.reporters[r.Reporter] = r
		w.order = append(w.order, r.Reporter)
	}
	return w, nil
}

// Seen queues the record of a watchdog from reporter at at, sent with the
// intake's transaction; unsupervised reporters are ignored.
func (w *Watchdog) Seen(q ingest.Queue, reporter string, at time.Time) {
	if _, ok := w.reporters[reporter]; !ok {
		return
	}
	q.Exec(`INSERT INTO ingest_watchdogs (reporter, last_seen_at) VALUES ($1, $2)
		ON CONFLICT (reporter) DO UPDATE SET last_seen_at = excluded.last_seen_at
		WHERE ingest_watchdogs.last_seen_at < excluded.last_seen_at`, reporter, at.UnixMicro())
}

// Run checks every interval until ctx ends.
func (w *Watchdog) Run(ctx context.Context, every time.Duration) {
	loop.Every(ctx, every, 10*time.Second, func(ctx context.Context) {
		if _, _, err := w.Check(ctx, w.now()); err != nil && ctx.Err() == nil {
			w.log.Error("watchdog check failed", "error", err)
		}
	})
}

// Check raises an alarm for each reporter silent for longer than its
// interval (once per outage) and ends the alarm of each that has sent a
// watchdog since. A reporter never heard from is timed from its first
// check.
func (w *Watchdog) Check(ctx context.Context, now time.Time) (raised, ended int, err error) {
	for _, name := range w.order {
		r := w.reporters[name]
		var change string
		err := w.db.InTx(ctx, func(tx *sql.Tx) error {
			var e error
			change, e = w.check(ctx, tx, r, now)
			return e
		})
		if err != nil {
			return raised, ended, fmt.Errorf("watchdog %s: %w", name, err)
		}
		switch change {
		case "lost":
			raised++
			w.log.Warn("watchdog lost; technical alarm raised", "reporter", name)
			w.onAlarm()
		case "resumed":
			ended++
			w.log.Info("watchdog resumed; technical alarm ended", "reporter", name)
			w.onAlarm()
		}
	}
	return raised, ended, nil
}

func (w *Watchdog) check(ctx context.Context, tx *sql.Tx, r WatchedReporter, now time.Time) (string, error) {
	if _, err := tx.ExecContext(ctx, `INSERT INTO ingest_watchdogs (reporter, last_seen_at) VALUES ($1, $2)
		ON CONFLICT (reporter) DO NOTHING`, r.Reporter, now.UnixMicro()); err != nil {
		return "", fmt.Errorf("watchdog baseline: %w", err)
	}
	var last int64
	var alarmedAt sql.NullInt64
	var alarmID sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT last_seen_at, alarmed_at, alarm_event_id FROM ingest_watchdogs
		WHERE reporter = $1`+w.db.ForUpdate(), r.Reporter).Scan(&last, &alarmedAt, &alarmID)
	if err != nil {
		return "", fmt.Errorf("watchdog state: %w", err)
	}
	silence := now.Sub(time.UnixMicro(last))
	switch {
	case !alarmedAt.Valid && silence > r.Interval:
		alarm := ids.New("wdg")
		evID, err := w.insertAlarm(ctx, tx, r, alarm, "start", "active", now)
		if err != nil {
			return "", err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE ingest_watchdogs SET alarmed_at = $1, alarm_event_id = $2
			WHERE reporter = $3`, now.UnixMicro(), alarm, r.Reporter); err != nil {
			return "", fmt.Errorf("watchdog raise: %w", err)
		}
		return "lost", w.audit(ctx, tx, "ingest.watchdog_lost", evID, r, map[string]any{
			"silence_ms": silence.Milliseconds()}, now)
	case alarmedAt.Valid && last > alarmedAt.Int64:
		evID, err := w.insertAlarm(ctx, tx, r, alarmID.String, "end", "inactive", now)
		if err != nil {
			return "", err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE ingest_watchdogs SET alarmed_at = NULL, alarm_event_id = NULL
			WHERE reporter = $1`, r.Reporter); err != nil {
			return "", fmt.Errorf("watchdog clear: %w", err)
		}
		return "resumed", w.audit(ctx, tx, "ingest.watchdog_resumed", evID, r, map[string]any{
			"outage_s": int64(time.UnixMicro(last).Sub(time.UnixMicro(alarmedAt.Int64)).Seconds())}, now)
	}
	return "", nil
}

// insertAlarm stores the synthetic technical alarm (phase start or end)
// for the pipeline to route. It concerns equipment, not a patient.
func (w *Watchdog) insertAlarm(ctx context.Context, tx *sql.Tx, r WatchedReporter, alarmID, phase, state string, now time.Time) (string, error) {
	if alarmID == "" {
		return "", errors.New("watchdog alarm without an id")
	}
	ev := ingest.Event{Kind: ingest.KindAlarm, Source: WatchdogSource, SourceID: alarmID + "-" + phase,
		Trigger: "ORU^R40", OccurredAt: now, Location: ingest.Location{Unit: r.Unit},
		Alarm: &ingest.Alarm{ID: alarmID, Reporter: r.Reporter, Source: AlarmWatchdogLost, Phase: phase,
			State: state, Priority: "PM", Type: "ST"}}
	id := ids.New("evt")
	if err := w.store.Insert(ctx, tx, id, &ev, nil, "", now); err != nil {
		return "", err
	}
	return id, nil
}

func (w *Watchdog) audit(ctx context.Context, tx *sql.Tx, action, eventID string, r WatchedReporter, detail map[string]any, now time.Time) error {
	detail["reporter"] = r.Reporter
	detail["interval_ms"] = r.Interval.Milliseconds()
	err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "watchdog",
		Action: action, ObjectType: "event", ObjectID: eventID, CorrelationID: eventID, Detail: detail})
	return err
}

// ParseWatchedReporters reads the --mllp-watchdogs flag:
// "REPORTER=INTERVAL[@UNIT]" items separated by commas, e.g.
// "MONITOR_GW=60s@ICU,PUMPS=2m".
func ParseWatchedReporters(s string) ([]WatchedReporter, error) {
	var out []WatchedReporter
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		field := "watchdogs[" + strconv.Itoa(i) + "]"
		name, rest, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, &ConfigError{Field: field, Reason: `must be REPORTER=INTERVAL[@UNIT]`}
		}
		ival, unit, _ := strings.Cut(rest, "@")
		d, err := time.ParseDuration(strings.TrimSpace(ival))
		if err != nil || d <= 0 {
			return nil, &ConfigError{Field: field + ".interval", Reason: "must be a positive duration such as 60s"}
		}
		out = append(out, WatchedReporter{Reporter: strings.TrimSpace(name), Interval: d, Unit: strings.TrimSpace(unit)})
	}
	return out, nil
}
