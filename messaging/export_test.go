package messaging

import "context"

// TimerWait exposes timerWait to the external tests.
var TimerWait = timerWait

// TestReceipt is a delivered (Seq) or read (MessageID) receipt.
type TestReceipt struct {
	DeviceID  string
	Seq       int64
	MessageID string
}

// CommitReceipts group commits rs as the gateway does and returns each
// one's answer.
func (g *Gateway) CommitReceipts(ctx context.Context, rs []TestReceipt) []error {
	batch := make([]*receipt, len(rs))
	for i, r := range rs {
		batch[i] = &receipt{deviceID: r.DeviceID, seq: r.Seq, messageID: r.MessageID}
	}
	out := g.receipts.Submit(ctx, batch...)
	for i, r := range batch {
		if out[i] == nil {
			out[i] = r.refused
		}
	}
	return out
}

// KnownDevices returns the active devices h read for user, if it did.
func (h *HeldPages) KnownDevices(user string) ([]Device, bool) {
	devs, ok := h.devices[user]
	return devs, ok
}
