package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clarion-health/clarion/fhir"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/ingest/hl7"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/bus"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/internal/pipeline"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

type serveConfig struct {
	storeFlags
	natsURL     string
	httpAddr    string
	mllpAddr    string
	logLevel    string
	mllpMaxSize int
	lanes       int
	hl7         hl7Flags
	audit       auditConfig
	messaging   messagingFlags
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer, demo bool) error {
	name := "serve"
	if demo {
		name = "demo"
	}
	fs := newFlagSet(name, stderr)
	var cfg serveConfig
	cfg.register(fs)
	fs.StringVar(&cfg.natsURL, "nats-url", os.Getenv("CLARION_NATS_URL"),
		"nats:// URL of an external server; empty runs NATS in-process (env CLARION_NATS_URL)")
	fs.StringVar(&cfg.httpAddr, "http-addr", envOr("CLARION_HTTP_ADDR", "127.0.0.1:8080"), "HTTP listen address")
	fs.StringVar(&cfg.mllpAddr, "mllp-addr", envOr("CLARION_MLLP_ADDR", "127.0.0.1:2575"), "MLLP listen address")
	fs.StringVar(&cfg.logLevel, "log-level", envOr("CLARION_LOG_LEVEL", "info"), "debug, info, warn or error")
	fs.IntVar(&cfg.mllpMaxSize, "mllp-max-frame", 1<<20, "largest MLLP message accepted, in bytes")
	fs.IntVar(&cfg.lanes, "routing-lanes", 2, "routing transactions run at once on PostgreSQL, each over its share of the patients (SQLite: 1)")
	cfg.hl7.register(fs)
	cfg.audit.register(fs)
	cfg.messaging.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger(stderr, cfg.logLevel)
	app, err := openApp(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer app.close()
	if demo {
		if err := seedDemo(ctx, app, cfg, stdout); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	return app.serve(ctx, cfg)
}

// app is one node: its store, keys, bus and components.
type app struct {
	log     *slog.Logger
	db      *db.DB
	keys    *atrest.Keyring
	bus     *bus.Bus
	engine  *messaging.Engine
	worker  *pipeline.Worker
	intake  *hl7.Intake
	gateway *messaging.Gateway
	metrics *prometheus.Registry
	now     func() time.Time
	fhirAPI *fhir.API
	hl7     *hl7Ingest
	audit   *auditRuntime
	rules   *routing.Router
	// oncallIndex answers "who is on call" from memory, kept current as
	// rosters change; notifier runs the daily coverage check.
	oncallIndex *oncall.Index
	notifier    *oncall.Notifier
}

func openApp(ctx context.Context, cfg serveConfig, log *slog.Logger) (*app, error) {
	a := &app{log: log, now: time.Now}
	var err error
	if a.db, err = cfg.open(ctx); err != nil {
		return nil, err
	}
	if a.keys, err = atrest.Load(cfg.dataDir); err != nil {
		a.close()
		return nil, err
	}
	if a.bus, err = bus.Start(ctx, cfg.natsURL, cfg.dataDir, log); err != nil {
		a.close()
		return nil, err
	}
	if a.audit, err = openAuditRuntime(ctx, cfg.audit, cfg.dataDir, a.db, a.bus, log, a.now); err != nil {
		a.close()
		return nil, err
	}
	rosters := a.bus.Rosters(ids.New("node"))
	a.oncallIndex = oncall.NewIndex(a.db, a.now, oncall.IndexOptions{Log: log, Publish: rosters.Publish})
	if _, err := rosters.Subscribe(a.oncallIndex.Invalidate); err != nil {
		a.close()
		return nil, err
	}
	if a.notifier, err = oncall.NewNotifier(a.db, a.now, log, "06:00", nil); err != nil {
		a.close()
		return nil, err
	}
	a.metrics = prometheus.NewRegistry()
	a.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	acks := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clarion_mllp_acks_total",
		Help: "MLLP acknowledgements sent, by ACK code."}, []string{"code"})
	a.metrics.MustRegister(acks)

	store := ingest.NewStore(a.keys, a.db.SkipLocked())
	msgOpts, err := cfg.messaging.engineOptions(log, a.metrics)
	if err != nil {
		a.close()
		return nil, err
	}
	a.engine = messaging.NewEngine(a.db, a.keys, a.bus, log, a.now, msgOpts...)
	// Routing reads rosters inside its own transaction, like the engine: the
	// in-memory index would need a second connection (SQLite has one) and
	// could lag an edit another node just committed.
	a.rules = routing.NewRouterWithOptions(a.keys, routing.Options{Log: log, Dialect: a.db.Dialect})
	a.worker = pipeline.New(a.db, store, a.rules, a.engine, a.keys, a.bus, a.bus, log, a.now)
	a.worker.SetLanes(cfg.lanes)
	kick := a.worker.Kick
	if faultsOn() {
		kick = nil // the crash test needs the event still unrouted when the process dies
	}
	if a.hl7, err = newHL7Ingest(cfg.hl7, a.db, store, log, a.now, kick); err != nil {
		a.close()
		return nil, err
	}
	a.intake = hl7.NewIntake(a.db, store, log, a.now, kick, func(code string) { acks.WithLabelValues(code).Inc() },
		a.hl7.intakeOpts...)
	a.gateway = messaging.NewGateway(a.db, a.engine, a.bus, log, 20*time.Second)
	if a.fhirAPI, err = fhir.New(a.db, store, a.keys, log, a.now, kick); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

func (a *app) close() {
	if a.audit != nil {
		a.audit.close()
	}
	if a.bus != nil {
		a.bus.Close()
	}
	if a.db != nil {
		a.db.Close()
	}
}

func (a *app) router() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	_ = r.SetTrustedProxies(nil) // client addresses come from the socket, never from X-Forwarded-For
	r.Use(gin.Recovery(), a.accessLog)
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", a.ready)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{})))
	msgAPI := messaging.NewAPI(a.db, a.engine, a.gateway)
	msgAPI.RegisterPublicRoutes(r)
	a.fhirAPI.RegisterRoutes(r) // /fhir: its own bearer + SMART-scope auth; /fhir/metadata public
	api := r.Group("/", auth.Middleware(a.db))
	msgAPI.RegisterRoutes(api)
	oncallAPI := oncall.NewAPIWithIndex(a.db, a.log, a.now, a.oncallIndex)
	oncallAPI.RegisterPublicRoutes(r) // /ical/:token: the secret URL token is the credential
	oncallAPI.RegisterRoutes(api)
	routing.NewAPI(a.db, a.log, a.now, routing.WithDryRun(a.rules, a.keys, newDryRunDecoder())).RegisterRoutes(api)
	a.hl7.api.RegisterRoutes(api)
	a.audit.routes(api)
	a.fhirAPI.RegisterAdminRoutes(api)
	return r
}

