// Command clarion is the whole of Clarion in one binary: the server, its
// demo, migrations, the reference device and the operator tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	_ "time/tzdata" // units name IANA zones; do not depend on the host's tz database
)

const usage = `clarion: clinical alert routing

usage:
  clarion serve            run the server (embedded SQLite + NATS by default)
  clarion demo             run the server with a seeded sample hospital
  clarion migrate          apply database migrations and exit
  clarion token create     issue an API token (--role, --subject)
  clarion device register  enrol this machine as a user's device
  clarion device listen    receive, decrypt and answer messages
  clarion device respond   accept or decline one message
  clarion device rotate-key  replace this device's key pair
  clarion audit verify     verify the audit hash chain and its signed checkpoints
  clarion audit export|tail|checkpoint|purge|public-key
  clarion rules load|export|validate|test  YAML rules and the dry run
  clarion report           response times, escalations, open alerts
  clarion escrow keygen    make the offline escrow key pair (--out FILE [--public-out FILE])
  clarion escrow open      decrypt one message's escrow copy for an audit (audited)
  clarion loadtest         delivery latency and timer lateness benchmark (loopback, bounded)
  clarion hl7 send FILE    send an HL7 v2 file over MLLP and print the ACK
  clarion hl7 inspect FILE print an HL7 v2 file as JSON with the event each message maps to

Run "clarion COMMAND -h" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintln(os.Stderr, "clarion:", err)
		os.Exit(1)
	}
}

// exitCode ends the process with a code and no further message.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitCode(2)
	}
	sub := func(name string) (string, []string) {
		if len(args) < 2 {
			return "", nil
		}
		return args[1], args[2:]
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr, false)
	case "demo":
		return runServe(ctx, args[1:], stdout, stderr, true)
	case "migrate":
		return runMigrate(ctx, args[1:], stdout, stderr)
	case "token":
		if s, rest := sub("token"); s == "create" {
			return runTokenCreate(ctx, rest, stdout, stderr)
		}
	case "device":
		switch s, rest := sub("device"); s {
		case "register":
			return runDeviceRegister(ctx, rest, stdout, stderr)
		case "listen":
			return runDeviceListen(ctx, rest, stdout, stderr)
		case "respond":
			return runDeviceRespond(ctx, rest, stdout, stderr)
		case "rotate-key":
			return runDeviceRotateKey(ctx, rest, stdout, stderr)
		}
	case "audit":
		return runAudit(ctx, args[1:], stdout, stderr)
	case "report":
		return runReport(ctx, args[1:], stdout, stderr)
	case "rules":
		return runRules(ctx, args[1:], stdout, stderr)
	case "escrow":
		return runEscrow(ctx, args[1:], stdout, stderr)
	case "loadtest":
		return runLoadtest(ctx, args[1:], stdout, stderr)
	case "hl7":
		switch s, rest := sub("hl7"); s {
		case "send":
			return runHL7Send(ctx, rest, stdout, stderr)
		case "inspect":
			return runHL7Inspect(ctx, rest, stdout, stderr)
		}
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return exitCode(2)
}
