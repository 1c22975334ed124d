package audit_test

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// BenchmarkAppend commits one transaction per iteration, each appending one
// audited record, with a Chainer linking the pending records into the hash
// chain beside it as a serving node runs one, and checks the chain
// afterwards. "parallel" runs GOMAXPROCS×4 appenders at once (they share
// no lock: records are chained after their commit); "checkpointed" also
// signs a checkpoint every 100 records (ten times the server's default
// rate) in a transaction of its own, so ns/op is the amortised cost of an
// audited, checkpointed state change. The postgres variants skip unless
// CLARION_TEST_DATABASE_URL is set.
func BenchmarkAppend(b *testing.B) {
	for _, store := range []struct {
		name string
		open func(testing.TB) *db.DB
	}{{"sqlite", dbtest.SQLite}, {"postgres", dbtest.Postgres}} {
		b.Run(store.name, func(b *testing.B) { benchAppend(b, store.open(b), nil) })
		b.Run(store.name+"/parallel", func(b *testing.B) { benchAppendParallel(b, store.open(b)) })
		b.Run(store.name+"/checkpointed", func(b *testing.B) {
			benchAppend(b, store.open(b), audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32))))
		})
	}
}

var benchEntry = audit.Entry{ActorType: audit.ActorSystem, ActorID: "routing", Action: "alert.opened",
	ObjectType: "alert", ObjectID: "alr_0123456789", CorrelationID: "evt_0123456789",
	Detail: map[string]any{"rule_id": "k-crit", "priority": "PH", "unit": "4W", "code": "2823-3"}}

func appendOne(ctx context.Context, d *db.DB) error {
	return d.InTx(ctx, func(tx *sql.Tx) error {
		err := audit.Append(ctx, tx, benchEntry)
		return err
	})
}

func benchAppend(b *testing.B, d *db.DB, signer *audit.Signer) {
	ctx := context.Background()
	before, err := audit.Head(ctx, d)
	if err != nil {
		b.Fatal(err)
	}
	stop := chainBeside(b, d)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := appendOne(ctx, d); err != nil {
			b.Fatal(err)
		}
		if n++; signer != nil && n%100 == 0 {
			err := d.InTx(ctx, func(tx *sql.Tx) error {
				_, _, err := audit.WriteCheckpoint(ctx, tx, signer, time.Now())
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	stop()
	checkChain(b, d, signer, before)
}

func benchAppendParallel(b *testing.B, d *db.DB) {
	ctx := context.Background()
	before, err := audit.Head(ctx, d)
	if err != nil {
		b.Fatal(err)
	}
	stop := chainBeside(b, d)
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer() // opening and migrating the database is not the benchmark
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := appendOne(ctx, d); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	stop()
	checkChain(b, d, nil, before)
}

// chainBeside runs a Chainer until the returned stop is called; stop then
// chains whatever is still pending.
func chainBeside(b *testing.B, d *db.DB) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&audit.Chainer{DB: d}).Run(ctx, 20*time.Millisecond)
	}()
	return func() {
		cancel()
		<-done
		if err := audit.ChainAll(context.Background(), d); err != nil {
			b.Fatal(err)
		}
	}
}

func checkChain(b *testing.B, d *db.DB, signer *audit.Signer, before int64) {
	var opts audit.VerifyOptions
	if signer != nil {
		opts.Keys = []ed25519.PublicKey{signer.Public()}
	}
	res, err := audit.VerifyAll(context.Background(), d, opts)
	if err != nil || res.Records < before+int64(b.N) {
		b.Fatalf("audit.VerifyAll: %+v err=%v, want at least %d records", res, err, before+int64(b.N))
	}
}

// BenchmarkCheckpointSign is the signing alone: Ed25519 over seq, hash and time.
func BenchmarkCheckpointSign(b *testing.B) {
	s := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	at := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		s.Sign(123456, "0a194d1ab3100bf37e044d7523df951a0748a9ee33067f5874b309e0ffbdcfd9", at)
	}
}

// BenchmarkCheckpointWrite is one checkpoint transaction: lock the head,
// sign, store the checkpoint and append its record.
func BenchmarkCheckpointWrite(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchCheckpointWrite(b, dbtest.SQLite(b)) })
	b.Run("postgres", func(b *testing.B) { benchCheckpointWrite(b, dbtest.Postgres(b)) })
}

func benchCheckpointWrite(b *testing.B, d *db.DB) {
	ctx := context.Background()
	s := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		if err := appendOne(ctx, d); err != nil { // something new to sign
			b.Fatal(err)
		}
		b.StartTimer()
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			_, _, err := audit.WriteCheckpoint(ctx, tx, s, time.Now())
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
