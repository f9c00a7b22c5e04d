// Package graceful serves HTTP like net/http and lets the server be
// redeployed without dropping or stalling a request.
//
// A [Server] embeds *http.Server and adds hot restarts: on SIGUSR2 (or a
// call to [Server.Restart]) the process starts a successor from the same
// command line, passing it the listening sockets by file descriptor. The
// old process keeps accepting until the successor reports, over a socket
// pair, that it is ready; only then does it stop accepting, drain its
// in-flight requests, run its [Server.OnRestart] hooks and return. If the
// successor exits, crashes or is not ready within StartTimeout, it is
// killed, the reason is logged and the old process serves on.
//
// Draining never closes a keep-alive connection under a client that may be
// about to use it: responses written during the drain carry
// "Connection: close", and a connection is closed unannounced only after it
// has stayed idle for DrainIdleTimeout. Handlers that hold a request open
// (streaming, long polling) can learn that the drain has begun from
// [Draining].
//
// The package-level [ListenAndServe] and [ListenAndServeTLS] are drop-ins for
// their net/http namesakes and fit the idiom
//
//	log.Fatal(graceful.ListenAndServe(":8080", handler))
//
// To operate it: with Control set, the gracectl command (cmd/gracectl)
// shows the server's [Status] and restarts it, waiting for the outcome.
// Under systemd it speaks the notify protocol (READY, RELOADING, MAINPID,
// STOPPING, watchdog pings) and serves on the sockets of socket activation.
// Behind a load balancer, ShutdownDelay and [Server.ReadinessHandler] let
// the balancer stop sending before a stopping server drains. Started by a
// facebookgo/grace process as its successor, it serves on grace's sockets
// and stops that process once ready.
//
// Restarts need a Unix system. Elsewhere the package builds, serves and
// shuts down gracefully on an interrupt, and [Server.Restart] returns
// [ErrNotSupported].
package graceful

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Defaults used where a Server field is zero.
const (
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultStartTimeout     = 60 * time.Second
	DefaultHookTimeout      = 10 * time.Second
	DefaultDrainIdleTimeout = time.Second
	DefaultWorkerTimeout    = 60 * time.Second
)

var (
	// ErrNotSupported is returned by Restart on platforms without
	// descriptor passing.
	ErrNotSupported = errors.New("graceful: restart is not supported on this platform")
	// ErrRestartInProgress is returned by Restart while a successor is
	// starting.
	ErrRestartInProgress = errors.New("graceful: a restart is already in progress")
	// ErrDraining is returned by Restart once the server has begun to drain.
	ErrDraining = errors.New("graceful: the server is draining")
	// ErrNotServing is returned by Restart when the server is not serving.
	ErrNotServing = errors.New("graceful: the server is not serving")
	// ErrNotMaster is returned by PhasedRestart outside a cluster's
	// master, and by Restart in a worker: signal the master instead.
	ErrNotMaster = errors.New("graceful: only the master of a cluster can do this")
)

