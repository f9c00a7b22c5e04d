//go:build !unix

package graceful

import (
	"net"
	"os"
	"time"
)

const restartSupported = false

func dupListener(net.Listener) (*os.File, error) { return nil, ErrNotSupported }
func socketpair() (*os.File, *os.File, error)    { return nil, nil, ErrNotSupported }
func dup2(int, int) error                        { return ErrNotSupported }
func dupFD(int) int                              { return -1 }
func closeFD(int)                                {}
func waitReadable(int, time.Duration) bool       { time.Sleep(100 * time.Millisecond); return false }
func peerClosed(int) bool                        { return false }
func guardStderr()                               {}
func unguardStderr()                             {}
