package graceful

import (
	"errors"
	"os"
)

// Connection hand-off: instead of closing an idle cleartext HTTP/1.1
// keep-alive connection at a restart, this process takes it from net/http
// at a point where net/http is between requests and passes its descriptor,
// with the bytes of the next request already read from it, to the process
// that takes over. See handoff-facts in the design notes.

// handedConn is one connection on its way to another process. (The seam
// named it "handed", a name activation_unix.go already uses for what a
// service manager passes at start-up.)
type handedConn struct {
	file *os.File // a duplicate of the connection's socket (this process's copy; close it once sent & acked)
	key  lnKey    // the address of the listener it was accepted on (runner.served[i].key)
	pre  []byte   // bytes already read from the socket that net/http had not consumed: read them first
}

// handOff makes the tracker hand connections off instead of leaving them
// to the drain: from now on, each cleartext HTTP/1.1 connection, as soon as
// net/http is between requests on it (idle now, or when its current
// response is complete), is taken from net/http and sent on out.
// Connections that cannot be handed (TLS, HTTP/2, hijacked, exact unread
// bytes unknown) stay with the drain as today. Called by the drain when a
// successor can adopt. out is never closed by the tracker.
func (t *tracker) handOff(out chan<- handedConn) {
	// TODO(h-hconn): seam only; implemented in the next commits.
}

// stopHandOff ends handOff: connections not yet taken stay with the drain
// (their next response gets "Connection: close" as today). Called when the
// receiver is gone or refuses.
func (t *tracker) stopHandOff() {}

// adopt serves h in this process: on the http.Server that serves h.key,
// as a new connection whose first reads return h.pre. It takes ownership
// of h.file. Used by the receiving process, and by the sending one to take
// back a connection whose hand-off failed (it is then drained as today).
// It fails if no server serves h.key (the caller closes h.file then).
func (r *runner) adopt(h handedConn) error {
	return errors.New("graceful: adopting a connection: not implemented yet")
}
