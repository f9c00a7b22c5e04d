//go:build !unix

package graceful

import "net"

// listenControl: the control socket needs Unix.
func listenControl(*inheritance, string) (net.Listener, error) {
	return nil, ErrNotSupported
}
