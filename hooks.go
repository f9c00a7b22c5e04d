package graceful

import (
	"fmt"
	"log/slog"
	"time"
)

// runHooks runs hooks one after another, each bounded by timeout, and
// contains their panics: a hook can delay the exit by at most timeout and
// cannot stop it.
func runHooks(log *slog.Logger, hooks []func(), timeout time.Duration) {
	for i, f := range hooks {
		done := make(chan error, 1)
		go func() { done <- callHook(f) }()
		select {
		case err := <-done:
			if err != nil {
				log.Error("graceful: OnRestart hook failed", "hook", i, "err", err)
			}
		case <-time.After(timeout):
			log.Error("graceful: OnRestart hook still running; moving on", "hook", i, "timeout", timeout)
		}
	}
}

// callHook runs f and turns a panic into an error.
func callHook(f func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	f()
	return nil
}

// addHook appends f to the hook list *to.
func (s *Server) addHook(to *[]func(), f func()) {
	if f == nil {
		return
	}
	s.mu.Lock()
	*to = append(*to, f)
	s.mu.Unlock()
}

// runServerHooks runs the hooks of the lists given, in that order, each
// bounded by HookTimeout. The lists are read under the Server's lock, so a
// hook registered meanwhile cannot race with them.
func (r *runner) runServerHooks(lists ...*[]func()) {
	r.s.mu.Lock()
	var hooks []func()
	for _, l := range lists {
		hooks = append(hooks, *l...)
	}
	r.s.mu.Unlock()
	runHooks(r.log, hooks, durationOr(r.s.HookTimeout, DefaultHookTimeout))
}
