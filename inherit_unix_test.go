//go:build unix

package graceful

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func fdOf(t *testing.T, x interface{ File() (*os.File, error) }) int {
	f, err := x.File()
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// TestCheckListenerFD hands real descriptors of the wrong kind to the check.
func TestCheckListenerFD(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer tcp.Close()
	port := tcp.Addr().(*net.TCPAddr).Port
	tcpFD := fdOf(t, tcp.(*net.TCPListener))
	assert.NoError(t, checkListenerFD(inheritedLn{FD: tcpFD, Network: "tcp", Addr: tcp.Addr().String()}))
	assert.NoError(t, checkListenerFD(inheritedLn{FD: tcpFD, Network: "tcp", Addr: "localhost:0"}))

	sock := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer ul.Close()
	unixFD := fdOf(t, ul.(*net.UnixListener))
	assert.NoError(t, checkListenerFD(inheritedLn{FD: unixFD, Network: "unix", Addr: sock}))

	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer udp.Close()
	conn, err := net.Dial("tcp", tcp.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()

	for name, c := range map[string]struct {
		ln   inheritedLn
		want string
	}{
		"pipe":           {inheritedLn{FD: int(r.Fd()), Network: "tcp", Addr: ":1"}, "not a socket"},
		"closed":         {inheritedLn{FD: 1000, Network: "tcp", Addr: ":1"}, "not open"},
		"udp":            {inheritedLn{FD: fdOf(t, udp.(*net.UDPConn)), Network: "tcp", Addr: ":1"}, "not a stream socket"},
		"connected":      {inheritedLn{FD: fdOf(t, conn.(*net.TCPConn)), Network: "tcp", Addr: ":1"}, "not listening"},
		"other port":     {inheritedLn{FD: tcpFD, Network: "tcp", Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port%60000+1))}, "bound to port"},
		"tcp as unix":    {inheritedLn{FD: tcpFD, Network: "unix", Addr: sock}, "IPv4"},
		"unix as tcp":    {inheritedLn{FD: unixFD, Network: "tcp", Addr: ":1"}, "Unix socket"},
		"unix elsewhere": {inheritedLn{FD: unixFD, Network: "unix", Addr: sock + "x"}, "bound to"},
	} {
		err := checkListenerFD(c.ln)
		if assert.Error(t, err, name) {
			assert.Contains(t, err.Error(), c.want, name)
		}
	}
}