// accessLog logs each request by route pattern, never by raw path or query,
// so no identifier a caller put in a URL reaches the logs.
func (a *app) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "/healthz" || route == "/readyz" || route == "/metrics" {
		return
	}
	a.log.Info("http request", "method", c.Request.Method, "route", route, "status", c.Writer.Status(),
		"duration_ms", float64(time.Since(start).Microseconds())/1000, "principal", auth.From(c).Subject)
}

func (a *app) ready(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	checks := gin.H{"database": "ok", "nats": "ok"}
	status := http.StatusOK
	if err := a.db.PingContext(ctx); err != nil {
		checks["database"], status = "unreachable", http.StatusServiceUnavailable
	}
	if err := a.bus.Ready(); err != nil {
		checks["nats"], status = "unreachable", http.StatusServiceUnavailable
	}
	c.JSON(status, checks)
}

// serve runs HTTP, MLLP, the router and the escalation timers until ctx
// ends, then stops accepting, lets in-flight work finish, and returns.
func (a *app) serve(ctx context.Context, cfg serveConfig) error {
	httpLn, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	mllpLn, err := net.Listen("tcp", cfg.mllpAddr)
	if err != nil {
		httpLn.Close()
		return fmt.Errorf("mllp listen: %w", err)
	}
	mllpLn = withFaults(mllpLn)
	httpSrv := &http.Server{Handler: a.router(), ReadHeaderTimeout: 10 * time.Second}
	mllpSrv := &hl7.Server{Handler: a.intake, Logger: a.log, MaxFrame: cfg.mllpMaxSize, TLSConfig: a.hl7.tls}

	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() { a.worker.Run(work, 500*time.Millisecond) })
	wg.Go(func() { a.engine.RunTimers(work, 100*time.Millisecond) })
	wg.Go(func() { a.audit.run(work) })
	wg.Go(func() { a.engine.RunRetention(work, cfg.messaging.retentionEvery) })
	wg.Go(func() { a.hl7.run(work) })
	wg.Go(func() { a.oncallIndex.Run(work, 24*time.Hour) })
	wg.Go(func() { a.engine.RunHandoffs(work, 30*time.Second) })
	wg.Go(func() { a.notifier.Run(work, time.Minute) })
	go func() { errs <- httpSrv.Serve(httpLn) }()
	go func() { errs <- mllpSrv.Serve(mllpLn) }()
	a.log.Info("clarion serving", "http_addr", httpLn.Addr().String(), "mllp_addr", mllpLn.Addr().String(),
		"database", a.db.Dialect.String(), "nats", natsMode(cfg.natsURL))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errs:
	}
	a.log.Info("clarion shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := mllpSrv.Shutdown(shutdown); err != nil {
		a.log.Warn("mllp shutdown", "error", err)
	}
	if err := httpSrv.Shutdown(shutdown); err != nil {
		a.log.Warn("http shutdown", "error", err)
	}
	a.gateway.Shutdown()
	stopWork()
	wg.Wait()
	a.audit.finish(ctx)
	a.log.Info("clarion stopped")
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

func natsMode(url string) string {
	if url == "" {
		return "embedded"
	}
	return "external"
}
