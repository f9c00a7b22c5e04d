//go:build unix && !linux

package graceful

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// isGraceProcess cannot tell here whether process pid is a facebookgo/grace
// program: another process's executable is read through Linux's /proc. Not
// proven, the parent is left running.
func isGraceProcess(pid int) error {
	return errors.New("graceful: the executable of another process can only be read on Linux")
}

// signalParent sends sig to pid if it is still this process's parent.
func signalParent(pid int, sig unix.Signal) error {
	if ppid := os.Getppid(); ppid != pid {
		return fmt.Errorf("graceful: process %d is no longer the parent (now %d)", pid, ppid)
	}
	return unix.Kill(pid, sig)
}
