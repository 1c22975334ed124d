package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/messaging/deviceclient"
)

func runDeviceRegister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("device register", stderr)
	server := fs.String("server", envOr("CLARION_SERVER", "http://127.0.0.1:8080"), "Clarion's HTTP address")
	token := fs.String("token", os.Getenv("CLARION_TOKEN"), "the user's (or an admin's) API token (env CLARION_TOKEN)")
	code := fs.String("code", "", "a one-time enrolment code, instead of --token")
	user := fs.String("user", "", "user id to enrol for (admins only; clinicians enrol for themselves)")
	name := fs.String("name", "cli", "a name for this device")
	suite := fs.String("suite", messaging.SuiteX25519, "HPKE suite: "+messaging.SuiteX25519+" or "+messaging.SuiteXWing)
	keyFile := fs.String("key-file", "clarion-device.json", "where to keep the device identity and private key (mode 0600)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*token == "") == (*code == "") {
		return errors.New("device register: give either --token or --code")
	}
	if _, err := os.Stat(*keyFile); err == nil {
		return fmt.Errorf("device register: %s exists; refusing to overwrite a device identity", *keyFile)
	}
	var id *deviceclient.Identity
	var err error
	if *code != "" {
		id, err = deviceclient.RegisterWithCode(ctx, *server, *code, *name, *suite)
	} else {
		id, err = deviceclient.Register(ctx, *server, *token, *user, *name, *suite)
	}
	if err != nil {
		return err
	}
	if err := id.Save(*keyFile); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled device %s for user %s; identity in %s\n", id.DeviceID, id.UserID, *keyFile)
	return nil
}

func runDeviceListen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("device listen", stderr)
	keyFile := fs.String("key-file", "clarion-device.json", "device identity file")
	autoAccept := fs.Bool("auto-accept", false, "accept every message on arrival")
	autoDecline := fs.Bool("auto-decline", false, "decline every message on arrival")
	asJSON := fs.Bool("json", false, "print one JSON object per message")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	id, err := deviceclient.Load(*keyFile)
	if err != nil {
		return err
	}
	seen := 0
	for ctx.Err() == nil {
		conn, err := deviceclient.Dial(ctx, id)
		if err != nil {
			fmt.Fprintf(stderr, "device: %v; retrying in 2s\n", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
			continue
		}
		fmt.Fprintf(stderr, "device %s connected, resuming after message %d\n", id.DeviceID, id.LastSeq)
		conn.OnExpire(func(ids []string) {
			for _, m := range ids {
				fmt.Fprintf(stdout, "message %s expired: deleted from this device\n", m)
			}
			if err := id.Save(*keyFile); err != nil {
				fmt.Fprintf(stderr, "device: %v\n", err)
			}
		})
		for {
			rec, err := conn.Next(ctx)
			if errors.Is(err, deviceclient.ErrWiped) {
				return wipeIdentity(ctx, conn, *keyFile, stdout)
			}
			if err != nil {
				if errors.Is(err, deviceclient.ErrReplay) || errors.Is(err, deviceclient.ErrMismatch) {
					fmt.Fprintf(stderr, "device: rejected a message: %v\n", err)
					continue
				}
				conn.Close()
				break
			}
			if err := id.Save(*keyFile); err != nil {
				return err
			}
			printMessage(stdout, rec, *asJSON)
			_ = conn.MarkRead(ctx, rec.Envelope.MessageID)
			switch {
			case *autoAccept:
				_ = conn.Respond(ctx, rec.Envelope.MessageID, messaging.ResponseAccept)
			case *autoDecline:
				_ = conn.Respond(ctx, rec.Envelope.MessageID, messaging.ResponseDecline)
			}
			if seen++; *count > 0 && seen >= *count {
				time.Sleep(200 * time.Millisecond) // let the last receipts leave
				conn.Close()
				return nil
			}
		}
	}
	return nil
}

func printMessage(w io.Writer, rec deviceclient.Received, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(map[string]any{"seq": rec.Envelope.Seq, "message_id": rec.Envelope.MessageID,
			"alert_id": rec.Envelope.AlertID, "priority": rec.Envelope.Priority, "lock_text": rec.Envelope.LockText,
			"title": rec.Plain.Title, "body": rec.Plain.Body, "step": rec.Plain.Step, "sent_at": rec.Plain.SentAt})
		fmt.Fprintln(w, string(b))
		return
	}
	fmt.Fprintf(w, "[%s] %s\n    %s\n    message %s (alert %s, step %d)\n", rec.Envelope.Priority, rec.Envelope.LockText,
		rec.Plain.Body, rec.Envelope.MessageID, rec.Envelope.AlertID, rec.Plain.Step)
}

func runDeviceRespond(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("device respond", stderr)
	keyFile := fs.String("key-file", "clarion-device.json", "device identity file")
	message := fs.String("message", "", "message id to answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *message == "" || fs.NArg() != 1 || (fs.Arg(0) != messaging.ResponseAccept && fs.Arg(0) != messaging.ResponseDecline) {
		return errors.New("usage: clarion device respond --message ID accept|decline")
	}
	id, err := deviceclient.Load(*keyFile)
	if err != nil {
		return err
	}
	state, err := deviceclient.RespondHTTP(ctx, id, *message, fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s recorded; alert is %s\n", fs.Arg(0), state)
	return nil
}

// wipeIdentity obeys a wipe order: delete the identity file (the private
// keys and the credential), then confirm.
func wipeIdentity(ctx context.Context, conn *deviceclient.Conn, keyFile string, stdout io.Writer) error {
	if err := os.Remove(keyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("wipe: %w", err)
	}
	if err := conn.ConfirmWipe(ctx); err != nil {
		return fmt.Errorf("wipe: deleted %s but could not confirm: %w", keyFile, err)
	}
	time.Sleep(200 * time.Millisecond) // let the confirmation leave before closing
	conn.Close()
	fmt.Fprintf(stdout, "this device was wiped by the server: %s deleted\n", keyFile)
	return nil
}

func runDeviceRotateKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("device rotate-key", stderr)
	keyFile := fs.String("key-file", "clarion-device.json", "device identity file")
	suite := fs.String("suite", "", "new HPKE suite (default: keep the current one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	id, err := deviceclient.Load(*keyFile)
	if err != nil {
		return err
	}
	if err := deviceclient.RotateKey(ctx, id, *suite); err != nil {
		return err
	}
	if err := id.Save(*keyFile); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "device %s now uses a new %s key\n", id.DeviceID, id.Suite)
	return nil
}
