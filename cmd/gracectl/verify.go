//go:build unix

package main

import (
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// module is the path of this library's module: the executable of a
// process gracectl signals must link it.
const module = "github.com/gograceful/graceful"

// startSlack is how much later than the pidfile's last write a process may
// seem to have started and still be the one it names. The two times come
// from different clocks with coarse steps (clock ticks of 10 ms, file
// systems that keep whole seconds, or two on FAT, ps's whole seconds), so
// an exact comparison would refuse the right process now and then. A PID is
// not reused that quickly.
const startSlack = 2 * time.Second

// procInfo is what the system tells about a process. A zero field is
// unknown.
type procInfo struct {
	// exe is a path from which the process's executable can be read, and
	// exeName how to call it in messages.
	exe, exeName string
	// exeErr says why exe is unknown, when it should have been known.
	exeErr error
	// started is when the process started.
	started time.Time
	// sigKnown says whether caught and ignored are known: the signals the
	// process catches and ignores, bit n-1 standing for signal n.
	sigKnown        bool
	caught, ignored uint64
}

func sigBit(sig syscall.Signal) uint64 { return 1 << (uint(sig) - 1) }

// verify checks, before anything is sent to it, that pid is a server built
// with graceful, the process the pidfile was written for: its executable
// links this module, it started before the pidfile was last written
// (written at mtime), and it catches SIGUSR2. What cannot be learnt on this
// system is not checked (see inspect).
func verify(pid int, pidfile string, mtime time.Time) (*procInfo, error) {
	info, err := inspect(pid)
	if err != nil {
		return nil, fmt.Errorf("refusing to signal pid %d, named by %s: cannot tell whether it is a graceful server: %w; use --control instead", pid, pidfile, err)
	}
	name := fmt.Sprintf("pid %d", pid)
	if info.exeName != "" {
		name += " (" + info.exeName + ")"
	}
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("refusing to signal %s, named by %s: "+format, append([]any{name, pidfile}, args...)...)
	}
	switch {
	case info.exeErr != nil && errors.Is(info.exeErr, os.ErrPermission):
		return nil, refuse("may not read its executable to check that it is a graceful server (%v): run gracectl as the user the server runs as, or use --control", info.exeErr)
	case info.exeErr != nil:
		return nil, refuse("cannot read its executable to check that it is a graceful server: %v", info.exeErr)
	case info.exe != "":
		bi, err := buildinfo.ReadFile(info.exe)
		if err != nil {
			return nil, refuse("not a graceful server: its executable is not a Go program with build information (%v): a stale pidfile whose PID was reused, or the pidfile of another program", err)
		}
		if !links(bi) {
			return nil, refuse("not a graceful server: its executable (main module %s) does not link %s: a stale pidfile whose PID was reused, or the pidfile of another program", bi.Main.Path, module)
		}
	}
	if !info.started.IsZero() && info.started.After(mtime.Add(startSlack)) {
		return nil, refuse("it started at %s, after the pidfile was last written at %s, so it is not the process the pidfile was written for: the pidfile is stale and the PID was reused",
			info.started.Format(time.RFC3339Nano), mtime.Format(time.RFC3339Nano))
	}
	if info.sigKnown && info.caught&sigBit(syscall.SIGUSR2) == 0 {
		return nil, refuse("not a graceful server: it does not catch SIGUSR2")
	}
	return info, nil
}

// links reports whether bi is that of a program that links this module, as
// its main module or as a dependency.
func links(bi *buildinfo.BuildInfo) bool {
	if bi.Main.Path == module {
		return true
	}
	for _, d := range bi.Deps {
		if d.Path == module {
			return true
		}
	}
	return false
}

// singleMode reports whether the verified process serves in single mode: a
// cluster's master catches SIGTTIN to add a worker, a single-mode server
// ignores it (or, built with an older version of graceful, leaves it to its
// default action). False when the signals cannot be learnt.
func (p *procInfo) singleMode() bool {
	return p.sigKnown && p.caught&sigBit(syscall.SIGTTIN) == 0
}
