package hl7

import "bytes"

// SplitBatch returns the messages of an HL7 batch or file (FHS/BHS ...
// BTS/FTS envelopes), each starting at its MSH segment; envelope segments
// are dropped. Input without envelopes comes back as its messages too, so
// SplitBatch is safe to call on anything. The slices alias raw.
func SplitBatch(raw []byte) [][]byte {
	raw = bytes.TrimPrefix(raw, bom)
	var (
		msgs       [][]byte
		start, end = -1, -1 // current message: raw[start:end]
	)
	flush := func() {
		if start >= 0 {
			msgs = append(msgs, raw[start:end])
		}
		start = -1
	}
	for pos := 0; pos < len(raw); {
		next := len(raw)
		if i := bytes.IndexAny(raw[pos:], "\r\n"); i >= 0 {
			next = pos + i
		}
		line := raw[pos:next]
		switch {
		case bytes.HasPrefix(line, []byte("MSH")):
			flush()
			start, end = pos, next
		case isEnvelope(line):
			flush()
		case start >= 0 && len(bytes.TrimSpace(line)) > 0:
			end = next
		}
		pos = next + 1
	}
	flush()
	return msgs
}

// IsBatch reports whether raw starts with a file or batch header.
func IsBatch(raw []byte) bool {
	raw = bytes.TrimLeft(bytes.TrimPrefix(raw, bom), "\r\n")
	return bytes.HasPrefix(raw, []byte("FHS")) || bytes.HasPrefix(raw, []byte("BHS"))
}

func isEnvelope(line []byte) bool {
	for _, id := range []string{"FHS", "BHS", "BTS", "FTS"} {
		if bytes.HasPrefix(line, []byte(id)) {
			return true
		}
	}
	return false
}
