//go:build !unix

package graceful

import "net"

// loadInheritance finds nothing to inherit where restarts are not supported.
func loadInheritance() (*inheritance, error) { return nil, nil }

// workerDesc is nil: there are no workers where restarts are not supported.
func workerDesc() *inheritDesc { return nil }

func inheritedBase() string { return "" }

func (r *runner) stopGraceParent() {}

// listenControl: the control socket needs Unix.
func listenControl(*inheritance, string) (net.Listener, error) {
	return nil, ErrNotSupported
}
