package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// inspect learns about pid from /proc: its executable (/proc/PID/exe, which
// stays readable when the file was replaced or removed since), its start
// (field 22 of /proc/PID/stat, in clock ticks since boot, against
// /proc/uptime), and the signals it catches and ignores (SigCgt and SigIgn
// in /proc/PID/status).
func inspect(pid int) (*procInfo, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	info := &procInfo{exe: dir + "/exe"}
	target, err := os.Readlink(info.exe)
	switch {
	case err == nil:
		info.exeName = target
	case errors.Is(err, os.ErrNotExist):
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("%s: %w", dir, serr)
		}
		info.exeErr = fmt.Errorf("%s: the process has no executable (a kernel thread?)", info.exe)
	default:
		info.exeErr = err
	}

	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return nil, err
	}
	// The command name, in parentheses, may hold spaces and parentheses:
	// the fields that follow come after the last ')'. The first of them is
	// field 3, so field 22 is the 20th.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return nil, fmt.Errorf("%s/stat: unexpected format", dir)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return nil, fmt.Errorf("%s/stat: unexpected format", dir)
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%s/stat: start time: %w", dir, err)
	}
	b, err := os.ReadFile("/proc/uptime")
	now := time.Now()
	if err != nil {
		return nil, err
	}
	up, err := strconv.ParseFloat(strings.Fields(string(b) + " ")[0], 64)
	if err != nil {
		return nil, fmt.Errorf("/proc/uptime: %w", err)
	}
	sinceBoot := time.Duration(float64(ticks) / float64(clockTicks()) * float64(time.Second))
	info.started = now.Add(-time.Duration(up*float64(time.Second)) + sinceBoot)

	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return nil, err
	}
	var gotCgt, gotIgn bool
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "SigCgt" && k != "SigIgn") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("%s/status: %s: %w", dir, k, err)
		}
		if k == "SigCgt" {
			info.caught, gotCgt = mask, true
		} else {
			info.ignored, gotIgn = mask, true
		}
	}
	info.sigKnown = gotCgt && gotIgn
	return info, nil
}

// clockTicks returns the kernel's clock ticks a second (USER_HZ), which the
// kernel passes every program in its auxiliary vector as AT_CLKTCK; 100,
// the value on every architecture Go runs on, if it cannot be read.
func clockTicks() uint64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	w := int(unsafe.Sizeof(uintptr(0)))
	word := func(p []byte) uint64 {
		if w == 4 {
			return uint64(binary.NativeEndian.Uint32(p))
		}
		return binary.NativeEndian.Uint64(p)
	}
	for ; len(b) >= 2*w; b = b[2*w:] {
		if k, v := word(b), word(b[w:]); k == atClkTck && v > 0 {
			return v
		}
	}
	return 100
}
