//go:build unix

package graceful

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

const handoffOS = true

// dupConn duplicates c's socket (dupSocket), leaving it non-blocking.
func dupConn(c net.Conn) (*os.File, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("graceful: duplicating a connection: not a socket")
	}
	f, err := dupSocket(sc, "handed "+c.RemoteAddr().String())
	if err != nil {
		return nil, fmt.Errorf("graceful: duplicating a connection: %w", err)
	}
	return f, nil
}
