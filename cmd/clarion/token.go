package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/auth"
)

// runTokenCreate is `clarion token create`: a token for a role, and for the
// FHIR interface its SMART-style scopes
// (e.g. --scopes "system/Observation.write system/Encounter.write").
func runTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token create", stderr)
	var s storeFlags
	s.register(fs)
	role := fs.String("role", "", "one of: "+strings.Join(auth.Roles, ", "))
	subject := fs.String("subject", "", "who the token is for: a user id, or an integration's name")
	kind := fs.String("kind", auth.KindUser, "user or integration")
	scopeList := fs.String("scopes", "", `FHIR scopes, space- or comma-separated: system/<Type|*>.<read|write|*|cruds>`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *role == "" || *subject == "" {
		return errors.New("token create: --role and --subject are required")
	}
	scopes, err := auth.ParseScopes(*scopeList)
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	d, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	var token string
	err = d.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if token, err = auth.IssueWithScopes(ctx, tx, *kind, *subject, *role, scopes, time.Now()); err != nil {
			return err
		}
		err = audit.Append(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "cli", Action: "token.issued",
			ObjectType: "token", ObjectID: *subject, CorrelationID: *subject,
			Detail: map[string]any{"role": *role, "kind": *kind, "scopes": scopes.String()}})
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}
