package graceful

import (
	"context"
	"net"
	"os"
	"strings"
	"time"
)

// drainTick is how often the drain looks at its connections.
const drainTick = 10 * time.Millisecond

// drainer is a drain under way, a timed state of its process's loop: it
// has stopped accepting, and each tick closes the connections that stayed
// idle for DrainIdleTimeout, until none is left or ShutdownTimeout ends it.
type drainer struct {
	r      *runner
	ticker *time.Ticker
	timer  *time.Timer // ShutdownTimeout
	marks  map[*trackedConn]idleMark
	i      int64 // ticks so far
	grace  int64 // ticks a connection must stay idle
	start  time.Time
	over   bool
}

// startDrain stops accepting and begins the drain. final says no successor
// holds the listening sockets, so Unix socket files are removed.
func (r *runner) startDrain(final bool) {
	r.handOffBegin() // before "Connection: close" and closing: handoff_proc.go
	r.state = stateDraining
	r.draining.Store(true)
	close(r.drainCh)
	r.closeListeners()
	r.track.startDrain()
	if final && !r.worker() {
		r.removeSocketFiles()
	}
	r.s.mu.Lock()
	for _, f := range r.s.shutdownHooks {
		go f()
	}
	r.s.mu.Unlock()
	r.drainServices() // service.go: GracefulStop
	r.drain = &drainer{
		r:      r,
		ticker: time.NewTicker(drainTick),
		timer:  time.NewTimer(durationOr(r.s.ShutdownTimeout, DefaultShutdownTimeout)),
		marks:  map[*trackedConn]idleMark{},
		grace:  int64(durationOr(r.s.DrainIdleTimeout, DefaultDrainIdleTimeout) / drainTick),
		start:  time.Now(),
	}
}

func (d *drainer) tick() <-chan time.Time {
	if d == nil || d.over {
		return nil
	}
	return d.ticker.C
}

func (d *drainer) deadline() <-chan time.Time {
	if d == nil || d.over {
		return nil
	}
	return d.timer.C
}

// sweep closes the connections idle for long enough and ends the drain
// when none is left. Until every Serve has returned, its accept loop may
// hold a connection that the kernel handed it just before the close and
// that the tracker does not know yet, so counting waits for that.
func (d *drainer) sweep() {
	d.i++
	if d.r.serving > 0 {
		return
	}
	if d.r.track.sweep(d.marks, d.i, d.grace) == 0 && d.r.servicesStopped() && d.r.handOffSettled() {
		d.finish()
	}
}

// expire ends a drain that ShutdownTimeout cut short.
func (d *drainer) expire() {
	log := d.r.log
	if d.r.serving > 0 {
		log.Warn("graceful: a listener did not stop accepting within the drain timeout")
	}
	log.Warn("graceful: drain timed out; closing the remaining connections", "timeout", durationOr(d.r.s.ShutdownTimeout, DefaultShutdownTimeout), "connections", d.r.track.count())
	d.force()
}

// force closes every connection, hijacked ones included, and ends the
// drain.
func (d *drainer) force() {
	if d == nil || d.over {
		return
	}
	d.r.track.closeAll()
	d.r.stopServices() // service.go: Stop
	d.finish()
}

func (d *drainer) finish() {
	d.over = true
	d.ticker.Stop()
	d.timer.Stop()
	d.r.handOffEnd()
	for _, sv := range d.r.served {
		if sv.srv == nil {
			continue // a service
		}
		// Nothing is left to wait for: run the hooks registered on the
		// http.Server itself and close what net/http still holds.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		sv.srv.Shutdown(ctx)
		sv.srv.Close()
	}
	d.r.log.Info("graceful: drained", "pid", os.Getpid(), "took", time.Since(d.start).Round(time.Millisecond))
}

// removeSocketFiles removes the files of Unix socket listeners, once no
// process will listen on them again: only those that are still the
// sockets this server created, never a file put in their place.
func (r *runner) removeSocketFiles() {
	for _, l := range r.listeners() {
		if ua, ok := l.Addr().(*net.UnixAddr); ok && !strings.HasPrefix(ua.Name, "@") {
			r.inh.removeSocketFile(l, ua.Name)
		}
	}
}
