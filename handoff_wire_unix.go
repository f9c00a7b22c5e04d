//go:build unix

package graceful

import (
	"os"

	"golang.org/x/sys/unix"
)

// seqpacketPair returns a connected pair of Unix SOCK_SEQPACKET sockets,
// both close-on-exec: a hand-off socket.
func seqpacketPair() (*os.File, *os.File, error) {
	return socketPair(unix.SOCK_SEQPACKET, "graceful-handoff")
}

func unixRights(fds []int) []byte { return unix.UnixRights(fds...) }

func oobSpace(nfd int) int { return unix.CmsgSpace(nfd * 4) }

// parseRights returns the descriptors that SCM_RIGHTS messages in oob
// carry.
func parseRights(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if rights, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, rights...)
		}
	}
	return fds
}

const msgCtrunc = unix.MSG_CTRUNC

var errMsgSize error = unix.EMSGSIZE
