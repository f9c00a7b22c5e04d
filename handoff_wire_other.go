//go:build !unix

package graceful

import "os"

func seqpacketPair() (*os.File, *os.File, error) { return nil, nil, ErrNotSupported }
func unixRights([]int) []byte                    { return nil }
func oobSpace(int) int                           { return 0 }
func parseRights([]byte) []int                   { return nil }

const msgCtrunc = 0

var errMsgSize = ErrNotSupported
