//go:build unix && !linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// inspect learns when pid started, from ps(1), which every Unix has. Without
// /proc, gracectl does not learn the process's executable or the signals it
// catches: it checks only that the process started before the pidfile was
// last written, which is what a reused PID fails. The control socket
// (--control) is the safe way to reach a server here.
func inspect(pid int) (*procInfo, error) {
	cmd := exec.Command("ps", "-o", "lstart=", "-p", strconv.Itoa(pid))
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=") // ps's dates in English, in UTC
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ps: %w", err)
	}
	s := strings.Join(strings.Fields(string(out)), " ")
	started, err := time.Parse("Mon Jan 2 15:04:05 2006", s)
	if err != nil {
		return nil, fmt.Errorf("ps: start time %q: %w", s, err)
	}
	return &procInfo{started: started}, nil
}
