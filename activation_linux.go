package graceful

import (
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// graceModule is the module a facebookgo/grace program is built with.
const graceModule = "github.com/facebookgo/grace"

// isGraceProcess returns nil if the executable of process pid is a Go
// program built with the facebookgo/grace module, and why not otherwise.
// The executable is read through /proc, so a binary replaced on disk since
// the process started is still the one it runs.
func isGraceProcess(pid int) error {
	info, err := buildinfo.ReadFile("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return fmt.Errorf("graceful: process %d: %w", pid, err)
	}
	if info.Main.Path == graceModule {
		return nil
	}
	for _, m := range info.Deps {
		if m.Path == graceModule {
			return nil
		}
	}
	return fmt.Errorf("graceful: process %d (%s) is not built with %s", pid, info.Path, graceModule)
}

// signalParent sends sig to pid if it is still this process's parent. The
// process is held by a pidfd while that is checked, so that the signal
// cannot reach another process that took the PID of a parent that has
// exited in the meantime.
func signalParent(pid int, sig unix.Signal) error {
	pfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		// Before Linux 5.3: only the check.
		if ppid := os.Getppid(); ppid != pid {
			return fmt.Errorf("graceful: process %d is no longer the parent (now %d)", pid, ppid)
		}
		return unix.Kill(pid, sig)
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
