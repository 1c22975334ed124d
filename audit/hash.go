package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// Hash versions. Version 1 is the layout of migration 00001; records written
// before migration 00004 keep it and still verify. Version 2 adds the source
// address and the device id. A record states its version, and the version's
// domain string is hashed first, so relabelling a record's version changes
// the hash it must match.
const (
	HashV1             = 1
	HashV2             = 2
	CurrentHashVersion = HashV2
)

// computeHash is SHA-256 over every field of the record's hash version,
// each length-prefixed so that no two different records encode alike. A
// version of 0 (a Record built without one) is version 1, the column's
// default.
func (r *Record) computeHash() string {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	v2 := r.HashVersion == HashV2
	if v2 {
		field("clarion-audit-v2")
	} else {
		field("clarion-audit-v1")
	}
	field(strconv.FormatInt(r.Seq, 10))
	field(strconv.FormatInt(r.At.UnixMicro(), 10))
	for _, s := range []string{r.ActorType, r.ActorID, r.ActorRole, r.Action, r.ObjectType, r.ObjectID,
		r.Outcome, r.CorrelationID} {
		field(s)
	}
	if v2 {
		field(r.SourceAddr)
		field(r.DeviceID)
	}
	field(string(r.Detail))
	field(r.PrevHash)
	return hex.EncodeToString(h.Sum(nil))
}
