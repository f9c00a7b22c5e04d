package graceful

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// control serves the control socket: HTTP over a Unix socket that only
// the server's owner can open. It answers `gracectl` and anything else that
// speaks HTTP over a Unix socket, such as curl --unix-socket:
//
//	GET  /v1/status               the Status, as JSON
//	POST /v1/restart              a hot restart (SIGUSR2)
//	POST /v1/phased-restart       a phased restart (SIGUSR1)
//	POST /v1/stop                 drain and exit (SIGTERM)
//	POST /v1/workers/add          one worker more (SIGTTIN)
//	POST /v1/workers/remove       one worker fewer (SIGTTOU)
//
// A POST waits for the outcome unless it carries ?wait=0, and answers
// {"ok":true} or {"ok":false,"error":"..."}: 200 once done, 202 when not
// waiting, 409 when the state does not allow it (a restart under way, a
// drain, no workers to resize), 500 when it failed.
type control struct {
	r      *runner
	l      net.Listener
	key    lnKey
	srv    *http.Server
	posted atomic.Int32 // POSTs handed to the loop and not yet answered
}

// ControlReply is the JSON body of the control socket's answer to a POST.
type ControlReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// PID is the process that answered.
	PID int `json:"pid"`
	// Successor is, after a hot restart, the process that now serves.
	Successor int `json:"successor,omitempty"`
}

// openControl listens on the control socket, or takes it over from a
// predecessor, and serves it.
func (r *runner) openControl(path string) error {
	l, err := listenControl(r.inh, path)
	if err != nil {
		return err
	}
	c := &control{r: r, l: l, key: lnKey{"unix", path}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", c.status)
	mux.HandleFunc("POST /v1/restart", c.post(reqRestart, 0))
	mux.HandleFunc("POST /v1/phased-restart", c.post(reqPhased, 0))
	mux.HandleFunc("POST /v1/stop", c.post(reqShutdown, 0))
	mux.HandleFunc("POST /v1/workers/add", c.post(reqResize, +1))
	mux.HandleFunc("POST /v1/workers/remove", c.post(reqResize, -1))
	c.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second}
	r.ctl = c
	go c.srv.Serve(l)
	return nil
}

// close waits, briefly, for the answers being written, then closes every
// control connection. The listener itself is closed with the others.
func (c *control) close() {
	if c == nil {
		return
	}
	for i := 0; i < 100 && c.posted.Load() > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	c.srv.Close()
}

func (c *control) status(w http.ResponseWriter, req *http.Request) {
	st, err := c.r.status(req.Context())
	if err != nil {
		reply(w, err, 0, 0)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (c *control) post(kind reqKind, delta int) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		q := request{kind: kind, done: make(chan error, 1), delta: delta}
		ctx := req.Context()
		c.posted.Add(1)
		defer c.posted.Add(-1)
		err := c.r.send(ctx, q)
		if err != nil || req.URL.Query().Get("wait") == "0" {
			reply(w, err, http.StatusAccepted, 0)
			return
		}
		successor := 0
		if err = c.r.await(ctx, q); err == nil && kind == reqRestart {
			successor = int(c.r.successor.Load())
		}
		reply(w, err, http.StatusOK, successor)
	}
}

// reply answers with a ControlReply: with status ok if err is nil, else
// with the status that err calls for.
func reply(w http.ResponseWriter, err error, ok, successor int) {
	code := ok
	switch {
	case err == nil:
	case errors.Is(err, ErrRestartInProgress), errors.Is(err, ErrDraining), errors.Is(err, ErrNotMaster),
		errors.Is(err, ErrNotServing), errors.Is(err, errPhaseInProgress), errors.Is(err, errMinWorkers):
		code = http.StatusConflict
	default:
		code = http.StatusInternalServerError
	}
	rep := ControlReply{OK: err == nil, PID: os.Getpid(), Successor: successor}
	if err != nil {
		rep.Error = err.Error()
	}
	writeJSON(w, code, rep)
}

// writeJSON writes a whole answer and flushes it, so that once a handler
// returns its answer is on the wire, whatever happens to the server then.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
	w.(http.Flusher).Flush()
}

var (
	errPhaseInProgress = errors.New("graceful: a phased restart is in progress")
	errMinWorkers      = errors.New("graceful: at least one worker stays")
)
