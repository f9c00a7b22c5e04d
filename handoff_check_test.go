package graceful

import (
	"testing"
	"time"
)

// TestHandoffSelfCheck: this Go's net/http behaves as the hand-off expects.
func TestHandoffSelfCheck(t *testing.T) {
	start := time.Now()
	if err := checkHandoff(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("self-check took %v", time.Since(start))
}
