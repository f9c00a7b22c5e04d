package graceful

import (
	"errors"
	"fmt"
	"os"
)

// hotRestart is a hot restart under way: the successor starting and the
// Restart calls waiting for the outcome. It belongs to the goroutine of a
// run's loop, single mode's or a master's, and is only touched there.
type hotRestart struct {
	r       *runner
	succ    *successor   // nil when no restart is under way
	waiters []chan error // Restart calls waiting on succ
}

// begin starts a successor unless one is already starting. done, if not
// nil, receives the outcome.
func (h *hotRestart) begin(by string, done chan error) {
	log := h.r.log
	if h.succ != nil {
		log.Warn("graceful: restart ignored: a restart is already in progress", "by", by, "successor", h.succ.pid())
		if done != nil {
			done <- ErrRestartInProgress
		}
		return
	}
	log.Info("graceful: restart requested", "by", by)
	h.r.began("hot")
	if os.Getpid() == 1 {
		// The successor would outlive us, but not for long: when PID 1
		// exits, the kernel kills every process of its PID namespace.
		err := errors.New("graceful: restart refused: this process is PID 1 (a container's init), and its exit after the hand-over would end the container; run with Workers and use a phased restart (SIGUSR1), which keeps the master")
		h.failed(err)
		if done != nil {
			done <- err
		}
		return
	}
	h.r.notify.reloading()
	succ, err := h.r.startSuccessor()
	if err != nil {
		h.failed(err)
		if done != nil {
			done <- err
		}
		return
	}
	log.Info("graceful: successor started", "successor", succ.pid(), "exe", succ.exe())
	h.succ = succ
	if done != nil {
		h.waiters = append(h.waiters, done)
	}
}

// result is the channel on which the starting successor's outcome
// arrives; nil, which blocks for ever in a select, when none is starting.
func (h *hotRestart) result() <-chan error {
	if h.succ == nil {
		return nil
	}
	return h.succ.result
}

// settle takes the outcome of the start: on success it hands over to the
// successor and returns it; otherwise it reports why and returns nil, and
// this process serves on.
func (h *hotRestart) settle(err error) *successor {
	succ := h.succ
	h.succ = nil
	if err == nil {
		err = h.r.handOver(succ)
	}
	if err != nil {
		h.failed(err)
		h.answer(err)
		return nil
	}
	h.r.ended(nil)
	h.r.successor.Store(int64(succ.pid()))
	h.answer(nil)
	return succ
}

// failed reports a restart that failed: this process serves on.
func (h *hotRestart) failed(err error) {
	h.r.log.Error("graceful: restart failed; still serving", "err", err)
	h.r.ended(err)
	h.r.notify.ready("restart failed: " + err.Error())
}

// state names the restart state for a Status.
func (h *hotRestart) state() string {
	if h.succ != nil {
		return "restarting"
	}
	return "serving"
}

// abort kills a successor that is starting, if any.
func (h *hotRestart) abort(why string) {
	if h.succ == nil {
		return
	}
	h.succ.abort()
	h.r.log.Warn("graceful: restart abandoned", "successor", h.succ.pid(), "reason", why)
	err := fmt.Errorf("graceful: restart abandoned: %s", why)
	h.r.ended(err)
	h.answer(err)
	h.succ = nil
}

func (h *hotRestart) answer(err error) {
	for _, w := range h.waiters {
		w <- err
	}
	h.waiters = nil
}
