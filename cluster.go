package graceful

import "time"

// WorkerInfo describes a worker process of a cluster.
type WorkerInfo struct {
	// ID is the worker's slot, 0 to Workers-1. A worker that replaces
	// another, in a phased restart or after a crash, takes its slot.
	ID int
	// Generation counts the phased restarts of the master that started
	// the worker: workers of the first phase have generation 0.
	Generation int
	// Master is the PID of the master.
	Master int
}

// Worker reports whether this process is a worker of a cluster, and which.
// It can be called at any time, before serving too, so that a program can
// skip work in the master that only workers need:
//
//	if _, ok := graceful.Worker(); ok || srv.Workers == 0 {
//		db = openPool()
//	}
//
// In the master and in single mode it returns false.
func Worker() (WorkerInfo, bool) {
	d := workerDesc()
	if d == nil {
		return WorkerInfo{}, false
	}
	return WorkerInfo{ID: d.WorkerID, Generation: d.Gen, Master: d.PPID}, true
}

// OnWorkerBoot registers f to run in each worker when it starts, before it
// reports ready: a worker is not sent requests before its boot hooks have
// returned. Use it to open what each worker needs, such as a database pool.
// A worker whose boot hooks panic or take longer than WorkerBootTimeout
// fails to boot.
func (s *Server) OnWorkerBoot(f func()) { s.addHook(&s.bootHooks, f) }

// OnWorkerShutdown registers f to run in each worker after it has drained,
// whatever the reason (a phased or hot restart, fewer workers, the master
// shutting down or dying), before it exits. Like OnRestart hooks, they run
// in order, each bounded by HookTimeout.
func (s *Server) OnWorkerShutdown(f func()) { s.addHook(&s.workerHooks, f) }

func (s *Server) workerTimeout() time.Duration {
	return durationOr(s.WorkerTimeout, DefaultWorkerTimeout)
}

func (s *Server) workerBootTimeout() time.Duration {
	return durationOr(s.WorkerBootTimeout, durationOr(s.StartTimeout, DefaultStartTimeout))
}

// heartbeat is how often workers check in: often enough that a missed
// beat or two does not count as a hang.
func (s *Server) heartbeat() time.Duration {
	return min(s.workerTimeout()/4, time.Second)
}
