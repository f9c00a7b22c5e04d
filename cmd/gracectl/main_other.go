//go:build !unix

// Command gracectl controls a server built with graceful. It needs Unix,
// as the control socket and restarts do.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "gracectl: needs a Unix system")
	os.Exit(2)
}
