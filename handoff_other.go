//go:build !unix

package graceful

import (
	"errors"
	"net"
	"os"
)

const handoffOS = false

func dupConn(net.Conn) (*os.File, error) {
	return nil, errors.New("graceful: handing connections off needs Unix")
}
