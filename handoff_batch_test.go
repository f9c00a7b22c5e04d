//go:build unix

package graceful

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHandOffBatchCounts: the sending loop counts each connection it takes
// from the tracker once, however many share a batch, so that the drain does
// not end while a connection the tracker counted is still on its way (the
// drain would then close the link and the connection, taken from net/http,
// would be neither handed nor served again).
func TestHandOffBatchCounts(t *testing.T) {
	require.NoError(t, handoffSupported())
	a := hoRunner(t, "A", lnKey{}, nil, nil, nil)
	b := hoRunner(t, "B", a.served[0].key, nil, nil, nil)
	ours, theirs, err := seqpacketPair()
	require.NoError(t, err)
	la := newHOLink(a, ours, "successor")
	lb := newHOLink(b, theirs, "predecessor")
	require.NotNil(t, la)
	require.NotNil(t, lb)
	t.Cleanup(func() { la.close(); lb.close() })

	// Three connections waiting together, so they go in one batch; the
	// tracker has counted a fourth that is not on the channel yet.
	const n = 3
	out := make(chan handedConn, n)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", a.served[0].l.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		f, err := dupConn(c)
		require.NoError(t, err)
		out <- handedConn{file: f, key: a.served[0].key}
	}
	a.track.handedN.Store(n + 1)
	la.sending.Store(true)
	la.out.Store(&out)
	go la.sendLoop(out)
	waitFor(t, "the batch to be acked", func() bool { return la.handedN.Load() == n })
	time.Sleep(20 * time.Millisecond)
	assert.EqualValues(t, n, la.received.Load(), "connections taken from the tracker")
	assert.False(t, la.settled(), "a fourth connection is on its way: the drain is not over")
}
