//go:build graceful_handofftest && unix

package graceful

import (
	"os"
	"syscall"
)

// A build for tests only (-tags graceful_handofftest): with
// GRACEFUL_TEST_DIE_ON_HANDOFF set, a process that receives a batch of
// handed connections is killed before it acks it, as a successor that
// dies at the moment of hand-off.
func init() {
	if os.Getenv("GRACEFUL_TEST_DIE_ON_HANDOFF") != "" {
		hoTestDie = func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	}
}
