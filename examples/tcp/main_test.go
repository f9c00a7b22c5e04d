package main

import (
	"bufio"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gograceful/graceful"
)

// racyListener hands out one connection, and only once the drain has
// begun (GracefulStop called, as graceful does right after closing the
// listener): the interleaving in which a connection accepted just before
// the close reaches Serve after the drain began.
type racyListener struct {
	net.Listener // for Addr
	e            *echoServer
	conn         net.Conn
	once         sync.Once
	closed       chan struct{}
	closeOnce    sync.Once
	stopped      chan struct{}
}

func (l *racyListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() {
		go func() { l.e.GracefulStop(); close(l.stopped) }()
		for {
			l.e.mu.Lock()
			d := l.e.draining
			l.e.mu.Unlock()
			if d {
				break
			}
			time.Sleep(time.Millisecond)
		}
		c = l.conn
	})
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *racyListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// TestConnAcceptedAsDrainBegins: a connection accepted just as the drain
// began is echoed, not closed unanswered (before, its client's line was
// lost).
func TestConnAcceptedAsDrainBegins(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	e := &echoServer{conns: map[net.Conn]struct{}{}, svc: &graceful.Service{}}
	l := &racyListener{e: e, conn: server, closed: make(chan struct{}), stopped: make(chan struct{})}
	go e.Serve(l)
	client.SetDeadline(time.Now().Add(10 * time.Second))
	go client.Write([]byte("hello\n"))
	got, err := bufio.NewReader(client).ReadString('\n')
	if err != nil || got != "hello\n" {
		t.Fatalf("the line sent on a connection accepted as the drain began: got %q, %v; want it echoed", got, err)
	}
	client.Close()
	select {
	case <-l.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulStop did not return")
	}
}
