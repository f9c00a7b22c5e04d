package graceful

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier tells a service manager such as systemd what the service is
// doing, through the sd_notify protocol, and pings its watchdog. Only the
// process that is the service's main process speaks: the single-mode
// server or the master, never a worker (workers are started without
// NOTIFY_SOCKET). It belongs to the loop goroutine of its run. A nil
// notifier, or one without NOTIFY_SOCKET, does nothing.
type notifier struct {
	log      *slog.Logger
	on       bool          // NOTIFY_SOCKET is set
	interval time.Duration // between watchdog pings; 0 without a watchdog
	ticker   *time.Ticker  // running while this process is the main one
	failing  bool          // the last message could not be sent
}

// minPing bounds how often the watchdog is pinged, whatever WATCHDOG_USEC
// says: a service manager that wants pings more often than this cannot be
// served, and pinging faster would only burn a core.
const minPing = 50 * time.Millisecond

// newNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. They
// stay in the environment: a successor needs them.
func newNotifier(log *slog.Logger) *notifier {
	n := &notifier{log: log, on: os.Getenv("NOTIFY_SOCKET") != ""}
	if !n.on {
		return n
	}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("graceful: watchdog settings ignored", "err", err)
	}
	if wd > 0 {
		// systemd's advice: ping at half the timeout.
		n.interval = wd / 2
		if n.interval < minPing {
			log.Warn("graceful: watchdog timeout too short to keep; pinging at the fastest sensible rate", "WATCHDOG_USEC", wd.Microseconds(), "every", minPing)
			n.interval = minPing
		}
	}
	return n
}

func (n *notifier) send(state string) {
	if n == nil || !n.on {
		return
	}
	_, err := daemon.SdNotify(false, state)
	switch {
	case err != nil && !n.failing:
		// Said once, not at every ping.
		n.log.Warn("graceful: sd_notify failed; further failures are not logged until it works again", "state", state, "err", err)
	case err == nil && n.failing:
		n.log.Info("graceful: sd_notify works again")
	}
	n.failing = err != nil
}

// ready says the process serves: at start-up, after taking over from a
// predecessor, and after a restart, failed or not. A new process pings the
// watchdog at once, so that a restart never leaves the service manager a
// whole period without a ping.
func (n *notifier) ready(status string) {
	msg := daemon.SdNotifyReady
	if status != "" {
		msg += "\nSTATUS=" + status
	}
	n.send(msg)
	if n != nil && n.interval > 0 && n.ticker == nil {
		n.ping()
		n.ticker = time.NewTicker(n.interval)
	}
}

// reloading says a restart has begun.
func (n *notifier) reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
}

// mainPID hands the service over to pid; this process stops pinging.
func (n *notifier) mainPID(pid int) {
	n.send("MAINPID=" + strconv.Itoa(pid))
	n.stopPings()
}

// stopping says the service is shutting down for good.
func (n *notifier) stopping() { n.send(daemon.SdNotifyStopping) }

// watchdog returns the channel on which pings fall due, nil without a
// watchdog.
func (n *notifier) watchdog() <-chan time.Time {
	if n == nil || n.ticker == nil {
		return nil
	}
	return n.ticker.C
}

func (n *notifier) ping() { n.send(daemon.SdNotifyWatchdog) }

func (n *notifier) stopPings() {
	if n != nil && n.ticker != nil {
		n.ticker.Stop()
		n.ticker = nil
	}
}