// Server is an http.Server that can be restarted without losing requests.
//
// The zero value of every field but Server is usable:
//
//	srv := &graceful.Server{Server: &http.Server{Addr: ":8080", Handler: h}}
//	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
//		log.Fatal(err)
//	}
//
// An Addr of the form "unix:/path/to.sock" listens on a Unix socket. The
// Server sets its own ConnState, BaseContext and Handler wrappers on the
// embedded http.Server (and on each of Extra) when it starts serving; those
// it finds set are still called.
//
// Run one Server per process: it owns the process's signals and the
// listeners it inherited. Serve further ports through Extra, and servers
// of other protocols (gRPC, raw TCP) through [Server.AddService]; with
// services, Server may be nil. As with http.Server, a Server that has
// returned from serving may not be reused.
type Server struct {
	*http.Server

	// Extra are further HTTP servers served by the same process and
	// restarted with it, such as an admin port or a Unix socket. Each is
	// listened on at its own Addr and serves its own Handler.
	Extra []*http.Server

	// PIDFile, if set, is kept naming the process that serves: written
	// when serving starts and rewritten, atomically, when a successor
	// takes over. It is removed when the server shuts down for good.
	// Beside it the server keeps a state file (see StatePath) naming the
	// control socket and the outcome of the last restart, for gracectl
	// --pidfile and deploy scripts.
	PIDFile string

	// ShutdownTimeout bounds a drain. Requests still running when it ends
	// are cut off. Zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// StartTimeout bounds how long a successor may take to become ready
	// before it is killed and the restart abandoned. Zero means
	// DefaultStartTimeout.
	StartTimeout time.Duration

	// HookTimeout bounds each OnRestart hook. Zero means
	// DefaultHookTimeout.
	HookTimeout time.Duration

	// DrainIdleTimeout is how long a keep-alive connection may stay idle
	// during a drain before it is closed. Zero means
	// DefaultDrainIdleTimeout.
	DrainIdleTimeout time.Duration

	// Logger receives the server's own messages. Nil means slog.Default().
	Logger *slog.Logger

	// Workers, when positive, runs the server as a cluster: this process
	// becomes a master that holds the listening sockets and supervises
	// Workers worker processes, each a new process of this program
	// serving on the same sockets. The master serves nothing itself.
	// SIGUSR1 (or PhasedRestart) replaces the workers one at a time;
	// SIGUSR2 replaces the whole tree. Zero is single mode.
	Workers int

	// WorkerTimeout is how long a ready worker may go without a heartbeat
	// before the master kills and replaces it. Zero means
	// DefaultWorkerTimeout.
	WorkerTimeout time.Duration

	// WorkerBootTimeout bounds how long a worker may take to become ready.
	// Zero means StartTimeout.
	WorkerBootTimeout time.Duration

	// Directory, if set, is where new processes are started from at every
	// restart: their working directory is Directory as it resolves at
	// that moment, and the executable is found through it. After a deploy
	// moves a symbolic link such as /srv/app/current to a new release, the
	// next restart runs the new release's binary. The executable must lie
	// inside Directory.
	Directory string

	// Control, if set, is the path of a Unix socket on which the serving
	// process (in a cluster, the master) answers the gracectl command:
	// status and request counts, restarts that wait for their outcome,
	// stop, and one worker more or fewer. The socket is created with mode
	// 0600, so only the user the server runs as can use it; it passes to
	// successors with the listeners and is removed on a final shutdown.
	// The protocol is HTTP with JSON; see the README. Like Workers, it
	// needs Unix: elsewhere the server logs a warning and serves without it.
	Control string

	// ShutdownDelay is how long a stop (SIGTERM, SIGINT or Shutdown)
	// keeps the server serving as before while its ReadinessHandler
	// answers 503, so that a load balancer polling it stops sending new
	// requests before connections start to close. The drain follows.
	// Restarts are not delayed. Zero drains at once.
	ShutdownDelay time.Duration

	// NoSignals, if set, leaves signals to the program: the Server
	// installs no handler, and is restarted and stopped only through its
	// methods (Restart, PhasedRestart, Shutdown, Close), the control
	// socket, or the context given to Run. For programs that handle
	// signals themselves, e.g. with signal.NotifyContext.
	NoSignals bool

	// NoHandOff, if set, turns connection hand-off off: at a restart, idle
	// keep-alive connections are closed (and busy ones told
	// "Connection: close") as before, instead of being passed, open, to
	// the process that takes over. Hand-off is on by default; it applies
	// to cleartext HTTP/1.1 connections, in a hot restart of a single
	// process and in a phased restart of a cluster (see handoff_proc.go).
	NoHandOff bool

	mu            sync.Mutex
	hooks         []func()
	bootHooks     []func()
	workerHooks   []func()
	shutdownHooks []func()
	run           *runner // set while serving

	// Services (service.go): registered with AddService; begun is set
	// once serving has started, after which none may be added.
	services []*Service
	begun    bool
}

// ListenAndServe listens on addr and serves handler, like
// http.ListenAndServe, with hot restarts on SIGUSR2.
//
// It returns only on failure (the address cannot be listened on, the
// inherited listeners are invalid), with a non-nil error. When the process
// has handed over to a successor, or has drained after SIGTERM or SIGINT, it
// exits the process with status 0 instead of returning, so that
// log.Fatal(graceful.ListenAndServe(addr, h)) logs nothing on a clean stop.
func ListenAndServe(addr string, handler http.Handler) error {
	srv := &Server{Server: &http.Server{Addr: addr, Handler: handler}}
	return exitOnClose(srv.ListenAndServe())
}

// ListenAndServeTLS is ListenAndServe over TLS, like http.ListenAndServeTLS.
func ListenAndServeTLS(addr, certFile, keyFile string, handler http.Handler) error {
	srv := &Server{Server: &http.Server{Addr: addr, Handler: handler}}
	return exitOnClose(srv.ListenAndServeTLS(certFile, keyFile))
}

func exitOnClose(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		os.Exit(0)
	}
	return err
}

// ListenAndServe listens on s.Addr and on the address of each of s.Extra,
// reusing the listeners inherited from a predecessor, and serves until the
// server is replaced by a successor or shut down.
//
// Unlike http.Server.ListenAndServe it returns only once the drain is over
// and, after a hand-over, the OnRestart hooks have run: with
// http.ErrServerClosed after a hand-over, a SIGTERM or SIGINT drain or a call
// to Shutdown, or with another error if serving could not start or failed.
func (s *Server) ListenAndServe() error {
	return s.start(context.Background(), nil, false, "", "")
}

