package main

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestInspect: what inspect learns about a process it started is right: its
// start within tens of milliseconds, and the signals it catches.
func TestInspect(t *testing.T) {
	before := time.Now()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	info, err := inspect(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// Clock ticks and /proc/uptime have a resolution of 10 ms.
	const res = 30 * time.Millisecond
	if info.started.Before(before.Add(-res)) || info.started.After(after.Add(res)) {
		t.Errorf("started %s, want between %s and %s", info.started, before, after)
	}
	if info.exeName == "" || info.exeErr != nil {
		t.Errorf("executable %q, %v", info.exeName, info.exeErr)
	}
	if !info.sigKnown || info.caught&sigBit(syscall.SIGUSR2) != 0 {
		t.Errorf("sleep catches SIGUSR2: known %v, mask %x", info.sigKnown, info.caught)
	}
	if !info.singleMode() {
		t.Error("sleep taken for a cluster's master")
	}
	if clockTicks() != 100 {
		t.Logf("clock ticks a second: %d", clockTicks())
	}
}
