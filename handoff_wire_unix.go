//go:build unix

package graceful

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// seqpacketPair returns a connected pair of Unix SOCK_SEQPACKET sockets,
// both close-on-exec: a hand-off socket.
func seqpacketPair() (*os.File, *os.File, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		return nil, nil, err
	}
	unix.CloseOnExec(pair[0])
	unix.CloseOnExec(pair[1])
	return os.NewFile(uintptr(pair[0]), "graceful-handoff"), os.NewFile(uintptr(pair[1]), "graceful-handoff"), nil
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
