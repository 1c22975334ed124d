package hl7

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// MLLP block characters: a frame is 0x0B <payload> 0x1C 0x0D.
const (
	startBlock     = 0x0B
	endBlock       = 0x1C
	carriageReturn = 0x0D
)

// ReadFrame reads one MLLP frame and returns its payload (a fresh slice).
// Bytes before a start block are skipped. It returns io.EOF when the stream
// ends outside a frame and io.ErrUnexpectedEOF when it ends inside one. An
// end block not followed by CR is kept as payload.
//
// When a payload grows past maxSize (maxSize <= 0: no limit) ReadFrame
// returns ErrFrameTooLarge at once, without reading the rest of the frame:
// the stream is then mid-frame and the caller should close the connection
// (Server does). A further ReadFrame would skip the remainder as garbage
// up to the next start block.
func ReadFrame(r *bufio.Reader, maxSize int) ([]byte, error) {
	for {
		c, err := r.ReadByte()
		if err == io.EOF {
			return nil, io.EOF // clean end between frames
		}
		if err != nil {
			return nil, fmt.Errorf("mllp: read frame: %w", err)
		}
		if c == startBlock {
			break
		}
	}
	payload := []byte{}
	add := func(b []byte) error {
		if maxSize > 0 && len(payload)+len(b) > maxSize {
			return ErrFrameTooLarge
		}
		payload = append(payload, b...)
		return nil
	}
	for {
		chunk, err := r.ReadSlice(endBlock)
		switch {
		case err == nil:
			if err := add(chunk[:len(chunk)-1]); err != nil {
				return nil, err
			}
			next, err := r.ReadByte()
			if err != nil {
				return nil, eofInFrame(err)
			}
			if next == carriageReturn {
				return payload, nil
			}
			if err := r.UnreadByte(); err != nil {
				return nil, fmt.Errorf("mllp: %w", err)
			}
			if err := add([]byte{endBlock}); err != nil {
				return nil, err
			}
		case errors.Is(err, bufio.ErrBufferFull):
			if err := add(chunk); err != nil {
				return nil, err
			}
		default:
			return nil, eofInFrame(err)
		}
	}
}

func eofInFrame(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return fmt.Errorf("mllp: read frame: %w", err)
}

// WriteFrame writes payload as one MLLP frame in a single Write, so a frame
// is not split across TCP segments needlessly.
func WriteFrame(w io.Writer, payload []byte) error {
	buf := make([]byte, 0, len(payload)+3)
	buf = append(buf, startBlock)
	buf = append(buf, payload...)
	buf = append(buf, endBlock, carriageReturn)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("mllp: write frame: %w", err)
	}
	return nil
}
