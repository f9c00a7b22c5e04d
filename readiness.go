package graceful

import "net/http"

// ReadinessHandler returns a handler for a load balancer's or an
// orchestrator's readiness check: it answers 200 "ready" while the server
// serves, restarts included, and 503 "stopping" from the moment a stop
// (SIGTERM, SIGINT, Shutdown, or in a worker its master's stop) begins,
// through ShutdownDelay and the drain. Mount it on a path of the server's
// own handler, or of an Extra server:
//
//	mux.Handle("/readyz", srv.ReadinessHandler())
func (s *Server) ReadinessHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if r := s.runner(); r == nil || r.stopping.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("stopping\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
}
