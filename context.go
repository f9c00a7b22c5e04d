package graceful

import "context"

type drainKey struct{}

// Draining returns a channel that is closed when the server handling the
// request whose context is ctx begins to drain: a successor has taken over,
// or the server is shutting down. A handler that holds its request open
// (server-sent events, long polling, streaming) should end its response when
// it fires, instead of keeping the old process alive until ShutdownTimeout.
// It returns nil, a channel that never fires, for a context that did not
// come from a graceful Server.
func Draining(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(drainKey{}).(chan struct{})
	return ch
}
