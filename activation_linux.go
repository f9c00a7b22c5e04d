package graceful

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// signalParent sends sig to pid if it is still this process's parent. The
// process is held by a pidfd while that is checked, so that the signal
// cannot reach another process that took the PID of a parent that has
// exited in the meantime.
func signalParent(pid int, sig unix.Signal) error {
	pfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		return killParent(pid, sig) // before Linux 5.3
	}
	if err != nil {
		return fmt.Errorf("graceful: pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pfd)
	if ppid := os.Getppid(); ppid != pid {
		return fmt.Errorf("graceful: process %d is no longer the parent (now %d)", pid, ppid)
	}
	if err := unix.PidfdSendSignal(pfd, sig, nil, 0); err != nil {
		return fmt.Errorf("graceful: signalling process %d: %w", pid, err)
	}
	return nil
}
