//go:build unix

package graceful

import (
	"os"
	"os/signal"
	"syscall"
)

// notifySignals routes the signals a Server answers to c: SIGUSR2 restarts,
// SIGTERM and SIGINT drain and stop.
func notifySignals(c chan os.Signal) {
	signal.Notify(c, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
}

func stopSignals(c chan os.Signal) { signal.Stop(c) }

func isRestartSignal(s os.Signal) bool { return s == syscall.SIGUSR2 }