// Run is ListenAndServe under the control of ctx, for programs that manage
// their goroutines with contexts (errgroup, signal.NotifyContext): when ctx
// is done, the server stops as Shutdown stops it, and Run returns nil once
// drained. It returns http.ErrServerClosed when the server ended
// otherwise (replaced by a successor, stopped by a signal or a call), so
// that an errgroup then cancels the program's other goroutines too, and
// another error if serving could not start or failed.
func (s *Server) Run(ctx context.Context) error {
	err := s.start(ctx, nil, false, "", "")
	if errors.Is(err, http.ErrServerClosed) && ctx.Err() != nil {
		return nil
	}
	return err
}

// ListenAndServeTLS is ListenAndServe with TLS on s.Addr, using the
// certificate and key files given, or s.TLSConfig if both are empty. Extra
// servers use TLS when their TLSConfig holds a certificate.
func (s *Server) ListenAndServeTLS(certFile, keyFile string) error {
	return s.start(context.Background(), nil, true, certFile, keyFile)
}

// ServeTLS is Serve with TLS on l, as ListenAndServeTLS.
func (s *Server) ServeTLS(l net.Listener, certFile, keyFile string) error {
	if l == nil {
		return errors.New("graceful: ServeTLS: nil listener")
	}
	return s.start(context.Background(), l, true, certFile, keyFile)
}

// Serve serves on l, and on the addresses of s.Extra, until the server is
// replaced or shut down; it returns as ListenAndServe does. For l to survive
// a restart, the successor must find it again: obtain it from [Listen],
// which returns the inherited listener when there is one.
func (s *Server) Serve(l net.Listener) error {
	if l == nil {
		return errors.New("graceful: Serve: nil listener")
	}
	return s.start(context.Background(), l, false, "", "")
}

// OnRestart registers f to run in this process when it has been replaced by
// a successor: after the successor reported ready, this process stopped
// accepting and every in-flight request finished (or ShutdownTimeout cut it
// off), and before ListenAndServe returns. No request is still being served
// when f runs, so it may close what handlers use: log files, database pools,
// connections.
//
// Hooks run one at a time in registration order. A hook that panics is
// logged and the next one runs; a hook that takes longer than HookTimeout is
// logged and left behind. Hooks do not run on a failed restart (the process
// serves on) nor on a plain shutdown.
//
// In cluster mode (Workers > 0) the resources live in the workers, so that
// is where hooks run: in each worker replaced by a phased or a hot restart,
// after it has drained. A master replaced by a hot restart runs them too,
// after all its workers have exited. For cleanup on every worker exit, use
// OnWorkerShutdown.
func (s *Server) OnRestart(f func()) { s.addHook(&s.hooks, f) }

// Restart starts a successor, as SIGUSR2 does, and waits for the outcome.
// It returns nil once the successor is ready and serving; this process then
// drains and ListenAndServe returns. It returns an error, and this process
// keeps serving, if the successor could not be started or did not become
// ready; ErrRestartInProgress if a restart is already under way. In the
// master of a cluster it restarts the whole tree (see Workers); in a worker
// it returns ErrNotMaster.
func (s *Server) Restart() error {
	r := s.runner()
	if r == nil {
		return ErrNotServing
	}
	return r.call(context.Background(), reqRestart)
}

// Shutdown drains the server as SIGTERM does: it stops accepting, lets
// in-flight requests finish with "Connection: close", closes idle
// connections, and returns when every connection is closed, or with ctx's
// error if ctx ends first (the drain goes on, bounded by ShutdownTimeout).
// A successor that is starting is killed first. If the server was never
// started, Shutdown shuts the embedded http.Server down.
func (s *Server) Shutdown(ctx context.Context) error {
	r := s.runner()
	if r == nil {
		if s.Server == nil {
			return nil
		}
		return s.Server.Shutdown(ctx)
	}
	return r.call(ctx, reqShutdown)
}

// Close stops the server at once, as http.Server.Close does: it closes the
// listeners and every connection, cutting off in-flight requests, kills a
// successor that is starting (in a cluster, the workers), and returns once
// they are gone. ListenAndServe then returns http.ErrServerClosed. No hook
// runs but those of RegisterOnShutdown. Prefer Shutdown.
func (s *Server) Close() error {
	r := s.runner()
	if r == nil {
		if s.Server == nil {
			return nil
		}
		return s.Server.Close()
	}
	err := r.call(context.Background(), reqClose)
	if errors.Is(err, ErrNotServing) {
		return nil
	}
	return err
}

// RegisterOnShutdown registers f to be called, in a goroutine of its own,
// when a drain begins: the server is stopping, or has been replaced by a
// successor. As with http.Server, use it to tell long-lived connections
// (WebSockets, streams) to close. In a cluster it runs in the workers.
func (s *Server) RegisterOnShutdown(f func()) { s.addHook(&s.shutdownHooks, f) }

func (s *Server) runner() *runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.run
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
