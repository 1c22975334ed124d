package main

import (
	"bytes"
	"net"
	"os"
	"syscall"
)

// EnvFault switches on fault injection for the crash tests. With
// "kill-after-ack" the process SIGKILLs itself the moment it has written an
// MLLP frame holding MSA|AA: the sender has its acknowledgement and the
// event has not been routed yet. Never set it in production.
const EnvFault = "CLARION_FAULT"

func faultsOn() bool { return os.Getenv(EnvFault) == "kill-after-ack" }

func withFaults(ln net.Listener) net.Listener {
	if !faultsOn() {
		return ln
	}
	return killListener{ln}
}

type killListener struct{ net.Listener }

func (l killListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return killConn{c}, nil
}

type killConn struct{ net.Conn }

func (c killConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err == nil && bytes.Contains(b, []byte("MSA|AA")) {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never return: the process is gone
	}
	return n, err
}
