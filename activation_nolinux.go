//go:build unix && !linux

package graceful

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// signalParent sends sig to pid if it is still this process's parent.
func signalParent(pid int, sig unix.Signal) error {
	if ppid := os.Getppid(); ppid != pid {
		return fmt.Errorf("graceful: process %d is no longer the parent (now %d)", pid, ppid)
	}
	return unix.Kill(pid, sig)
}
