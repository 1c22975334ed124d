package hl7

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Handler processes one MLLP payload and returns the reply payloads (an
// ACK, or an accept ACK followed by an application ACK), in the order they
// are to be written; none to send nothing. It is called for one message at
// a time per connection, and must commit the message before returning an
// accepting ACK.
type Handler interface {
	HandleMLLP(ctx context.Context, payload []byte, peer Peer) (replies [][]byte)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, payload []byte, peer Peer) [][]byte

// HandleMLLP calls f.
func (f HandlerFunc) HandleMLLP(ctx context.Context, payload []byte, peer Peer) [][]byte {
	return f(ctx, payload, peer)
}

// Peer is what the server knows of the other end of a connection: its
// address and, under mutual TLS, the names of its verified certificate.
type Peer struct {
	Addr      net.Addr
	TLS       bool
	CertNames []string // subject CN, then SANs; nil without a verified client certificate
}

// Server accepts MLLP connections. Each connection is served by one
// goroutine: a frame is read, handled, and its reply written before the
// next frame is read. The zero values of the limits select the defaults.
type Server struct {
	Handler     Handler
	Logger      *slog.Logger  // default slog.Default()
	MaxFrame    int           // largest payload accepted; default 1 MiB
	IdleTimeout time.Duration // max wait for a frame or a write; default 5m
	MaxConns    int           // concurrent connections; default 256
	// TLSConfig, when set, serves MLLP over TLS (mutual TLS when it
	// requires client certificates; see LoadTLSConfig).
	TLSConfig *tls.Config
	// HandshakeTimeout bounds the TLS handshake; default 10s.
	HandshakeTimeout time.Duration

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]bool // value: handling a message now
	wg        sync.WaitGroup
	ctx       context.Context // handlers' context; cancelled when Shutdown gives up
	cancel    context.CancelFunc
}

type serverConn struct {
	nc net.Conn
}

const (
	defaultMaxFrame    = 1 << 20
	defaultIdleTimeout = 5 * time.Minute
	defaultMaxConns    = 256
	defaultHandshake   = 10 * time.Second
)

func (s *Server) init() {
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*serverConn]bool{}
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) maxFrame() int       { return orDefault(s.MaxFrame, defaultMaxFrame) }
func (s *Server) maxConns() int       { return orDefault(s.MaxConns, defaultMaxConns) }
func (s *Server) idle() time.Duration { return orDefault(s.IdleTimeout, defaultIdleTimeout) }

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Serve accepts connections on ln until Shutdown (then it returns nil) or
// an accept error that is not temporary.
func (s *Server) Serve(ln net.Listener) error {
	if s.Handler == nil {
		return errors.New("hl7: Server.Handler is nil")
	}
	s.mu.Lock()
	s.init()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	log := s.logger()
	backoff := time.Duration(0)
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("hl7: accept: %w", err)
			}
			// Out of file descriptors and the like: back off, keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Warn("mllp accept failed; retrying", "err", err, "backoff_ms", backoff.Milliseconds())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.track(nc)
	}
}

// track starts serving nc, or closes it at once when the server is full or
// shutting down.
func (s *Server) track(nc net.Conn) {
	log := s.logger()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if n := len(s.conns); n >= s.maxConns() {
		s.mu.Unlock()
		log.Warn("mllp connection refused: too many connections", "peer", nc.RemoteAddr().String(), "max_conns", s.maxConns())
		nc.Close()
		return
	}
	c := &serverConn{nc: nc}
	s.conns[c] = false
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveConn(c)
}

