//go:build !unix

package graceful

// successor is never started where restarts are not supported.
type successor struct{ result chan error }

func (s *successor) pid() int    { return 0 }
func (s *successor) exe() string { return "" }
func (s *successor) abort()      {}
func (s *successor) release()    {}

func (r *runner) startSuccessor() (*successor, error) { return nil, ErrNotSupported }
func (r *runner) handOver(*successor) error           { return ErrNotSupported }
func (r *runner) confirmReady() error                 { return nil }

func (r *runner) runMaster() error { return ErrNotSupported }
func (r *runner) runWorker() error { return ErrNotSupported }

func (r *runner) stopGraceParent() {}
