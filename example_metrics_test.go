package graceful_test

import (
	"context"
	"encoding/json"
	"expvar"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/gograceful/graceful"
)

// StatusVar publishes the server's status, restart counts included, with
// the expvar package: /debug/vars then shows it under "graceful". Publish
// it once per process.
func ExampleServer_StatusVar() {
	srv := &graceful.Server{Server: &http.Server{Addr: "127.0.0.1:0", Handler: http.NotFoundHandler()}, NoSignals: true}
	var v expvar.Var = srv.StatusVar()
	// In a program, once: expvar.Publish("graceful", v).

	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Run(ctx) }()
	var st graceful.Status
	for deadline := time.Now().Add(10 * time.Second); st.State != "serving" && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		st = graceful.Status{}
		json.Unmarshal([]byte(v.String()), &st)
	}
	fmt.Printf("%s mode, %s; hot restarts: %d ok, %d failed\n", st.Mode, st.State, st.HotRestartsOK, st.HotRestartsFailed)
	stop()
	if err := <-served; err != nil {
		log.Fatal(err)
	}
	// Output:
	// single mode, serving; hot restarts: 0 ok, 0 failed
}
