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

func notifyMasterSignals(c chan os.Signal) { notifySignals(c) }
func notifyWorkerSignals(c chan os.Signal) { notifySignals(c) }

// clusterSupported says whether Workers can be used here.
const clusterSupported = false

func stopSignals(c chan os.Signal) { signal.Stop(c) }

func isRestartSignal(os.Signal) bool { return false }

// A master's other signals do not exist here.
var sigRestart, sigPhased, sigMore, sigFewer os.Signal
