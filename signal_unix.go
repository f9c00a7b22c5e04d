//go:build unix

package graceful

import (
	"os"
	"os/signal"
	"syscall"
)

// notifySignals routes the signals a Server answers to c: SIGUSR2 restarts,
// SIGTERM and SIGINT drain and stop. SIGTTIN and SIGTTOU, which ask a
// cluster's master for a worker more or fewer, are ignored: their default
// action would stop a single-mode server, which has no workers. That a
// server ignores SIGTTIN is also how gracectl tells single mode.
func notifySignals(c chan os.Signal) {
	signal.Ignore(syscall.SIGTTIN, syscall.SIGTTOU)
	signal.Notify(c, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
}

// notifyMasterSignals adds a master's: SIGUSR1 for a phased restart,
// SIGTTIN and SIGTTOU for one worker more or fewer. It must call Notify for
// these after notifySignals, which ignores them.
func notifyMasterSignals(c chan os.Signal) {
	notifySignals(c)
	signal.Notify(c, syscall.SIGUSR1, syscall.SIGTTIN, syscall.SIGTTOU)
}

// notifyWorkerSignals catches, to ignore them, the signals that are for the
// master: a worker is stopped by its master.
func notifyWorkerSignals(c chan os.Signal) {
	signal.Notify(c, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP)
}

// clusterSupported says whether Workers can be used here.
const clusterSupported = true

func stopSignals(c chan os.Signal) { signal.Stop(c) }

func isRestartSignal(s os.Signal) bool { return s == syscall.SIGUSR2 }

// The signals a master answers besides the stop signals.
var (
	sigRestart os.Signal = syscall.SIGUSR2 // the whole tree
	sigPhased  os.Signal = syscall.SIGUSR1 // the workers, one at a time
	sigMore    os.Signal = syscall.SIGTTIN // one worker more
	sigFewer   os.Signal = syscall.SIGTTOU // one worker fewer
)
