//go:build unix

package graceful

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// runWorker serves as a worker of the master that started this process:
// it runs the boot hooks, reports ready, serves once told to go, sends
// heartbeats, and drains when the master says so or goes away.
func (r *runner) runWorker() error {
	d := r.inh.desc
	r.log = r.log.With("worker", d.WorkerID, "gen", d.Gen)
	r.s.mu.Lock()
	boot := append([]func(){}, r.s.bootHooks...)
	r.s.mu.Unlock()
	for i, f := range boot {
		if err := callHook(f); err != nil {
			return fmt.Errorf("graceful: OnWorkerBoot hook %d: %w", i, err)
		}
	}
	ctrl, br, err := r.handshake()
	if err != nil {
		return err
	}
	defer func() {
		// A last heartbeat, so that the master counts every request.
		fmt.Fprintf(ctrl, "beat %d %d\n", r.inflight.Load(), r.total.Load())
		ctrl.Close()
	}()
	r.serve()

	msgs := make(chan string)
	go func() {
		defer close(msgs)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			msgs <- strings.TrimSpace(line)
		}
	}()
	beat := time.NewTicker(time.Duration(d.Heartbeat) * time.Millisecond)
	defer beat.Stop()
	for {
		select {
		case <-beat.C:
			fmt.Fprintf(ctrl, "beat %d %d\n", r.inflight.Load(), r.total.Load())
		case m, ok := <-msgs:
			switch {
			case !ok:
				r.log.Warn("graceful: master gone; draining", "master", d.PPID)
				return r.workerStop(false, nil)
			case m == msgReplace:
				return r.workerStop(true, nil)
			case m == msgDrain:
				return r.workerStop(false, nil)
			case m == msgStop:
				// The master stops for good: this worker is not ready
				// from now, and serves on for ShutdownDelay.
				return r.workerStop(false, r.delayStop())
			}
		case sig := <-r.sigs:
			r.log.Info("graceful: signal ignored by a worker; signal the master", "signal", sig.String(), "master", d.PPID)
		case req := <-r.reqs:
			switch req.kind {
			case reqShutdown:
				return r.workerStop(false, []chan error{req.done})
			case reqStatus:
				req.status <- r.snapshot("serving")
			default:
				req.done <- ErrNotMaster
			}
		case err := <-r.serveErr:
			r.serving--
			r.log.Error("graceful: serving failed", "err", err)
			r.workerStop(false, nil)
			return err
		}
	}
}

// workerStop drains the worker and runs its hooks: OnRestart when it is
// being replaced, OnWorkerShutdown always.
func (r *runner) workerStop(replaced bool, waiters []chan error) error {
	r.log.Info("graceful: worker draining", "pid", os.Getpid(), "replaced", replaced)
	waiters = append(waiters, r.drain(false)...)
	if replaced {
		r.runServerHooks(&r.s.hooks, &r.s.workerHooks)
	} else {
		r.runServerHooks(&r.s.workerHooks)
	}
	for _, w := range waiters {
		w <- nil
	}
	return http.ErrServerClosed
}