func (s *Server) serveConn(c *serverConn) {
	log := s.logger().With("peer", c.nc.RemoteAddr().String())
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.nc.Close()
		s.wg.Done()
	}()
	peer, ok := s.open(log, c)
	if !ok {
		return
	}
	log.Debug("mllp connection opened", "tls", peer.TLS)
	br := bufio.NewReader(c.nc)
	for {
		// Arm the read deadline under the lock, so a concurrent Shutdown
		// either sees this connection idle (and expires the deadline) or
		// has already set closing.
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return
		}
		s.conns[c] = false
		err := c.nc.SetReadDeadline(time.Now().Add(s.idle()))
		s.mu.Unlock()
		if err != nil {
			return
		}

		payload, err := ReadFrame(br, s.maxFrame())
		if err != nil {
			s.logReadError(log, err)
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()

		start := time.Now()
		replies, ok := s.handle(log, payload, peer)
		if !ok {
			return
		}
		for _, reply := range replies {
			if err := c.nc.SetWriteDeadline(time.Now().Add(s.idle())); err != nil {
				return
			}
			if err := WriteFrame(c.nc, reply); err != nil {
				log.Warn("mllp reply not sent", "err", err, "bytes", len(payload))
				return
			}
		}
		log.Debug("mllp message handled", "bytes", len(payload), "replies", len(replies),
			"duration_ms", time.Since(start).Milliseconds())
	}
}

// open completes the TLS handshake, if any, within HandshakeTimeout and
// says who the peer is. A failed handshake (no or an untrusted client
// certificate under mutual TLS, say) closes the connection.
func (s *Server) open(log *slog.Logger, c *serverConn) (Peer, bool) {
	peer := Peer{Addr: c.nc.RemoteAddr()}
	if s.TLSConfig == nil {
		return peer, true
	}
	tc := tls.Server(c.nc, s.TLSConfig)
	s.mu.Lock()
	c.nc = tc
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, orDefault(s.HandshakeTimeout, defaultHandshake))
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		log.Warn("mllp tls handshake failed; closing connection", "err", err)
		return peer, false
	}
	peer.TLS, peer.CertNames = true, certNames(tc.ConnectionState())
	return peer, true
}

// handle calls the Handler, turning a panic into a closed connection: the
// sender gets no ACK and will resend, so nothing is lost.
func (s *Server) handle(log *slog.Logger, payload []byte, peer Peer) (replies [][]byte, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("mllp handler panicked; closing connection", "bytes", len(payload))
			ok = false
		}
	}()
	return s.Handler.HandleMLLP(s.ctx, payload, peer), true
}

func (s *Server) logReadError(log *slog.Logger, err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		log.Debug("mllp connection closed by peer")
	case errors.Is(err, ErrFrameTooLarge):
		log.Warn("mllp frame too large; closing connection", "max_frame", s.maxFrame())
	case errors.Is(err, io.ErrUnexpectedEOF):
		log.Warn("mllp connection closed inside a frame")
	case errors.As(err, &ne) && ne.Timeout():
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		if !closing {
			log.Info("mllp connection idle; closing", "idle_timeout_s", s.idle().Seconds())
		}
	default:
		log.Warn("mllp read failed", "err", err)
	}
}

// Shutdown stops accepting, closes idle connections, lets each busy
// connection finish its message and write the reply, and waits for all
// connections to close. If ctx ends first, it cancels handlers' context,
// closes every connection and returns ctx.Err(). A frame still being
// received is dropped unacknowledged; the sender will resend it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.init()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	past := time.Now().Add(-time.Second)
	for c, busy := range s.conns {
		if !busy {
			c.nc.SetReadDeadline(past) // wakes the blocked ReadFrame
		}
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// Send dials addr, writes payload as one frame and returns the reply
// frame's payload. timeout bounds the whole exchange, as does ctx. It is
// meant for tests and command-line tools: one connection per message.
func Send(ctx context.Context, addr string, payload []byte, timeout time.Duration) ([]byte, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("hl7: send: %w", err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	if err := WriteFrame(nc, payload); err != nil {
		return nil, fmt.Errorf("hl7: send: %w", err)
	}
	reply, err := ReadFrame(bufio.NewReader(nc), 0)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("hl7: send: %w", ctx.Err())
		}
		return nil, fmt.Errorf("hl7: send: read reply: %w", err)
	}
	return reply, nil
}
