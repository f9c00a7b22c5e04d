//go:build !unix

package graceful

import (
	"os"
	"os/signal"
	"syscall"
)

// notifySignals routes the signals a Server answers to c: an interrupt or
// SIGTERM drains and stops.
func notifySignals(c chan os.Signal) { signal.Notify(c, os.Interrupt, syscall.SIGTERM) }

func stopSignals(c chan os.Signal) { signal.Stop(c) }

func isRestartSignal(os.Signal) bool { return false }
