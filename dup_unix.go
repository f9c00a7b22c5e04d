//go:build unix && !linux

package graceful

import "golang.org/x/sys/unix"

// dup2 makes descriptor to a copy of from.
func dup2(from, to int) error {
	for {
		if err := unix.Dup2(from, to); err != unix.EINTR {
			return err
		}
	}
}
